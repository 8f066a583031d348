//! HTTP/1.1 on one kept-alive connection to a backend: the request head written from the
//! request's parts in one write, the response head parsed by `httparse` (hyper's own parser),
//! and the response body read off the socket by whoever reads the body, framed as RFC 9112
//! §6.3 says.
//!
//! Written by hand rather than with hyper's `client::conn` because of what that API costs per
//! exchange: the request, the response head and every body chunk cross between the caller and
//! the connection's dispatcher over channels (`want`, an mpsc and a oneshot), and each crossing
//! wakes the request's task and polls its whole future again. Driving hyper's connection in the
//! request's task (`pool`'s first design) still spent 16,200 instructions of a proxied request
//! in hyper's client and the wake-ups it caused (callgrind 2026-11, `bench/profile.py`, path `proxy`);
//! see BENCHMARKS.md for what this module spends. Only the framing is done here: parsing is
//! httparse's and header validation `http`'s.
//!
//! [`request`] writes the head, [`response`] parses and frames what comes back, [`conn`] is
//! one connection doing both, and [`error`] says why an exchange failed.

mod conn;
mod error;
mod request;
mod response;

pub use conn::{Conn, Failure};
pub use error::Error;
pub use request::{Fields, Head, Rewrite};
pub use response::{Framing, Response};

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use http::header::{CONTENT_LENGTH, HOST};
    use http::{HeaderMap, HeaderValue, Method, StatusCode};

    use super::response::*;
    use super::*;
    use crate::http1::Decoded;

    fn parse(text: &[u8]) -> Result<Option<Response>, Error> {
        parse_head(&mut BytesMut::from(text), false, None)
    }

    #[test]
    fn a_response_head_is_parsed_and_its_body_framed() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\nX-Empty:\r\n\r\nhello"[..],
        );
        let resp = parse_head(&mut buf, false, None).unwrap().unwrap();
        assert_eq!(resp.parts.status, StatusCode::OK);
        assert_eq!(resp.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(resp.parts.headers["x-empty"], "");
        assert!(matches!(resp.body, Framing::Length(5)));
        assert!(resp.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn a_partial_head_waits_and_garbage_is_malformed() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(Error::Malformed(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let head = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(parse(head.as_bytes()), Err(Error::Malformed(_))));
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let frame = |head: &[u8], head_request| {
            parse_head(&mut BytesMut::from(head), head_request, None).map(|r| {
                r.map(|r| {
                    (
                        r.body,
                        r.keep_alive,
                        r.parts.headers.contains_key(CONTENT_LENGTH),
                    )
                })
            })
        };
        // HEAD, 204 and 304 have no body whatever they say.
        let (b, keep, _) = frame(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert!(b.ended() && keep);
        let (b, ..) = frame(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(b.ended());
        // Chunked wins over a length, which is dropped, and the connection is not kept.
        let (b, keep, cl) = frame(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(b, Framing::Chunked(_)) && !keep && !cl);
        // A transfer coding that does not end in chunked, or no length: read until close.
        let (b, keep, _) = frame(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(matches!(b, Framing::UntilClose) && !keep);
        let (b, keep, _) = frame(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert!(matches!(b, Framing::UntilClose) && !keep);
        // Repeated equal lengths are one length; different or bad ones are refused.
        let (b, ..) = frame(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(b, Framing::Length(3)));
        for bad in ["3, 4", "-1", "0x10", "", "99999999999999999999"] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(
                matches!(frame(head.as_bytes(), false), Err(Error::Malformed(_))),
                "{bad}"
            );
        }
        // HTTP/1.0 keeps the connection only when it says so; 1.1 unless it says close.
        let (_, keep, _) = frame(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!keep);
        let (_, keep, _) = frame(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(keep);
        let (_, keep, _) = frame(
            b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!keep);
    }

    /// Reads what `wire` holds as a response to GET, handed over in pieces of the sizes `piece`
    /// says, the way a socket does: the body's bytes, or the error, or `None` while it is
    /// incomplete.
    fn read_all(wire: &[u8], mut piece: impl FnMut() -> usize) -> Option<Result<Vec<u8>, Error>> {
        let mut buf = BytesMut::new();
        let mut rest = wire;
        let take = |buf: &mut BytesMut, rest: &mut &[u8], n: usize| {
            let n = n.min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            *rest = &rest[n..];
            n > 0
        };
        let resp = loop {
            match parse_head(&mut buf, false, None) {
                Err(e) => return Some(Err(e)),
                Ok(Some(resp)) => break resp,
                Ok(None) if !take(&mut buf, &mut rest, piece()) => return None,
                Ok(None) => {}
            }
        };
        let mut body = Vec::new();
        let mut framing = resp.body;
        loop {
            let progress = match &mut framing {
                Framing::Done => return Some(Ok(body)),
                Framing::Length(left) => {
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    body.extend_from_slice(&buf.split_to(n));
                    if *left == 0 {
                        framing = Framing::Done;
                    }
                    n > 0
                }
                Framing::Chunked(state) => match state.decode(&mut buf).map_err(Error::from) {
                    Err(e) => return Some(Err(e)),
                    Ok(Decoded::Data(d)) => {
                        assert!(!d.is_empty(), "empty data frame");
                        body.extend_from_slice(&d);
                        true
                    }
                    Ok(Decoded::End(_)) => {
                        framing = Framing::Done;
                        true
                    }
                    Ok(Decoded::NeedMore) => false,
                },
                Framing::UntilClose => {
                    body.extend_from_slice(&buf.split());
                    if rest.is_empty() {
                        framing = Framing::Done;
                    }
                    false
                }
            };
            if !progress && !matches!(framing, Framing::Done) && !take(&mut buf, &mut rest, piece())
            {
                return None;
            }
        }
    }

    /// Valid responses cut into random pieces read the same as whole; mangled ones (bytes
    /// changed, inserted, dropped) end in a body, an error or a wait, and never in a panic, a
    /// loop that makes no progress, or more body than was sent.
    #[test]
    fn mangled_responses_never_panic_or_overread() {
        let valid: [(&[u8], &[u8]); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", b"hello"),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n", b"abc0123456789abcdef"),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", b"until close"),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", b""),
        ];
        // xorshift: the same cases on every run, so a failure can be replayed.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (wire, body) in valid {
            for _ in 0..200 {
                let n = 1 + (next() % 64) as usize;
                let got = read_all(wire, || n).expect("complete").expect("valid");
                assert_eq!(got, body);
            }
        }
        // About a third of these still read as a response; the rest end in each of the errors.
        let alphabet =
            b"0123456789abcdefHTP/. :;,\r\n\t\x00\xffContent-LengthTransfer-Encodingchunked";
        for i in 0..20_000 {
            let (wire, _) = valid[i % valid.len()];
            let mut wire = wire.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (wire.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < wire.len() => wire[at] = byte,
                    1 if at < wire.len() => {
                        wire.remove(at);
                    }
                    _ => wire.insert(at, byte),
                }
            }
            if let Some(Ok(got)) = read_all(&wire, || 1 + (next() % 64) as usize) {
                assert!(
                    got.len() <= wire.len(),
                    "{:?}",
                    String::from_utf8_lossy(&wire)
                );
            }
        }
    }

    #[test]
    fn request_heads_carry_host_first_and_their_own_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(HOST, HeaderValue::from_static("client.example"));
        let empty = crate::body::full(Bytes::new());
        let get = Head::encode(&Method::GET, "/p?q=1", &headers, None, &empty, None).unwrap();
        assert_eq!(
            &get.bytes[..],
            b"GET /p?q=1 HTTP/1.1\r\nhost: client.example\r\nx-a: 1\r\n\r\n"
        );
        let backend = HeaderValue::from_static("10.0.0.1:80");
        let post = Head::encode(
            &Method::POST,
            "/",
            &headers,
            Some(&backend),
            &crate::body::full("abc"),
            None,
        )
        .unwrap();
        assert_eq!(
            &post.bytes[..],
            b"POST / HTTP/1.1\r\nhost: 10.0.0.1:80\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n"
        );
        for bad in ["", "p", "/a b", "/a\r\nx: y", "/\u{e9}"] {
            assert!(
                Head::encode(&Method::GET, bad, &headers, None, &empty, None).is_none(),
                "{bad:?}"
            );
        }
    }
}

//! HTTP/1.1 framing that plughost's server ([`crate::server::h1`]) and its upstream client
//! ([`crate::upstream::h1`]) share: what the framing fields say, where a head ends, and
//! chunked bodies (RFC 9112 §6, §7.1).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// The longest chunk-size line (size, extensions, CRLF): real ones are a few bytes.
pub const MAX_CHUNK_LINE: usize = 4096;

/// The most bytes of trailer fields after a chunked body.
const MAX_TRAILERS: usize = 64 * 1024;

/// The most trailer fields after a chunked body (hyper's limit for a head's fields).
const MAX_TRAILER_FIELDS: usize = 100;

/// Chunked framing that cannot be read; says what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Where the interim (1xx) responses to a client's requests go: its HTTP/1.1 connection, which
/// writes one only while the request it answers has no response begun.
pub trait InterimSink: Send + Sync {
    /// Sends an interim response with `fields`.
    fn send(&self, status: StatusCode, fields: &HeaderMap);
}

/// A connection's [`InterimSink`], as a request's path hands it on.
#[derive(Clone)]
pub struct Interim(pub Arc<dyn InterimSink>);

impl std::fmt::Debug for Interim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interim")
    }
}

/// Whether the last coding `Transfer-Encoding` lists is `chunked` (RFC 9112 §6.3: else the
/// body's end cannot be known from its framing).
pub fn chunked_last(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// The length `Content-Length` gives, `None` without one. Several values (fields or a list)
/// must agree; anything but plain decimal digits is malformed.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Malformed> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for n in value.as_bytes().split(|b| *b == b',') {
            let n = n.trim_ascii();
            let parsed = (!n.is_empty() && n.len() <= 19 && n.iter().all(u8::is_ascii_digit))
                .then(|| n.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
                .ok_or(Malformed("Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(Malformed("Content-Length values differ"));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// Whether the sender keeps the connection after this message (RFC 9112 §9.3): HTTP/1.1
/// unless `Connection` says `close`, HTTP/1.0 only if it says `keep-alive`.
pub fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &[u8]| {
        headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has(b"keep-alive")
    } else {
        !has(b"close")
    }
}

/// Whether `buf` holds an empty line (the end of a head: LF LF, or LF CR LF) that ends past
/// `scanned`, the part already searched.
pub fn has_blank_line(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    buf.get(from..).is_some_and(|rest| {
        rest.iter().enumerate().any(|(i, b)| {
            *b == b'\n'
                && (rest.get(i + 1) == Some(&b'\n')
                    || (rest.get(i + 1) == Some(&b'\r') && rest.get(i + 2) == Some(&b'\n')))
        })
    })
}

/// Where a chunked body's decoder is.
#[derive(Debug)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: the trailer lines so far, until an empty one.
    Trailers(BytesMut),
}

/// What one step of decoding found.
pub enum Decoded {
    /// A piece of the body.
    Data(Bytes),
    /// The body's end, with its trailer fields if it had any.
    End(Option<HeaderMap>),
    /// Nothing until more bytes arrive.
    NeedMore,
}

/// The line at the front of `buf` without its line ending (a bare LF is taken too, as RFC 9112
/// §2.2 allows), and the length to advance past it; `None` while it has no end.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line = &buf[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

/// Trailer field lines (each with its line end) as fields, checked as a head's are.
fn trailers(lines: &mut BytesMut) -> Result<HeaderMap, Malformed> {
    lines.extend_from_slice(b"\r\n");
    // Zeroed slots: only bodies with trailers come here.
    let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let fields = match httparse::parse_headers(lines, &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return Err(Malformed("trailer fields")),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name =
            HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Malformed("trailer name"))?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| Malformed("trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

impl Chunked {
    /// Decodes what it can off the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Self::Size => {
                    let Some((text, used)) = line(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(Malformed("chunk size line too long"))
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    // Extensions (after `;`) are ignored, as RFC 9112 §7.1.1 lets a recipient.
                    let digits = text
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    if digits.is_empty()
                        || digits.len() > 15
                        || !digits.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(Malformed("chunk size"));
                    }
                    let size = digits.iter().fold(0u64, |acc, d| {
                        acc * 16 + u64::from((*d as char).to_digit(16).unwrap_or_default())
                    });
                    buf.advance(used);
                    *self = if size == 0 {
                        Self::Trailers(BytesMut::new())
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Self::DataEnd;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Self::DataEnd => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    } else if buf.starts_with(b"\n") {
                        buf.advance(1);
                    } else if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(Decoded::NeedMore);
                    } else {
                        return Err(Malformed("chunk data longer than its size"));
                    }
                    *self = Self::Size;
                }
                Self::Trailers(lines) => {
                    // Each line is bounded like a chunk-size line, so that one arriving in
                    // pieces is searched a bounded number of times.
                    let Some((text, used)) = line(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE
                            || lines.len() + buf.len() > MAX_TRAILERS
                        {
                            Err(Malformed("trailer line over 4 KiB or trailers over 64 KiB"))
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    if text.is_empty() {
                        buf.advance(used);
                        let trailers = (!lines.is_empty()).then(|| trailers(lines)).transpose()?;
                        return Ok(Decoded::End(trailers));
                    }
                    lines.extend_from_slice(&buf[..used]);
                    buf.advance(used);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_head_is_found_across_pieces() {
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        for cut in 0..head.len() {
            // Searched up to `cut` with nothing found, then the rest arrives.
            assert!(!has_blank_line(&head[..cut], 0) || cut == head.len());
            assert!(has_blank_line(head, cut), "cut at {cut}");
        }
        assert!(has_blank_line(b"HTTP/1.0 204 x\n\n", 0));
        assert!(!has_blank_line(b"HTTP/1.1 200 OK\r\nA: b\r\n", 0));
    }

    fn dechunk(wire: &[u8]) -> Result<(Vec<u8>, bool), Malformed> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // One byte at a time: every state must wait for more at any point.
        for b in wire {
            buf.extend_from_slice(&[*b]);
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End(_) => return Ok((out, buf.is_empty())),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_are_decoded_byte_by_byte() {
        let (body, ended) =
            dechunk(b"5;ext=1\r\nhello\r\nA\r\n, world!!\n\r\n0\r\nX-Trailer: 1\r\n\r\n").unwrap();
        assert_eq!(body, b"hello, world!!\n");
        assert!(ended);
        let mut buf = BytesMut::from(&b"0\r\nX-Sum: 42\r\nX-B: 1\r\n\r\n"[..]);
        let Ok(Decoded::End(Some(trailers))) = Chunked::Size.decode(&mut buf) else {
            panic!("no trailers");
        };
        assert_eq!(trailers["x-sum"], "42");
        assert_eq!(trailers["x-b"], "1");
        let mut bad = BytesMut::from(&b"0\r\nNo colon\r\n\r\n"[..]);
        assert!(Chunked::Size.decode(&mut bad).is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"2\r\nabc\r\n").is_err());
        assert!(dechunk(b"1000000000000000\r\n").is_err());
        let long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(dechunk(long.as_bytes()).is_err());
    }
}

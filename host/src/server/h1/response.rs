//! A response as plughost's HTTP/1 server writes it: the head encoded into one buffer with the
//! framing plughost chooses (RFC 9112 §6: none for HEAD, 1xx, 204 and 304; the length when it
//! is known; chunked for an HTTP/1.1 client; else until close), and each body piece framed.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};
use http_body::SizeHint;

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// It has none (HEAD, 1xx, 204, 304): the body is not sent.
    None,
    /// `Content-Length`: exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither (an HTTP/1.0 client and a body of unknown length): it ends when the connection
    /// closes.
    UntilClose,
}

/// What the request said that shapes its response.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// It was a HEAD request.
    pub head: bool,
    /// Its HTTP version.
    pub version: Version,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Encodes the head of `parts` into `out`, the framing chosen from the body's `size` and what
/// was `asked`; returns the framing and whether the connection stays open after it.
/// `Transfer-Encoding` and `Content-Length` are plughost's to set: a length the handler gave
/// is kept (a HEAD's, a 304's), any `Transfer-Encoding` replaced by the framing used.
pub fn encode_head(
    out: &mut BytesMut,
    parts: &mut http::response::Parts,
    size: &SizeHint,
    asked: Asked,
) -> (Framing, bool) {
    let status = parts.status;
    let headers = &mut parts.headers;
    headers.remove(TRANSFER_ENCODING);
    let informational_or_empty = status.is_informational() || status == StatusCode::NO_CONTENT;
    if informational_or_empty {
        headers.remove(CONTENT_LENGTH);
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let framing = if asked.head || informational_or_empty || status == StatusCode::NOT_MODIFIED {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = size.exact() {
        Framing::Length(n)
    } else if asked.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::UntilClose
    };
    let says_close = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    let keep_alive = asked.keep_alive && !says_close && framing != Framing::UntilClose;

    out.reserve(128 + headers.len() * 32);
    status_line(out, status);
    for (name, value) in headers.iter() {
        if name == CONNECTION && !keep_alive {
            // Replaced by `close` below.
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        Framing::Length(n) if declared.is_none() => {
            field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        // A HEAD's length is the GET's, where the handler knew it.
        Framing::None if asked.head && declared.is_none() => {
            if let Some(n) = size.exact().filter(|n| *n > 0) {
                field(
                    out,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
            }
        }
        Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    if !headers.contains_key(DATE) {
        DATE_LINE.with_borrow_mut(|date| out.put_slice(date.now()));
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if asked.version == Version::HTTP_10 && !headers.contains_key(CONNECTION) {
        field(out, b"connection", b"keep-alive");
    }
    out.put_slice(b"\r\n");
    (framing, keep_alive)
}

/// The head of an interim response: `status`, `fields`, nothing else.
pub fn interim(status: StatusCode, fields: &HeaderMap) -> BytesMut {
    let mut out = BytesMut::with_capacity(64 + fields.len() * 64);
    status_line(&mut out, status);
    for (name, value) in fields {
        field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
    out
}

/// A head refusing a request plughost could not read: `status`, no body, and the connection
/// closed after it.
pub fn refusal(status: StatusCode) -> BytesMut {
    let mut out = BytesMut::new();
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    let asked = Asked {
        head: false,
        version: Version::HTTP_11,
        keep_alive: false,
    };
    encode_head(&mut out, &mut parts, &SizeHint::with_exact(0), asked);
    out
}

/// `HTTP/1.1 <code> <reason>` and its line end: plughost answers as HTTP/1.1 whatever the
/// client's version (RFC 9110 §6.2).
fn status_line(out: &mut BytesMut, status: StatusCode) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
}

fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The size line that opens a chunk, made on the stack.
pub struct ChunkSize {
    line: [u8; 18],
    start: usize,
}

impl ChunkSize {
    /// The line for a chunk of `len` bytes: its size in hex, CRLF.
    pub fn new(len: usize) -> Self {
        let mut line = [0u8; 18];
        line[16..].copy_from_slice(b"\r\n");
        let (mut start, mut n) = (16, len);
        loop {
            start -= 1;
            line[start] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break Self { line, start };
            }
        }
    }

    /// The line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.line[self.start..]
    }
}

/// The last chunk of a chunked body, with those of `trailers` that the response's `Trailer`
/// field declared (RFC 9110 §6.5.1: a recipient may drop the rest, and hyper does too).
pub fn last_chunk(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> BytesMut {
    let mut out = BytesMut::from(&b"0\r\n"[..]);
    if let Some(trailers) = trailers {
        let declared: Vec<&[u8]> = headers
            .get_all(TRAILER)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        for (name, value) in trailers {
            if declared
                .iter()
                .any(|d| d.eq_ignore_ascii_case(name.as_str().as_bytes()))
            {
                field(&mut out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    out.put_slice(b"\r\n");
    out
}

/// The `date` field line, formatted once a second per thread rather than for every response.
struct DateLine {
    second: u64,
    line: Vec<u8>,
}

impl DateLine {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.line.is_empty() {
            self.second = second;
            self.line = format!("date: {}\r\n", httpdate::fmt_http_date(now)).into_bytes();
        }
        &self.line
    }
}

thread_local! {
    static DATE_LINE: RefCell<DateLine> = const {
        RefCell::new(DateLine { second: 0, line: Vec::new() })
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        status: u16,
        size: SizeHint,
        asked: Asked,
        fields: &[(&str, &str)],
    ) -> (String, Framing, bool) {
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = StatusCode::from_u16(status).unwrap();
        for (k, v) in fields {
            parts.headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut out = BytesMut::new();
        let (framing, keep) = encode_head(&mut out, &mut parts, &size, asked);
        (String::from_utf8(out.to_vec()).unwrap(), framing, keep)
    }

    const GET11: Asked = Asked {
        head: false,
        version: Version::HTTP_11,
        keep_alive: true,
    };

    #[test]
    fn the_framing_follows_what_is_known_of_the_body() {
        let (text, framing, keep) = head(200, SizeHint::with_exact(5), GET11, &[]);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with("\r\n\r\n") && !text.contains("connection"),
            "{text}"
        );
        assert_eq!((framing, keep), (Framing::Length(5), true));

        let (text, framing, _) = head(
            200,
            SizeHint::default(),
            GET11,
            &[("transfer-encoding", "gzip")],
        );
        assert!(
            text.contains("transfer-encoding: chunked\r\n") && !text.contains("gzip"),
            "{text}"
        );
        assert_eq!(framing, Framing::Chunked);

        // HTTP/1.0 and a body of unknown length: it ends with the connection.
        let asked = Asked {
            version: Version::HTTP_10,
            ..GET11
        };
        let (text, framing, keep) = head(200, SizeHint::default(), asked, &[]);
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((framing, keep), (Framing::UntilClose, false));

        // HEAD: the GET's length, no body; 204: no length at all.
        let asked = Asked {
            head: true,
            ..GET11
        };
        let (text, framing, _) = head(200, SizeHint::with_exact(7), asked, &[]);
        assert!(text.contains("content-length: 7\r\n"), "{text}");
        assert_eq!(framing, Framing::None);
        let (text, framing, _) = head(
            204,
            SizeHint::with_exact(0),
            GET11,
            &[("content-length", "3")],
        );
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Framing::None);

        // A handler's `Connection: close` is kept to.
        let (text, _, keep) = head(
            200,
            SizeHint::with_exact(0),
            GET11,
            &[("connection", "close")],
        );
        assert!(
            !keep && text.matches("connection: close").count() == 1,
            "{text}"
        );
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        for (n, line) in [
            (0, "0"),
            (1, "1"),
            (255, "ff"),
            (4096, "1000"),
            (usize::MAX, "ffffffffffffffff"),
        ] {
            assert_eq!(
                ChunkSize::new(n).as_bytes(),
                format!("{line}\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn only_declared_trailers_are_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRAILER, "x-sum".parse().unwrap());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "42".parse().unwrap());
        trailers.insert("x-secret", "1".parse().unwrap());
        assert_eq!(
            &last_chunk(&headers, Some(&trailers))[..],
            b"0\r\nx-sum: 42\r\n\r\n"
        );
        assert_eq!(&last_chunk(&headers, None)[..], b"0\r\n\r\n");
    }
}

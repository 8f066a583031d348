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
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
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

fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The size line that opens a chunk of `len` bytes.
pub fn chunk_size(len: usize) -> BytesMut {
    let mut line = BytesMut::with_capacity(18);
    line.put_slice(format!("{len:x}\r\n").as_bytes());
    line
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

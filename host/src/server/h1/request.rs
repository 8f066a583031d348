//! A client's request head as plughost's HTTP/1 server reads it: parsed by httparse off the
//! connection's read buffer, its fields made `http` types without a copy each, and its body
//! framed as RFC 9112 §6 says, refusing every framing two parties could read apart.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use smallvec::SmallVec;

use crate::http1::{self, Chunked};

/// Header slots kept on the stack; a larger `max_headers` takes them from the heap.
const STACK_HEADERS: usize = 128;

/// A request head, and what it says about its body and its connection.
pub struct Head {
    /// Method, target, version and fields, framing fields included.
    pub parts: http::request::Parts,
    /// How its body is read off the connection.
    pub body: Framing,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// It asked for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// How a request body is delimited (RFC 9112 §6.3), and how much of it is left.
#[derive(Debug)]
pub enum Framing {
    /// Read to its end, or it never had one.
    Done,
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// It could not be read to its end (the client left, or sent a malformed chunk): the
    /// connection cannot carry another request.
    Broken,
}

/// Why a head is refused: answered with [`Refused::status`], and the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a request plughost can read unambiguously.
    Malformed(&'static str),
    /// Larger than `max_header_bytes`, or with more than `max_headers` fields.
    TooLarge,
}

impl Refused {
    /// The status the client is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// Parses a request head off the front of `buf`; `None` until it is whole. A head not whole
/// within `max_bytes`, or with more than `max_headers` fields, is [`Refused::TooLarge`].
pub fn parse(
    buf: &mut BytesMut,
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<Head>, Refused> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Refused::TooLarge);
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            return Err(Refused::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(Refused::Malformed("HTTP version")),
        Err(_) => return Err(Refused::Malformed("not an HTTP/1.x request head")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refused::Malformed("method"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // The target and values become slices of the head's bytes once it is split off the
    // buffer, without a copy each.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = offset(parsed.path.unwrap_or_default().as_bytes());
    // Where each field's name and value are, on the stack for the usual few dozen (a Vec of
    // them was an allocation a request).
    let count = parsed.headers.len();
    let spans: SmallVec<[_; 32]> = parsed
        .headers
        .iter()
        .map(|h| (offset(h.name.as_bytes()), offset(h.value)))
        .collect();
    let bytes = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(bytes.slice(target)).map_err(|_| Refused::Malformed("target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    let mut seen = Seen::default();
    // By reference: iterating the SmallVec by value moved all of its inline slots (1.5 KiB)
    // into the iterator first, a memcpy of ~120 instructions a request (callgrind).
    for (name, range) in &spans {
        let name = HeaderName::from_bytes(&bytes[name.clone()])
            .map_err(|_| Refused::Malformed("header name"))?;
        seen.note(&name);
        headers.append(name, value(&bytes, range.clone())?);
    }
    let keep_alive = keeps_alive(version, &headers, seen);
    let body = framing(version, &mut headers, seen)?;
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    let expect_continue = version == Version::HTTP_11
        && seen.expect
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// Which of the fields that frame a request or its connection it has, noted as the fields are
/// added, so a request without them (most) looks none up.
#[derive(Clone, Copy, Default)]
struct Seen {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
    expect: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName) {
        if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == CONTENT_LENGTH {
            self.content_length = true;
        } else if name == CONNECTION {
            self.connection = true;
        } else if name == EXPECT {
            self.expect = true;
        }
    }
}

/// A field value as a slice of the head (httparse has already checked its bytes).
fn value(head: &Bytes, range: std::ops::Range<usize>) -> Result<HeaderValue, Refused> {
    if range.is_empty() {
        return Ok(HeaderValue::from_static(""));
    }
    HeaderValue::from_maybe_shared(head.slice(range))
        .map_err(|_| Refused::Malformed("header value"))
}

/// The body's framing (RFC 9112 §6.3). `Transfer-Encoding` must end in `chunked` and is
/// refused in HTTP/1.0; beside it, `Content-Length` is removed (§6.3 ¶3: the request is then
/// the connection's last, which [`keeps_alive`] says); several lengths must agree.
fn framing(version: Version, headers: &mut HeaderMap, seen: Seen) -> Result<Framing, Refused> {
    if seen.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(Refused::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        let chunked_last = http1::chunked_last(headers);
        if !chunked_last {
            return Err(Refused::Malformed(
                "Transfer-Encoding does not end in chunked",
            ));
        }
        headers.remove(CONTENT_LENGTH);
        return Ok(Framing::Chunked(Chunked::Size));
    }
    if !seen.content_length {
        return Ok(Framing::Done);
    }
    let length = http1::content_length(headers).map_err(|e| Refused::Malformed(e.0))?;
    Ok(match length {
        None | Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
    })
}

/// Whether the client keeps the connection after this request ([`http1::keeps_alive`]); a
/// request that came with both framings never does (§6.3 ¶3).
fn keeps_alive(version: Version, headers: &HeaderMap, seen: Seen) -> bool {
    if seen.transfer_encoding && seen.content_length {
        return false;
    }
    if !seen.connection {
        return version != Version::HTTP_10;
    }
    http1::keeps_alive(version, headers)
}

//! A backend's response as plughost reads it: the head parsed by httparse off the read buffer
//! (interim 1xx heads dropped), and its body framed as RFC 9112 §6.3 says: no body for HEAD,
//! 204 and 304; chunked over a length; a length; else until close.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{CONTENT_LENGTH, LINK, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::error::Error;
use crate::http1::{self, Chunked, Interim};

/// The largest response head read (status line, fields, and any interim 1xx heads before it).
/// nginx's `proxy_buffer_size` is 4 or 8 KiB; hyper's read buffer grows to ~400 KiB.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// The most header fields a response head may have (hyper's default).
pub(super) const MAX_HEADERS: usize = 100;

/// How much the read buffer grows by when it needs room.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// The head of a response, and how to read its body off the connection.
pub struct Response {
    /// Status, version and fields, framing fields included.
    pub parts: http::response::Parts,
    /// How its body is read.
    pub body: Framing,
    /// The connection can take another request once the body has been read.
    pub keep_alive: bool,
}

/// How a response body is delimited (RFC 9112 §6.3), and how much of it is left.
#[derive(Debug)]
pub enum Framing {
    /// Read to its end (or it never had one: HEAD, 1xx, 204, 304).
    Done,
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Neither: the body ends when the backend closes the connection.
    UntilClose,
}

impl Framing {
    /// Nothing left to read.
    pub fn ended(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Bytes left, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Done => Some(0),
            Self::Length(n) => Some(*n),
            _ => None,
        }
    }
}

/// Parses a final response head off the front of `buf`, dropping interim ones before it;
/// `None` until the head is whole.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    interim: Option<&Interim>,
) -> Result<Option<Response>, Error> {
    loop {
        // Uninitialized, as hyper has them: zeroing 100 slots cost more than parsing a head.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Malformed("more than 100 header fields"));
            }
            Err(_) => return Err(Error::Malformed("not an HTTP/1.x response head")),
        };
        let code = parsed.code.unwrap_or_default();
        if code == 101 {
            return Err(Error::Malformed(
                "101 Switching Protocols to a request that asked for none",
            ));
        }
        if (100..200).contains(&code) {
            // `103 Early Hints` goes on to the client with its `Link` fields, the ones it is
            // for (RFC 8297); other interim responses (100 Continue) are this hop's.
            if code == 103
                && let Some(interim) = interim
            {
                let links: HeaderMap = parsed
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("link"))
                    .filter_map(|h| Some((LINK, HeaderValue::from_bytes(h.value).ok()?)))
                    .collect();
                if !links.is_empty() {
                    interim.0.send(StatusCode::EARLY_HINTS, &links);
                }
            }
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("status code"))?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Names are parsed now; values become slices of the head's bytes once it is split off
        // the buffer, without a copy each.
        let base = buf.as_ptr() as usize;
        let mut fields = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Error::Malformed("header name"))?;
            let start = h.value.as_ptr() as usize - base;
            fields.push((name, start..start + h.value.len()));
        }
        let bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(fields.len());
        for (name, range) in fields {
            let value = if range.is_empty() {
                HeaderValue::from_static("")
            } else {
                HeaderValue::from_maybe_shared(bytes.slice(range))
                    .map_err(|_| Error::Malformed("header value"))?
            };
            headers.append(name, value);
        }
        let (body, reusable) = framing(head_request, status, &mut headers)?;
        let keep_alive = reusable && http1::keeps_alive(version, &headers);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(Response {
            parts,
            body,
            keep_alive,
        }));
    }
}

/// The body's framing (RFC 9112 §6.3), and whether the connection can be kept after it.
pub(super) fn framing(
    head_request: bool,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let chunked = http1::chunked_last(headers);
        // Both framings at once may be an attempt to desynchronize the connection (§6.3 ¶3):
        // the body is read as chunked, its length is not passed on, and the connection is
        // not kept.
        let both = headers.remove(CONTENT_LENGTH).is_some();
        return Ok(if chunked {
            (Framing::Chunked(Chunked::Size), !both)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let length = http1::content_length(headers)?;
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

//! A request head as plughost writes it to a backend: from the request's parts in one buffer,
//! with its body's framing chosen by plughost (`Content-Length` when known, else chunked),
//! and the changes a [`Rewrite`] makes to its fields on the way.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::Body as _;

use crate::body::Body;
use crate::http1::Interim;

/// How a request's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sends {
    Nothing,
    Length(u64),
    Chunked,
}

/// A request ready to go: its head encoded, and what its body needs.
#[derive(Debug, Clone)]
pub struct Head {
    pub(super) bytes: Bytes,
    pub(super) sends: Sends,
    /// A response to HEAD has no body, whatever its `Content-Length` says.
    pub(super) head_request: bool,
    /// Where the backend's `103 Early Hints` go, when they go anywhere.
    pub(super) interim: Option<Interim>,
}

/// Changes to a request's own fields on their way out (the reverse proxy's forwarding headers).
pub trait Rewrite: Sync {
    /// Whether the request's own field `name` is left out.
    fn drops(&self, name: &HeaderName) -> bool;
    /// Writes the fields that follow the request's own.
    fn add(&self, out: &mut Fields<'_>);
    /// Where the backend's `103 Early Hints` are passed on to, if anywhere.
    fn interim(&self) -> Option<&Interim> {
        None
    }
}

/// Where a [`Rewrite`] writes its fields. Their values must come from `HeaderValue`s or be
/// built from them and from addresses: nothing here checks them for line breaks.
pub struct Fields<'a>(&'a mut BytesMut);

impl Fields<'_> {
    /// One `name: value` line.
    pub fn field(&mut self, name: &str, value: &[u8]) {
        field(self.0, name, value);
    }
}

impl Head {
    /// The head as it goes on the wire.
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The request line, `Host` (first, as RFC 9112 §3.2 asks: `host` when given, else the one in
    /// `headers`), every other header but the framing ones and those `rewrite` drops, the ones it
    /// adds, and the framing `body` needs: none, `Content-Length` when its length is known, else
    /// chunked. `None` for a target that cannot be sent as it is.
    pub fn encode(
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        host: Option<&HeaderValue>,
        body: &Body,
        rewrite: Option<&dyn Rewrite>,
    ) -> Option<Self> {
        if !crate::target::valid_target(target) {
            return None;
        }
        let sends = match body.size_hint().exact() {
            // As hyper does: no `Content-Length: 0` on methods whose requests carry no content.
            Some(0) if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => {
                Sends::Nothing
            }
            Some(n) => Sends::Length(n),
            None => Sends::Chunked,
        };
        let mut out = BytesMut::with_capacity(256);
        out.extend_from_slice(method.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(host) = host.or_else(|| headers.get(HOST)) {
            field(&mut out, HOST.as_str(), host.as_bytes());
        }
        for (name, value) in headers {
            if name != HOST
                && name != CONTENT_LENGTH
                && name != TRANSFER_ENCODING
                && !rewrite.is_some_and(|r| r.drops(name))
            {
                field(&mut out, name.as_str(), value.as_bytes());
            }
        }
        if let Some(r) = rewrite {
            r.add(&mut Fields(&mut out));
        }
        match sends {
            Sends::Nothing => {}
            Sends::Length(n) => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
            Sends::Chunked => field(&mut out, "transfer-encoding", b"chunked"),
        }
        out.extend_from_slice(b"\r\n");
        Some(Self {
            bytes: out.freeze(),
            sends,
            head_request: *method == Method::HEAD,
            interim: rewrite.and_then(|r| r.interim().cloned()),
        })
    }
}

pub(super) fn field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

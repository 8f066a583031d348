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

use std::fmt::Write as _;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::body::{Body, BoxError};

/// The largest response head read (status line, fields, and any interim 1xx heads before it).
/// nginx's `proxy_buffer_size` is 4 or 8 KiB; hyper's read buffer grows to ~400 KiB.
const MAX_HEAD: usize = 64 * 1024;

/// The most header fields a response head may have (hyper's default).
const MAX_HEADERS: usize = 100;

/// The longest chunk-size line (size, extensions, CRLF): real ones are a few bytes.
const MAX_CHUNK_LINE: usize = 4096;

/// How much the read buffer grows by when it needs room.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("backend connection failed: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before sending any of a response.
    #[error("backend closed the connection before responding")]
    Closed,
    /// The backend closed the connection in the middle of the response.
    #[error("backend closed the connection in the middle of the response {0}")]
    Truncated(&'static str),
    /// What the backend sent is not an HTTP/1.x response plughost can frame.
    #[error("malformed backend response: {0}")]
    Malformed(&'static str),
    /// The request's body failed while it was being sent (its size limit, a client gone).
    #[error("request body failed: {0}")]
    Body(#[source] BoxError),
}

/// How a request's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sends {
    Nothing,
    Length(u64),
    Chunked,
}

/// A request ready to go: its head encoded, and what its body needs.
#[derive(Debug, Clone)]
pub struct Head {
    bytes: Bytes,
    sends: Sends,
    /// A response to HEAD has no body, whatever its `Content-Length` says.
    head_request: bool,
}

/// Changes to a request's own fields on their way out (the reverse proxy's forwarding headers).
pub trait Rewrite: Sync {
    /// Whether the request's own field `name` is left out.
    fn drops(&self, name: &HeaderName) -> bool;
    /// Writes the fields that follow the request's own.
    fn add(&self, out: &mut Fields<'_>);
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
        })
    }
}

fn field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An exchange that failed, with how far it got: a request none of which was written can go
/// out again on another connection, and one a kept-alive connection closed under before any
/// response came may be replayed.
#[derive(Debug)]
pub struct Failure {
    /// Some of the request was written.
    pub sent: bool,
    /// Some of a response was read.
    pub answered: bool,
    /// What went wrong.
    pub error: Error,
}

/// The head of a response, and how to read its body off the connection.
pub struct Response {
    /// Status, version and fields, framing fields included.
    pub parts: http::response::Parts,
    /// How its body is read.
    pub body: Framing,
    /// The connection can take another request once the body has been read.
    pub keep_alive: bool,
}

/// One connection to a backend, and what has been read from it but not yet used.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// How much of a partial head in `buf` is known to hold no blank line, so that a head
    /// arriving a byte at a time is searched once, not parsed again from its start per byte.
    scanned: usize,
}

impl Conn {
    /// A new connection.
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    /// Whether an idle connection can take a request: the backend has neither closed it nor
    /// sent anything since the last response. Asks the socket without waiting.
    pub fn reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        self.buf.is_empty()
            && matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `head` and `body`, and reads the response head. The body is sent while the response
    /// is awaited, so a backend that answers early (a 413, say) is heard; the rest of the body
    /// is then not sent, and the connection is not kept.
    pub async fn exchange(&mut self, head: &Head, body: &mut Body) -> Result<Response, Failure> {
        let failed = |sent, answered, error| Failure {
            sent,
            answered,
            error,
        };
        let mut written = 0;
        while written < head.bytes.len() {
            match tokio::io::AsyncWriteExt::write(&mut self.io, &head.bytes[written..]).await {
                Ok(0) => {
                    return Err(failed(
                        written > 0,
                        false,
                        io::Error::from(io::ErrorKind::WriteZero).into(),
                    ));
                }
                Ok(n) => written += n,
                Err(e) => return Err(failed(written > 0, false, e.into())),
            }
        }
        let mut sending = (head.sends != Sends::Nothing).then(|| Sending {
            body,
            sends: head.sends,
            sent: 0,
            out: Bytes::new(),
            ended: false,
        });
        // A write that failed is reported only if no response comes: a backend may answer and
        // close without reading the rest of the body.
        let mut write_error = None;
        let result = std::future::poll_fn(|cx| {
            if let Some(s) = &mut sending {
                match s.poll_send(&mut self.io, cx) {
                    Poll::Ready(Ok(())) => sending = None,
                    Poll::Ready(Err(Error::Io(e))) => {
                        write_error = Some(e);
                        sending = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            self.poll_head(cx, head.head_request)
        })
        .await;
        match result {
            Ok(mut resp) => {
                // Answered before the whole body went out: what is left of it would be read
                // as the next request.
                if sending.is_some() || write_error.is_some() {
                    resp.keep_alive = false;
                }
                Ok(resp)
            }
            Err(e) => {
                let answered = !self.buf.is_empty() || matches!(e, Error::Malformed(_));
                let error = match (e, write_error) {
                    (Error::Closed | Error::Io(_), Some(w)) => Error::Io(w),
                    (e, _) => e,
                };
                Err(failed(true, answered, error))
            }
        }
    }

    /// Reads until a final response head has arrived; interim (1xx) ones are dropped.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<Response, Error>> {
        loop {
            // Parsed when its first bytes come (what is not HTTP is refused at once), then
            // only once a blank line has come: a head may come in many pieces, and parsing it
            // again from its start for each would cost the square of its length.
            let first = self.scanned == 0 && !self.buf.is_empty();
            if first || has_blank_line(&self.buf, self.scanned) {
                self.scanned = 0;
                if let Some(resp) = parse_head(&mut self.buf, head_request)? {
                    return Poll::Ready(Ok(resp));
                }
            }
            self.scanned = self.buf.len();
            if self.buf.len() >= MAX_HEAD {
                return Poll::Ready(Err(Error::Malformed("response head larger than 64 KiB")));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(if self.buf.is_empty() {
                    Error::Closed
                } else {
                    Error::Truncated("head")
                }));
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// The next piece of a body framed as `framing`, `None` at its end. Bytes past the end stay
    /// in the buffer (where they keep the connection from being reused).
    pub fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            let step = match framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) => {
                    if self.buf.is_empty() {
                        None
                    } else {
                        let n = (*left).min(self.buf.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            *framing = Framing::Done;
                        }
                        Some(self.buf.split_to(n).freeze())
                    }
                }
                Framing::Chunked(state) => match state.decode(&mut self.buf) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Decoded::Data(data)) => Some(data),
                    Ok(Decoded::End) => {
                        *framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => None,
                },
                Framing::UntilClose => (!self.buf.is_empty()).then(|| self.buf.split().freeze()),
            };
            if let Some(data) = step {
                return Poll::Ready(Some(Ok(data)));
            }
            match ready!(self.poll_fill(cx)) {
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                Ok(0) if matches!(framing, Framing::UntilClose) => {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(Error::Truncated("body")))),
                Ok(_) => {}
            }
        }
    }

    /// Nothing read past the end of the last response.
    pub fn drained(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A request body being written.
struct Sending<'a> {
    body: &'a mut Body,
    sends: Sends,
    sent: u64,
    /// Bytes taken from the body and not yet written.
    out: Bytes,
    ended: bool,
}

impl Sending<'_> {
    fn poll_send(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while !self.out.is_empty() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.out.advance(n);
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let frame = ready!(Pin::new(&mut *self.body).poll_frame(cx));
            let data = match frame {
                Some(Err(e)) => return Poll::Ready(Err(Error::Body(e))),
                // Trailers are not sent: the body is framed before they are known.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                None => {
                    self.ended = true;
                    match self.sends {
                        Sends::Chunked => self.out = Bytes::from_static(b"0\r\n\r\n"),
                        Sends::Length(n) if self.sent != n => {
                            return Poll::Ready(Err(Error::Body(
                                "request body shorter than its length".into(),
                            )));
                        }
                        _ => {}
                    }
                    continue;
                }
            };
            self.sent += data.len() as u64;
            self.out = match self.sends {
                Sends::Length(n) if self.sent > n => {
                    return Poll::Ready(Err(Error::Body(
                        "request body longer than its length".into(),
                    )));
                }
                Sends::Chunked => {
                    let mut framed = BytesMut::with_capacity(data.len() + 20);
                    let _ = write!(framed, "{:x}\r\n", data.len());
                    framed.extend_from_slice(&data);
                    framed.extend_from_slice(b"\r\n");
                    framed.freeze()
                }
                _ => data,
            };
        }
    }
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

/// Whether `buf` holds an empty line (the end of a head: LF LF, or LF CR LF) that ends past
/// `scanned`, the part already searched.
fn has_blank_line(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    buf.get(from..).is_some_and(|rest| {
        rest.iter().enumerate().any(|(i, b)| {
            *b == b'\n'
                && (rest.get(i + 1) == Some(&b'\n')
                    || (rest.get(i + 1) == Some(&b'\r') && rest.get(i + 2) == Some(&b'\n')))
        })
    })
}

/// Parses a final response head off the front of `buf`, dropping interim ones before it;
/// `None` until the head is whole.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Response>, Error> {
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
            // Interim responses (100 Continue, 103 Early Hints) are not forwarded.
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
        let keep_alive = reusable && keeps_alive(version, &headers);
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
fn framing(
    head_request: bool,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|c| !c.is_empty())
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
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
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for n in value.as_bytes().split(|b| *b == b',') {
            let n = n.trim_ascii();
            let parsed = (!n.is_empty() && n.len() <= 19 && n.iter().all(u8::is_ascii_digit))
                .then(|| n.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
                .ok_or(Error::Malformed("Content-Length"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(Error::Malformed("Content-Length values differ"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

/// Whether the backend keeps the connection after this response (RFC 9112 §9.3).
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
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

/// Where a chunked body's decoder is (RFC 9112 §7.1).
#[derive(Debug)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines (dropped) until an empty one; bytes seen so far.
    Trailers(usize),
}

enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

/// The line at the front of `buf` without its line ending (a bare LF is taken too, as RFC 9112
/// §2.2 allows), and the length to advance past it; `None` while it has no end.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line = &buf[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match self {
                Self::Size => {
                    let Some((text, used)) = line(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(Error::Malformed("chunk size line too long"))
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
                        return Err(Error::Malformed("chunk size"));
                    }
                    let size = digits.iter().fold(0u64, |acc, d| {
                        acc * 16 + u64::from((*d as char).to_digit(16).unwrap_or_default())
                    });
                    buf.advance(used);
                    *self = if size == 0 {
                        Self::Trailers(0)
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
                        return Err(Error::Malformed("chunk data longer than its size"));
                    }
                    *self = Self::Size;
                }
                Self::Trailers(seen) => {
                    // Each line is bounded like a chunk-size line, so that one arriving in
                    // pieces is searched a bounded number of times.
                    let Some((text, used)) = line(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE || *seen + buf.len() > MAX_HEAD {
                            Err(Error::Malformed(
                                "trailer line over 4 KiB or trailers over 64 KiB",
                            ))
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    let empty = text.is_empty();
                    buf.advance(used);
                    if empty {
                        return Ok(Decoded::End);
                    }
                    *seen += used;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Option<Response>, Error> {
        parse_head(&mut BytesMut::from(text), false)
    }

    #[test]
    fn a_response_head_is_parsed_and_its_body_framed() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\nX-Empty:\r\n\r\nhello"[..],
        );
        let resp = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(resp.parts.status, StatusCode::OK);
        assert_eq!(resp.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(resp.parts.headers["x-empty"], "");
        assert!(matches!(resp.body, Framing::Length(5)));
        assert!(resp.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

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
            parse_head(&mut BytesMut::from(head), head_request).map(|r| {
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

    fn dechunk(wire: &[u8]) -> Result<(Vec<u8>, bool), Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // One byte at a time: every state must wait for more at any point.
        for b in wire {
            buf.extend_from_slice(&[*b]);
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End => return Ok((out, buf.is_empty())),
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
        assert!(matches!(dechunk(b"zz\r\n"), Err(Error::Malformed(_))));
        assert!(matches!(dechunk(b"2\r\nabc\r\n"), Err(Error::Malformed(_))));
        assert!(matches!(
            dechunk(b"1000000000000000\r\n"),
            Err(Error::Malformed(_))
        ));
        let long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(matches!(dechunk(long.as_bytes()), Err(Error::Malformed(_))));
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
            match parse_head(&mut buf, false) {
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
                Framing::Chunked(state) => match state.decode(&mut buf) {
                    Err(e) => return Some(Err(e)),
                    Ok(Decoded::Data(d)) => {
                        assert!(!d.is_empty(), "empty data frame");
                        body.extend_from_slice(&d);
                        true
                    }
                    Ok(Decoded::End) => {
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

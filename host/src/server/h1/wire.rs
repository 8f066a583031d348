//! One HTTP/1 connection's socket and read buffer, shared by the connection's loop (which reads
//! heads and writes responses) and the body of the request in progress (which whoever handles
//! the request reads, in whatever task).
//!
//! Neither side holds the lock across an await: each poll takes it for one read or write, so
//! a response body that streams the request body back (an echo) reads and writes in turn.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::AsyncWrite;

use super::request::Framing;
use crate::http1::{Decoded, InterimSink};
use crate::server::conn::Socket;

/// How much the read buffer grows by when it needs room: 8 KiB, hyper's first read buffer,
/// since every idle keep-alive connection holds one (10,000 of them: 80 MiB).
const READ_CHUNK: usize = 8 * 1024;

/// What a client is sent when it asked to be told to go on with its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A connection's socket and what has been read off it and not yet used.
pub struct Wire {
    io: Socket,
    /// Bytes read and not yet parsed: the rest of a head, a body, pipelined requests.
    pub buf: BytesMut,
    /// What is left of the current request's body.
    pub body: Framing,
    /// Which of the connection's requests `body` belongs to.
    request: u64,
    /// Bytes of `100 Continue` written, while it is owed (the client asked, and neither its
    /// body nor the response has begun).
    continue_owed: Option<usize>,
    /// The current request may still be sent interim responses (HTTP/1.1, no response begun).
    interim_open: bool,
    /// Interim responses not yet written whole, written before the response.
    pending: BytesMut,
}

/// A [`Wire`] as both sides hold it.
pub type Shared = Arc<Mutex<Wire>>;

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client closed the connection before the body ended.
    #[error("the client closed the connection in the middle of the request body")]
    Closed,
    /// The chunked framing is broken.
    #[error("malformed chunked request body: {0}")]
    Malformed(&'static str),
    /// Reading the socket failed.
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
    /// The body failed earlier, or its request's response is over and the connection has
    /// moved on.
    #[error("the request body can no longer be read")]
    Gone,
}

impl Wire {
    /// A connection's socket with `buf` already read off it.
    pub fn new(io: Socket, buf: BytesMut) -> Shared {
        Arc::new(Mutex::new(Self {
            io,
            buf,
            body: Framing::Done,
            request: 0,
            continue_owed: None,
            interim_open: false,
            pending: BytesMut::new(),
        }))
    }

    /// The socket and unread bytes back, once nothing else holds the wire.
    pub fn into_parts(wire: Shared) -> Option<(Socket, BytesMut)> {
        let wire = Arc::into_inner(wire)?.into_inner();
        Some((wire.io, wire.buf))
    }

    /// Begins request number `request`, whose body is framed as `body`; `interim`: its client
    /// may be sent interim responses (an HTTP/1.1 client).
    pub fn begin(&mut self, request: u64, body: Framing, expect_continue: bool, interim: bool) {
        self.request = request;
        self.interim_open = interim;
        self.continue_owed = (expect_continue && !matches!(body, Framing::Done)).then_some(0);
        self.body = body;
    }

    /// The response has begun: `100 Continue` is no longer sent. Returns whether the client
    /// was still waiting for it, so may or may not send its body: the connection cannot be
    /// read on unambiguously.
    pub fn responding(&mut self) -> bool {
        self.interim_open = false;
        let owed = self.continue_owed.take();
        if let Some(sent) = owed.filter(|sent| *sent > 0) {
            // Begun: the rest goes out before the response.
            self.pending.extend_from_slice(&CONTINUE[sent..]);
        }
        owed.is_some() && !matches!(self.body, Framing::Done)
    }

    /// Interim responses that must go out before the response, taken.
    pub fn take_pending(&mut self) -> BytesMut {
        std::mem::take(&mut self.pending)
    }

    /// Writes an interim response now if the socket takes it at once (it is empty while a
    /// request waits for its response), else keeps the rest for before the response. Dropped
    /// once the response has begun, or for an HTTP/1.0 client.
    fn send_interim(&mut self, status: http::StatusCode, fields: &http::HeaderMap) {
        if !self.interim_open {
            return;
        }
        let head = super::response::interim(status, fields);
        let mut written = 0;
        // Never in the middle of a `100 Continue` or behind what is already waiting.
        if self.pending.is_empty() && self.continue_owed.is_none_or(|sent| sent == 0) {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            while written < head.len() {
                match Pin::new(&mut self.io).poll_write(&mut cx, &head[written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => written += n,
                    _ => break,
                }
            }
            let _ = Pin::new(&mut self.io).poll_flush(&mut cx);
        }
        self.pending.extend_from_slice(&head[written..]);
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Writes what it can of `bufs`, as one `writev` where the socket takes several.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    /// Flushes what the TLS layer holds.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Ends the writing side (TLS: its close_notify).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// The next piece of request `request`'s body (data, or its trailers last); `None` at its
    /// end.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        request: u64,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if request != self.request {
            return Poll::Ready(Some(Err(BodyError::Gone)));
        }
        loop {
            match &mut self.body {
                Framing::Done => return Poll::Ready(None),
                Framing::Broken => return Poll::Ready(Some(Err(BodyError::Gone))),
                Framing::Length(left) => {
                    if !self.buf.is_empty() {
                        let n = (*left).min(self.buf.len() as u64);
                        *left -= n;
                        if *left == 0 {
                            self.body = Framing::Done;
                        }
                        let data = self.buf.split_to(n as usize).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(chunked) => match chunked.decode(&mut self.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End(trailers)) => {
                        self.body = Framing::Done;
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        self.body = Framing::Broken;
                        return Poll::Ready(Some(Err(BodyError::Malformed(e.0))));
                    }
                },
            }
            if let Err(e) = ready!(self.poll_continue(cx)) {
                self.body = Framing::Broken;
                return Poll::Ready(Some(Err(e.into())));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.body = Framing::Broken;
                    return Poll::Ready(Some(Err(BodyError::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.body = Framing::Broken;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Sends `100 Continue` if it is owed: the body is wanted and has not begun arriving.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(sent) = self.continue_owed {
            if sent == CONTINUE.len() {
                ready!(self.poll_flush(cx))?;
                self.continue_owed = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &CONTINUE[sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_owed = Some(sent + n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Where a connection's interim responses go: its wire, while the connection lives.
pub struct ToClient(pub std::sync::Weak<Mutex<Wire>>);

impl InterimSink for ToClient {
    fn send(&self, status: http::StatusCode, fields: &http::HeaderMap) {
        if let Some(wire) = self.0.upgrade() {
            wire.lock().send_interim(status, fields);
        }
    }
}

/// The body of a request read by plughost's HTTP/1 server, streamed off the connection as it
/// is read.
pub struct Body {
    wire: Option<Shared>,
    request: u64,
    /// What is left of it, when it has a `Content-Length`.
    length: Option<u64>,
}

impl Body {
    /// The body of request number `request` on `wire`, framed as `framing`.
    pub fn new(wire: &Shared, request: u64, framing: &Framing) -> Self {
        let length = match framing {
            Framing::Done => Some(0),
            Framing::Length(n) => Some(*n),
            Framing::Chunked(_) | Framing::Broken => None,
        };
        Self {
            wire: (length != Some(0)).then(|| wire.clone()),
            request,
            length,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(wire) = &self.wire else {
            return Poll::Ready(None);
        };
        let polled = wire.lock().poll_body(cx, self.request);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.length = self.length.map(|n| n.saturating_sub(data.len() as u64));
                }
            }
            // The wire is let go as soon as the body ends, so the connection has it alone.
            Poll::Ready(None | Some(Err(_))) => self.wire = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.wire.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.length, &self.wire) {
            (_, None) => SizeHint::with_exact(0),
            (Some(n), Some(_)) => SizeHint::with_exact(n),
            (None, Some(_)) => SizeHint::default(),
        }
    }
}

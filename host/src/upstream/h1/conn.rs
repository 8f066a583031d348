//! One kept-alive connection to a backend: the request written in one write (its body after
//! it, as it streams), the response head read off the socket into the connection's buffer,
//! and the body read by whoever reads the body.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::body::Body;

use super::error::Error;
use super::request::{Head, Sends};
use super::response::{Framing, MAX_HEAD, READ_CHUNK, Response, parse_head};
use crate::http1::{Decoded, has_blank_line};

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

    /// The same connection in the event loop of the runtime this runs on (a worker's), out
    /// of the one it was opened in.
    pub fn rehome(self) -> io::Result<Self> {
        Ok(Self {
            io: TcpStream::from_std(self.io.into_std()?)?,
            ..self
        })
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
            self.poll_head(cx, head)
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

    /// Reads until a final response head has arrived; interim (1xx) ones are dropped, but for
    /// `103 Early Hints`, passed on where `head` says.
    fn poll_head(&mut self, cx: &mut Context<'_>, head: &Head) -> Poll<Result<Response, Error>> {
        loop {
            // Parsed when its first bytes come (what is not HTTP is refused at once), then
            // only once a blank line has come: a head may come in many pieces, and parsing it
            // again from its start for each would cost the square of its length.
            let first = self.scanned == 0 && !self.buf.is_empty();
            if first || has_blank_line(&self.buf, self.scanned) {
                self.scanned = 0;
                if let Some(resp) =
                    parse_head(&mut self.buf, head.head_request, head.interim.as_ref())?
                {
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
                Framing::Chunked(state) => match state.decode(&mut self.buf).map_err(Error::from) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Decoded::Data(data)) => Some(data),
                    Ok(Decoded::End(_)) => {
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
pub(super) struct Sending<'a> {
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

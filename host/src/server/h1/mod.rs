//! plughost's own HTTP/1.1 server connection: request heads parsed by httparse (hyper's own
//! parser) straight into `http` types, bodies streamed off the socket as the handler reads
//! them, responses written with one `writev` for the head and the body's first piece. HTTP/2
//! (prior knowledge or ALPN: both begin with its preface) goes to hyper.
//!
//! Written by hand rather than served by hyper's HTTP/1 connection: without hyper's
//! dispatcher, body channel and buffered writes between the socket and the pipeline, a request
//! costs 3–4% fewer instructions (callgrind, BENCHMARKS.md "Serving design"). This loop does
//! only what plughost needs: keep-alive and pipelining, `100 Continue`, framing by RFC 9112 §6
//! with every ambiguous framing refused, and the limits of `max_header_bytes` and
//! `max_headers`. The connection's deadlines stay with the
//! listener's sweeper ([`super::conn`]).
//!
//! [`request`] reads a head, [`response`] writes one, [`wire`] is the socket both share with
//! the request body.

pub mod request;
pub mod response;
pub mod wire;

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::Body as _;

use super::conn::{Close, ConnState, Socket};
use crate::body::Body;
use crate::client::Client;
use crate::http1::Interim;
use crate::http1::has_blank_line;
use request::{Framing, Head, Refused};
use response::Asked;
use wire::{Shared, Wire};

/// How much of a body a handler left unread is read and dropped to keep the connection; past
/// it the connection closes instead (nginx's `lingering` reads are bounded the same way).
const DRAIN_MAX: u64 = 64 * 1024;

/// The preface every HTTP/2 connection begins with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's limits allow a head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Largest head, in bytes.
    pub bytes: usize,
    /// Most fields.
    pub fields: usize,
}

/// How an HTTP/1 connection ended.
pub enum Ended {
    /// The client or plughost closed it after a request, or it failed.
    Done,
    /// It was asked to close (a deadline, a reclaim, shutdown) while it had no request.
    Closed(Close),
    /// It began with the HTTP/2 preface: the socket and what has been read, for hyper.
    Http2(Socket, Bytes),
}

/// Serves HTTP/1.1 requests on `io` with `handler` until the connection ends.
pub async fn serve<H, F>(
    io: Socket,
    state: &Arc<ConnState>,
    limits: HeadLimits,
    client: &Client,
    https: bool,
    handler: &H,
) -> Ended
where
    H: Fn(Request<wire::Body>, Client) -> F,
    F: Future<Output = Response<Body>>,
{
    let wire = Wire::new(io, BytesMut::new());
    let client = &client.with_interim(Interim(Arc::new(wire::ToClient(Arc::downgrade(&wire)))));
    // Each response head is written here, reused rather than allocated a response.
    let mut out = BytesMut::new();
    let mut request = 0u64;
    loop {
        let head = tokio::select! {
            biased;
            reason = state.closed() => return Ended::Closed(reason),
            head = next_head(&wire, limits, request == 0) => head,
        };
        let head = match head {
            Ok(Next::Head(head)) => head,
            Ok(Next::Eof) => break,
            Ok(Next::Http2) => {
                return match Wire::into_parts(wire) {
                    Some((io, buf)) => Ended::Http2(io, buf.freeze()),
                    None => Ended::Done,
                };
            }
            Err(refused) => {
                tracing::debug!(client = %client, status = refused.status().as_u16(), reason = ?refused, "request head refused");
                let refusal = response::refusal(refused.status());
                tokio::select! {
                    _ = write_all(&wire, [IoSlice::new(&refusal)]) => {}
                    _ = state.closed() => {}
                }
                break;
            }
        };
        request += 1;
        let busy = state.begin(false);
        let Head {
            parts,
            body,
            keep_alive,
            expect_continue,
        } = head;
        let asked = Asked {
            head: parts.method == Method::HEAD,
            version: parts.version,
            keep_alive,
        };
        let mut req = Request::from_parts(parts, wire::Body::new(&wire, request, &body));
        let interim = asked.version == http::Version::HTTP_11;
        wire.lock().begin(request, body, expect_continue, interim);
        if https {
            req.extensions_mut().insert(crate::proxy::Https);
        }
        let handling = pin!(handler(req, client.clone()));
        let resp = tokio::select! {
            biased;
            resp = handling => resp,
            // hyper's default too: a client that closes its side is gone, and its request
            // is dropped wherever it is.
            () = hung_up(&wire, limits.bytes) => break,
        };
        let (keep, pending) = {
            let mut w = wire.lock();
            let undecided = w.responding();
            let drainable = !undecided
                && match w.body {
                    Framing::Done => true,
                    Framing::Length(n) => n <= DRAIN_MAX,
                    Framing::Chunked(_) | Framing::Broken => false,
                };
            (drainable && state.closing().is_none(), w.take_pending())
        };
        if !pending.is_empty() && write_all(&wire, [IoSlice::new(&pending)]).await.is_err() {
            break;
        }
        let asked = Asked {
            keep_alive: asked.keep_alive && keep,
            ..asked
        };
        out.clear();
        let kept = match write_response(&wire, &mut out, resp, asked).await {
            Ok(kept) => kept,
            Err(e) => {
                tracing::debug!(client = %client, error = %e, "response not sent whole");
                false
            }
        };
        drop(busy);
        if !kept {
            break;
        }
        let drained = tokio::select! {
            drained = drain(&wire) => drained,
            reason = state.closed() => return Ended::Closed(reason),
        };
        if !drained {
            break;
        }
        // Bytes of the next head read ahead while this request ran start its deadline now,
        // as bytes arriving between requests do.
        if !wire.lock().buf.is_empty() {
            state.bytes_arrived();
        }
    }
    // Best effort: TLS's close_notify, the TCP FIN after what was written.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        poll_fn(|cx| wire.lock().poll_shutdown(cx)),
    )
    .await;
    Ended::Done
}

/// What came next on a connection.
enum Next {
    Head(Head),
    /// The client closed the connection between requests.
    Eof,
    /// The connection's first bytes were the HTTP/2 preface.
    Http2,
}

/// Reads the next request head; on a connection's `first`, tells the HTTP/2 preface apart.
async fn next_head(wire: &Shared, limits: HeadLimits, first: bool) -> Result<Next, Refused> {
    // How much of the buffer has been searched for a head's end.
    let mut scanned = 0;
    poll_fn(|cx| {
        let mut w = wire.lock();
        loop {
            let preface = first
                && !w.buf.is_empty()
                && H2_PREFACE.starts_with(&w.buf[..w.buf.len().min(H2_PREFACE.len())]);
            if preface && w.buf.len() >= H2_PREFACE.len() {
                return Poll::Ready(Ok(Next::Http2));
            }
            // Parsed when its first bytes come (what is not HTTP is refused at once), then
            // only once a blank line has come: a head may come a byte at a time, and parsing
            // it again from its start for each would cost the square of its length.
            if !preface
                && !w.buf.is_empty()
                && (scanned == 0 || has_blank_line(&w.buf, scanned))
                && let Some(head) = request::parse(&mut w.buf, limits.bytes, limits.fields)?
            {
                return Poll::Ready(Ok(Next::Head(head)));
            }
            scanned = w.buf.len();
            if w.buf.len() >= limits.bytes {
                return Poll::Ready(Err(Refused::TooLarge));
            }
            match std::task::ready!(w.poll_fill(cx)) {
                Ok(0) if w.buf.iter().all(u8::is_ascii_whitespace) => {
                    return Poll::Ready(Ok(Next::Eof));
                }
                Ok(0) => {
                    return Poll::Ready(Err(Refused::Malformed("connection closed inside a head")));
                }
                Ok(_) => {}
                Err(_) => return Poll::Ready(Ok(Next::Eof)),
            }
        }
    })
    .await
}

/// Completes when the client has closed the connection while its request is being handled.
/// Reads ahead (pipelined requests) only once the request body has been read, so the two never
/// read the socket at once, and only up to a head's limit.
async fn hung_up(wire: &Shared, max: usize) {
    poll_fn(|cx| {
        let mut w = wire.lock();
        while matches!(w.body, Framing::Done) && w.buf.len() < max {
            match w.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    })
    .await;
}

/// Writes every byte of `bufs`.
async fn write_all<const N: usize>(wire: &Shared, mut bufs: [IoSlice<'_>; N]) -> io::Result<()> {
    let mut bufs = &mut bufs[..];
    poll_fn(|cx| {
        let mut w = wire.lock();
        while bufs.iter().any(|b| !b.is_empty()) {
            let n = std::task::ready!(w.poll_write(cx, bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
        w.poll_flush(cx)
    })
    .await
}

/// Writes `resp`: its head with the body's first piece when that is ready at once, then the
/// rest as it comes. Returns whether the connection can carry another request; an error when
/// the client went away or the body failed (a body cut short cannot be told to the client
/// other than by closing).
async fn write_response(
    wire: &Shared,
    head: &mut BytesMut,
    resp: Response<Body>,
    asked: Asked,
) -> io::Result<bool> {
    let (mut parts, mut body) = resp.into_parts();
    let (framing, keep_alive) = response::encode_head(head, &mut parts, &body.size_hint(), asked);
    if framing == response::Framing::None {
        // Dropped unread, as a HEAD's body is.
        write_all(wire, [IoSlice::new(head)]).await?;
        return Ok(keep_alive);
    }
    let mut left = match framing {
        response::Framing::Length(n) => Some(n),
        _ => None,
    };
    let mut head = Some(&head[..]);
    let mut trailers = None;
    loop {
        // The head goes alone when the first piece is not ready at once (a stream that begins
        // later), so the client has it without waiting.
        let frame = match head.as_ref() {
            Some(h) => {
                match poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut body).poll_frame(cx))).await
                {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        write_all(wire, [IoSlice::new(h)]).await?;
                        head = None;
                        poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
                    }
                }
            }
            None => poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await,
        };
        let before: &[u8] = head.unwrap_or_default();
        match frame {
            None => {
                let end = match framing {
                    response::Framing::Chunked => {
                        response::last_chunk(&parts.headers, trailers.as_ref())
                    }
                    _ => BytesMut::new(),
                };
                write_all(wire, [IoSlice::new(before), IoSlice::new(&end)]).await?;
                // A body shorter than its length leaves the client waiting for the rest.
                return match left {
                    Some(0) | None => Ok(keep_alive),
                    Some(_) => Err(io::Error::other(
                        "the response body ended before its Content-Length",
                    )),
                };
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => {
                let mut data = match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        continue;
                    }
                };
                if data.is_empty() {
                    continue;
                }
                if let Some(left) = &mut left {
                    let n = (*left).min(data.len() as u64) as usize;
                    if n < data.len() {
                        data.truncate(n);
                        write_all(wire, [IoSlice::new(before), IoSlice::new(&data)]).await?;
                        return Err(io::Error::other(
                            "the response body is longer than its Content-Length",
                        ));
                    }
                    *left -= n as u64;
                }
                if framing == response::Framing::Chunked {
                    let size = response::ChunkSize::new(data.len());
                    write_all(
                        wire,
                        [
                            IoSlice::new(before),
                            IoSlice::new(size.as_bytes()),
                            IoSlice::new(&data),
                            IoSlice::new(b"\r\n"),
                        ],
                    )
                    .await?;
                } else {
                    write_all(wire, [IoSlice::new(before), IoSlice::new(&data)]).await?;
                }
                head = None;
            }
        }
    }
}

/// After a response, reads and drops what the handler left of its request body, so the next
/// request's head is next on the wire. Returns whether the connection can go on.
async fn drain(wire: &Shared) -> bool {
    poll_fn(|cx| {
        let mut guard = wire.lock();
        let w = &mut *guard;
        loop {
            match &mut w.body {
                Framing::Done => return Poll::Ready(true),
                Framing::Length(left) if *left <= DRAIN_MAX => {
                    let n = (*left).min(w.buf.len() as u64);
                    w.buf.advance(n as usize);
                    *left -= n;
                    if *left == 0 {
                        w.body = Framing::Done;
                        return Poll::Ready(true);
                    }
                }
                _ => return Poll::Ready(false),
            }
            match w.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

//! Kept-alive HTTP/1.1 connections to one backend, driven in the task of the request that uses
//! them.
//!
//! hyper-util's pooled client runs every connection in a task of its own: the request's task
//! hands the request over a channel, the connection's task writes it, reads the response and
//! hands it back over another, and the body's chunks cross a third, with two more wake-ups,
//! often on the other core. Here, as in Pingora, a request takes an idle connection (or opens
//! one), polls the connection itself while it waits for the response head, and the response
//! body polls it while the body is read; the connection goes back to the idle list when the
//! body has been read to its end. A proxied request went from 85,115 to 80,927 instructions
//! (callgrind, `bench/profile.py`, path `proxy`).
//!
//! What hyper's `client::conn` does not do, and this module does: the idle list (LIFO, bounded, idle connections closed after `IDLE_TIMEOUT`), the
//! check that an idle connection is still open before it is reused, a request that a
//! reused connection refused before sending anything going out again on a new one, and
//! telling the caller when a reused connection closed under a request (`SendError::Stale`)
//! so that one which can be replayed is sent again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::body::Body;

/// Idle connections kept per backend: enough for the 64-connection loads of `make bench`.
const IDLE_PER_BACKEND: usize = 256;

/// How long an idle connection is kept (hyper-util's default was the same).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request did not get a response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(io::Error),
    /// The exchange failed on a connection.
    Http(hyper::Error),
    /// A kept-alive connection was closed by the backend as the request went out (its
    /// keep-alive timeout ran out just then): no response came, and a request that can be
    /// replayed may be sent again.
    Stale(hyper::Error),
}

/// One connection: the handle requests are sent with, and the state machine that does the IO.
/// Boxed once per connection, so checking it out and in moves two pointers.
struct Conn {
    send: http1::SendRequest<Body>,
    io: Pin<Box<http1::Connection<TokioIo<TcpStream>, Body>>>,
}

impl Conn {
    /// Polls the connection's IO; `true` once it has ended (closed or failed), after which
    /// it must not be polled again.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.as_mut().poll(cx).is_ready()
    }

    /// Whether an idle connection can take a request now. Polling it reads what the backend
    /// sent while it was idle (a close, or bytes it had no reason to send), and lets hyper
    /// finish the last exchange; a connection that is not ready after that is not waited for.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        !self.drive(cx) && matches!(self.send.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

/// The idle connections to one backend. A lock rather than per-worker lists: it is held for
/// one push or pop, and with two workers it is nearly never contended.
pub struct Connections {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Connections {
    /// No connections yet to `addr`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            addr,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// Closes connections idle past `IDLE_TIMEOUT`; the pool's health-check loop calls it, so
    /// a backend nobody sends to does not keep sockets open.
    pub fn close_idle(&self) {
        let now = Instant::now();
        self.idle
            .lock()
            .retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
    }

    /// The most recently used idle connection that is still open.
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.idle.lock().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                // Everything under it has been idle longer still.
                self.close_idle();
                return None;
            }
            if std::future::poll_fn(|cx| Poll::Ready(conn.reusable(cx))).await {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_PER_BACKEND {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| SendError::Connect(io::ErrorKind::TimedOut.into()))?
            .map_err(SendError::Connect)?;
        // Request heads are written whole; Nagle would only delay them.
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (send, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        Ok(Conn {
            send,
            io: Box::pin(io),
        })
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or a new one, and
    /// resolves to the response head; the body streams through the same connection. A request
    /// an idle connection turned down before writing any of it goes out on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Upstream>, SendError> {
        if let Some(conn) = self.checkout().await {
            match self.exchange(conn, req).await {
                Err(Failed(Some(back), _)) => req = back,
                Err(Failed(None, e)) if closed_under_us(&e) => return Err(SendError::Stale(e)),
                Err(Failed(None, e)) => return Err(SendError::Http(e)),
                Ok(resp) => return Ok(resp),
            }
        }
        let conn = self.connect().await?;
        self.exchange(conn, req)
            .await
            .map_err(|Failed(_, e)| SendError::Http(e))
    }

    /// One request on `conn`, polling the connection while the response head is awaited.
    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        req: Request<Body>,
    ) -> Result<Response<Upstream>, Failed> {
        let mut head = std::pin::pin!(conn.send.try_send_request(req));
        let mut open = true;
        let result = std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the head the response
            // future then finds. Once it has ended it fails the response future itself.
            if open && conn.drive(cx) {
                open = false;
            }
            head.as_mut().poll(cx)
        })
        .await;
        match result {
            Ok(resp) => Ok(resp.map(|body| Upstream {
                body,
                conn: open.then_some(conn),
                home: self.clone(),
            })),
            Err(mut e) => Err(Failed(e.take_message(), e.into_error())),
        }
    }
}

/// Whether an exchange failed because the backend closed the connection before any response.
fn closed_under_us(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    e.is_incomplete_message()
        || e.source()
            .and_then(|c| c.downcast_ref::<io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                )
            })
}

/// A failed exchange, with the request when none of it was sent.
struct Failed(Option<Request<Body>>, hyper::Error);

/// A response body read from a backend. Reading it drives its connection, which goes back to
/// the idle list once the body has ended; dropped before that, the connection is closed.
pub struct Upstream {
    body: Incoming,
    conn: Option<Conn>,
    home: Arc<Connections>,
}

impl Upstream {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.checkin(conn);
        }
    }
}

impl http_body::Body for Upstream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn
            && conn.drive(cx)
        {
            // Closed after the response, or failed: a failure reaches the body too.
            this.conn = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // hyper stops reading a body whose length says it has ended, and drops it: the
        // connection is done with this exchange and can take the next.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

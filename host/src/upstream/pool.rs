//! Kept-alive HTTP/1.1 connections to one backend, used in the task of the request that uses
//! them.
//!
//! hyper-util's pooled client runs every connection in a task of its own: the request's task
//! hands the request over a channel, the connection's task writes it, reads the response and
//! hands it back over another, and the body's chunks cross a third, with two more wake-ups,
//! often on the other core. Here, as in Pingora, a request takes an idle connection (or opens
//! one), writes its request and reads the response head itself (`h1`), and the response body
//! reads the same socket; the connection goes back to the idle list when the body has been
//! read to its end. With hyper's `client::conn` driven this way a proxied request went from
//! 85,115 to 80,927 instructions (callgrind 2026-11, `bench/profile.py`, path `proxy`); `h1` then
//! replaced hyper's client (BENCHMARKS.md has the figures).
//!
//! Kept here: the idle list (LIFO, bounded, idle connections closed after `IDLE_TIMEOUT`), the
//! check that an idle connection is still open before it is reused, a request that a
//! reused connection refused before any of it was written going out again on a new one, and
//! telling the caller when a reused connection closed under a request (`SendError::Stale`)
//! so that one which can be replayed is sent again.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::h1::{self, Conn, Framing, Head};
use crate::body::Body;
use crate::workers;

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
    Http(h1::Error),
    /// A kept-alive connection was closed by the backend as the request went out (its
    /// keep-alive timeout ran out just then): no response came, and a request that can be
    /// replayed may be sent again.
    Stale(h1::Error),
}

/// The idle connections to one backend, a list per worker thread (`server::workers`): a
/// connection belongs to the event loop of the worker that opened it, and is reused by that
/// worker only, so its wake-ups stay on that worker's core (nginx keeps its upstream
/// keep-alive connections per worker process the same way). Each list's lock is held for one
/// push or pop and, but for health checks and a request's body read on another thread, only
/// its own worker takes it.
pub struct Connections {
    addr: SocketAddr,
    connect_timeout: Duration,
    /// Index 0 is for threads that are no worker (health checks on the main runtime).
    idle: Box<[Mutex<Vec<(Conn, Instant)>>]>,
}

impl Connections {
    /// No connections yet to `addr`, from any of `workers` threads.
    pub fn new(addr: SocketAddr, connect_timeout: Duration, workers: usize) -> Arc<Self> {
        Arc::new(Self {
            addr,
            connect_timeout,
            idle: (0..=workers).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.idle.iter().map(|l| l.lock().len()).sum()
    }

    /// Closes connections idle past `IDLE_TIMEOUT`; the pool's health-check loop calls it, so
    /// a backend nobody sends to does not keep sockets open.
    pub fn close_idle(&self) {
        let now = Instant::now();
        for list in &self.idle {
            list.lock()
                .retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
        }
    }

    /// The idle list of worker `worker` (of any thread, should the worker count change).
    fn list(&self, worker: usize) -> &Mutex<Vec<(Conn, Instant)>> {
        &self.idle[worker % self.idle.len()]
    }

    /// This worker's most recently used idle connection that is still open; when it has
    /// none, one a thread that is no worker left idle (a health check's), moved into this
    /// worker's event loop. Never another worker's: under load, taking each other's
    /// connections as their lists ran empty in turn, two workers moved connections back and
    /// forth (two `epoll_ctl` calls each time) and the proxy lost 10% (`bench/workers.sh`).
    fn checkout(&self) -> Option<Conn> {
        let here = workers::current();
        if let Some(conn) = self.open_idle(self.list(here)) {
            return Some(conn);
        }
        if here == 0 {
            return None;
        }
        self.open_idle(self.list(0))?.rehome().ok()
    }

    /// The most recently used connection of `list` that is still open.
    fn open_idle(&self, list: &Mutex<Vec<(Conn, Instant)>>) -> Option<Conn> {
        loop {
            let (conn, since) = list.lock().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                // Everything under it has been idle longer still.
                self.close_idle();
                return None;
            }
            if conn.reusable() {
                return Some(conn);
            }
        }
    }

    /// Back to the idle list of `worker`, whose event loop it belongs to.
    fn checkin(&self, conn: Conn, worker: usize) {
        let mut idle = self.list(worker).lock();
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
        Ok(Conn::new(stream))
    }

    /// Sends `head` and `body` on an idle connection, or a new one, and resolves to the response
    /// head; the body streams through the same connection. A request an idle connection turned
    /// down before any of it was written goes out on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        head: &Head,
        mut body: Body,
    ) -> Result<Response<Upstream>, SendError> {
        if let Some(mut conn) = self.checkout() {
            match conn.exchange(head, &mut body).await {
                Ok(resp) => return Ok(self.respond(conn, resp)),
                // Nothing was written, so nothing of the body was read either.
                Err(f) if !f.sent => {}
                Err(f) if closed_under_us(&f) => return Err(SendError::Stale(f.error)),
                Err(f) => return Err(SendError::Http(f.error)),
            }
        }
        let mut conn = self.connect().await?;
        match conn.exchange(head, &mut body).await {
            Ok(resp) => Ok(self.respond(conn, resp)),
            Err(f) => Err(SendError::Http(f.error)),
        }
    }

    fn respond(self: &Arc<Self>, conn: Conn, resp: h1::Response) -> Response<Upstream> {
        let upstream = Upstream {
            conn: Some(conn),
            // Checked out or opened by this worker, so part of its event loop.
            worker: workers::current(),
            framing: resp.body,
            keep_alive: resp.keep_alive,
            home: self.clone(),
        };
        Response::from_parts(resp.parts, upstream)
    }
}

/// Whether an exchange failed because the backend closed a kept-alive connection before any
/// response.
fn closed_under_us(f: &h1::Failure) -> bool {
    !f.answered
        && match &f.error {
            h1::Error::Closed => true,
            h1::Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
}

/// A response body read from a backend. Reading it reads its connection, which goes back to
/// the idle list once the body has ended; dropped before that, the connection is closed.
pub struct Upstream {
    conn: Option<Conn>,
    /// The worker whose idle list it returns to.
    worker: usize,
    framing: Framing,
    keep_alive: bool,
    home: Arc<Connections>,
}

impl Upstream {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.drained()
        {
            self.home.checkin(conn, self.worker);
        }
    }
}

impl http_body::Body for Upstream {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let this = &mut *self;
        let Some(conn) = &mut this.conn else {
            return Poll::Ready(None);
        };
        let next = std::task::ready!(conn.poll_body(&mut this.framing, cx));
        match &next {
            Some(Err(_)) => this.conn = None,
            _ if this.framing.ended() => this.release(),
            _ => {}
        }
        Poll::Ready(next.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.framing.ended()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing
            .remaining()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // A body that has no bytes (HEAD, 204, 304) is dropped without being read: the
        // connection is done with this exchange and can take the next.
        if self.framing.ended() {
            self.release();
        }
    }
}

//! One client connection and the deadlines that keep it from holding a slot for nothing.
//!
//! A socket that sends nothing, an HTTP/2 connection that sends only its preface, a head sent
//! a byte at a time, or an idle keep-alive connection would otherwise stay open for ever, and
//! `max_connections` of them lock every other client out. A connection with no request in
//! progress is therefore closed when
//! - it has had no complete request head for `header_read_timeout` since accept (TLS
//!   handshake included): `no_request`;
//! - it has had no request for `keepalive_timeout` since its last response: `idle`;
//! - an HTTP/1 request head began arriving and is not complete `header_read_timeout` later:
//!   `slow_head` (slowloris);
//! - the listener is at `max_connections` and it is the one idle longest, to make room for a
//!   new client, as nginx does with its keep-alive connections: `reclaimed`.
//!
//! A connection with a request in progress is never closed this way.
//!
//! One sweeper per listener ([`Tracker::sweep`]) checks every connection a few times per
//! limit, rather than each connection keeping timers of its own: hyper's per-request head
//! timer and a per-connection watchdog with its wake-ups cost every request ~1,800
//! instructions (an allocation, timer-wheel inserts and removals, and polls of three
//! `select!` branches on every wake of the connection task; callgrind 2026-11, the default route
//! 21,336–21,730 before and 19,632–19,858 after, BENCHMARKS.md). The connection task itself
//! waits on one flag ([`ConnState::closed`]), and the only per-request work left is a few
//! atomic stores and, between HTTP/1 requests, one clock read.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why plughost closes a connection, as counted in `plughost_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Idle longest when a new client needed the slot.
    Reclaimed,
    /// No complete request head within `header_read_timeout` of accept.
    NoRequest,
    /// No request within `keepalive_timeout` of the last response.
    Idle,
    /// An HTTP/1 head not complete within `header_read_timeout` of its first byte.
    SlowHead,
    /// The server is shutting down: idle connections close, open requests finish.
    Shutdown,
}

impl Close {
    const ALL: [Close; 5] = [
        Close::Reclaimed,
        Close::NoRequest,
        Close::Idle,
        Close::SlowHead,
        Close::Shutdown,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Close::Reclaimed => "reclaimed",
            Close::NoRequest => "no_request",
            Close::Idle => "idle",
            Close::SlowHead => "slow_head",
            Close::Shutdown => "shutdown",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn of_code(code: u8) -> Option<Close> {
        Close::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// The deadlines of a listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// For the first request head from accept, and for any HTTP/1 head from its first byte.
    pub header_read: Duration,
    /// For the next request after a response.
    pub keepalive: Duration,
}

impl Deadlines {
    /// How often the sweeper looks: a quarter of the shorter limit, between 10 ms and 1 s, so
    /// a connection is closed at most that much after its limit (never before).
    fn tick(self) -> Duration {
        (self.header_read.min(self.keepalive) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// The open connections of one listener, so the sweeper and the accept loop can find idle
/// ones.
pub struct Tracker {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    epoch: Instant,
}

/// What the sweeper and the accept loop know of one connection.
pub struct ConnState {
    id: u64,
    /// Requests whose response has not been sent whole yet.
    active: AtomicUsize,
    /// Requests completed.
    served: AtomicU64,
    /// When the connection last became idle (accept, or its last response sent), in ms since
    /// the tracker's epoch.
    idle_since: AtomicU64,
    /// When bytes of an HTTP/1 request head began arriving while idle, in ms since the
    /// epoch plus one; 0 when none have.
    head_since: AtomicU64,
    /// Its requests are HTTP/2, whose frames (pings, settings) are not request heads.
    http2: AtomicBool,
    /// [`Close::code`] of why it must close, 0 while it may stay.
    closing: AtomicU8,
    /// The connection task, woken when `closing` is set.
    waker: AtomicWaker,
    epoch: Instant,
}

/// Milliseconds from `epoch` to now: the unit every time of a [`ConnState`] is kept in.
fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Registers a connection accepted now.
    pub fn open(self: &Arc<Self>) -> Arc<ConnState> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(ms_since(self.epoch)),
            head_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            closing: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            epoch: self.epoch,
        });
        self.conns.lock().insert(id, state.clone());
        state
    }

    /// Forgets a connection that has closed.
    pub fn close(&self, state: &ConnState) {
        self.conns.lock().remove(&state.id);
    }

    /// Asks the connection that has been idle longest to close, so its slot goes to a new
    /// client. Returns whether there was one.
    pub fn reclaim_idle(&self) -> bool {
        let conns = self.conns.lock();
        let oldest = conns
            .values()
            .filter(|c| c.active.load(Ordering::Relaxed) == 0 && c.closing().is_none())
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match oldest {
            Some(c) => {
                c.close(Close::Reclaimed);
                true
            }
            None => false,
        }
    }

    /// Asks every connection to finish: idle ones close, open requests may complete.
    pub fn shut_down(&self) {
        for c in self.conns.lock().values() {
            c.close(Close::Shutdown);
        }
    }

    /// Closes, every tick (a quarter of the shorter limit, 10 ms to 1 s), the connections
    /// past their deadlines. Runs until dropped.
    pub async fn sweep(&self, deadlines: Deadlines) {
        let tick = deadlines.tick();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = ms_since(self.epoch);
            for c in self.conns.lock().values() {
                if let Some(reason) = c.expired(now, deadlines) {
                    c.close(reason);
                }
            }
        }
    }
}

impl ConnState {
    /// A request (of HTTP version 2 when `http2`) has reached the handler; the guard marks it
    /// finished when dropped (with the response body, so a response still streaming keeps the
    /// connection busy).
    pub fn begin(self: &Arc<Self>, http2: bool) -> Busy {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        Busy(self.clone())
    }

    /// Why the connection must close, once it must.
    pub fn closing(&self) -> Option<Close> {
        Close::of_code(self.closing.load(Ordering::Acquire))
    }

    /// Asks the connection to close for `reason`, unless it already has one.
    fn close(&self, reason: Close) {
        if self
            .closing
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// Waits until the connection is asked to close, and says why.
    pub async fn closed(&self) -> Close {
        poll_fn(|cx| {
            if let Some(reason) = self.closing() {
                return Poll::Ready(reason);
            }
            self.waker.register(cx.waker());
            match self.closing() {
                Some(reason) => Poll::Ready(reason),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Why the connection must close at `now` (ms since the epoch), if it must.
    ///
    /// The times it compares are exact; a close comes at most one tick after its limit.
    fn expired(&self, now: u64, deadlines: Deadlines) -> Option<Close> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let idle = now.saturating_sub(self.idle_since.load(Ordering::Relaxed));
        let head = self.head_since.load(Ordering::Relaxed);
        if head > 0 && now.saturating_sub(head - 1) >= ms(deadlines.header_read) {
            return Some(Close::SlowHead);
        }
        if self.served.load(Ordering::Relaxed) == 0 {
            (idle >= ms(deadlines.header_read)).then_some(Close::NoRequest)
        } else {
            (idle >= ms(deadlines.keepalive)).then_some(Close::Idle)
        }
    }

    /// Bytes arrived: with no request in progress on an HTTP/1 connection that has served
    /// one, they begin its next head. (Before the first request the limit from accept is the
    /// earlier one.)
    pub fn bytes_arrived(&self) {
        if self.head_since.load(Ordering::Relaxed) == 0
            && self.active.load(Ordering::Relaxed) == 0
            && self.served.load(Ordering::Relaxed) > 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_since
                .store(ms_since(self.epoch) + 1, Ordering::Relaxed);
        }
    }
}

/// A connection's socket, TLS or not, watched for the deadlines.
pub type Socket = Watched<
    tokio_util::either::Either<
        tokio::net::TcpStream,
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    >,
>;

/// A connection's socket, telling its [`ConnState`] when bytes arrive, so the sweeper knows
/// when a head began.
pub struct Watched<IO> {
    io: IO,
    state: Arc<ConnState>,
}

impl<IO> Watched<IO> {
    /// `io`, reporting to `state`.
    pub fn new(io: IO, state: Arc<ConnState>) -> Self {
        Self { io, state }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request in progress on a connection.
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.served.fetch_add(1, Ordering::Relaxed);
        c.idle_since.store(ms_since(c.epoch), Ordering::Relaxed);
        c.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request's [`Busy`] guard until it is sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    /// `inner`, counted as part of the request `busy`.
    pub fn new(inner: B, busy: Busy) -> Self {
        Self { inner, _busy: busy }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Deadlines = Deadlines {
        header_read: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
    };

    #[test]
    fn every_reason_survives_its_code() {
        for reason in Close::ALL {
            assert_eq!(Close::of_code(reason.code()), Some(reason));
        }
        assert_eq!(Close::of_code(0), None);
    }

    /// The limits at their edges, with the connection's times set by hand (ms since the
    /// tracker's epoch): never closed before a limit, closed at it.
    #[test]
    fn each_limit_applies_when_it_should_and_never_early() {
        let tracker = Tracker::new();
        let c = tracker.open();
        c.idle_since.store(1_000, Ordering::Relaxed);
        assert_eq!(c.expired(10_999, LIMITS), None);
        assert_eq!(c.expired(11_000, LIMITS), Some(Close::NoRequest));

        // A request in progress is never closed, however long it takes.
        let busy = c.begin(false);
        assert_eq!(c.expired(1_000_000, LIMITS), None);
        drop(busy);
        c.idle_since.store(20_000, Ordering::Relaxed);
        assert_eq!(c.expired(79_999, LIMITS), None);
        assert_eq!(c.expired(80_000, LIMITS), Some(Close::Idle));

        // A head that began arriving at 30 s has until 40 s, keep-alive or not.
        c.head_since.store(30_000 + 1, Ordering::Relaxed);
        assert_eq!(c.expired(39_999, LIMITS), None);
        assert_eq!(c.expired(40_000, LIMITS), Some(Close::SlowHead));
        // Its request arriving whole clears it.
        drop(c.begin(false));
        c.idle_since.store(40_000, Ordering::Relaxed);
        assert_eq!(c.expired(40_000 + 59_999, LIMITS), None);
    }

    #[test]
    fn bytes_begin_a_head_only_between_http1_requests() {
        let tracker = Tracker::new();
        let c = tracker.open();
        c.bytes_arrived();
        assert_eq!(
            c.head_since.load(Ordering::Relaxed),
            0,
            "before the first request"
        );
        let busy = c.begin(false);
        c.bytes_arrived();
        assert_eq!(c.head_since.load(Ordering::Relaxed), 0, "during a request");
        drop(busy);
        c.bytes_arrived();
        assert_ne!(c.head_since.load(Ordering::Relaxed), 0, "after a response");

        let h2 = tracker.open();
        drop(h2.begin(true));
        h2.bytes_arrived();
        assert_eq!(h2.head_since.load(Ordering::Relaxed), 0, "HTTP/2 frames");
    }

    #[test]
    fn the_first_reason_to_close_is_kept() {
        let tracker = Tracker::new();
        let c = tracker.open();
        assert!(tracker.reclaim_idle());
        c.close(Close::Shutdown);
        assert_eq!(c.closing(), Some(Close::Reclaimed));
        // Already closing: not picked again.
        assert!(!tracker.reclaim_idle());
    }
}

//! One client connection and the deadlines that keep it from holding a slot for nothing.
//!
//! hyper's own `header_read_timeout` starts only once bytes of a head have arrived (and,
//! behind hyper-util's HTTP/1-or-2 detection, only after that detection has read them), so a
//! socket that sends nothing, an HTTP/2 connection that sends only its preface, or an idle
//! keep-alive connection would stay open for ever, and `max_connections` of them lock every
//! other client out. Each connection therefore has a watchdog here: no request in progress
//! and nothing completed for `header_read_timeout` since accept (TLS handshake included), or
//! for `keepalive_timeout` since its last response, and it is closed. When the listener is at
//! `max_connections`, the connections that have been idle longest are closed to make room
//! for new clients (nginx does the same with its keep-alive connections); a connection with a
//! request in progress is never closed this way.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The open connections of one listener, so the accept loop can find idle ones.
pub struct Tracker {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    epoch: Instant,
}

/// What the watchdog and the accept loop know of one connection.
pub struct ConnState {
    id: u64,
    /// Requests whose response has not been sent whole yet.
    active: AtomicUsize,
    /// Requests completed.
    served: AtomicU64,
    /// When the connection last became idle (accept, or its last response sent), in ms since
    /// the tracker's epoch.
    idle_since: AtomicU64,
    /// Woken when the accept loop wants this connection's slot.
    reclaim: Notify,
    epoch: Instant,
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
            idle_since: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            reclaim: Notify::new(),
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
            .filter(|c| c.active.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match oldest {
            Some(c) => {
                // notify_one keeps the wake-up if the task is not waiting right now.
                c.reclaim.notify_one();
                true
            }
            None => false,
        }
    }
}

impl ConnState {
    /// A request has reached the handler; the guard marks it finished when dropped (with the
    /// response body, so a response still streaming keeps the connection busy).
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// How long the connection has been idle, or `None` while a request is in progress.
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    /// Whether a request was completed on it.
    fn has_served(&self) -> bool {
        self.served.load(Ordering::Relaxed) > 0
    }

    /// Waits until the accept loop asks for this connection's slot.
    pub async fn reclaimed(&self) {
        self.reclaim.notified().await;
    }

    /// Waits until the connection has been idle past its limit: `first_head` before its first
    /// request, `keepalive` after. Returns the reason for the close.
    ///
    /// It sleeps until the earliest moment the limit could be reached and looks again, rather
    /// than being woken when a request ends: that wake-up, a new timer and a new `Notified`
    /// cost every request ~1,300 instructions (callgrind), where this costs a busy connection
    /// one look per limit. An idle time starts at the end of a request, so the connection is
    /// still closed when its limit has passed, never earlier.
    pub async fn idle_expired(&self, first_head: Duration, keepalive: Duration) -> &'static str {
        loop {
            let (limit, reason) = if self.has_served() {
                (keepalive, "idle")
            } else {
                (first_head, "no_request")
            };
            // A request may begin and end while it sleeps, after which the keep-alive limit
            // applies: it never sleeps longer than that.
            let wait = match self.idle_for() {
                Some(idle) if idle >= limit => return reason,
                Some(idle) => (limit - idle).min(keepalive),
                None => limit.min(keepalive),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in progress on a connection.
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.served.fetch_add(1, Ordering::Relaxed);
        c.idle_since
            .store(c.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
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

//! WASI 0.3 components (`wasi:http@0.3` services and middleware): one instance serves several
//! requests at once, since their `handle` is async.
//!
//! The workers are wasmtime-wasi-http's `ProxyHandler` (what `wasmtime serve` runs): each owns
//! a store and its instance, takes requests while it has fewer than
//! `max_concurrent_requests` in flight and has served fewer than `max_requests`, keeps running
//! while a response body it produced is still streaming, and is dropped with its store after
//! a trap or once a request outlives its deadline. This module supplies what it asks of a
//! host: the store (the same limits as every plugin instance), each request's deadline, when
//! a worker retires, and what a middleware's next hop is for each request (`Hops::enter`).
//!
//! A trap fails every request the instance had in flight, and which one caused it is not
//! known. So a trap of a shared instance is counted as `shared`, not fed to any client's
//! backoff; the plugin then serves one request per instance ("isolation") for its `backoff`
//! time, where a trap is the fault of the one request in flight and counts as usual; and a
//! request that failed so before its response began is retried once, isolated, when it can
//! be sent again (a method that is idempotent, with no body). One client's query of death
//! thus costs others one retry, then costs only its sender.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use super::engine::{ERROR_MESSAGE_MAX, root};
use super::store::{HttpCall, InstanceStats, StoreMaker, classify};
use crate::body::{self, Body, BoxError};
use crate::config::{PluginConfig, Reuse};
use crate::plugin::error::{FailureReason, PluginError};
use crate::plugin::host::State;
use crate::plugin::host::handler::Rest;
use crate::plugin::output::truncated;

/// How long a worker with nothing in flight is kept for the next request.
const IDLE_RETIRE: Duration = Duration::from_secs(60);

/// The workers of one 0.3 plugin.
pub struct Services {
    /// Instances serving up to `max_concurrent_requests` at once.
    shared: ProxyHandler<Workers>,
    /// Instances serving one request at a time: while isolating, and for retries.
    isolated: ProxyHandler<Workers>,
    /// Caps requests in flight (and so workers): `instances` × `max_concurrent_requests`.
    slots: Arc<Semaphore>,
    /// Isolation lasts until then, after a trap of a shared instance.
    isolate_until: Mutex<Option<Instant>>,
    config: Arc<PluginConfig>,
    stores: StoreMaker,
    stats: Arc<Mutex<InstanceStats>>,
}

impl Services {
    /// The workers of a prepared 0.3 component; `instances` bounds the requests in flight
    /// (`instances` × `max_concurrent_requests`).
    pub fn new(
        pre: ServicePre<State>,
        stores: StoreMaker,
        instances: usize,
        stats: Arc<Mutex<InstanceStats>>,
    ) -> Self {
        let config = stores.config.clone();
        let concurrent = match config.reuse {
            Reuse::Fresh => 1,
            Reuse::Pooled => config.max_concurrent_requests,
        };
        let workers = |concurrent| {
            ProxyHandler::new(Workers(Arc::new(Shared {
                pre: pre.clone(),
                stores: stores.clone(),
                concurrent,
                stats: stats.clone(),
                last_failure: Mutex::new(None),
            })))
        };
        Self {
            shared: workers(concurrent),
            isolated: workers(1),
            slots: Arc::new(Semaphore::new(instances.saturating_mul(concurrent))),
            isolate_until: Mutex::new(None),
            config,
            stores,
            stats,
        }
    }

    /// A first instance, made and dropped, so that a component that cannot be instantiated
    /// is refused at load.
    pub async fn check(&self) -> Result<(), PluginError> {
        self.shared
            .state()
            .instantiate()
            .await
            .map(drop)
            .map_err(|e| PluginError::Load(format!("cannot instantiate it: {}", root(&e))))
    }

    /// Serves `req` (with `rest`, the next hop, for a middleware), within the plugin's
    /// deadline; the response body streams from the instance until its end or the deadline.
    pub async fn serve(
        &self,
        req: http::Request<Body>,
        https: bool,
        rest: Option<Rest>,
    ) -> HttpCall {
        let started = Instant::now();
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let again = retriable(&req).then(|| again(&req));
        let req = incoming(req, https);
        // A trap is its request's when the instance serves one at a time (isolating, or
        // configured so); otherwise it may be another's.
        let shared = !self.isolating() && self.shared.state().0.concurrent > 1;
        let mut workers = if shared { &self.shared } else { &self.isolated };
        let made = self.stats.lock().instantiations;
        let mut ticket = Ticket::new(rest);
        let mut result = workers.handle(ticket.clone(), req).await;
        if shared && result.as_ref().is_err_and(|e| e.is::<TrapOrPanicError>()) {
            self.isolate();
            let Some(req) = again.map(|req| incoming(req, https)) else {
                let head = Err(self.failure(result.expect_err("an error"), workers, true));
                return HttpCall {
                    head,
                    instantiated: self.instantiated(made, started),
                };
            };
            tracing::info!(plugin = %self.config.name, "instance trapped with several requests in flight; retrying this one on an instance of its own");
            ticket = Ticket::new(ticket.rest);
            workers = &self.isolated;
            result = workers.handle(ticket.clone(), req).await;
        }
        let head = match result {
            Ok(resp) => Ok(resp.map(|b| {
                body::from_unsync(Bounded {
                    inner: b,
                    deadline: Box::pin(tokio::time::sleep_until(
                        (started + self.config.timeout).into(),
                    )),
                    worker: ticket.worker,
                    _slot: slot,
                })
            })),
            Err(e) => Err(self.failure(e, workers, false)),
        };
        HttpCall {
            head,
            instantiated: self.instantiated(made, started),
        }
    }

    /// Whether a new instance was made since `made` (this request's, or another's).
    fn instantiated(&self, made: u64, started: Instant) -> Option<Duration> {
        (self.stats.lock().instantiations > made).then(|| started.elapsed())
    }

    fn isolating(&self) -> bool {
        let mut until = self.isolate_until.lock();
        match *until {
            Some(t) if t > Instant::now() => true,
            Some(_) => {
                *until = None;
                tracing::info!(plugin = %self.config.name, "isolation over: instances serve several requests at once again");
                false
            }
            None => false,
        }
    }

    fn isolate(&self) {
        let mut until = self.isolate_until.lock();
        if until.is_none() {
            tracing::warn!(plugin = %self.config.name, backoff = ?self.config.backoff, "an instance trapped with several requests in flight, failing them all; serving one request per instance for the backoff time, so that the next trap names its request");
        }
        *until = Some(Instant::now() + self.config.backoff);
    }

    /// The failure an error of `workers` means for a request; `shared`: the instance
    /// trapped with other requests in flight, so this one may not be the cause.
    fn failure(
        &self,
        e: wasmtime::Error,
        workers: &ProxyHandler<Workers>,
        shared: bool,
    ) -> PluginError {
        if e.is::<TrapOrPanicError>() {
            // Set by the worker as it was dropped, which is as the request failed: the one
            // recorded last is, but for a race between two traps, this one's.
            let (reason, why) = workers
                .state()
                .0
                .last_failure
                .lock()
                .clone()
                .unwrap_or((FailureReason::Trap, "the instance trapped".into()));
            return match shared {
                true => PluginError::Failed(
                    FailureReason::Shared,
                    format!(
                        "the instance serving this request and others failed ({reason}): {why}"
                    ),
                ),
                false => PluginError::Failed(reason, why),
            };
        }
        if e.is::<ExpirationError>() {
            return PluginError::Failed(
                FailureReason::Timeout,
                format!(
                    "no response within its timeout ({:?}, wall-clock)",
                    self.config.timeout
                ),
            );
        }
        if let Some(failed) = e.downcast_ref::<InstantiationError<Ticket>>() {
            return PluginError::Failed(
                FailureReason::Error,
                format!("cannot make an instance: {}", root(&failed.error)),
            );
        }
        if let Some(code) = e.downcast_ref::<ErrorCode>() {
            let code = format!("{code:?}");
            return PluginError::Failed(
                FailureReason::Error,
                format!(
                    "the component answered with error-code {}",
                    truncated(&code, ERROR_MESSAGE_MAX)
                ),
            );
        }
        classify(&e, self.stores.hostcall_fuel)
    }
}

/// Whether a request can be sent again after its instance failed: its method is idempotent
/// (RFC 9110 §9.2.2) and it has no body, so nothing of it was consumed.
fn retriable(req: &http::Request<Body>) -> bool {
    let idempotent = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ];
    idempotent.contains(req.method()) && http_body::Body::is_end_stream(req.body())
}

/// A copy of a bodiless request, to send again; made into what a 0.3 component is given only
/// when it is (by [`incoming`]).
fn again(req: &http::Request<Body>) -> http::Request<Body> {
    let mut copy = http::Request::new(body::full(bytes::Bytes::new()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// A client's request as a 0.3 component is given it: wasi:http 0.3 reads the scheme and
/// authority from the target, which a server's request has only in its `Host`.
fn incoming(req: http::Request<Body>, https: bool) -> wasmtime_wasi_http::handler::Request {
    let (mut parts, body) = req.into_parts();
    if parts.uri.authority().is_none() {
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let scheme = if https { "https" } else { "http" };
        if let Ok(uri) = format!("{scheme}://{host}{pq}").parse() {
            parts.uri = uri;
        }
    }
    let body = body.map_err(|e: BoxError| {
        if e.is::<http_body_util::LengthLimitError>() {
            wasmtime_wasi_http::Error::HttpRequestBodySize(None)
        } else {
            wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
        }
    });
    http::Request::from_parts(parts, body.boxed_unsync())
}

/// What a request carries to the worker that takes it: a middleware's next hop, and a place
/// for that worker's fate, which its response body reads when it ends.
#[derive(Clone)]
struct Ticket {
    rest: Option<Rest>,
    worker: Arc<OnceLock<Arc<AtomicBool>>>,
}

impl Ticket {
    fn new(rest: Option<Rest>) -> Self {
        Self {
            rest,
            worker: Arc::default(),
        }
    }
}

/// A 0.3 response body, ended in an error past the plugin's deadline (a guest that never
/// closes its stream) or when the instance producing it failed (wasmtime-wasi-http ends the
/// body of a dropped store as if it were whole), holding the plugin's slot until it ends.
struct Bounded {
    inner: wasmtime_wasi_http::WasiBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Set when the worker that served it failed.
    worker: Arc<OnceLock<Arc<AtomicBool>>>,
    _slot: OwnedSemaphorePermit,
}

impl http_body::Body for Bounded {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.worker.get().is_some_and(|f| f.load(Ordering::SeqCst)) => {
                return Poll::Ready(Some(Err(
                    "the instance producing this body failed before its end".into(),
                )));
            }
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(
                "the component's response body did not end within its timeout".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// The host side of one plugin's workers.
#[derive(Clone)]
struct Workers(Arc<Shared>);

struct Shared {
    pre: ServicePre<State>,
    stores: StoreMaker,
    /// Requests one instance serves at once.
    concurrent: usize,
    stats: Arc<Mutex<InstanceStats>>,
    /// Why the last worker that failed did.
    last_failure: Mutex<Option<(FailureReason, String)>>,
}

/// One worker: its plugin's side, and whether it failed (set before its store is dropped).
struct Worker {
    workers: Workers,
    failed: Arc<AtomicBool>,
}

impl HandlerState for Workers {
    type StoreData = State;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<State, Expiry, Worker>> {
        let started = Instant::now();
        let mut store = self
            .0
            .stores
            .store(self.0.pre.engine())
            .map_err(|e| wasmtime::format_err!("{e}"))?;
        let init = self.0.stores.config.init_timeout;
        let service = tokio::time::timeout(init, self.0.pre.instantiate_async(&mut store))
            .await
            .map_err(|_| {
                wasmtime::format_err!("instantiation took longer than init_timeout ({init:?})")
            })??;
        {
            let mut stats = self.0.stats.lock();
            stats.last_instantiation = started.elapsed();
            stats.instantiations += 1;
        }
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <State as WasiHttpView>::http,
            expiration: Expiry::new(self.0.stores.config.timeout),
            state: Worker {
                workers: self.clone(),
                failed: Arc::default(),
            },
        })
    }
}

impl WorkerState for Worker {
    type StoreData = State;
    type RequestData = Ticket;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        let config = &self.workers.0.stores.config;
        let max_requests = match config.reuse {
            Reuse::Fresh => Some(1),
            Reuse::Pooled => config.max_requests,
        };
        if max_requests.is_some_and(|max| total as u64 >= max) {
            ShouldAccept::Never
        } else if concurrent < self.workers.0.concurrent {
            ShouldAccept::Yes
        } else {
            ShouldAccept::No
        }
    }

    /// The request's deadline; a middleware's request also gets its next hop, found by the
    /// task that serves it until the deadline's future is dropped (its response began).
    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, State>,
        ticket: Ticket,
        task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.set_epoch_deadline(1);
        let _ = ticket.worker.set(self.failed.clone());
        let hop = ticket
            .rest
            .map(|rest| store.data().hops().enter(task, rest));
        let timeout = self.workers.0.stores.config.timeout;
        Box::pin(async move {
            let _hop = hop;
            tokio::time::sleep(timeout).await;
        })
    }

    fn drop(&self, store: Store<State>, result: wasmtime::Result<()>) {
        let shared = &self.workers.0;
        if result.is_err() {
            // Before the store goes, and with it the ends of the bodies it was producing.
            self.failed.store(true, Ordering::SeqCst);
        }
        {
            let mut stats = shared.stats.lock();
            stats.peak_memory = stats.peak_memory.max(store.data().limiter.peak);
        }
        if let Err(e) = result {
            // The worker's task was dropped (the runtime is shutting down): nothing failed.
            if e.to_string() == "worker panicked" {
                tracing::debug!(plugin = %shared.stores.config.name, "a WASI 0.3 worker was dropped with its task");
                return;
            }
            let failure = match classify(&e, shared.stores.hostcall_fuel) {
                // ProxyHandler's own words when `Expiry` retired a worker past its deadline.
                _ if e.to_string() == "guest timed out" => (
                    FailureReason::Timeout,
                    "an instance still working past its deadline was dropped".into(),
                ),
                PluginError::Failed(reason, why) => (reason, why),
                other => (FailureReason::Error, other.to_string()),
            };
            tracing::warn!(plugin = %shared.stores.config.name, reason = %failure.0, error = %failure.1, "a WASI 0.3 instance was dropped, and with it the requests it had in flight");
            *shared.last_failure.lock() = Some(failure);
        }
    }
}

/// When a worker retires: its oldest outstanding request past the deadline (the requests'
/// own deadlines are also enforced inside the store's event loop, which a guest spinning in
/// its own code or a host call that holds the store can keep from running), or idle for
/// [`IDLE_RETIRE`].
pub struct Expiry {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Expiry {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        let limit = match status {
            WorkerStatus::Idle => IDLE_RETIRE,
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.timeout,
        };
        let deadline = tokio::time::Instant::from(start + limit);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

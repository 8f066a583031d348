//! Instances of one plugin: the reuse policy (a pool of live instances, or a fresh one per
//! request), one `Store` per instance (a trap poisons its store, so a failed instance is
//! dropped with its store), `plugin-init` at instantiation, and the calls of both worlds,
//! each raced against its wall-clock deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::engine::{ERROR_MESSAGE_MAX, Prepared, World, root};
use super::service::Services;
pub use super::store::{HttpCall, InstanceStats};
use super::store::{StoreMaker, classify};
use crate::body::{self, Body};
use crate::config::{PluginConfig, PluginKind, Reuse};
use crate::plugin::bindings::{Action, Plugin, Request};
use crate::plugin::error::{FailureReason, PluginError};
use crate::plugin::host::handler::Rest;
use crate::plugin::host::{Capabilities, State};
use crate::plugin::output::{OutputLimits, truncated};
use crate::telemetry;

/// One live instance and its store.
struct Instance {
    store: Store<State>,
    bindings: Bindings,
    /// Requests it has served.
    served: u64,
}

/// An instance's exports, by world.
enum Bindings {
    Plugin(Plugin),
    WasiHttp(Proxy),
}

/// A loaded WebAssembly plugin: its prepared component, its limits and its instances.
pub struct WasmPlugin {
    pre: Prepared,
    /// Makes its instances' stores.
    stores: StoreMaker,
    config: Arc<PluginConfig>,
    /// `plugin-init`'s argument.
    config_json: String,
    /// Idle instances (pooled policy).
    idle: Mutex<Vec<Instance>>,
    /// Caps instances in use at once (a wasi:http call holds its slot until the guest's
    /// `handle` returns, after the response head was sent).
    slots: Arc<Semaphore>,
    /// The workers of a WASI 0.3 component, which serve several requests per instance.
    services: Option<Services>,
    stats: Arc<Mutex<InstanceStats>>,
}

/// What happened to the instance used for a call, for the reuse metrics.
pub struct CallOutcome {
    /// The action, or the failure.
    pub result: Result<Action, PluginError>,
    /// A new instance was made for this call.
    pub instantiated: Option<Duration>,
    /// The guest's call stack when it trapped, when wasmtime captured one.
    pub backtrace: Option<String>,
}

impl WasmPlugin {
    /// Prepares a plugin and runs `plugin-init` on one instance, so a plugin whose init fails
    /// is refused at load time.
    pub async fn load(
        pre: Prepared,
        config: PluginConfig,
        default_instances: usize,
        caps: Capabilities,
    ) -> Result<Self, PluginError> {
        let config_json =
            serde_json::to_string(&config.config).expect("TOML tables convert to JSON");
        let mut config = config;
        config.kind = pre.kind(config.kind);
        let instances = config.instances.unwrap_or(default_instances);
        let config = Arc::new(config);
        let stores = StoreMaker {
            caps,
            hostcall_fuel: OutputLimits::of(&config).hostcall_fuel(config.max_memory_bytes),
            config: config.clone(),
            yields: Arc::default(),
        };
        let stats = Arc::new(Mutex::new(InstanceStats::default()));
        let services = match &pre {
            Prepared::Service(p) | Prepared::Middleware(p) => Some(Services::new(
                p.clone(),
                stores.clone(),
                instances,
                stats.clone(),
            )),
            Prepared::Plugin(_) | Prepared::WasiHttp(_) => None,
        };
        let plugin = Self {
            pre,
            stores,
            config,
            config_json,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(instances)),
            services,
            stats,
        };
        if let Some(services) = &plugin.services {
            services.check().await?;
            return Ok(plugin);
        }
        let first = plugin.instantiate().await?;
        if plugin.config.reuse == Reuse::Pooled {
            plugin.idle.lock().push(first);
        }
        Ok(plugin)
    }

    /// What it runs as: a `responder` entry naming a wasi:http component runs it as
    /// `wasi-http`.
    pub fn kind(&self) -> PluginKind {
        self.config.kind
    }

    /// Instance lifecycle figures.
    pub fn stats(&self) -> InstanceStats {
        InstanceStats {
            yields: self.stores.yields.load(Ordering::Relaxed),
            ..*self.stats.lock()
        }
    }

    /// A new store and instance, initialised with the plugin's config, within
    /// `init_timeout`.
    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let started = Instant::now();
        let mut store = self.stores.store(self.pre.engine())?;
        let init = async {
            let bindings = match &self.pre {
                Prepared::WasiHttp(pre) => {
                    // The standard world has no init: its config is its environment.
                    let proxy = pre.instantiate_async(&mut store).await;
                    return proxy.map(Bindings::WasiHttp).map_err(|e| self.classify(&e));
                }
                Prepared::Plugin(pre) => pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| self.classify(&e))?,
                Prepared::Service(_) | Prepared::Middleware(_) => {
                    unreachable!("WASI 0.3 instances are made by their workers (service.rs)")
                }
            };
            match bindings
                .call_plugin_init(&mut store, &self.config_json)
                .await
            {
                Ok(Ok(())) => Ok(Bindings::Plugin(bindings)),
                Ok(Err(msg)) => Err(PluginError::Init(
                    truncated(&msg, ERROR_MESSAGE_MAX).into_owned(),
                )),
                Err(e) => Err(self.classify(&e)),
            }
        };
        let timeout = self.config.init_timeout;
        let bindings = tokio::time::timeout(timeout, init)
            .await
            .unwrap_or_else(|_| {
                Err(PluginError::Failed(
                    FailureReason::Timeout,
                    format!(
                        "instantiation and plugin-init took longer than init_timeout ({timeout:?})"
                    ),
                ))
            })?;
        let mut stats = self.stats.lock();
        stats.last_instantiation = started.elapsed();
        stats.peak_memory = stats.peak_memory.max(store.data().limiter.peak);
        Ok(Instance {
            store,
            bindings,
            served: 0,
        })
    }

    /// The world its component implements.
    pub fn world(&self) -> World {
        self.pre.world()
    }

    /// An idle instance (pooled policy) or a new one, with how long making it took.
    async fn checkout(&self) -> Result<(Instance, Option<Duration>), PluginError> {
        if self.config.reuse == Reuse::Pooled
            && let Some(mut i) = self.idle.lock().pop()
        {
            // The deadline left from the instance's last call has passed once a tick went by:
            // without a new one the call would yield at its first epoch check, for nothing.
            // That yield (a fiber switch and a trip through tokio's scheduler) came on half
            // the calls under callgrind (2026-11, `bench/profile.py`) and cost a filter ~2,900
            // instructions a request on average; on an idle server it came on every call.
            i.store.set_epoch_deadline(1);
            return Ok((i, None));
        }
        let started = Instant::now();
        let i = self.instantiate().await?;
        Ok((i, Some(started.elapsed())))
    }

    /// Puts an instance back after a call, or drops it with its store: after a failed call
    /// (a trap poisons the store), under the fresh policy, past `max_requests`, when a
    /// wasi:http guest left resources in its table after `handle` (a leak that would grow
    /// with every request, or an outbound request still in flight), or when a plughost
    /// plugin holds more handles than one keeps between calls on purpose (an open bucket):
    /// a plugin leaking them would otherwise fail on a later call with a full table.
    fn checkin(&self, mut instance: Instance, ok: bool) {
        instance.served += 1;
        let peak = instance.store.data().limiter.peak;
        {
            let mut stats = self.stats.lock();
            stats.peak_memory = stats.peak_memory.max(peak);
        }
        // On the call's span while it is current: always for plugin-process, for a wasi:http
        // call when it ended before its response head.
        telemetry::memory(peak);
        let keep = ok
            && self.config.reuse == Reuse::Pooled
            && self
                .config
                .max_requests
                .is_none_or(|max| instance.served < max)
            && match instance.bindings {
                Bindings::Plugin(_) => !instance.store.data_mut().holds_too_many_handles(),
                Bindings::WasiHttp(_) => instance.store.data().table_is_empty(),
            };
        if keep {
            self.idle.lock().push(instance);
        }
    }

    /// Calls `plugin-process` on a pooled or fresh instance, per the reuse policy. A failed
    /// instance is dropped with its store; the next call gets a new one from the same
    /// prepared component (never a recompile).
    pub async fn process(&self, req: Request<'_>) -> CallOutcome {
        let _slot = self.slots.acquire().await.expect("never closed");
        let (mut instance, instantiated) = match self.checkout().await {
            Ok(i) => i,
            Err(e) => {
                return CallOutcome {
                    result: Err(e),
                    instantiated: None,
                    backtrace: None,
                };
            }
        };
        let Bindings::Plugin(bindings) = &instance.bindings else {
            unreachable!("plugin-process is only called on plughost:plugin components");
        };
        let mut backtrace = None;
        let timeout = self.config.timeout;
        let call = bindings.call_plugin_process(&mut instance.store, req);
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Ok(action))) => Ok(action),
            Ok(Ok(Err(msg))) => Err(PluginError::Failed(
                FailureReason::Error,
                truncated(&msg, ERROR_MESSAGE_MAX).into_owned(),
            )),
            Ok(Err(e)) => {
                backtrace = e
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .map(|bt| bt.to_string());
                Err(with_stderr(self.classify(&e), &instance.store))
            }
            // Cut off, in guest code or in a host call: the store is mid-call and unusable,
            // so the instance is dropped below (only an `Ok` call is kept).
            Err(_) => Err(self.timed_out()),
        };
        self.checkin(instance, result.is_ok());
        CallOutcome {
            result,
            instantiated,
            backtrace,
        }
    }

    fn timed_out(&self) -> PluginError {
        PluginError::Failed(
            FailureReason::Timeout,
            format!(
                "the call took longer than its timeout ({:?}, wall-clock)",
                self.config.timeout
            ),
        )
    }

    /// Hands a request to a wasi:http component's `incoming-handler.handle` and returns
    /// the response head as soon as the guest sets it; the body streams from the guest as
    /// it writes it. The call runs on its own task, which owns the instance and its slot
    /// until `handle` returns (the whole call, streaming included, within `timeout`), and
    /// whose failure after the head ends the body in an error and is handed to `on_failure`.
    ///
    /// A WASI 0.3 component's request goes to its workers instead ([`Services::serve`]),
    /// with `rest`, a middleware's next hop.
    pub async fn handle(
        self: &Arc<Self>,
        req: http::Request<Body>,
        https: bool,
        on_failure: OnFailure,
        rest: Option<Rest>,
    ) -> HttpCall {
        if let Some(services) = &self.services {
            return services.serve(req, https, rest).await;
        }
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (mut instance, instantiated) = match self.checkout().await {
            Ok(i) => i,
            Err(e) => return HttpCall::failed(e, None),
        };
        let (tx, rx) = oneshot::channel();
        let (scheme, req) = incoming(req, https);
        let mut http = instance.store.data_mut().http();
        let resources = http
            .new_incoming_request(scheme, req)
            .and_then(|req| Ok((req, http.new_response_outparam(tx)?)));
        let (req, out) = match resources {
            Ok(r) => r,
            Err(e) => {
                let e = PluginError::Failed(FailureReason::Error, root(&e));
                return HttpCall::failed(e, instantiated);
            }
        };
        let this = self.clone();
        let mut call: CallFuture = Box::pin(async move {
            let _slot: OwnedSemaphorePermit = slot;
            let Bindings::WasiHttp(proxy) = &instance.bindings else {
                unreachable!("handle is only called on wasi:http components");
            };
            let call =
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut instance.store, req, out);
            let result = match tokio::time::timeout(this.config.timeout, call).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(this.classify(&e)),
                Err(_) => Err(this.timed_out()),
            };
            // A failed instance is dropped here, and with its store the response sender
            // the guest never used: the waiting request then sees the failure.
            this.checkin(instance, result.is_ok());
            result
        });
        // The call runs on this request's task until it ends or it has set the head and
        // waits (most components answer and return at once: no task spawned, no thread
        // woken). One still running then goes on on its own task, so its deadline holds
        // however slowly the client reads.
        let mut rx = rx;
        let first = std::future::poll_fn(|cx| {
            use std::task::Poll;
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(Err(result));
            }
            std::pin::Pin::new(&mut rx).poll(cx).map(Ok)
        })
        .await;
        let (answer, call) = match first {
            // Still the plugin's call: its key-value and outbound spans join its trace.
            Ok(head) => (
                head.ok(),
                Call::Running(tokio::spawn(telemetry::carried(call))),
            ),
            Err(result) => (rx.try_recv().ok(), Call::Ended(result)),
        };
        let head = response(answer, call, on_failure).await;
        HttpCall { head, instantiated }
    }
}

/// A client's request as a wasi:http component is given it: with the scheme it came by, and
/// a `Host` when it has no authority (an HTTP/1.0 request), which wasi:http requires.
fn incoming(
    req: http::Request<Body>,
    https: bool,
) -> (
    Scheme,
    http::Request<
        impl http_body::Body<Data = bytes::Bytes, Error = wasmtime_wasi_http::Error>
        + Send
        + Sync
        + 'static,
    >,
) {
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    let mut req = req.map(|b| b.map_err(body_error));
    if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
    }
    (scheme, req)
}

/// The response of a wasi:http call from what the guest set (`answer`, `None` when it set
/// nothing) and the call itself, ended or still running.
async fn response(
    answer: Option<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
    call: Call,
    on_failure: OnFailure,
) -> Result<http::Response<Body>, PluginError> {
    match (answer, call) {
        // The call ended well: the whole body is already in the stream's buffer (a guest
        // writing more would still be waiting for it to drain), so it is sent with its
        // length, in one write.
        (Some(Ok(resp)), Call::Ended(Ok(()))) => {
            let (head, stream) = resp.into_parts();
            match stream.collect().await {
                Ok(bytes) => Ok(http::Response::from_parts(
                    head,
                    body::full(bytes.to_bytes()),
                )),
                Err(e) => Err(PluginError::Failed(FailureReason::Error, e.to_string())),
            }
        }
        (Some(Ok(resp)), call) => Ok(resp.map(|inner| {
            body::from_unsync(UntilDone {
                inner,
                done: Some(call.result()),
                on_failure: Some(on_failure),
            })
        })),
        (Some(Err(code)), _) => Err(PluginError::Failed(
            FailureReason::Error,
            format!("the component answered with error-code {code:?}"),
        )),
        // The sender is gone: the call ended without setting a response.
        (None, call) => Err(match call.result().await {
            Err(e) => e,
            Ok(()) => PluginError::Failed(
                FailureReason::Error,
                "incoming-handler.handle returned without setting a response".into(),
            ),
        }),
    }
}

/// A trap with what the guest wrote to stderr just before it (a Rust guest's panic message:
/// its trap itself says only `unreachable`).
fn with_stderr(e: PluginError, store: &Store<State>) -> PluginError {
    match (e, store.data().stderr.take()) {
        (PluginError::Failed(FailureReason::Trap, cause), Some(said)) => PluginError::Failed(
            FailureReason::Trap,
            format!("{cause}; the plugin wrote to stderr before it: {said}"),
        ),
        (e, _) => e,
    }
}

/// A wasi:http call: `handle` on its instance, within its timeout, then the instance's
/// return to the pool (or its drop).
type CallFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), PluginError>> + Send>>;

/// A wasi:http call once its head is known (or it ended without one).
enum Call {
    /// It ended on the request's task, with this result.
    Ended(Result<(), PluginError>),
    /// It goes on on its own task.
    Running(tokio::task::JoinHandle<Result<(), PluginError>>),
}

impl Call {
    /// Its result, when it has one.
    fn result(self) -> CallFuture {
        match self {
            Self::Ended(result) => Box::pin(std::future::ready(result)),
            Self::Running(task) => Box::pin(async move {
                task.await.unwrap_or_else(|e| {
                    Err(PluginError::Failed(FailureReason::Trap, e.to_string()))
                })
            }),
        }
    }
}

/// What is done with a failure of a wasi:http call that comes after its response head.
pub type OnFailure = Box<dyn FnOnce(PluginError) + Send>;

/// A wasi:http response body that ends only once the component's call has. wasmtime-wasi-http
/// ends a body whose guest never finished it (it trapped or ran out of time, and its store
/// was dropped) as if it were complete; this one ends it in an error then, so neither a
/// client nor the cache takes a cut body for a whole one. A guest that finishes its body and
/// goes on working delays the end of the body until its call returns (within its timeout).
struct UntilDone {
    inner: HyperOutgoingBody,
    done: Option<CallFuture>,
    on_failure: Option<OnFailure>,
}

impl UntilDone {
    fn fail(&mut self, e: PluginError) -> body::BoxError {
        let text = e.to_string();
        if let Some(report) = self.on_failure.take() {
            report(e);
        }
        text.into()
    }
}

impl http_body::Body for UntilDone {
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, body::BoxError>>> {
        use std::task::{Poll, ready};
        let this = &mut *self;
        if let Some(frame) = ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx)) {
            return Poll::Ready(Some(frame.map_err(Into::into)));
        }
        let Some(done) = this.done.as_mut() else {
            return Poll::Ready(None);
        };
        let result = ready!(done.as_mut().poll(cx));
        this.done = None;
        match result {
            Ok(()) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(this.fail(e)))),
        }
    }
}

impl Drop for UntilDone {
    /// A body dropped before its end (the client left): the call's failure, if it fails, is
    /// still reported.
    fn drop(&mut self) {
        if let (Some(done), Some(report)) = (self.done.take(), self.on_failure.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = done.await {
                    report(e);
                }
            });
        }
    }
}

/// A request body's failure as wasi:http names it.
fn body_error(e: body::BoxError) -> wasmtime_wasi_http::Error {
    if e.is::<http_body_util::LengthLimitError>() {
        wasmtime_wasi_http::Error::HttpRequestBodySize(None)
    } else {
        wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
    }
}

impl WasmPlugin {
    /// Names what made a call fail.
    fn classify(&self, e: &wasmtime::Error) -> PluginError {
        classify(e, self.stores.hostcall_fuel)
    }
}

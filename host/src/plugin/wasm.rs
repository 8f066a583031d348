//! WebAssembly plugins: one wasmtime `Engine` for all of them, components compiled once (and
//! cached on disk), `InstancePre` so a new instance costs microseconds, one `Store` per
//! instance (a trap poisons its store, so a failed instance is dropped with its store), and the
//! reuse policy: a pool of live instances, or a fresh one per request.
//!
//! Calls are async: an epoch ticker thread advances the engine's epoch every [`TICK`], and at
//! each tick a running call yields to tokio, so a busy plugin never holds a worker thread.
//! Deadlines are wall-clock and enforced from outside the guest: each call (and each
//! instantiation with its `plugin-init`) is raced against a timer, so a guest waiting in a host
//! call (a WASI sleep or poll) is stopped as surely as one spinning in its own code. An instance
//! whose call was cut off is dropped with its store, never reused.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use super::host::{Capabilities, MemoryLimitReached, State};
use super::output::{OutputLimits, truncated};
use super::{FailureReason, PluginError};
use crate::body::{self, Body};
use crate::config::{PluginConfig, PluginKind, Reuse};
use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Bindings generated from `wit/plugin.wit` (documented there).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

pub use bindings::plughost::plugin::types::{
    Action, Edits, HeaderParam, HeaderResult, Request, Response,
};
use bindings::{Plugin, PluginPre};

/// The export that makes a component a standard `wasi:http/proxy` one (any 0.2.x).
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The export of a `wasi:cli` command (a program with a `main`).
const CLI_RUN: &str = "wasi:cli/run@";

/// Epoch tick: how often running guest code yields to other tasks (and so how soon after
/// its deadline a busy call is stopped).
pub const TICK: Duration = Duration::from_millis(1);

/// Longest error message of a plugin's kept for the log and the metrics; the guest may
/// return megabytes.
const ERROR_MESSAGE_MAX: usize = 1024;

/// The shared engine and linker. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<State>>,
    cache_dir: Option<PathBuf>,
}

impl Runtime {
    /// Creates the engine (pooling allocator, epoch interruption, async calls), links WASI and
    /// the host interface, and starts the epoch ticker.
    pub fn new(cache_dir: Option<PathBuf>, max_instances: u32) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        // Slots for every live instance (pools of all plugins) plus those being replaced.
        let instances = max_instances.max(16) * 2;
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 8)
            .total_stacks(instances)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(64)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(100_000)
            // The per-plugin cap (`max_memory_bytes`) is enforced by the store's limiter; this
            // is only the ceiling of one pool slot.
            .max_memory_size(1 << 30);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Copy-on-write memory images: a fresh instance maps, not copies, its data.
            .memory_init_cow(true)
            .wasm_component_model(true);
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            // The pool reserves its whole address space up front (hundreds of GiB, virtual);
            // `ulimit -v`, strict overcommit or valgrind refuse that. Plugins still run, with
            // instances allocated on demand (a fresh instance costs more).
            Err(e) => {
                tracing::warn!(error = %e, "cannot reserve the pooling allocator's address space; allocating wasm instances on demand instead");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(wasm_err)?
            }
        };
        let mut linker = Linker::new(&engine);
        super::host::link_all(&mut linker).map_err(wasm_err)?;
        spawn_ticker(&engine);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache_dir,
        })
    }

    /// Compiles a component, or loads it from the compiled-artifact cache when the file and
    /// the engine are unchanged. Returns it and whether it came from the cache.
    pub fn compile(&self, file: &Path) -> Result<(Component, bool), PluginError> {
        let bytes =
            std::fs::read(file).map_err(|e| PluginError::Load(format!("cannot read it: {e}")))?;
        self.compile_bytes(&bytes, &Sha256::digest(&bytes).into())
    }

    /// [`Runtime::compile`] of a file already read, whose SHA-256 the caller has.
    pub fn compile_bytes(
        &self,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> Result<(Component, bool), PluginError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(self.cache_key(digest)));
        if let Some(path) = &cached
            && path.exists()
            && cache_entry_trusted(path)
        {
            // SAFETY: the artifact was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is part of the key); it and its directory are owned
            // by this user (or root) and writable by nobody else (checked just above), so only
            // plughost's user could have put it there; wasmtime checks its header again.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiled cache entry unusable; recompiling")
                }
            }
        }
        // A core module (`\0asm`, version 1) is a common first mistake: say how to make it a
        // component rather than wasmtime's "expected component" parse error.
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(PluginError::Load(
                "this is a core WebAssembly module, not a component: build for wasm32-wasip2, or \
                 make it one with `wasm-tools component new MODULE.wasm --adapt \
                 wasi_snapshot_preview1.reactor.wasm -o PLUGIN.wasm` (the adapter ships with \
                 wasmtime releases as wasi_snapshot_preview1.reactor.wasm)"
                    .into(),
            ));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PluginError::Load(format!("not a valid component: {}", root(&e))))?;
        if let Some(path) = &cached
            && let Err(e) = write_cache(path, &component)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled cache");
        }
        Ok((component, false))
    }

    fn cache_key(&self, digest: &[u8; 32]) -> String {
        let mut engine = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}.cwasm", engine.finish())
    }

    /// The engine every plugin is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether `component` is a standard `wasi:http/proxy` component (it exports
    /// `wasi:http/incoming-handler`) rather than a plughost plugin.
    pub fn is_wasi_http(&self, component: &Component) -> bool {
        component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with(INCOMING_HANDLER))
    }

    /// Links a component against WASI and the host interfaces, checking its exports against
    /// what `kind` needs: `plugin-init` / `plugin-process` for a filter or responder,
    /// `wasi:http/incoming-handler` for `wasi-http`.
    pub fn prepare(
        &self,
        component: &Component,
        kind: PluginKind,
    ) -> Result<Prepared, PluginError> {
        let wasi_http = self.is_wasi_http(component);
        let exports = |prefix: &str| {
            component
                .component_type()
                .exports(&self.engine)
                .any(|(name, _)| name.starts_with(prefix))
        };
        if !wasi_http && !exports("plugin-process") && exports(CLI_RUN) {
            return Err(PluginError::Load(
                "it is a wasi:cli command (it exports wasi:cli/run, as a program with `main` builds): plughost runs plughost:plugin components (exporting plugin-init and plugin-process) and wasi:http/proxy ones (exporting wasi:http/incoming-handler); build a library instead (Rust: crate-type = [\"cdylib\"]; `plughost plugin new` writes one)".into(),
            ));
        }
        match (kind, wasi_http) {
            (PluginKind::Filter, true) => {
                return Err(PluginError::Load(
                    "it is a wasi:http component, which answers requests: give it kind = \"wasi-http\" and a [[routes]] entry".into(),
                ));
            }
            (PluginKind::WasiHttp, false) => {
                return Err(PluginError::Load(
                    "kind = \"wasi-http\" needs a component exporting wasi:http/incoming-handler (the wasi:http/proxy world); for a plughost:plugin component use kind = \"responder\"".into(),
                ));
            }
            _ => {}
        }
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Load(format!("cannot link it: {}", chain(&e))))?;
        if wasi_http {
            return ProxyPre::new(pre).map(Prepared::WasiHttp).map_err(|e| {
                PluginError::Load(format!(
                    "it does not implement the wasi:http/proxy world: {}",
                    root(&e)
                ))
            });
        }
        PluginPre::new(pre).map(Prepared::Plugin).map_err(|e| {
            PluginError::Load(format!(
                "it does not implement the plughost:plugin world (plugin-init, plugin-process): {}",
                root(&e)
            ))
        })
    }
}

/// A linked component of either world, ready to instantiate.
#[derive(Clone)]
pub enum Prepared {
    /// A plughost plugin (`plugin-init`, `plugin-process`).
    Plugin(PluginPre<State>),
    /// A standard `wasi:http/proxy` component.
    WasiHttp(ProxyPre<State>),
}

impl Prepared {
    /// The kind a plugin of this world configured as `kind` runs as: a `responder` entry
    /// naming a wasi:http component runs it as one.
    pub fn kind(&self, kind: PluginKind) -> PluginKind {
        match self {
            Self::WasiHttp(_) => PluginKind::WasiHttp,
            Self::Plugin(_) => kind,
        }
    }

    fn engine(&self) -> &Engine {
        match self {
            Self::Plugin(p) => p.engine(),
            Self::WasiHttp(p) => p.engine(),
        }
    }
}

/// Whether a compiled artifact may be loaded: `Component::deserialize_file` maps it as native
/// code, so anyone who could write it could run code in the server. The directory and the
/// file must be owned by this user (or root) and writable by nobody else; otherwise the
/// component is compiled again (and the cache not used), with a warning naming the fix.
fn cache_entry_trusted(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("."));
    match super::native::trusted(dir, 0o022).and_then(|()| super::native::trusted(path, 0o022)) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(path = %path.display(), reason = %why, "compiled cache entry not trusted; compiling the component again instead of loading it");
            false
        }
    }
}

fn write_cache(path: &Path, component: &Component) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let bytes = component.serialize().map_err(wasm_err)?;
    // Write then rename, so a concurrent reader never maps a half-written file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Owner-only whatever the umask: a group-writable entry would not be trusted later.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// wasmtime's error type is its own since 42; this is the boundary where it becomes anyhow.
fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// The innermost cause, on one line: wasmtime's top message is often only "error while
/// executing", and some causes span several lines.
fn root(e: &wasmtime::Error) -> String {
    let text = e.root_cause().to_string();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every cause, outermost first, on one line: a link error's root says only "function
/// implementation is missing"; the causes above it name the interface and the function.
fn chain(e: &wasmtime::Error) -> String {
    let text = e
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("plughost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}

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

/// Counters of instance lifecycle, for metrics and `/plugins`.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstanceStats {
    /// Time the last instantiation (with `plugin-init`) took.
    pub last_instantiation: Duration,
    /// Largest linear memory seen in any instance.
    pub peak_memory: usize,
    /// Times a call was paused at an epoch tick so that other requests could run.
    pub yields: u64,
}

/// A loaded WebAssembly plugin: its prepared component, its limits and its instances.
pub struct WasmPlugin {
    pre: Prepared,
    /// What its instances may use of the host (log, key-value buckets).
    caps: Capabilities,
    /// Bytes one call may copy out of the guest (see [`OutputLimits::hostcall_fuel`]).
    hostcall_fuel: usize,
    config: PluginConfig,
    /// `plugin-init`'s argument.
    config_json: String,
    /// Idle instances (pooled policy).
    idle: Mutex<Vec<Instance>>,
    /// Caps instances in use at once (a wasi:http call holds its slot until the guest's
    /// `handle` returns, after the response head was sent).
    slots: Arc<Semaphore>,
    stats: Mutex<InstanceStats>,
    /// [`InstanceStats::yields`], counted by every instance's store.
    yields: Arc<AtomicU64>,
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
        let plugin = Self {
            pre,
            caps,
            hostcall_fuel: OutputLimits::of(&config).hostcall_fuel(config.max_memory_bytes),
            config,
            config_json,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(instances)),
            stats: Mutex::new(InstanceStats::default()),
            yields: Arc::default(),
        };
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
            yields: self.yields.load(Ordering::Relaxed),
            ..*self.stats.lock()
        }
    }

    /// A new store and instance, initialised with the plugin's config, within
    /// `init_timeout`.
    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let started = Instant::now();
        let state = State::new(&self.caps, &self.config).map_err(|e| {
            PluginError::Load(format!("cannot grant its directories: {}", root(&e)))
        })?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(self.hostcall_fuel);
        // Guest code yields at every tick; the deadlines are the timers around the calls.
        let yields = self.yields.clone();
        store.epoch_deadline_callback(move |_| {
            yields.fetch_add(1, Ordering::Relaxed);
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
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

    /// An idle instance (pooled policy) or a new one, with how long making it took.
    async fn checkout(&self) -> Result<(Instance, Option<Duration>), PluginError> {
        if self.config.reuse == Reuse::Pooled
            && let Some(mut i) = self.idle.lock().pop()
        {
            // The deadline left from the instance's last call has passed once a tick went by:
            // without a new one the call would yield at its first epoch check, for nothing.
            // That yield (a fiber switch and a trip through tokio's scheduler) came on half
            // the calls under callgrind (`bench/profile.py`) and cost a filter ~2,900
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
    pub async fn handle(
        self: &Arc<Self>,
        req: http::Request<Body>,
        https: bool,
        on_failure: OnFailure,
    ) -> HttpCall {
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
        let scheme = if https {
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Https
        } else {
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http
        };
        let mut req = req.map(|b| b.map_err(body_error));
        // wasi:http requires an authority; an HTTP/1.0 request may come without one.
        if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
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
        let call = match first {
            Ok(head) => (head.ok(), Call::Running(tokio::spawn(call))),
            Err(result) => (rx.try_recv().ok(), Call::Ended(result)),
        };
        let head = match call {
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
        };
        HttpCall { head, instantiated }
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

/// What [`WasmPlugin::handle`] gives back.
pub struct HttpCall {
    /// The response head and its body (whole, or streaming while the call runs), or the
    /// failure before the head.
    pub head: Result<http::Response<Body>, PluginError>,
    /// A new instance was made for this call, in this time.
    pub instantiated: Option<Duration>,
}

impl HttpCall {
    fn failed(e: PluginError, instantiated: Option<Duration>) -> Self {
        Self {
            head: Err(e),
            instantiated,
        }
    }
}

impl WasmPlugin {
    /// Names what made a call fail.
    fn classify(&self, e: &wasmtime::Error) -> PluginError {
        if e.downcast_ref::<MemoryLimitReached>().is_some() {
            return PluginError::Failed(FailureReason::Memory, root(e));
        }
        let cause = root(e);
        // wasmtime's error type for this is private; its message is the only handle.
        if cause.contains("fuel allocated for hostcalls has been exhausted") {
            return PluginError::Failed(
                FailureReason::Error,
                format!(
                    "the plugin handed the host more than its budget of {} bytes in one call \
                     (max_response_header_bytes + max_response_body_bytes, at most \
                     max_memory_bytes)",
                    self.hostcall_fuel
                ),
            );
        }
        PluginError::Failed(
            FailureReason::Trap,
            truncated(&cause, ERROR_MESSAGE_MAX).into_owned(),
        )
    }
}

//! WebAssembly plugins: one wasmtime `Engine` for all of them, components compiled once (and
//! cached on disk), `InstancePre` so a new instance costs microseconds, one `Store` per
//! instance (a trap poisons its store, so a failed instance is dropped with its store), and the
//! reuse policy: a pool of live instances, or a fresh one per request.
//!
//! Calls are async: an epoch ticker thread advances the engine's epoch every [`TICK`], and at
//! each tick a running call yields to tokio (so a busy plugin never holds a worker thread) or
//! traps once its CPU budget is spent.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use super::host::{MemoryLimitReached, State};
use super::{FailureReason, PluginError};
use crate::config::{PluginConfig, Reuse};

/// Bindings generated from `wit/plugin.wit` (documented there).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

pub use bindings::plughost::plugin::types::{Action, Edits, Header, Request, Response};
use bindings::{Plugin, PluginPre};

/// Epoch tick: the granularity of CPU deadlines and of yielding to other tasks.
pub const TICK: Duration = Duration::from_millis(1);

/// The deadline was reached; the call trapped.
#[derive(Debug, thiserror::Error)]
#[error("plugin call exceeded its CPU budget of {0:?}")]
struct DeadlineExceeded(Duration);

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
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
        bindings::plughost::plugin::host::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |s| s,
        )
        .map_err(wasm_err)?;
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
        {
            // SAFETY: the artifact was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is part of the key), into a directory created by
            // plughost with owner-only permissions; wasmtime checks its header again.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiled cache entry unusable; recompiling")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PluginError::Load(format!("not a valid component: {}", root(&e))))?;
        if let Some(path) = &cached {
            if let Err(e) = write_cache(path, &component) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled cache");
            }
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

    /// Links a component against WASI and the host interface, checking its exports.
    pub fn prepare(&self, component: &Component) -> Result<PluginPre<State>, PluginError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Load(format!("cannot link it: {}", root(&e))))?;
        PluginPre::new(pre).map_err(|e| {
            PluginError::Load(format!(
                "it does not implement the plughost:plugin world (plugin-init, plugin-process): {}",
                root(&e)
            ))
        })
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
    bindings: Plugin,
    /// Requests it has served.
    served: u64,
}

/// Counters of instance lifecycle, for metrics and `/plugins`.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstanceStats {
    /// Time the last instantiation (with `plugin-init`) took.
    pub last_instantiation: Duration,
    /// Largest linear memory seen in any instance.
    pub peak_memory: usize,
}

/// A loaded WebAssembly plugin: its prepared component, its limits and its instances.
pub struct WasmPlugin {
    name: Arc<str>,
    pre: PluginPre<State>,
    config: PluginConfig,
    /// `plugin-init`'s argument.
    config_json: String,
    /// Idle instances (pooled policy).
    idle: Mutex<Vec<Instance>>,
    /// Caps instances in use at once.
    slots: Semaphore,
    stats: Mutex<InstanceStats>,
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
        pre: PluginPre<State>,
        config: PluginConfig,
        default_instances: usize,
    ) -> Result<Self, PluginError> {
        let config_json =
            serde_json::to_string(&config.config).expect("TOML tables convert to JSON");
        let instances = config.instances.unwrap_or(default_instances);
        let plugin = Self {
            name: Arc::from(config.name.as_str()),
            pre,
            config,
            config_json,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(instances),
            stats: Mutex::new(InstanceStats::default()),
        };
        let first = plugin.instantiate().await?;
        if plugin.config.reuse == Reuse::Pooled {
            plugin.idle.lock().push(first);
        }
        Ok(plugin)
    }

    /// Instance lifecycle figures.
    pub fn stats(&self) -> InstanceStats {
        *self.stats.lock()
    }

    /// A new store and instance, initialised with the plugin's config.
    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let started = Instant::now();
        let state = State::new(
            self.name.clone(),
            &self.config.grants,
            self.config.max_memory_bytes,
            self.config.timeout,
        )
        .map_err(|e| PluginError::Load(format!("cannot grant its directories: {}", root(&e))))?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            if s.call_started.elapsed() >= s.call_budget {
                return Err(DeadlineExceeded(s.call_budget).into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        arm(&mut store);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(&e))?;
        arm(&mut store);
        match bindings
            .call_plugin_init(&mut store, &self.config_json)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(PluginError::Init(msg)),
            Err(e) => return Err(classify(&e)),
        }
        let mut stats = self.stats.lock();
        stats.last_instantiation = started.elapsed();
        stats.peak_memory = stats.peak_memory.max(store.data().limiter.peak);
        Ok(Instance {
            store,
            bindings,
            served: 0,
        })
    }

    /// Calls `plugin-process` on a pooled or fresh instance, per the reuse policy. A failed
    /// instance is dropped with its store; the next call gets a new one from the same
    /// prepared component (never a recompile).
    pub async fn process(&self, req: &Request) -> CallOutcome {
        let _slot = self.slots.acquire().await.expect("never closed");
        let pooled = self.config.reuse == Reuse::Pooled;
        let reused = if pooled { self.idle.lock().pop() } else { None };
        let mut instantiated = None;
        let mut instance = match reused {
            Some(i) => i,
            None => {
                let started = Instant::now();
                match self.instantiate().await {
                    Ok(i) => {
                        instantiated = Some(started.elapsed());
                        i
                    }
                    Err(e) => {
                        return CallOutcome {
                            result: Err(e),
                            instantiated: None,
                            backtrace: None,
                        };
                    }
                }
            }
        };
        arm(&mut instance.store);
        let mut backtrace = None;
        let result = match instance
            .bindings
            .call_plugin_process(&mut instance.store, req)
            .await
        {
            Ok(Ok(action)) => Ok(action),
            Ok(Err(msg)) => Err(PluginError::Failed(FailureReason::Error, msg)),
            Err(e) => {
                backtrace = e
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .map(|bt| bt.to_string());
                Err(classify(&e))
            }
        };
        instance.served += 1;
        let peak = instance.store.data().limiter.peak;
        {
            let mut stats = self.stats.lock();
            stats.peak_memory = stats.peak_memory.max(peak);
        }
        let keep = pooled
            && result.is_ok()
            && self
                .config
                .max_requests
                .is_none_or(|max| instance.served < max);
        if keep {
            self.idle.lock().push(instance);
        }
        CallOutcome {
            result,
            instantiated,
            backtrace,
        }
    }
}

/// Starts a call's CPU budget.
fn arm(store: &mut Store<State>) {
    store.data_mut().call_started = Instant::now();
    store.set_epoch_deadline(1);
}

/// Names what made a call fail.
fn classify(e: &wasmtime::Error) -> PluginError {
    let reason = if e.downcast_ref::<DeadlineExceeded>().is_some() {
        FailureReason::Timeout
    } else if e.downcast_ref::<MemoryLimitReached>().is_some() {
        FailureReason::Memory
    } else {
        FailureReason::Trap
    };
    PluginError::Failed(reason, root(e))
}

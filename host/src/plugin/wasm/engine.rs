//! The wasmtime engines plugins run on (pooling allocator, epoch interruption, async calls):
//! one for plughost:plugin and wasi:http 0.2 components, one with the component model's
//! concurrency for WASI 0.3 ones; their epoch ticker, their linkers with WASI and the host
//! capabilities, and the compilation of components: once per file and engine, cached on
//! disk, checked against the world their `kind` needs.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::config::PluginKind;
use crate::plugin::bindings::PluginPre;
use crate::plugin::error::PluginError;
use crate::plugin::host::State;
use crate::plugin::native;

/// The export that makes a component a standard `wasi:http/proxy` one (any 0.2.x).
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The export that makes a component a WASI 0.3 `wasi:http` service (any 0.3.x); a middleware
/// also imports it (the next hop).
const HANDLER_03: &str = "wasi:http/handler@0.3";

/// The export of a `wasi:cli` command (a program with a `main`).
const CLI_RUN: &str = "wasi:cli/run@";

/// Epoch tick: how often running guest code yields to other tasks (and so how soon after
/// its deadline a busy call is stopped).
pub const TICK: Duration = Duration::from_millis(1);

/// Longest error message of a plugin's kept for the log and the metrics; the guest may
/// return megabytes.
pub(super) const ERROR_MESSAGE_MAX: usize = 1024;

/// One engine and the linker of the imports it offers.
#[derive(Clone)]
struct Flavor {
    engine: Engine,
    linker: Arc<Linker<State>>,
}

impl Flavor {
    /// An engine (pooling allocator, epoch interruption, async calls) with `concurrency` (the
    /// component model's async ABI, which WASI 0.3 needs) or without, and its linker.
    fn new(max_instances: u32, concurrency: bool) -> anyhow::Result<Self> {
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
            .wasm_component_model(true)
            .concurrency_support(concurrency);
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
        crate::plugin::host::link_all(&mut linker, concurrency).map_err(wasm_err)?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// The compiled-cache file name of a component whose bytes hash to `digest`, on this
    /// engine (its compatibility hash is part of the name).
    fn cache_key(&self, digest: &[u8; 32]) -> String {
        let mut engine = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}.cwasm", engine.finish())
    }
}

/// The engines plugins run on, their linkers and the compiled-component cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    /// plughost:plugin and wasi:http 0.2 components. Without the component model's
    /// concurrency support wasmtime runs a call straight on the store's fiber; with it, every
    /// call goes through its task machinery, which cost a filter call ~8,000 instructions
    /// (callgrind: one filter on a cache hit 45,548 -> 37,484).
    plain: Flavor,
    /// WASI 0.3 components (`wasi:http` services and middleware), which need that support.
    concurrent: Flavor,
    cache_dir: Option<PathBuf>,
}

impl Runtime {
    /// Creates both engines, links WASI and the host interfaces into each, and starts the
    /// epoch ticker.
    pub fn new(cache_dir: Option<PathBuf>, max_instances: u32) -> anyhow::Result<Self> {
        let plain = Flavor::new(max_instances, false)?;
        let concurrent = Flavor::new(max_instances, true)?;
        spawn_ticker([&plain.engine, &concurrent.engine]);
        Ok(Self {
            plain,
            concurrent,
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

    /// [`Runtime::compile`] of a file already read, whose SHA-256 the caller has. A component
    /// runs on the plain engine unless that engine refuses it (a WASI 0.3 component's streams
    /// and async functions need the component model's concurrency) or its world is 0.3.
    pub fn compile_bytes(
        &self,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> Result<(Component, bool), PluginError> {
        if let Some(component) = self.cached(&self.plain, digest) {
            return Ok((component, true));
        }
        // An entry compiled for the other engine is used for a 0.3 component, or for one the
        // plain engine refuses; any other (one cached before plughost had a plain engine) is
        // compiled for the plain engine, where its calls cost less.
        let concurrent = self.cached(&self.concurrent, digest);
        if let Some(component) = &concurrent
            && self.world(component).is_p3()
        {
            return Ok((component.clone(), true));
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
        if let Ok(component) = Component::new(&self.plain.engine, bytes)
            && !self.world(&component).is_p3()
        {
            self.store_in_cache(&self.plain, digest, &component);
            return Ok((component, false));
        }
        if let Some(component) = concurrent {
            return Ok((component, true));
        }
        let component = Component::new(&self.concurrent.engine, bytes)
            .map_err(|e| PluginError::Load(format!("not a valid component: {}", root(&e))))?;
        self.store_in_cache(&self.concurrent, digest, &component);
        Ok((component, false))
    }

    /// Keeps `component`, compiled for `flavor`, in the cache (when there is one).
    fn store_in_cache(&self, flavor: &Flavor, digest: &[u8; 32], component: &Component) {
        if let Some(dir) = &self.cache_dir
            && let path = dir.join(flavor.cache_key(digest))
            && let Err(e) = write_cache(&path, component)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled cache");
        }
    }

    /// The component compiled for `flavor` from the cache, if it holds one it may load.
    fn cached(&self, flavor: &Flavor, digest: &[u8; 32]) -> Option<Component> {
        let path = self.cache_dir.as_ref()?.join(flavor.cache_key(digest));
        if !path.exists() || !cache_entry_trusted(&path) {
            return None;
        }
        // SAFETY: the artifact was written by `Component::serialize` of an engine with the
        // same compatibility hash (it is part of the key); it and its directory are owned
        // by this user (or root) and writable by nobody else (checked just above), so only
        // plughost's user could have put it there; wasmtime checks its header again.
        match unsafe { Component::deserialize_file(&flavor.engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiled cache entry unusable; recompiling");
                None
            }
        }
    }

    /// Which world `component` implements, from its exports (and, for a 0.3 middleware, its
    /// import of the next hop).
    pub fn world(&self, component: &Component) -> World {
        let ty = component.component_type();
        let engine = component.engine();
        let exports = |prefix: &str| ty.exports(engine).any(|(name, _)| name.starts_with(prefix));
        if exports(HANDLER_03) {
            if ty
                .imports(engine)
                .any(|(name, _)| name.starts_with(HANDLER_03))
            {
                return World::Middleware;
            }
            return World::Service;
        }
        if exports(INCOMING_HANDLER) {
            return World::Proxy;
        }
        if !exports("plugin-process") && exports(CLI_RUN) {
            return World::Command;
        }
        World::Plugin
    }

    /// Links a component against WASI and the host interfaces, checking its world against
    /// what `kind` needs: `plugin-init` / `plugin-process` for a filter or responder, a
    /// `wasi:http` service (0.2's `incoming-handler` or 0.3's `handler`) for `wasi-http`, a
    /// `wasi:http@0.3` middleware for `middleware` (or `filter`). `wasi_p3 = false` refuses
    /// WASI 0.3 components.
    pub fn prepare(
        &self,
        component: &Component,
        kind: PluginKind,
        wasi_p3: bool,
    ) -> Result<Prepared, PluginError> {
        let world = self.world(component);
        if let Some(why) = world.refusal(kind) {
            return Err(PluginError::Load(why.into()));
        }
        if !wasi_p3 && world.is_p3() {
            return Err(PluginError::Load(format!(
                "it is {}, a WASI 0.3 component, and this server has `wasi_p3 = false`: set `wasi_p3 = true` (the default) to run it, or build it for wasi:http 0.2",
                world.name()
            )));
        }
        // The linker of the engine it was compiled for.
        let flavor = if Engine::same(component.engine(), &self.plain.engine) {
            &self.plain
        } else {
            &self.concurrent
        };
        let pre = flavor
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Load(format!("cannot link it: {}", chain(&e))))?;
        let not_world = |e: wasmtime::Error| {
            PluginError::Load(format!(
                "it does not implement the {} world: {}",
                world.name(),
                root(&e)
            ))
        };
        match world {
            World::Proxy => ProxyPre::new(pre)
                .map(Prepared::WasiHttp)
                .map_err(not_world),
            World::Service => ServicePre::new(pre)
                .map(Prepared::Service)
                .map_err(not_world),
            World::Middleware => ServicePre::new(pre)
                .map(Prepared::Middleware)
                .map_err(not_world),
            World::Plugin | World::Command => {
                PluginPre::new(pre).map(Prepared::Plugin).map_err(not_world)
            }
        }
    }
}

/// The world a component implements, as read from its exports and imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// plughost's own (`plugin-init`, `plugin-process`).
    Plugin,
    /// `wasi:http/proxy@0.2` (exports `incoming-handler`).
    Proxy,
    /// `wasi:http/service@0.3` (exports `handler`).
    Service,
    /// `wasi:http/middleware@0.3` (imports and exports `handler`).
    Middleware,
    /// A `wasi:cli` command (exports `run`), which plughost does not run.
    Command,
}

impl World {
    /// A WASI 0.3 world, which runs on the engine with the component model's concurrency.
    fn is_p3(self) -> bool {
        matches!(self, Self::Service | Self::Middleware)
    }

    /// Its name, as `plugin check` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plugin => "plughost:plugin/plugin",
            Self::Proxy => "wasi:http/proxy@0.2",
            Self::Service => "wasi:http/service@0.3.0",
            Self::Middleware => "wasi:http/middleware@0.3.0",
            Self::Command => "wasi:cli/command",
        }
    }

    /// Why a component of this world cannot be configured as `kind`, naming the fix.
    fn refusal(self, kind: PluginKind) -> Option<&'static str> {
        use PluginKind::*;
        Some(match (self, kind) {
            (Self::Command, _) => {
                "it is a wasi:cli command (it exports wasi:cli/run, as a program with `main` builds): plughost runs plughost:plugin components (exporting plugin-init and plugin-process) and wasi:http ones (exporting wasi:http/incoming-handler@0.2 or wasi:http/handler@0.3); build a library instead (Rust: crate-type = [\"cdylib\"]; `plughost plugin new` writes one)"
            }
            (Self::Proxy | Self::Service, Filter | Middleware) => {
                "it is a wasi:http service, which answers requests: give it kind = \"wasi-http\" and a [[routes]] entry (a wasi:http@0.3 middleware, which imports wasi:http/handler, is what runs in the filter chain)"
            }
            (Self::Middleware, WasiHttp | Responder) => {
                "it is a wasi:http@0.3 middleware (it imports wasi:http/handler, the next hop): give it kind = \"middleware\" (or \"filter\") so it runs in the filter chain in front of the cache and the routes"
            }
            (Self::Plugin, WasiHttp) => {
                "kind = \"wasi-http\" needs a component exporting wasi:http/incoming-handler@0.2 or wasi:http/handler@0.3; for a plughost:plugin component use kind = \"responder\""
            }
            (Self::Plugin, Middleware) => {
                "kind = \"middleware\" needs a wasi:http@0.3 middleware component (importing and exporting wasi:http/handler@0.3); for a plughost:plugin component use kind = \"filter\""
            }
            _ => return None,
        })
    }
}

/// A linked component of either world, ready to instantiate.
#[derive(Clone)]
pub enum Prepared {
    /// A plughost plugin (`plugin-init`, `plugin-process`).
    Plugin(PluginPre<State>),
    /// A standard `wasi:http/proxy@0.2` component.
    WasiHttp(ProxyPre<State>),
    /// A `wasi:http/service@0.3` component.
    Service(ServicePre<State>),
    /// A `wasi:http/middleware@0.3` component.
    Middleware(ServicePre<State>),
}

impl Prepared {
    /// The kind a plugin of this world configured as `kind` runs as: a `responder` entry
    /// naming a wasi:http component runs it as one, a `filter` entry naming a 0.3 middleware
    /// runs it as one.
    pub fn kind(&self, kind: PluginKind) -> PluginKind {
        match self {
            Self::WasiHttp(_) | Self::Service(_) => PluginKind::WasiHttp,
            Self::Middleware(_) => PluginKind::Middleware,
            Self::Plugin(_) => kind,
        }
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        match self {
            Self::Plugin(_) => World::Plugin,
            Self::WasiHttp(_) => World::Proxy,
            Self::Service(_) => World::Service,
            Self::Middleware(_) => World::Middleware,
        }
    }

    pub(super) fn engine(&self) -> &Engine {
        match self {
            Self::Plugin(p) => p.engine(),
            Self::WasiHttp(p) => p.engine(),
            Self::Service(p) | Self::Middleware(p) => p.engine(),
        }
    }
}

/// Whether a compiled artifact may be loaded: `Component::deserialize_file` maps it as native
/// code, so anyone who could write it could run code in the server. The directory and the
/// file must be owned by this user (or root) and writable by nobody else; otherwise the
/// component is compiled again (and the cache not used), with a warning naming the fix.
fn cache_entry_trusted(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("."));
    match native::trusted(dir, 0o022).and_then(|()| native::trusted(path, 0o022)) {
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
pub(super) fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// The innermost cause, on one line: wasmtime's top message is often only "error while
/// executing", and some causes span several lines.
pub(super) fn root(e: &wasmtime::Error) -> String {
    let text = e.root_cause().to_string();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every cause, outermost first, on one line: a link error's root says only "function
/// implementation is missing"; the causes above it name the interface and the function.
pub(super) fn chain(e: &wasmtime::Error) -> String {
    let text = e
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Ticks the epoch of each of `engines` every [`TICK`] while it lives (the plugins compiled
/// for it hold it; the other may be long gone), until none does.
fn spawn_ticker(engines: [&Engine; 2]) {
    let weak = engines.map(Engine::weak);
    std::thread::Builder::new()
        .name("plughost-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in weak.iter().filter_map(|w| w.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    break;
                }
                std::thread::sleep(TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}

//! The one wasmtime `Engine` every plugin runs on (pooling allocator, epoch interruption,
//! async calls), its epoch ticker, the linker with WASI and the host capabilities, and the
//! compilation of components: once per file and engine, cached on disk, checked against the
//! world their `kind` needs.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::config::PluginKind;
use crate::plugin::bindings::PluginPre;
use crate::plugin::error::PluginError;
use crate::plugin::host::State;
use crate::plugin::native;

/// The export that makes a component a standard `wasi:http/proxy` one (any 0.2.x).
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The export of a `wasi:cli` command (a program with a `main`).
const CLI_RUN: &str = "wasi:cli/run@";

/// Epoch tick: how often running guest code yields to other tasks (and so how soon after
/// its deadline a busy call is stopped).
pub const TICK: Duration = Duration::from_millis(1);

/// Longest error message of a plugin's kept for the log and the metrics; the guest may
/// return megabytes.
pub(super) const ERROR_MESSAGE_MAX: usize = 1024;

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
        crate::plugin::host::link_all(&mut linker).map_err(wasm_err)?;
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
        let component = Component::new(&self.engine, bytes).map_err(|e| match wasi_03(bytes) {
            Some(world) => PluginError::Load(format!(
                "it is {world}, a WASI 0.3 component, and plughost runs WASI 0.2 ones for now (wasi:http 0.2's incoming-handler, and its own plughost:plugin world): build it for wasi:http 0.2 (Rust: the `wasi` crate 0.14, as `plughost plugin new --kind wasi-http` writes)"
            )),
            None => PluginError::Load(format!("not a valid component: {}", root(&e))),
        })?;
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

    pub(super) fn engine(&self) -> &Engine {
        match self {
            Self::Plugin(p) => p.engine(),
            Self::WasiHttp(p) => p.engine(),
        }
    }
}

/// The imports and exports that make a component a WASI 0.3 `wasi:http` one (any 0.3.x).
const HANDLER_03: &str = "wasi:http/handler@0.3";

/// What a component wasmtime would not compile is, when it is a `wasi:http@0.3` service or
/// middleware: the engine runs WASI 0.2, whose components have no async types, so a 0.3 one
/// fails to compile with a message about those types. Its names are read with wasmparser,
/// without validating it, to say instead what it is.
fn wasi_03(bytes: &[u8]) -> Option<&'static str> {
    let (mut exports, mut imports) = (false, false);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            wasmparser::Payload::ComponentExportSection(section) => {
                for export in section {
                    exports |= export.ok()?.name.name.starts_with(HANDLER_03);
                }
            }
            wasmparser::Payload::ComponentImportSection(section) => {
                for import in section {
                    imports |= import.ok()?.name.name.starts_with(HANDLER_03);
                }
            }
            _ => {}
        }
    }
    match (exports, imports) {
        (true, true) => {
            Some("a wasi:http@0.3 middleware (it imports and exports wasi:http/handler@0.3)")
        }
        (true, false) => Some("a wasi:http@0.3 service (it exports wasi:http/handler@0.3)"),
        _ => None,
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

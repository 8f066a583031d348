//! Loading plugins at start-up: from `[[plugins]]`, or every `*.wasm` (as a filter) and native
//! library in `plugins_dir`, in name order; at most `max_plugins`, native and wasm together. A
//! plugin that fails to load (compile, link, missing symbol or export, unsafe file, init) is
//! logged with its file and the reason and listed in the [`LoadReport`]; the caller decides
//! (start-up stops unless the plugin is `optional`, see `reload::Reloader::start`). The same
//! function reloads: see [`load`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::host::{Backends, Capabilities};
use super::metrics::PluginMetrics;
use super::native::{self, NativePlugin};
use super::wasm::{Runtime, WasmPlugin};
use super::{LoadedPlugin, PluginError, Plugins};
use crate::config::{Config, PluginConfig};
use crate::metrics::Metrics;

/// The plugins the config asks for, or those found in `plugins_dir`.
fn wanted(config: &Config) -> Vec<PluginConfig> {
    if !config.plugins.is_empty() {
        return config.plugins.clone();
    }
    let Ok(entries) = std::fs::read_dir(&config.plugins_dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_plugin_file(p))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            PluginConfig::filter(name, f)
        })
        .collect()
}

/// The first WebAssembly filter `config` asks for, which requests wait on while it loads.
pub fn pending_filter(config: &Config) -> Option<String> {
    wanted(config)
        .into_iter()
        .find(|p| !p.kind.answers_routes() && is_wasm(&resolve(&config.plugins_dir, &p.file)))
        .map(|p| p.name)
}

/// Whether `file` is a plugin by its name: a `.wasm` component or a native library.
pub fn is_plugin_file(file: &Path) -> bool {
    is_wasm(file) || is_native(file)
}

fn is_wasm(file: &Path) -> bool {
    file.extension().is_some_and(|x| x == "wasm")
}

fn is_native(file: &Path) -> bool {
    file.extension().is_some_and(|x| x == native::EXTENSION)
}

fn resolve(dir: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() || file.starts_with(dir) {
        file.to_path_buf()
    } else {
        dir.join(file)
    }
}

/// A plugin that was asked for and is not running the asked-for version.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// Its name.
    pub plugin: String,
    /// Why it was refused.
    pub reason: String,
    /// Whether the version that ran before goes on running (on reload).
    pub kept_previous: bool,
    /// Whether its entry says plughost may serve without it.
    pub optional: bool,
}

/// What one load or reload did, plugin by plugin.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadReport {
    /// Loaded from their files (new or changed).
    pub loaded: Vec<String>,
    /// Running on, unchanged (same file contents and config).
    pub unchanged: Vec<String>,
    /// Asked for but not loaded.
    pub refused: Vec<Refusal>,
    /// Running before, no longer asked for.
    pub removed: Vec<String>,
    /// Native libraries a reload wanted to add, change or remove: they need a restart.
    pub native_restart_needed: Vec<String>,
}

impl LoadReport {
    /// The first plugin refused that plughost may not serve without, if any.
    pub fn required_refusal(&self) -> Option<&Refusal> {
        self.refused.iter().find(|r| !r.optional)
    }

    /// Whether the plugins that answer requests changed.
    pub fn changed(&self) -> bool {
        !self.loaded.is_empty() || !self.removed.is_empty()
    }
}

/// Loads every plugin the config names (or `plugins_dir` holds). Creates no wasm engine when
/// there is nothing to compile, so a server without plugins stays small.
///
/// On reload, `previous` is the running registry: a wasm plugin whose file and config are
/// unchanged is kept as it is (instances, counters); a new version that fails to compile or
/// to init is refused and the running one stays. Native libraries are not reloaded: dlclose
/// under running calls is unsafe and many libraries cannot be unloaded cleanly, so the running
/// ones stay and a change to them is reported as needing a restart.
pub async fn load(
    config: &Config,
    metrics: &Metrics,
    backends: &Backends,
    previous: Option<&Plugins>,
) -> (Plugins, LoadReport) {
    // Registered at every load, plugins or not, so /metrics always declares their series.
    let families = metrics.families::<PluginMetrics>();
    let mut report = LoadReport::default();
    let mut wanted = wanted(config);
    refuse_past_max(config, &mut wanted, &mut report);
    let mut plugins = Plugins {
        native_body_cap: config.native_body_cap,
        ..Plugins::default()
    };
    let (natives, wanted): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|p| is_native(&resolve(&config.plugins_dir, &p.file)));
    match previous {
        Some(previous) => {
            plugins.natives = previous.natives.clone();
            report.native_restart_needed = native_changes(&natives, previous, config);
            if !report.native_restart_needed.is_empty() {
                tracing::warn!(plugins = ?report.native_restart_needed, "native plugins are not reloaded; restart plughost to load, change or remove them");
            }
        }
        None => load_natives(config, natives, &mut plugins, &mut report),
    }
    let outcomes = load_wasm(config, &wanted, backends, previous).await;
    for (p, attempt) in wanted.iter().zip(outcomes) {
        keep(p, attempt, &families, &mut plugins, &mut report);
    }
    warn_unrouted(config, &plugins);
    if let Some(previous) = previous {
        for gone in previous.wasm() {
            if plugins.get(&gone.name).is_none() {
                tracing::info!(plugin = %gone.name, "plugin unloaded");
                report.removed.push(gone.name.clone());
            }
        }
    }
    (plugins, report)
}

/// Refuses the plugins past `max_plugins`, in config order.
fn refuse_past_max(config: &Config, wanted: &mut Vec<PluginConfig>, report: &mut LoadReport) {
    if wanted.len() <= config.max_plugins {
        return;
    }
    for p in wanted.drain(config.max_plugins..) {
        tracing::warn!(plugin = %p.name, file = %p.file.display(), max_plugins = config.max_plugins, "plugin not loaded: max_plugins reached");
        report.refused.push(Refusal {
            plugin: p.name.clone(),
            reason: format!(
                "max_plugins ({}) reached; raise max_plugins",
                config.max_plugins
            ),
            kept_previous: false,
            optional: p.optional,
        });
    }
}

/// One wasm plugin's load: what came of it, its file, the running version (on reload) and
/// when it started.
struct Attempt {
    outcome: Outcome,
    file: PathBuf,
    running: Option<Arc<LoadedPlugin>>,
    started: Instant,
}

/// Loads the wasm plugins of `wanted` concurrently (reading, hashing and compiling on
/// blocking threads, each plugin-init within its own init_timeout): one slow plugin delays
/// neither the others nor the requests a reload runs beside. The engine is made on first
/// need only: a server without wasm plugins stays small.
async fn load_wasm(
    config: &Config,
    wanted: &[PluginConfig],
    backends: &Backends,
    previous: Option<&Plugins>,
) -> Vec<Attempt> {
    // Pool slots for the instances of every wasm plugin wanted, should all of them load.
    let instances: usize = wanted
        .iter()
        .map(|p| p.instances.unwrap_or(config.max_concurrency))
        .sum();
    let runtime = tokio::sync::OnceCell::new();
    let engine = || async {
        runtime
            .get_or_init(|| async {
                new_runtime(config, instances).map_err(|e| {
                    tracing::error!(error = %e, "cannot create the wasm engine; no wasm plugin loaded");
                    format!("cannot create the wasm engine: {e}")
                })
            })
            .await
            .clone()
    };
    futures_util::future::join_all(wanted.iter().map(|p| async {
        let started = Instant::now();
        let file = resolve(&config.plugins_dir, &p.file);
        let running = previous.and_then(|prev| prev.get(&p.name));
        let outcome = match read_hashed(file.clone()).await {
            Err(e) => Outcome::Loaded(Err(PluginError::Load(format!("cannot read it: {e}")))),
            Ok((_, digest))
                if running
                    .as_ref()
                    .is_some_and(|r| r.source.0 == *p && r.source.1 == digest) =>
            {
                Outcome::Unchanged
            }
            Ok((bytes, digest)) => Outcome::Loaded(match engine().await {
                Err(e) => Err(PluginError::Load(e)),
                Ok(runtime) => match backends.capabilities(p) {
                    Ok(caps) => load_one(runtime, p, bytes, digest, config, caps)
                        .await
                        .map(|(wasm, from_cache)| (Box::new(wasm), from_cache, digest)),
                    Err(e) => Err(PluginError::Load(e.to_string())),
                },
            }),
        };
        Attempt {
            outcome,
            file,
            running,
            started,
        }
    }))
    .await
}

/// A plugin file's bytes and their SHA-256, read on a blocking thread.
async fn read_hashed(file: PathBuf) -> std::io::Result<(Vec<u8>, [u8; 32])> {
    tokio::task::spawn_blocking(move || {
        std::fs::read(&file).map(|bytes| {
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            (bytes, digest)
        })
    })
    .await
    .expect("reading a plugin file does not panic")
}

/// Adds what `attempt` made of `p` to `plugins` (the new version, or the running one when the
/// new one is unchanged or refused), and says so in `report` and the log.
fn keep(
    p: &PluginConfig,
    attempt: Attempt,
    metrics: &Arc<PluginMetrics>,
    plugins: &mut Plugins,
    report: &mut LoadReport,
) {
    let Attempt {
        outcome,
        file,
        running,
        started,
    } = attempt;
    let outcome = match outcome {
        Outcome::Unchanged => {
            report.unchanged.push(p.name.clone());
            add(plugins, running.expect("unchanged means running"));
            return;
        }
        Outcome::Loaded(outcome) => outcome,
    };
    match outcome {
        Ok((wasm, from_cache, digest)) => {
            tracing::info!(
                plugin = %p.name,
                file = %file.display(),
                kind = ?p.kind,
                reuse = ?p.reuse,
                from_cache,
                reload = running.is_some(),
                load_ms = started.elapsed().as_millis() as u64,
                "plugin loaded",
            );
            report.loaded.push(p.name.clone());
            let loaded = LoadedPlugin::new(p, file, digest, *wasm, metrics.clone());
            add(plugins, Arc::new(loaded));
        }
        Err(e) => {
            match &running {
                Some(running) => {
                    tracing::warn!(plugin = %p.name, file = %file.display(), reason = %e, "new plugin version refused; the running version stays");
                    add(plugins, running.clone());
                }
                None => {
                    tracing::warn!(plugin = %p.name, file = %file.display(), reason = %e, "plugin not loaded")
                }
            }
            report.refused.push(Refusal {
                plugin: p.name.clone(),
                reason: e.to_string(),
                kept_previous: running.is_some(),
                optional: p.optional,
            });
        }
    }
}

/// Warns of each responder no route leads to: it is never called.
fn warn_unrouted(config: &Config, plugins: &Plugins) {
    for p in plugins.wasm() {
        let routed = config
            .routes
            .iter()
            .any(|r| r.plugin.as_deref() == Some(p.name.as_str()));
        if p.kind.answers_routes() && !routed {
            tracing::warn!(plugin = %p.name, "responder has no [[routes]] entry and is never called; add [[routes]] with prefix = \"/PATH\" and plugin = \"{}\"", p.name);
        }
    }
}

fn add(plugins: &mut Plugins, plugin: Arc<LoadedPlugin>) {
    if !plugin.kind.answers_routes() {
        plugins.filters.push(plugin.clone());
    }
    plugins.all.push(plugin);
}

fn load_natives(
    config: &Config,
    natives: Vec<PluginConfig>,
    plugins: &mut Plugins,
    report: &mut LoadReport,
) {
    if natives.is_empty() {
        return;
    }
    native::check_dir(&config.plugins_dir);
    for p in natives {
        let file = resolve(&config.plugins_dir, &p.file);
        let json = serde_json::to_string(&p.config).expect("TOML tables convert to JSON");
        match NativePlugin::load(
            &p.name,
            &file,
            &json,
            config.native_budget,
            config.shutdown_timeout,
            config.native_queue_bytes,
        ) {
            Ok(n) => {
                tracing::info!(plugin = %p.name, file = %file.display(), kind = "native", "plugin loaded");
                plugins.natives.push(Arc::new(n));
            }
            Err(e) => {
                tracing::warn!(plugin = %p.name, file = %file.display(), reason = %e, "plugin not loaded");
                report.refused.push(Refusal {
                    plugin: p.name.clone(),
                    reason: e.to_string(),
                    kept_previous: false,
                    optional: p.optional,
                });
            }
        }
    }
}

/// Names of native plugins that were added, removed or whose file changed since they loaded.
fn native_changes(wanted: &[PluginConfig], previous: &Plugins, config: &Config) -> Vec<String> {
    let mut changed: Vec<String> = wanted
        .iter()
        .filter(|p| {
            let file = resolve(&config.plugins_dir, &p.file);
            previous
                .natives
                .iter()
                .find(|n| n.name == p.name)
                .is_none_or(|n| n.file != file || n.modified_since_load())
        })
        .map(|p| p.name.clone())
        .collect();
    changed.extend(
        previous
            .natives
            .iter()
            .filter(|n| !wanted.iter().any(|p| p.name == n.name))
            .map(|n| n.name.clone()),
    );
    changed
}

/// An engine with pool slots for `instances` live instances.
fn new_runtime(config: &Config, instances: usize) -> anyhow::Result<Runtime> {
    let cache_dir =
        (!config.wasm_cache_dir.as_os_str().is_empty()).then(|| config.wasm_cache_dir.clone());
    Runtime::new(cache_dir, u32::try_from(instances).unwrap_or(u32::MAX))
}

/// What became of one wanted wasm plugin.
enum Outcome {
    /// Same file and entry as the running version, which stays.
    Unchanged,
    /// Compiled and initialised (with whether it came from the compiled cache), or refused.
    Loaded(Result<(Box<WasmPlugin>, bool, [u8; 32]), PluginError>),
}

async fn load_one(
    runtime: Runtime,
    p: &PluginConfig,
    bytes: Vec<u8>,
    digest: [u8; 32],
    config: &Config,
    caps: Capabilities,
) -> Result<(WasmPlugin, bool), PluginError> {
    // Compiling a large component (Python, JS) takes seconds of CPU: on a blocking thread,
    // never on a runtime worker that requests need.
    let (component, from_cache, runtime) = tokio::task::spawn_blocking(move || {
        runtime
            .compile_bytes(&bytes, &digest)
            .map(|(c, cached)| (c, cached, runtime))
    })
    .await
    .expect("compiling does not panic")?;
    let pre = runtime.prepare(&component, p.kind, config.wasi_p3)?;
    let wasm = WasmPlugin::load(pre, p.clone(), config.max_concurrency, caps).await?;
    Ok((wasm, from_cache))
}

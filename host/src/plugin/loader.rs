//! Loading plugins at start-up: from `[[plugins]]`, or every `*.wasm` (as a filter) and native
//! library in `plugins_dir`, in name order; at most `max_plugins`, native and wasm together. A
//! plugin that fails to load (compile, link, missing symbol or export, unsafe file, init) is
//! skipped with one log line naming its file and the reason; the server starts anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::native::{self, NativePlugin};
use super::wasm::{Runtime, WasmPlugin};
use super::{LoadedPlugin, PluginError, Plugins};
use crate::config::{Config, PluginConfig, PluginKind};
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
        .filter(|p| p.is_file() && (is_wasm(p) || is_native(p)))
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

/// Loads every plugin the config names (or `plugins_dir` holds). Creates no wasm engine when
/// there is nothing to load, so a server without plugins stays small.
pub async fn load(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Plugins> {
    let mut wanted = wanted(config);
    if wanted.is_empty() {
        return Ok(Plugins::default());
    }
    if wanted.len() > config.max_plugins {
        for p in wanted.drain(config.max_plugins..) {
            tracing::warn!(plugin = %p.name, file = %p.file.display(), max_plugins = config.max_plugins, "plugin not loaded: max_plugins reached");
        }
    }
    native::check_dir(&config.plugins_dir);
    let mut plugins = Plugins {
        native_body_cap: config.native_body_cap,
        ..Plugins::default()
    };
    let (natives, wanted): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|p| is_native(&resolve(&config.plugins_dir, &p.file)));
    for p in natives {
        let file = resolve(&config.plugins_dir, &p.file);
        let json = serde_json::to_string(&p.config).expect("TOML tables convert to JSON");
        match NativePlugin::load(
            &p.name,
            &file,
            &json,
            config.native_budget,
            config.shutdown_timeout,
        ) {
            Ok(n) => {
                tracing::info!(plugin = %p.name, file = %file.display(), kind = "native", "plugin loaded");
                plugins.natives.push(n);
            }
            Err(e) => {
                tracing::warn!(plugin = %p.name, file = %file.display(), reason = %e, "plugin not loaded")
            }
        }
    }
    if wanted.is_empty() {
        return Ok(plugins);
    }
    let cache_dir =
        (!config.wasm_cache_dir.as_os_str().is_empty()).then(|| config.wasm_cache_dir.clone());
    let instances: usize = wanted
        .iter()
        .map(|p| p.instances.unwrap_or(config.max_concurrency))
        .sum();
    let runtime = Runtime::new(cache_dir, u32::try_from(instances).unwrap_or(u32::MAX))?;
    for p in wanted {
        let file = resolve(&config.plugins_dir, &p.file);
        let started = Instant::now();
        match load_one(&runtime, &p, &file, config.max_concurrency).await {
            Ok((wasm, from_cache)) => {
                tracing::info!(
                    plugin = %p.name,
                    file = %file.display(),
                    kind = ?p.kind,
                    reuse = ?p.reuse,
                    from_cache,
                    load_ms = started.elapsed().as_millis() as u64,
                    "plugin loaded",
                );
                let loaded = Arc::new(LoadedPlugin::new(&p, file, wasm, metrics.clone()));
                if p.kind == PluginKind::Filter {
                    plugins.filters.push(loaded.clone());
                }
                plugins.all.push(loaded);
            }
            Err(e) => {
                tracing::warn!(plugin = %p.name, file = %file.display(), reason = %e, "plugin not loaded");
            }
        }
    }
    Ok(plugins)
}

async fn load_one(
    runtime: &Runtime,
    p: &PluginConfig,
    file: &Path,
    default_instances: usize,
) -> Result<(WasmPlugin, bool), PluginError> {
    let (component, from_cache) = runtime.compile(file)?;
    let pre = runtime.prepare(&component)?;
    let wasm = WasmPlugin::load(pre, p.clone(), default_instances).await?;
    Ok((wasm, from_cache))
}

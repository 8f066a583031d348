//! Hot reload: on SIGHUP, on `POST /plugins/reload` and when a plugin file in `plugins_dir`
//! changes, the config file is read again and the plugins, routes, upstream pools and cache
//! TTL are rebuilt and swapped in. Requests in flight finish on the version they started
//! with; a plugin whose new version fails to load keeps running its old one; a bad config file
//! changes nothing; keys that cannot change live (listen address, limits, log) are reported as
//! needing a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::metrics::OutcomeLabel;
use crate::pipeline::{Live, Pipeline};
use crate::plugin::host::Backends;
use crate::plugin::loader::{self, LoadReport};
use crate::upstream::Pools;

/// Quiet time after a change in `plugins_dir` before reloading: copying a file raises several
/// events, and the reload should see the finished file.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What one reload did (the JSON answer of `POST /plugins/reload`).
#[derive(Debug, Serialize)]
pub struct ReloadReport {
    /// `signal`, `admin` or `watch`.
    pub trigger: &'static str,
    /// Set when the config file could not be used; then nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// Keys whose new values take effect only after a restart.
    pub restart_needed: Vec<String>,
    /// What happened to each plugin.
    #[serde(flatten)]
    pub plugins: LoadReport,
}

/// A plugin plughost may not serve without did not load at start-up.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "plugin `{plugin}` did not load: {reason}; fix it, or {}",
    if *from_dir {
        "remove it from plugins_dir (or list plugins as [[plugins]] and mark this one optional = true)"
    } else {
        "mark it optional = true in its [[plugins]] entry to serve without it"
    }
)]
pub struct NotLoaded {
    /// Its name.
    pub plugin: String,
    /// Why.
    pub reason: String,
    /// It was found in `plugins_dir`, not named by a `[[plugins]]` entry.
    pub from_dir: bool,
}

/// Rebuilds and swaps the live parts of the pipeline.
pub struct Reloader {
    overrides: Overrides,
    pipeline: Arc<Pipeline>,
    /// The config the running version was built from; the lock also keeps two reloads from
    /// interleaving.
    config: Arc<tokio::sync::Mutex<Config>>,
    /// Stops the server; the health checks of each pool version stop with it or when the
    /// version is replaced.
    stop: CancellationToken,
    health: parking_lot::Mutex<CancellationToken>,
    /// The key-value buckets: kept across reloads, so plugin state survives them.
    backends: Backends,
}

impl Reloader {
    /// Takes over a running pipeline built from `config`, and starts its pools' health checks.
    pub fn new(
        config: Config,
        overrides: Overrides,
        pipeline: Arc<Pipeline>,
        backends: Backends,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let health = stop.child_token();
        pipeline.live().pools.spawn_health_checks(&health);
        Arc::new(Self {
            overrides,
            pipeline,
            config: Arc::new(tokio::sync::Mutex::new(config)),
            stop,
            health: parking_lot::Mutex::new(health),
            backends,
        })
    }

    /// Loads the plugins of the config plughost started with, on a task of its own: the
    /// server listens meanwhile, answering 503 what needs them (see `Live::starting`).
    /// Reloads wait until it is done. Fails with the first plugin that did not load and is
    /// not `optional`: a filter that is not there must not let requests through.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<Result<LoadReport, NotLoaded>> {
        let config = self
            .config
            .clone()
            .try_lock_owned()
            .expect("nothing reloads before start");
        let this = self.clone();
        tokio::spawn(async move {
            let live = this.pipeline.live();
            let metrics = this.pipeline.metrics();
            let (plugins, report) = loader::load(&config, metrics, &this.backends, None).await;
            if let Some(refused) = report.required_refusal() {
                return Err(NotLoaded {
                    plugin: refused.plugin.clone(),
                    reason: refused.reason.clone(),
                    from_dir: config.plugins.is_empty(),
                });
            }
            this.pipeline
                .replace(Live::new(&config, Arc::new(plugins), live.pools.clone()));
            Ok(report)
        })
    }

    /// Reads the config again, loads what changed and swaps it in.
    pub async fn reload(&self, trigger: &'static str) -> ReloadReport {
        let mut current = self.config.lock().await;
        // Secrets are read again with the file, all or none: a secret that cannot be read
        // refuses the reload like a config error.
        let loaded = Config::load(&self.overrides)
            .map_err(|e| e.to_string())
            .and_then(|new| {
                self.backends.reload(&new).map_err(|e| e.to_string())?;
                Ok(new)
            });
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                self.count("config_error");
                tracing::error!(trigger, error = %e, "reload refused: the config file is not valid; the running config stays");
                return ReloadReport {
                    trigger,
                    config_error: Some(e),
                    restart_needed: Vec::new(),
                    plugins: LoadReport::default(),
                };
            }
        };
        let restart_needed = current.restart_needed(&new);
        if !restart_needed.is_empty() {
            tracing::warn!(keys = ?restart_needed, "config changes that need a restart were not applied");
        }
        let live = self.pipeline.live();
        let metrics = self.pipeline.metrics();
        let (plugins, report) =
            loader::load(&new, metrics, &self.backends, Some(&live.plugins)).await;
        let upstreams_changed = new.upstreams != current.upstreams;
        let pools = if !upstreams_changed {
            live.pools.clone()
        } else {
            // `workers` takes a restart: the running count, not the new file's.
            let pools = Arc::new(Pools::new(
                &new.upstreams,
                current.worker_threads(),
                metrics,
            ));
            let health = self.stop.child_token();
            pools.spawn_health_checks(&health);
            self.backends.outbound.set_pools(pools.clone());
            std::mem::replace(&mut *self.health.lock(), health).cancel();
            pools
        };
        let routes_changed = new.routes != current.routes || upstreams_changed;
        self.pipeline
            .replace(Live::new(&new, Arc::new(plugins), pools));
        self.pipeline.cache.set_own_ttl(new.own_response_ttl);
        if report.changed() || routes_changed {
            // Stored responses may come from a plugin or route that is gone.
            let purged = self.pipeline.cache.purge();
            tracing::debug!(purged, "cache purged after reload");
        }
        self.count(if report.refused.is_empty() {
            "ok"
        } else {
            "refused"
        });
        tracing::info!(
            trigger,
            loaded = ?report.loaded,
            unchanged = report.unchanged.len(),
            refused = report.refused.len(),
            removed = ?report.removed,
            "reload done",
        );
        // Only the live keys of `new` were applied; the rest stays as the server started.
        current.plugins = new.plugins;
        current.routes = new.routes;
        current.upstreams = new.upstreams;
        current.own_response_ttl = new.own_response_ttl;
        current.secrets = new.secrets;
        ReloadReport {
            trigger,
            config_error: None,
            restart_needed,
            plugins: report,
        }
    }

    fn count(&self, outcome: &'static str) {
        let label = OutcomeLabel { outcome };
        self.pipeline.metrics().reloads.get_or_create(&label).inc();
    }

    /// Reloads on SIGHUP and, with `watch_plugins`, on changes in `plugins_dir`, until the
    /// server stops. The SIGHUP handler is in place when this returns (until then SIGHUP
    /// would end the process).
    pub fn spawn_triggers(self: &Arc<Self>, config: &Config) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(mut hup) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                Some(()) = hup.recv() => { this.reload("signal").await; }
                                () = this.stop.cancelled() => return,
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the admin API")
                }
            }
        }
        if config.watch_plugins {
            let this = self.clone();
            let dir = config.plugins_dir.clone();
            tokio::spawn(async move { this.watch(&dir).await });
        }
    }

    async fn watch(&self, dir: &Path) {
        use notify::{EventKind, RecursiveMode, Watcher};
        let changed = Arc::new(Notify::new());
        let tx = changed.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !matches!(event.kind, EventKind::Access(_))
                && event.paths.iter().any(|p| loader::is_plugin_file(p))
            {
                tx.notify_one();
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch plugins_dir; reload with SIGHUP or POST /plugins/reload");
                return;
            }
        };
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch plugins_dir; reload with SIGHUP or POST /plugins/reload");
            return;
        }
        tracing::info!(dir = %dir.display(), "watching plugins_dir for changes");
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = self.stop.cancelled() => return,
            }
            tokio::time::sleep(DEBOUNCE).await;
            self.reload("watch").await;
        }
    }
}

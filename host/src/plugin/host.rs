//! What a WebAssembly plugin's store holds and what the host gives it: WASI (through
//! wasmtime-wasi, with everything a plugin has not been granted turned off), the `host.log`
//! import, guest stdout/stderr routed into the log, and the memory cap.
//!
//! A plugin's log lines are untrusted output like its responses: each line is cut to
//! [`PLUGIN_LOG_LINE_MAX`] and the plugin's lines together to `log_bytes_per_sec`, so a plugin
//! can neither fill the disk nor crowd the server's own lines out of the log buffer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::output::truncated;
use super::wasm::bindings::plughost::plugin::host::{Host, Level};
use crate::config::{Grant, PLUGIN_LOG_LINE_MAX};

/// The data of one plugin instance's `Store`.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps linear memory and tables; records whether a growth was refused.
    pub limiter: MemoryCap,
    /// Where its log lines go, within the plugin's caps.
    log: Arc<PluginLog>,
}

impl State {
    /// Store data for an instance of the plugin that logs through `log`, with WASI limited
    /// to the plugin's grants.
    pub fn new(
        log: Arc<PluginLog>,
        grants: &[Grant],
        memory_bytes: usize,
    ) -> wasmtime::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        // No environment, arguments, stdin, sockets or name lookup: only what is granted.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(log.clone(), "stdout"))
            .stderr(GuestOutput::new(log.clone(), "stderr"));
        for g in grants {
            let perms = if g.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&g.host, &g.guest, perms)?;
        }
        Ok(Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryCap::new(memory_bytes),
            log,
        })
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, None, &message);
    }
}

/// A one-second window of a plugin's log bytes.
struct LogWindow {
    started: Instant,
    bytes: usize,
    /// Whether the drops of this window were announced.
    warned: bool,
}

/// One plugin's log: shared by all its instances, so its caps hold for the plugin as a whole.
pub struct PluginLog {
    plugin: Arc<str>,
    bytes_per_sec: usize,
    window: Mutex<LogWindow>,
    dropped: Counter,
    truncated: Counter,
}

impl PluginLog {
    /// The log of `plugin`, counting dropped and cut lines in the given counters.
    pub fn new(plugin: &str, bytes_per_sec: usize, dropped: Counter, truncated: Counter) -> Self {
        Self {
            plugin: Arc::from(plugin),
            bytes_per_sec,
            window: Mutex::new(LogWindow {
                started: Instant::now(),
                bytes: 0,
                warned: false,
            }),
            dropped,
            truncated,
        }
    }

    /// Logs one line of the plugin's, cut to [`PLUGIN_LOG_LINE_MAX`]; dropped (and counted)
    /// when the plugin has used its bytes for this second.
    pub fn write(&self, level: Level, stream: Option<&'static str>, line: &str) {
        let line = truncated(line, PLUGIN_LOG_LINE_MAX);
        if line.len() > PLUGIN_LOG_LINE_MAX {
            self.truncated.inc();
        }
        {
            let mut w = self.window.lock();
            if w.started.elapsed().as_secs() >= 1 {
                *w = LogWindow {
                    started: Instant::now(),
                    bytes: 0,
                    warned: false,
                };
            }
            if w.bytes + line.len() > self.bytes_per_sec {
                self.dropped.inc();
                if !std::mem::replace(&mut w.warned, true) {
                    tracing::warn!(
                        plugin = &*self.plugin,
                        bytes_per_sec = self.bytes_per_sec,
                        "plugin log over its log_bytes_per_sec; its lines are dropped for the rest of this second and counted in plughost_plugin_log_dropped_total"
                    );
                }
                return;
            }
            w.bytes += line.len();
        }
        let plugin = &*self.plugin;
        let stream = stream.unwrap_or("log");
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, stream, "{line}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, stream, "{line}"),
            Level::Info => tracing::info!(target: "plugin", plugin, stream, "{line}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, stream, "{line}"),
            Level::Error => tracing::error!(target: "plugin", plugin, stream, "{line}"),
        }
    }
}

/// A memory growth the cap refused; the guest traps with this error.
#[derive(Debug, thiserror::Error)]
#[error("plugin memory limit of {limit} bytes reached (asked for {desired})")]
pub struct MemoryLimitReached {
    /// The cap.
    pub limit: usize,
    /// What the guest asked for.
    pub desired: usize,
}

/// wasmtime's `StoreLimits` does the same capping, but reports a refusal only as a generic
/// trap; this one traps with [`MemoryLimitReached`] so the failure is counted as `memory`.
pub struct MemoryCap {
    limit: usize,
    /// Largest memory any instance of this store grew to.
    pub peak: usize,
}

impl MemoryCap {
    fn new(limit: usize) -> Self {
        Self { limit, peak: 0 }
    }
}

/// Most table elements one table may have; generous for interpreters (Python, JS).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitReached {
                limit: self.limit,
                desired,
            }
            .into());
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Guest stdout/stderr: each write becomes log lines tagged with the plugin's name, so a
/// plugin that prints never reaches the server's own terminal.
#[derive(Clone)]
struct GuestOutput {
    log: Arc<PluginLog>,
    stream: &'static str,
}

impl GuestOutput {
    fn new(log: Arc<PluginLog>, stream: &'static str) -> Self {
        Self { log, stream }
    }
}

/// Largest single write a guest may make to stdout/stderr; longer output is split.
const GUEST_WRITE_MAX: usize = 64 * 1024;

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.log.write(Level::Info, Some(self.stream), line);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(GUEST_WRITE_MAX)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

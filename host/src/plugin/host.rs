//! What a WebAssembly plugin's store holds and what the host gives it: WASI (through
//! wasmtime-wasi, with everything a plugin has not been granted turned off), the `host.log`
//! import, guest stdout/stderr routed into the log, and the memory cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::wasm::bindings::plughost::plugin::host::{Host, Level};
use crate::config::Grant;

/// The data of one plugin instance's `Store`.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps linear memory and tables; records whether a growth was refused.
    pub limiter: MemoryCap,
    /// Plugin name, for log lines.
    plugin: Arc<str>,
    /// When the current call started and how long it may run (checked at each epoch tick).
    pub call_started: Instant,
    /// CPU budget of one call.
    pub call_budget: Duration,
}

impl State {
    /// Store data for an instance of `plugin`, with WASI limited to the plugin's grants.
    pub fn new(
        plugin: Arc<str>,
        grants: &[Grant],
        memory_bytes: usize,
        call_budget: Duration,
    ) -> wasmtime::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        // No environment, arguments, stdin, sockets or name lookup: only what is granted.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(plugin.clone(), "stdout"))
            .stderr(GuestOutput::new(plugin.clone(), "stderr"));
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
            plugin,
            call_started: Instant::now(),
            call_budget,
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
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
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
    plugin: Arc<str>,
    stream: &'static str,
}

impl GuestOutput {
    fn new(plugin: Arc<str>, stream: &'static str) -> Self {
        Self { plugin, stream }
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
            tracing::info!(target: "plugin", plugin = &*self.plugin, stream = self.stream, "{line}");
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

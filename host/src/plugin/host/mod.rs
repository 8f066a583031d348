//! What a WebAssembly plugin's store holds and what the host gives it: WASI (through
//! wasmtime-wasi, with everything a plugin has not been granted turned off), the memory cap,
//! and the host capabilities, one module each.
//!
//! Every capability has the same parts (spin's "factors" are the model): `link` adds its
//! imports to the linker once per engine; a shared backend is built once per server from its
//! config section and registers its own metrics; the per-plugin grants are built from the
//! plugin's entry and kept in [`Capabilities`]; the per-instance state lives in [`State`].
//! [`Backends::new`] is the one place they are built from a [`Config`]: the server, `plugin
//! run` and the benches all call it. Every host call a capability makes waits inside the
//! plugin's wall-clock deadline (the call is raced against it), copies no more out of the
//! guest than its hostcall fuel allows, and hands back no more than [`budget::Answer`] allows.

pub mod budget;
pub mod keyvalue;
pub mod log;
pub mod outbound;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::{Config, PluginConfig};
use log::GuestOutput;
pub use log::PluginLog;

/// Adds WASI and every host capability to `linker`, once per engine.
pub fn link_all(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    log::link(linker)?;
    keyvalue::link(linker)?;
    outbound::link(linker)?;
    Ok(())
}

/// The shared backends of the capabilities, built once per server from their config
/// sections and kept across reloads.
#[derive(Clone)]
pub struct Backends {
    /// The plugins' log series.
    pub log: log::Logs,
    /// The declared key-value buckets.
    pub keyvalue: keyvalue::Stores,
    /// The outbound HTTP client, address policy and pools.
    pub outbound: outbound::Outbound,
}

impl Backends {
    /// Every capability's backend for `config`, counted in `registry`; `own` are plughost's
    /// listeners, which plugins may not call by name. Fails when `[outbound] ca_file` cannot
    /// be used.
    pub fn new(
        config: &Config,
        own: Vec<SocketAddr>,
        registry: &mut Registry,
    ) -> Result<Self, outbound::CaFileError> {
        Ok(Self {
            log: log::Logs::new(registry),
            keyvalue: keyvalue::Stores::new(&config.keyvalue, registry),
            outbound: outbound::Outbound::new(&config.outbound, own, registry)?,
        })
    }

    /// What plugin `config` may use of the host: its log, and what its entry grants of these
    /// backends.
    pub fn capabilities(&self, config: &PluginConfig) -> Result<Capabilities, outbound::CaFileError> {
        Ok(Capabilities {
            log: Arc::new(self.log.plugin(&config.name, config.log_bytes_per_sec)),
            keyvalue: self
                .keyvalue
                .grants(&config.keyvalue, config.max_answer_bytes),
            outbound: self.outbound.grants(config)?,
        })
    }
}

/// One plugin's capabilities, built at load from its `[[plugins]]` grants and shared by its
/// instances.
#[derive(Clone)]
pub struct Capabilities {
    /// Where its log lines go.
    pub log: Arc<PluginLog>,
    /// The key-value buckets it was granted.
    pub keyvalue: keyvalue::Grants,
    /// Where it may send HTTP requests.
    pub outbound: outbound::Grants,
}

/// The data of one plugin instance's `Store`.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps linear memory and tables; records whether a growth was refused.
    pub limiter: MemoryCap,
    /// Where its log lines go, within the plugin's caps.
    log: Arc<PluginLog>,
    /// The buckets it may open.
    keyvalue: keyvalue::Grants,
    /// wasi:http's state and where its HTTP requests may go.
    outbound: outbound::Instance,
}

impl State {
    /// Store data for an instance of plugin `config` with `caps`, with WASI limited to the
    /// plugin's directory grants.
    pub fn new(caps: &Capabilities, config: &PluginConfig) -> wasmtime::Result<Self> {
        let log = caps.log.clone();
        let mut wasi = WasiCtxBuilder::new();
        // No environment, arguments, stdin, sockets or name lookup: only what is granted.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(log.clone(), "stdout"))
            .stderr(GuestOutput::new(log.clone(), "stderr"));
        for g in &config.grants {
            let perms = if g.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&g.host, &g.guest, perms)?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(Self {
            wasi: wasi.build(),
            table,
            limiter: MemoryCap::new(config.max_memory_bytes),
            log,
            keyvalue: caps.keyvalue.clone(),
            outbound: outbound::Instance::new(&caps.outbound, config),
        })
    }
}

impl State {
    /// Whether the guest holds no resource (handle) at all.
    pub fn table_is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether the guest holds more handles than a plugin keeps between calls on purpose (an
    /// open bucket or two): one that leaks them would fail once the table is full, so its
    /// instance is retired instead and the next call starts clean.
    pub fn holds_too_many_handles(&mut self) -> bool {
        self.table.iter_mut().nth(HANDLES_KEPT_MAX).is_some()
    }
}

/// Most resources (handles: streams, requests, buckets…) one instance may hold at once: a
/// guest creating them in a loop gets an error, not the host's memory.
const MAX_RESOURCES: usize = 1 << 16;

/// Most handles an instance may still hold after a call and be kept for the next one.
const HANDLES_KEPT_MAX: usize = 64;

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
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

//! What a WebAssembly plugin's store holds and what the host gives it: WASI (through
//! wasmtime-wasi, with everything a plugin has not been granted turned off), the memory cap,
//! and the host capabilities, one module each.
//!
//! Every capability has the same parts (spin's "factors" are the model): `link` adds its
//! imports to the linker once per engine; a shared backend is built once per server from its
//! config section and owns its metrics; the per-instance state is built from the plugin's
//! grants and lives in [`State`]. Adding one means one new module, one line in
//! [`link_all`] and one field in [`State`] / [`Capabilities`]. Every host call a capability
//! makes waits inside the plugin's wall-clock deadline (the call is raced against it) and
//! copies no more out of the guest than its hostcall fuel allows.

pub mod keyvalue;
pub mod log;
pub mod outbound;

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::PluginConfig;
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
    /// The declared key-value buckets.
    pub keyvalue: keyvalue::Stores,
    /// The outbound HTTP client, address policy and pools.
    pub outbound: outbound::Outbound,
}

impl Backends {
    /// What plugin `config` may use of the host: `log`, and what its entry grants of these
    /// backends.
    pub fn capabilities(
        &self,
        config: &PluginConfig,
        log: Arc<PluginLog>,
    ) -> Result<Capabilities, outbound::CaFileError> {
        Ok(Capabilities {
            log,
            keyvalue: self.keyvalue.grants(&config.keyvalue),
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
    /// wasi:http's own state (the largest header section it accepts).
    http: WasiHttpCtx,
    /// Where its HTTP requests may go.
    outbound: outbound::Hooks,
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
        let mut http = WasiHttpCtx::new();
        // A header section a guest builds or receives is copied within its header cap.
        http.set_field_size_limit(config.max_response_header_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(Self {
            wasi: wasi.build(),
            table,
            limiter: MemoryCap::new(config.max_memory_bytes),
            log,
            keyvalue: caps.keyvalue.clone(),
            http,
            outbound: outbound::Hooks::new(&caps.outbound),
        })
    }
}

impl State {
    /// Whether the guest holds no resource (handle) at all.
    pub fn table_is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Most resources (handles: streams, requests, buckets…) one instance may hold at once: a
/// guest creating them in a loop gets an error, not the host's memory.
const MAX_RESOURCES: usize = 1 << 16;

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
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

//! What a WebAssembly plugin's store holds and what the host gives it: WASI (through
//! wasmtime-wasi, with everything a plugin has not been granted turned off), the memory cap,
//! and the host capabilities, one module each.
//!
//! Every capability implements [`Capability`] (spin's "factors" are the model; the trait and
//! the [`capability::Scoped`] view its host functions get are in [`capability`]): `link` adds
//! its imports to the linker once per engine; `backend` builds what the whole server shares
//! from the config (a store, a client) and registers its own metrics; `grants` builds what one
//! plugin may use from its `[[plugins]]` entry; `instance` the state of one instance, kept in
//! its store. The [`capabilities!`] list below is the only place they are named: it makes
//! [`Backends`] (built by [`Backends::new`], which the server, `plugin run` and the benches all
//! call), [`Capabilities`] and the instances' state, which [`State`] holds beside WASI's (and
//! whose `WasiView` and `WasiHttpView` are implemented here). Adding a capability is one new module
//! here and one line in that list; its config section lives beside the others in `config/`
//! (a typed field of `Config`, and of `PluginConfig` for its grants).
//!
//! Every host call a capability makes waits inside the plugin's wall-clock deadline (the call
//! is raced against it), copies no more out of the guest than its hostcall fuel allows, and
//! hands back no more than a [`budget::Answer`] allows.

pub mod budget;
pub mod capability;
pub mod handler;
pub mod keyvalue;
pub mod log;
pub mod outbound;
pub mod wasi_config;

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::config::{Config, PluginConfig};
pub use capability::{Capability, CapabilityError};
use capability::{Getter, Scoped};
use log::GuestOutput;
pub use log::{PluginLog, StderrTail};

/// Makes, from the list of capabilities, the structs that hold each one's part and the
/// functions that build them all.
macro_rules! capabilities {
    ($($(#[doc = $doc:literal])* $name:ident: $cap:ty,)*) => {
        /// The shared backends of the capabilities, built once per server from the config
        /// and kept across reloads.
        #[derive(Clone)]
        pub struct Backends {
            $($(#[doc = $doc])* pub $name: <$cap as Capability>::Backend,)*
        }

        /// One plugin's capabilities, built at load from its `[[plugins]]` grants and shared
        /// by its instances.
        #[derive(Clone)]
        pub struct Capabilities {
            $($(#[doc = $doc])* pub $name: <$cap as Capability>::Grants,)*
        }

        /// One instance's state of every capability.
        struct Instances {
            $($name: <$cap as Capability>::Instance,)*
        }

        impl Backends {
            /// Every capability's backend for `config`, counted in `registry`; `own` are
            /// plughost's listeners, which plugins may not call by name.
            pub fn new(
                config: &Config,
                own: &[SocketAddr],
                registry: &mut Registry,
            ) -> Result<Self, CapabilityError> {
                Ok(Self {
                    $($name: <$cap as Capability>::backend(config, own, registry)?,)*
                })
            }

            /// Brings every backend up to a reloaded `config`; on `Err` none changed that
            /// had not already (each capability's `reload` changes all or nothing of its own).
            pub fn reload(&self, config: &Config) -> Result<(), CapabilityError> {
                $(<$cap as Capability>::reload(&self.$name, config)?;)*
                Ok(())
            }

            /// What `plugin` may use of the host.
            pub fn capabilities(
                &self,
                plugin: &PluginConfig,
            ) -> Result<Capabilities, CapabilityError> {
                Ok(Capabilities {
                    $($name: <$cap as Capability>::grants(&self.$name, plugin)?,)*
                })
            }
        }

        impl Capabilities {
            fn instances(&self, plugin: &PluginConfig) -> Instances {
                Instances {
                    $($name: <$cap as Capability>::instance(&self.$name, plugin),)*
                }
            }
        }

        /// Adds WASI and every capability to `linker`, once per engine; with `p3`, their
        /// WASI 0.3 imports too (for the engine with the component model's concurrency).
        pub fn link_all(linker: &mut Linker<State>, p3: bool) -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            if p3 {
                wasmtime_wasi::p3::add_to_linker(linker)?;
            }
            $(
                let get: Getter<State, _> = |s| Scoped {
                    table: &mut s.table,
                    instance: &mut s.caps.$name,
                };
                <$cap as Capability>::link(linker, get)?;
                if p3 {
                    <$cap as Capability>::link_p3(linker, get)?;
                }
            )*
            Ok(())
        }
    };
}

capabilities! {
    /// Log lines (`plughost:plugin/host.log`, stdout, stderr), capped per plugin.
    log: log::Log,
    /// `wasi:keyvalue` buckets.
    keyvalue: keyvalue::KeyValue,
    /// `wasi:config/store`: the plugin's config table and granted secrets.
    config: wasi_config::WasiConfig,
    /// `wasi:http/outgoing-handler` (0.2) and `wasi:http/client` (0.3) behind the plugin's
    /// allow-list.
    outbound: outbound::OutboundHttp,
    /// `wasi:http/handler` (0.3), a middleware's next hop: the rest of the chain.
    next: handler::NextHop,
}

/// The data of one plugin instance's `Store`.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps linear memory and tables; records whether a growth was refused.
    pub limiter: MemoryCap,
    /// Each capability's state for this instance.
    caps: Instances,
    /// The last lines the guest wrote to stderr.
    pub stderr: StderrTail,
}

impl State {
    /// Store data for an instance of plugin `config` with `caps`, with WASI limited to the
    /// plugin's directory grants and its stdout and stderr going to its log.
    pub fn new(caps: &Capabilities, config: &PluginConfig) -> wasmtime::Result<Self> {
        let stderr = StderrTail::default();
        let mut wasi = WasiCtxBuilder::new();
        // No arguments, stdin, sockets or name lookup: only what is granted. The environment
        // is the plugin's `config` (a standard wasi:http component has no `plugin-init`; a
        // host configures it through `wasi:cli/environment`, as Spin and `wasmtime serve` do).
        for (key, value) in &config.config {
            match value {
                toml::Value::String(s) => wasi.env(key, s),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    wasi.env(key, value.to_string())
                }
                _ => &mut wasi,
            };
        }
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::stdout(caps.log.clone()))
            .stderr(GuestOutput::stderr(caps.log.clone(), stderr.clone()));
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
            caps: caps.instances(config),
            stderr,
        })
    }
}

impl State {
    /// The requests this instance is serving (a 0.3 middleware's), by task.
    pub fn hops(&self) -> &handler::Hops {
        &self.caps.next
    }

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

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.caps.outbound.http(&mut self.table)
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

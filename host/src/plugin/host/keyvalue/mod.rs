//! The key-value capability: `wasi:keyvalue` over buckets the operator declares in
//! `[keyvalue.NAME]` and grants per plugin (`keyvalue = ["NAME"]`), in two versions of the
//! interface over the same buckets: `0.2.0-draft` ([`draft`], what wasmCloud's components
//! import) and `0.2.0-draft2` ([`draft2`], what Spin's import: it adds compare-and-swap). A
//! component may import either or both; a bucket opened through one is the bucket opened
//! through the other.
//!
//! - [`KeyValue`], the capability; `link`: both versions' interfaces, once per engine.
//! - shared backend ([`Stores`]): one [`Bucket`] per declared name, built once per server and
//!   kept across reloads, so state survives instance recycling and hot reload; `memory`
//!   ([`memory`]) keeps keys in this process, `redis` ([`redis`]) in a Redis server a fleet
//!   shares.
//! - per-instance state ([`Grants`]): the buckets the plugin may open (opening another is
//!   `access-denied` if declared, `no-such-store` if not) and its answer budget.
//! - metrics: `plughost_kv_operations_total{bucket,op,outcome}` and
//!   `plughost_kv_duration_seconds{bucket}`.
//! - budgets: what a call hands back (a value, a batch, a page of keys, what a CAS handle
//!   read) is counted against the plugin's `max_answer_bytes` before it is gathered; keys are
//!   at most [`KEY_MAX`] bytes; each bucket holds at most `max_keys` keys and `max_bytes`
//!   bytes, on both backends.
//!
//! Both backends follow one set of rules ([`rules`]), so a plugin behaves the same on either: a write
//! past the quota is refused whole (a batch writes all its pairs or none); a counter is a
//! value of decimal digits from 0 to `i64::MAX` (what Redis' INCRBY reads, kept to draft's
//! unsigned type), and an increment of anything else, past that maximum or below 0, is
//! refused without writing. Every write gives its key a new version (bucket-wide, never
//! reused), which is what a CAS handle compares: a swap writes only if the key's version is
//! still the one the handle read, atomically on both backends. An error means the operation
//! did not happen, unless it says `outcome unknown` (a Redis write sent but not answered).
//! wasi:keyvalue has no expiry: a bucket's `ttl` applies to every write. Every call waits
//! inside the plugin's deadline, and a Redis command also within `command_timeout`.

mod buckets;
pub mod draft;
pub mod draft2;
mod memory;
mod redis;
mod rules;

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

use super::capability::{Capability, CapabilityError, Getter, HasScoped};
use crate::config::{Config, PluginConfig};

pub use buckets::{Grants, Open, Stores};
pub use rules::KEY_MAX;

/// The key-value capability.
pub struct KeyValue;

impl Capability for KeyValue {
    type Backend = Stores;
    type Grants = Grants;
    type Instance = Grants;

    /// Adds `wasi:keyvalue/{store,atomics,batch}`, draft and draft2, to the linker.
    fn link<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        get: Getter<T, Grants>,
    ) -> wasmtime::Result<()> {
        draft::bindings::Imports::add_to_linker::<T, HasScoped<Grants>>(linker, get)?;
        draft2::bindings::Imports::add_to_linker::<T, HasScoped<Grants>>(linker, get)
    }

    fn backend(
        config: &Config,
        _: &[SocketAddr],
        registry: &mut Registry,
    ) -> Result<Stores, CapabilityError> {
        Ok(Stores::new(&config.keyvalue, registry))
    }

    fn grants(stores: &Stores, plugin: &PluginConfig) -> Result<Grants, CapabilityError> {
        Ok(stores.grants(&plugin.keyvalue, plugin.max_answer_bytes))
    }

    fn instance(grants: &Grants, _: &PluginConfig) -> Grants {
        grants.clone()
    }
}

#[cfg(test)]
mod tests;

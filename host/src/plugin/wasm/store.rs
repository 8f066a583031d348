//! What every instance of a plugin, of any world, is made and judged with: its store (the
//! state from the plugin's grants, the memory cap, the hostcall fuel, the epoch callback),
//! the names of the ways a call fails, and the lifecycle counters; and what a wasi:http call
//! gives back. Shared by the instances of plughost's and the 0.2 world ([`super::instance`])
//! and the workers of WASI 0.3 components ([`super::service`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};

use super::engine::{ERROR_MESSAGE_MAX, root};
use crate::body::Body;
use crate::config::PluginConfig;
use crate::plugin::error::{FailureReason, PluginError};
use crate::plugin::host::{Capabilities, MemoryLimitReached, State};
use crate::plugin::output::truncated;

/// Counters of instance lifecycle, for metrics and `/plugins`.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstanceStats {
    /// Time the last instantiation (with `plugin-init`) took.
    pub last_instantiation: Duration,
    /// Largest linear memory seen in any instance.
    pub peak_memory: usize,
    /// Times a call was paused at an epoch tick so that other requests could run.
    pub yields: u64,
    /// Instances made (WASI 0.3 workers).
    pub instantiations: u64,
}

/// Makes the store of a new instance of one plugin: its state from the plugin's grants, its
/// memory cap, its hostcall fuel, and an epoch callback that yields at every tick.
#[derive(Clone)]
pub struct StoreMaker {
    /// What its instances may use of the host (log, key-value buckets).
    pub(super) caps: Capabilities,
    pub(super) config: Arc<PluginConfig>,
    /// Bytes one call may copy out of the guest (see [`OutputLimits::hostcall_fuel`]).
    pub(super) hostcall_fuel: usize,
    /// [`InstanceStats::yields`], counted by every instance's store.
    pub(super) yields: Arc<AtomicU64>,
}

impl StoreMaker {
    /// A new store for an instance on `engine`.
    pub fn store(&self, engine: &wasmtime::Engine) -> Result<Store<State>, PluginError> {
        let state = State::new(&self.caps, &self.config).map_err(|e| {
            PluginError::Load(format!("cannot grant its directories: {}", root(&e)))
        })?;
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(self.hostcall_fuel);
        // Guest code yields at every tick; the deadlines are the timers around the calls.
        let yields = self.yields.clone();
        store.epoch_deadline_callback(move |_| {
            yields.fetch_add(1, Ordering::Relaxed);
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }
}

/// What [`WasmPlugin::handle`] gives back.
pub struct HttpCall {
    /// The response head and its body (whole, or streaming while the call runs), or the
    /// failure before the head.
    pub head: Result<http::Response<Body>, PluginError>,
    /// A new instance was made for this call, in this time.
    pub instantiated: Option<Duration>,
}

impl HttpCall {
    pub(super) fn failed(e: PluginError, instantiated: Option<Duration>) -> Self {
        Self {
            head: Err(e),
            instantiated,
        }
    }
}

/// Names what made a call fail, for a plugin whose calls may copy `hostcall_fuel` bytes.
pub(super) fn classify(e: &wasmtime::Error, hostcall_fuel: usize) -> PluginError {
    if e.downcast_ref::<MemoryLimitReached>().is_some() {
        return PluginError::Failed(FailureReason::Memory, root(e));
    }
    let cause = root(e);
    // wasmtime's error type for this is private; its message is the only handle.
    if cause.contains("fuel allocated for hostcalls has been exhausted") {
        return PluginError::Failed(
            FailureReason::Error,
            format!(
                "the plugin handed the host more than its budget of {hostcall_fuel} bytes in one call \
                 (max_response_header_bytes + max_response_body_bytes, at most \
                 max_memory_bytes)"
            ),
        );
    }
    PluginError::Failed(
        FailureReason::Trap,
        truncated(&cause, ERROR_MESSAGE_MAX).into_owned(),
    )
}

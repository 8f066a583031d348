//! Plugins' series: calls, failures by reason, call and instantiation times, instance reuse,
//! peak memory and backoffs, labelled by plugin.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::error::FailureReason;
use crate::metrics::Families;

/// Label set of per-plugin metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// Plugin name.
    pub plugin: String,
}

/// Label set of plugin failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginErrorLabel {
    /// Plugin name.
    pub plugin: String,
    /// What went wrong.
    pub reason: FailureReason,
}

/// Every plugin's series, shared by the plugins of every reload.
pub struct PluginMetrics {
    /// Calls into each plugin.
    pub calls: Family<PluginLabel, Counter>,
    /// Failed plugin calls, by plugin and reason.
    pub errors: Family<PluginErrorLabel, Counter>,
    /// Time of each plugin call, instantiation included when there was one.
    pub call_duration: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Instances created (with `plugin-init`) per plugin.
    pub instantiations: Family<PluginLabel, Counter>,
    /// Time to create and init one instance.
    pub instantiation_duration: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Calls served by an instance kept from an earlier call.
    pub reuses: Family<PluginLabel, Counter>,
    /// Largest linear memory an instance of the plugin reached.
    pub peak_memory: Family<PluginLabel, Gauge>,
    /// Times a plugin was put in backoff.
    pub backoffs: Family<PluginLabel, Counter>,
}

/// 1 µs .. ~1 s: plugin calls and instantiations.
fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 4.0, 11))
}

impl Families for PluginMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            calls: Family::default(),
            errors: Family::default(),
            call_duration: Family::new_with_constructor(plugin_histogram),
            instantiations: Family::default(),
            instantiation_duration: Family::new_with_constructor(plugin_histogram),
            reuses: Family::default(),
            peak_memory: Family::default(),
            backoffs: Family::default(),
        };
        let r = registry;
        r.register(
            "plughost_plugin_calls",
            "Calls into each plugin",
            m.calls.clone(),
        );
        r.register(
            "plughost_plugin_errors",
            "Failed plugin calls by reason (trap, timeout, memory, error, backoff)",
            m.errors.clone(),
        );
        r.register(
            "plughost_plugin_call_duration_seconds",
            "Time of one plugin call",
            m.call_duration.clone(),
        );
        r.register(
            "plughost_plugin_instantiations",
            "Plugin instances created",
            m.instantiations.clone(),
        );
        r.register(
            "plughost_plugin_instantiation_seconds",
            "Time to create and init a plugin instance",
            m.instantiation_duration.clone(),
        );
        r.register(
            "plughost_plugin_instance_reuses",
            "Plugin calls served by a reused instance",
            m.reuses.clone(),
        );
        r.register(
            "plughost_plugin_peak_memory_bytes",
            "Largest linear memory a plugin instance reached",
            m.peak_memory.clone(),
        );
        r.register(
            "plughost_plugin_backoffs",
            "Times a plugin was put in backoff after repeated failures",
            m.backoffs.clone(),
        );
        m
    }
}

/// Handles on one plugin's metric series (they share their values with the registry).
pub(super) struct Series {
    pub(super) calls: Counter,
    pub(super) duration: Histogram,
    pub(super) instantiations: Counter,
    pub(super) instantiation_duration: Histogram,
    pub(super) reuses: Counter,
}

impl Series {
    pub(super) fn new(m: &PluginMetrics, label: &PluginLabel) -> Self {
        Self {
            calls: m.calls.get_or_create(label).clone(),
            duration: m.call_duration.get_or_create(label).clone(),
            instantiations: m.instantiations.get_or_create(label).clone(),
            instantiation_duration: m.instantiation_duration.get_or_create(label).clone(),
            reuses: m.reuses.get_or_create(label).clone(),
        }
    }
}

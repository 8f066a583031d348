//! Outbound HTTP's series: requests by plugin, destination and outcome, and their times.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of outbound metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) plugin: String,
    /// An `allowed_outbound` entry, or `(denied)`: never the guest's own URL, so the series
    /// stay as few as the config's entries.
    pub(super) destination: String,
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DestinationLabel {
    pub(super) plugin: String,
    pub(super) destination: String,
}

/// This capability's metrics, registered by itself.
pub(super) struct OutboundMetrics {
    pub(super) requests: Family<OutcomeLabel, Counter>,
    pub(super) duration: Family<DestinationLabel, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

impl OutboundMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "plughost_outbound_requests",
            "Outbound HTTP requests of plugins by destination and outcome (ok, denied, limited, refused_address, timeout, connect, tls, too_large, error)",
            m.requests.clone(),
        );
        registry.register(
            "plughost_outbound_duration_seconds",
            "Time from an outbound request to its response head",
            m.duration.clone(),
        );
        m
    }
}

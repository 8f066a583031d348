//! The upstream side's series: requests, failures, times, health and ejections per backend.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::{Families, request_histogram};

/// Labels of per-backend metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// Pool name.
    pub pool: String,
    /// Server address.
    pub server: String,
}

/// Labels of backend failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabel {
    /// Pool name.
    pub pool: String,
    /// Server address.
    pub server: String,
    /// connect, timeout, io or status_5xx.
    pub reason: &'static str,
}

impl BackendErrorLabel {
    /// The label of a failure of `reason` at a backend.
    pub fn new(backend: &BackendLabel, reason: &'static str) -> Self {
        Self {
            pool: backend.pool.clone(),
            server: backend.server.clone(),
            reason,
        }
    }
}

/// Every backend's series, shared by the pools of every reload.
pub struct BackendMetrics {
    /// 1 while a backend takes requests, 0 while it is down.
    pub up: Family<BackendLabel, Gauge>,
    /// Requests sent to each backend.
    pub requests: Family<BackendLabel, Counter>,
    /// Backend failures by reason.
    pub errors: Family<BackendErrorLabel, Counter>,
    /// Time to a backend's response head.
    pub duration: Family<BackendLabel, Histogram, fn() -> Histogram>,
    /// Times a backend was ejected by passive health (outlier detection).
    pub ejections: Family<BackendLabel, Counter>,
}

impl Families for BackendMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            up: Family::default(),
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            ejections: Family::default(),
        };
        registry.register(
            "plughost_backend_up",
            "1 while a backend takes requests, 0 while down",
            m.up.clone(),
        );
        registry.register(
            "plughost_backend_requests",
            "Requests sent to each backend",
            m.requests.clone(),
        );
        registry.register(
            "plughost_backend_errors",
            "Backend failures by reason (connect, timeout, io, status_5xx)",
            m.errors.clone(),
        );
        registry.register(
            "plughost_backend_duration_seconds",
            "Time to a backend's response head",
            m.duration.clone(),
        );
        registry.register(
            "plughost_backend_ejections",
            "Times a backend was ejected by passive health checks",
            m.ejections.clone(),
        );
        m
    }
}

//! Prometheus metrics: one registry owned by the server, encoded as text by the admin API.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `status` label of per-request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// HTTP status code.
    pub status: u16,
}

/// Every metric plughost exports. Cheap to update from any thread (atomics).
pub struct Metrics {
    registry: Registry,
    /// Responses sent, by status.
    pub requests: Family<StatusLabel, Counter>,
    /// Time from request head to response head.
    pub request_duration: Histogram,
    /// Requests holding a processing permit.
    pub inflight: Gauge,
    /// Requests waiting for a processing permit.
    pub queue_waiting: Gauge,
    /// Processing permits free right now (set when scraped).
    pub permits_available: Gauge,
    /// Cache lookups answered from the cache.
    pub cache_hits: Counter,
    /// Cache lookups that went to the origin.
    pub cache_misses: Counter,
    /// Entries pushed out of the cache by newer ones.
    pub cache_evictions: Counter,
    /// Entries in the cache.
    pub cache_entries: Gauge,
    /// Log lines dropped because the log buffer was full (copied from the log writer on scrape).
    pub log_dropped: Counter<u64, AtomicU64>,
    /// Connections open on the public listener.
    pub connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabel, Counter>::default();
        // 50 µs .. ~1.6 s: covers cache hits through slow plugins and backends.
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let m = Self {
            requests,
            request_duration,
            inflight: Gauge::default(),
            queue_waiting: Gauge::default(),
            permits_available: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_entries: Gauge::default(),
            log_dropped: Counter::default(),
            connections: Gauge::default(),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counter names.
        registry.register(
            "plughost_requests",
            "Responses sent, by status",
            m.requests.clone(),
        );
        registry.register(
            "plughost_request_duration_seconds",
            "Time to produce a response head",
            m.request_duration.clone(),
        );
        registry.register(
            "plughost_inflight_requests",
            "Requests being processed",
            m.inflight.clone(),
        );
        registry.register(
            "plughost_queue_waiting",
            "Requests waiting for a processing slot",
            m.queue_waiting.clone(),
        );
        registry.register(
            "plughost_limiter_permits_available",
            "Processing slots free",
            m.permits_available.clone(),
        );
        registry.register(
            "plughost_cache_hits",
            "Responses served from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "plughost_cache_misses",
            "Cacheable requests not found in the cache",
            m.cache_misses.clone(),
        );
        registry.register(
            "plughost_cache_evictions",
            "Cache entries evicted by newer ones",
            m.cache_evictions.clone(),
        );
        registry.register(
            "plughost_cache_entries",
            "Entries in the cache",
            m.cache_entries.clone(),
        );
        registry.register(
            "plughost_log_dropped",
            "Log lines dropped because the log buffer was full",
            m.log_dropped.clone(),
        );
        registry.register(
            "plughost_connections",
            "Open client connections",
            m.connections.clone(),
        );
        Self { registry, ..m }
    }

    /// Records one finished request.
    pub fn observe_request(&self, status: u16, seconds: f64) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
        self.request_duration.observe(seconds);
    }

    /// Sets the log-drop counter to the writer's own count (it only ever grows).
    pub fn set_log_dropped(&self, dropped: u64) {
        self.log_dropped.inner().store(dropped, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

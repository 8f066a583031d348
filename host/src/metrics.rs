//! Prometheus metrics: one registry owned by the server, encoded as text by the admin API,
//! holding the server-wide series and the families each subsystem registers for itself.
//!
//! A subsystem (the cache, the upstream pools, plugins, each host capability) defines its own
//! families and their label types beside its code and registers them through [`Families`]:
//! this module knows none of them, so nothing it imports imports it back.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The metric families one subsystem owns, registered once per [`Metrics`] by the first part
/// of that subsystem that asks ([`Metrics::families`]).
pub trait Families: Send + Sync + 'static {
    /// Creates the families and registers them in `registry`.
    fn register(registry: &mut Registry) -> Self;
}

/// The `status` label of per-request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// HTTP status code.
    pub status: u16,
}

/// Every metric plughost exports. Cheap to update from any thread (atomics).
pub struct Metrics {
    /// Behind a lock only for [`Metrics::families`], which registers at start-up and at the
    /// first use of a subsystem; the request path never takes it.
    registry: Mutex<Registry>,
    /// Each subsystem's [`Families`], by type.
    families: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// Responses sent, by status.
    pub requests: Family<StatusLabel, Counter>,
    /// `requests`' series by status (100 to 599), each taken from the family on first use:
    /// `Family::get_or_create` hashes the label under a read lock on every call, ~200
    /// instructions of every request (callgrind 2026-11). The family never drops a series, so the
    /// handle counts into the exported one.
    requests_by_status: Box<[OnceLock<Counter>]>,
    /// Time from request head to response head.
    pub request_duration: Histogram,
    /// The same times, bucketed so the status page can read percentiles back.
    pub request_latency: Latency,
    /// Requests holding a processing permit.
    pub inflight: Gauge,
    /// Requests waiting for a processing permit.
    pub queue_waiting: Gauge,
    /// Processing permits free right now (set when scraped).
    pub permits_available: Gauge,
    /// Log lines that never reached the log file: the buffer was full, or the file refused
    /// the write (copied from the log writer on scrape).
    pub log_dropped: Counter<u64, AtomicU64>,
    /// Connections open on the public listener.
    pub connections: Gauge,
    /// Connections closed by plughost, by why: `no_request` (no complete request head within
    /// `header_read_timeout` of accept), `idle` (keep-alive past `keepalive_timeout`),
    /// `slow_head` (an HTTP/1 head not complete `header_read_timeout` after its first byte),
    /// `reclaimed` (idle, closed to make room at `max_connections`).
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// Responses whose body failed or was cut off while being sent.
    pub responses_aborted: Counter,
    /// Reloads, by outcome: `ok`, `refused` (a plugin's new version was refused) or
    /// `config_error` (the config file was not usable; nothing changed).
    pub reloads: Family<OutcomeLabel, Counter>,
}

/// The `reason` label of counters that say why something was closed or dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// 50 µs .. ~1.6 s: request and backend response times.
pub fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Buckets of [`Latency`]: bucket `i` counts durations up to 2^(i/2) µs, so a percentile read
/// back is within a factor √2; the last one (about 24 s) also takes everything longer.
pub const LATENCY_BUCKETS: usize = 50;

/// Durations counted in fixed buckets that can be read back. Written by hand because
/// prometheus-client's histogram exposes only its sum and count, and the status page needs
/// percentiles over the last seconds (the difference of two snapshots).
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Latency {
    /// Counts one duration.
    pub fn observe(&self, seconds: f64) {
        let us = seconds * 1e6;
        let i = if us <= 1.0 {
            0
        } else {
            ((us.log2() * 2.0).ceil() as usize).min(LATENCY_BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// The `q` quantile (0..1) of `counts`, in seconds (the upper bound of its bucket);
    /// `None` when nothing was counted.
    pub fn quantile(counts: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let i = counts.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        Some(2f64.powf(i as f64 / 2.0) / 1e6)
    }
}

/// The `outcome` label of reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What happened.
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the server-wide metrics; subsystems add theirs through
    /// [`Metrics::families`] or, before the metrics are shared, [`Metrics::registry_mut`].
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::default(),
            families: Mutex::default(),
            requests: Family::default(),
            requests_by_status: (100..600).map(|_| OnceLock::new()).collect(),
            request_duration: request_histogram(),
            request_latency: Latency::default(),
            inflight: Gauge::default(),
            queue_waiting: Gauge::default(),
            permits_available: Gauge::default(),
            log_dropped: Counter::default(),
            connections: Gauge::default(),
            connections_closed: Family::default(),
            responses_aborted: Counter::default(),
            reloads: Family::default(),
        };
        let mut r = m.registry.lock();
        // prometheus-client appends `_total` to counter names.
        r.register(
            "plughost_requests",
            "Responses sent, by status",
            m.requests.clone(),
        );
        r.register(
            "plughost_request_duration_seconds",
            "Time to produce a response head",
            m.request_duration.clone(),
        );
        r.register(
            "plughost_inflight_requests",
            "Requests being processed",
            m.inflight.clone(),
        );
        r.register(
            "plughost_queue_waiting",
            "Requests waiting for a processing slot",
            m.queue_waiting.clone(),
        );
        r.register(
            "plughost_limiter_permits_available",
            "Processing slots free",
            m.permits_available.clone(),
        );
        r.register(
            "plughost_log_dropped",
            "Log lines that never reached the log file (buffer full, or the write failed)",
            m.log_dropped.clone(),
        );
        r.register(
            "plughost_connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register("plughost_connections_closed", "Client connections closed by plughost, by reason (no_request, idle, slow_head, reclaimed)", m.connections_closed.clone());
        r.register(
            "plughost_responses_aborted",
            "Responses whose body failed or was cut off while being sent",
            m.responses_aborted.clone(),
        );
        r.register(
            "plughost_reloads",
            "Reloads by outcome (ok, refused, config_error)",
            m.reloads.clone(),
        );
        drop(r);
        m
    }

    /// The registry, for a subsystem that registers metrics of its own before the metrics
    /// are shared (it then owns their label types: this module need not know them).
    pub fn registry_mut(&mut self) -> &mut Registry {
        self.registry.get_mut()
    }

    /// The families of subsystem `F`: registered the first time any part of it asks, the
    /// same ones after (a reload's new pools count into the series the old ones did).
    pub fn families<F: Families>(&self) -> Arc<F> {
        let mut families = self.families.lock();
        let any = families
            .entry(TypeId::of::<F>())
            .or_insert_with(|| Arc::new(F::register(&mut self.registry.lock())))
            .clone();
        any.downcast()
            .expect("the map is keyed by the value's type")
    }

    /// Records one finished request.
    pub fn observe_request(&self, status: u16, seconds: f64) {
        let label = StatusLabel { status };
        match self
            .requests_by_status
            .get(usize::from(status).wrapping_sub(100))
        {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create(&label).clone())
                .inc(),
            None => self.requests.get_or_create(&label).inc(),
        };
        self.request_duration.observe(seconds);
        self.request_latency.observe(seconds);
    }

    /// Sets the log-drop counter to the writer's own count (it only ever grows).
    pub fn set_log_dropped(&self, dropped: u64) {
        self.log_dropped.inner().store(dropped, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_status_in_the_exported_series() {
        let m = Metrics::new();
        for status in [200, 200, 404, 100, 599, 600, 999] {
            m.observe_request(status, 0.001);
        }
        let text = m.encode();
        for (status, n) in [(200, 2), (404, 1), (100, 1), (599, 1), (600, 1), (999, 1)] {
            let line = format!("plughost_requests_total{{status=\"{status}\"}} {n}");
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    /// A subsystem's families, registered by the first part that asks and shared by the
    /// next: a reload's new parts count into the series the old ones did.
    #[test]
    fn families_are_registered_once_and_shared() {
        struct Counted(Counter);
        impl Families for Counted {
            fn register(registry: &mut Registry) -> Self {
                let c = Counter::default();
                registry.register("plughost_test_things", "Things", c.clone());
                Counted(c)
            }
        }
        let m = Metrics::new();
        m.families::<Counted>().0.inc();
        m.families::<Counted>().0.inc();
        let text = m.encode();
        assert_eq!(
            text.matches("# TYPE plughost_test_things").count(),
            1,
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "plughost_test_things_total 2"),
            "{text}"
        );
    }

    #[test]
    fn latency_quantiles_are_within_a_bucket() {
        let l = Latency::default();
        assert_eq!(Latency::quantile(&l.snapshot(), 0.99), None);
        for _ in 0..99 {
            l.observe(0.000_1); // 100 µs
        }
        l.observe(0.05); // 50 ms
        let counts = l.snapshot();
        let p50 = Latency::quantile(&counts, 0.5).unwrap();
        assert!((0.000_1..0.000_142).contains(&p50), "{p50}");
        let p100 = Latency::quantile(&counts, 1.0).unwrap();
        assert!((0.05..0.071).contains(&p100), "{p100}");
    }
}

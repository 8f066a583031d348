//! The live status page of the admin listener: `GET /` serves one self-contained HTML page
//! (no external assets) that polls `GET /status.json` every second. A sampler task keeps the
//! last [`HISTORY`] seconds of requests per second and p99 latency for its chart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{LATENCY_BUCKETS, Latency, Metrics};
use crate::pipeline::Pipeline;

/// The page, served as it is.
pub const PAGE: &str = include_str!("status.html");

/// Time between samples of the chart.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: five minutes.
const HISTORY: usize = 300;

/// One point of the chart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Unix time of the end of the interval, in seconds.
    pub t: u64,
    /// Requests answered per second over the interval.
    pub rps: f64,
    /// 99th percentile of their latency, in ms; `None` without requests.
    pub p99_ms: Option<f64>,
}

/// Recent history of the request rate and latency.
pub struct Status {
    started: Instant,
    history: Mutex<VecDeque<Sample>>,
}

impl Status {
    /// Starts sampling `metrics` until `stop`.
    pub fn start(metrics: Arc<Metrics>, stop: CancellationToken) -> Arc<Self> {
        let status = Arc::new(Self {
            started: Instant::now(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        });
        let this = status.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = (Instant::now(), metrics.request_latency.snapshot());
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = stop.cancelled() => return,
                }
                let now = (Instant::now(), metrics.request_latency.snapshot());
                this.push(sample(&last, &now));
                last = now;
            }
        });
        status
    }

    fn push(&self, sample: Sample) {
        let mut h = self.history.lock();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(sample);
    }

    /// Everything the page shows, as `GET /status.json` returns it.
    pub fn snapshot(&self, pipeline: &Pipeline) -> serde_json::Value {
        let live = pipeline.live();
        let m = pipeline.metrics();
        let counts = m.request_latency.snapshot();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "requests_total": counts.iter().sum::<u64>(),
            "p99_ms": Latency::quantile(&counts, 0.99).map(|s| s * 1e3),
            "inflight": m.inflight.get(),
            "connections": m.connections.get(),
            "permits_available": pipeline.limiter.available(),
            "plugins": live.plugins.info(),
            "cache": pipeline.cache.stats(),
            "backends": live.pools.info(),
            "history": self.history.lock().iter().collect::<Vec<_>>(),
        })
    }
}

/// The rate and p99 between two snapshots of the latency buckets.
fn sample(
    (t0, before): &(Instant, [u64; LATENCY_BUCKETS]),
    (t1, after): &(Instant, [u64; LATENCY_BUCKETS]),
) -> Sample {
    let delta: [u64; LATENCY_BUCKETS] = std::array::from_fn(|i| after[i] - before[i]);
    let secs = t1.duration_since(*t0).as_secs_f64().max(1e-3);
    Sample {
        t: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        rps: delta.iter().sum::<u64>() as f64 / secs,
        p99_ms: Latency::quantile(&delta, 0.99).map(|s| s * 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_the_difference_of_two_snapshots() {
        let l = Latency::default();
        l.observe(0.001);
        let t0 = Instant::now();
        let before = (t0, l.snapshot());
        for _ in 0..200 {
            l.observe(0.000_1);
        }
        let s = sample(&before, &(t0 + Duration::from_secs(2), l.snapshot()));
        assert_eq!(s.rps, 100.0);
        // The 1 ms call was before the interval: the p99 is the 100 µs bucket.
        assert!(s.p99_ms.unwrap() < 0.15, "{s:?}");
    }
}

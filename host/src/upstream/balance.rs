//! Upstream pools and the round-robin choice among their healthy servers, with active health
//! checks (a GET every `health_interval`; `fall` failures mark a server down, `rise` successes
//! up) and passive ones reported by the proxy, modelled on Envoy's outlier detection.
//!
//! Passive health counts only what says the server itself is unwell: a failed connect, a
//! response timeout, 502/503/504 from it. A 404 or 501 is the application's answer to a
//! request a client chose, so counting it would let any client switch servers off for
//! everyone. `max_fails` such failures in a row eject the server for `eject_time`, doubled at
//! each further ejection in a row (up to `max_eject_time`); the ejection ends by itself or at
//! the next passing active check, and at most `max_ejected_percent` of a pool (and never its
//! last usable server) is ejected at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Limited};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::h1::Head;
use super::metrics::{BackendErrorLabel, BackendLabel, BackendMetrics};
use super::pool::Connections;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::telemetry;

/// The most of a health check's response body that is read to keep its connection.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;

/// The `User-Agent` of health checks, so backends can tell them in their logs.
static AGENT: http::HeaderValue = http::HeaderValue::from_static("plughost-health-check");

/// One backend server and what is known of it. Counters are atomics: the request path never
/// takes a lock.
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// `ADDR`, the `Host` of requests that name none (health checks, some plugins').
    pub host: http::HeaderValue,
    /// Its kept-alive connections.
    pub connections: Arc<Connections>,
    up: AtomicBool,
    /// Requests in flight to it.
    pub inflight: AtomicI64,
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Requests that failed at it (connect error, timeout, 5xx).
    pub failures: AtomicU64,
    /// Failures in a row that say it is unhealthy (see the module doc).
    consecutive_failures: AtomicU32,
    /// End of its ejection, in ms since the pool's epoch; 0 when not ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row, for the growing ejection time.
    ejections: AtomicU32,
    /// Consecutive good / failed active checks.
    checks_ok: AtomicU32,
    checks_failed: AtomicU32,
    last_check: Mutex<Option<(SystemTime, bool)>>,
    /// Metric labels, built once.
    pub label: BackendLabel,
    /// Its series of `plughost_backend_requests` and `plughost_backend_duration_seconds`,
    /// looked up once: a lookup by label (hash, lock, compare) on every proxied request cost
    /// ~900 instructions (callgrind 2026-11).
    pub metered: Metered,
}

/// A backend's own metric series.
pub struct Metered {
    /// Requests sent.
    pub requests: Counter,
    /// Time to the response head.
    pub duration: Histogram,
}

impl Backend {
    /// Whether it takes requests now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// A named pool of backends.
pub struct Pool {
    /// Its name in the config.
    pub name: String,
    /// Its servers, in config order.
    pub servers: Vec<Backend>,
    next: AtomicUsize,
    /// Time base of the ejection deadlines.
    epoch: Instant,
    /// Its settings.
    pub config: UpstreamConfig,
    metrics: Arc<BackendMetrics>,
}

/// What `GET /backends` shows of a server.
#[derive(Debug, Serialize)]
pub struct BackendInfo {
    /// Pool name.
    pub pool: String,
    /// Address.
    pub server: String,
    /// Up or down.
    pub up: bool,
    /// Requests in flight.
    pub inflight: i64,
    /// Kept-alive connections idle now.
    pub idle_connections: usize,
    /// Requests sent.
    pub requests: u64,
    /// Failed requests.
    pub failures: u64,
    /// Seconds since the last active check, if any.
    pub last_check_secs_ago: Option<f64>,
    /// Whether the last active check passed.
    pub last_check_ok: Option<bool>,
    /// Seconds left of its passive-health ejection, if ejected.
    pub ejected_secs: Option<f64>,
}

impl Pool {
    fn new(
        name: String,
        config: UpstreamConfig,
        workers: usize,
        metrics: Arc<BackendMetrics>,
    ) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|&addr| {
                let label = BackendLabel {
                    pool: name.clone(),
                    server: addr.to_string(),
                };
                Backend {
                    addr,
                    host: http::HeaderValue::from_str(&label.server)
                        .expect("a socket address is a valid header value"),
                    connections: Connections::new(addr, config.connect_timeout, workers),
                    // Assumed up until a check or a request says otherwise.
                    up: AtomicBool::new(true),
                    inflight: AtomicI64::new(0),
                    requests: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                    checks_ok: AtomicU32::new(0),
                    checks_failed: AtomicU32::new(0),
                    last_check: Mutex::new(None),
                    metered: Metered {
                        requests: metrics.requests.get_or_create(&label).clone(),
                        duration: metrics.duration.get_or_create(&label).clone(),
                    },
                    label,
                }
            })
            .collect::<Vec<_>>();
        for b in &servers {
            metrics.up.get_or_create(&b.label).set(1);
        }
        Self {
            name,
            servers,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            config,
            metrics,
        }
    }

    /// Counts a failed request to `b`, for `reason` (connect, timeout, io or status_5xx).
    pub fn count_error(&self, b: &Backend, reason: &'static str) {
        b.failures.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .errors
            .get_or_create(&BackendErrorLabel::new(&b.label, reason))
            .inc();
    }

    /// The next healthy server in strict round-robin order, skipping `not` (the server a
    /// request just failed on). `None` when no server is up.
    pub fn pick(&self, not: Option<SocketAddr>) -> Option<&Backend> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        (0..n)
            .map(|i| &self.servers[(start + i) % n])
            .find(|b| self.usable(b, now) && Some(b.addr) != not)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Up by the active checks and not ejected by the passive ones.
    fn usable(&self, b: &Backend, now_ms: u64) -> bool {
        b.is_up() && b.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    fn set_up(&self, b: &Backend, up: bool, why: &str) {
        if b.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.up.get_or_create(&b.label).set(i64::from(up));
            if up {
                tracing::info!(pool = %self.name, server = %b.addr, "backend up: {why}");
            } else {
                tracing::warn!(pool = %self.name, server = %b.addr, "backend down: {why}");
            }
        }
    }

    /// A request could not connect to `b`.
    pub fn connect_failed(&self, b: &Backend) {
        self.failed(b, "connection failed");
    }

    /// `b` did not send its response head within `response_timeout`.
    pub fn timed_out(&self, b: &Backend) {
        self.failed(b, "response timed out");
    }

    /// Records a response status for passive health: 502, 503 and 504 count as failures of
    /// the server; anything else shows it working.
    pub fn responded(&self, b: &Backend, status: u16) {
        if matches!(status, 502..=504) {
            self.failed(b, "502/503/504 responses");
        } else {
            b.consecutive_failures.store(0, Ordering::Relaxed);
            b.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// One more failure in a row at `b`; ejects it at `max_fails` when the pool can spare it.
    fn failed(&self, b: &Backend, why: &str) {
        let n = b.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.config.max_fails {
            return;
        }
        let now = self.now_ms();
        if b.ejected_until.load(Ordering::Relaxed) > now {
            return;
        }
        let ejected = self
            .servers
            .iter()
            .filter(|s| s.ejected_until.load(Ordering::Relaxed) > now)
            .count();
        let allowed = self.servers.len() * self.config.max_ejected_percent as usize / 100;
        let others_usable = self
            .servers
            .iter()
            .any(|s| s.addr != b.addr && self.usable(s, now));
        if ejected >= allowed || !others_usable {
            // Counted, but ejecting it would leave the pool too small: requests go on
            // reaching it (Envoy's max_ejection_percent and panic threshold).
            return;
        }
        let times = b.ejections.fetch_add(1, Ordering::Relaxed);
        let time = self
            .config
            .eject_time
            .saturating_mul(1u32.checked_shl(times.min(16)).unwrap_or(u32::MAX))
            .min(self.config.max_eject_time);
        b.ejected_until
            .store(now + time.as_millis() as u64, Ordering::Relaxed);
        b.consecutive_failures.store(0, Ordering::Relaxed);
        self.metrics.ejections.get_or_create(&b.label).inc();
        telemetry::ejected(b.addr, time);
        tracing::warn!(pool = %self.name, server = %b.addr, failures = n, ejected_for = ?time, "backend ejected: {why} in a row");
    }

    fn checked(&self, b: &Backend, ok: bool) {
        *b.last_check.lock() = Some((SystemTime::now(), ok));
        if ok {
            b.checks_failed.store(0, Ordering::Relaxed);
            let n = b.checks_ok.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.config.rise {
                self.set_up(b, true, "health check passed");
                // As Envoy does by default: a server that answers its health check is
                // taken back before its ejection ends.
                if b.ejected_until.swap(0, Ordering::Relaxed) > self.now_ms() {
                    tracing::info!(pool = %self.name, server = %b.addr, "backend ejection ended: health check passed");
                }
            }
        } else {
            b.checks_ok.store(0, Ordering::Relaxed);
            let n = b.checks_failed.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.config.fall {
                self.set_up(b, false, "health check failed");
            }
        }
    }

    /// Checks every server once.
    async fn check_all(&self) {
        let checks = self.servers.iter().map(|b| async move {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::USER_AGENT, AGENT.clone());
            let body = crate::body::full(bytes::Bytes::new());
            let head = Head::encode(
                &http::Method::GET,
                &self.config.health_path,
                &headers,
                Some(&b.host),
                &body,
                None,
            );
            let timeout = self.config.connect_timeout + Duration::from_secs(1);
            let check = async {
                let resp = b.connections.send(head.as_ref()?, body).await.ok()?;
                let ok = resp.status().is_success() || resp.status().is_redirection();
                // Read to its end (what a health page says is not looked at), so that the
                // connection is kept for the next check or request.
                let _ = Limited::new(resp.into_body(), HEALTH_BODY_LIMIT)
                    .collect()
                    .await;
                Some(ok)
            };
            let ok = matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)));
            self.checked(b, ok);
        });
        futures_util::future::join_all(checks).await;
    }
}

/// Every configured pool.
#[derive(Default)]
pub struct Pools {
    pools: BTreeMap<String, Arc<Pool>>,
}

impl Pools {
    /// Pools from the config, keeping idle connections apart for each of `workers` threads.
    pub fn new(
        configs: &BTreeMap<String, UpstreamConfig>,
        workers: usize,
        metrics: &Metrics,
    ) -> Self {
        let metrics = metrics.families::<BackendMetrics>();
        let pools = configs
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    Arc::new(Pool::new(name.clone(), c.clone(), workers, metrics.clone())),
                )
            })
            .collect();
        Self { pools }
    }

    /// The pool named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.get(name).cloned()
    }

    /// Starts one health-check task per pool; they stop when `stop` is cancelled.
    pub fn spawn_health_checks(&self, stop: &CancellationToken) {
        for pool in self.pools.values() {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(pool.config.health_interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {
                            pool.check_all().await;
                            for b in &pool.servers {
                                b.connections.close_idle();
                            }
                        }
                        () = stop.cancelled() => break,
                    }
                }
            });
        }
    }

    /// What `GET /backends` shows.
    pub fn info(&self) -> Vec<BackendInfo> {
        self.pools
            .values()
            .flat_map(|p| {
                p.servers.iter().map(|b| {
                    let last = *b.last_check.lock();
                    let ejected_until = b.ejected_until.load(Ordering::Relaxed);
                    let now = p.now_ms();
                    BackendInfo {
                        pool: p.name.clone(),
                        server: b.addr.to_string(),
                        up: b.is_up(),
                        inflight: b.inflight.load(Ordering::Relaxed),
                        idle_connections: b.connections.idle(),
                        requests: b.requests.load(Ordering::Relaxed),
                        failures: b.failures.load(Ordering::Relaxed),
                        last_check_secs_ago: last
                            .map(|(at, _)| at.elapsed().unwrap_or_default().as_secs_f64()),
                        last_check_ok: last.map(|(_, ok)| ok),
                        ejected_secs: (ejected_until > now)
                            .then(|| (ejected_until - now) as f64 / 1000.0),
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> Pool {
        let servers = (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let config: UpstreamConfig = toml::from_str("servers = []").unwrap();
        Pool::new(
            "p".into(),
            UpstreamConfig { servers, ..config },
            1,
            Metrics::new().families(),
        )
    }

    #[test]
    fn round_robin_is_strict_and_skips_servers_that_are_down() {
        let p = pool(3);
        let ports: Vec<u16> = (0..6).map(|_| p.pick(None).unwrap().addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        for _ in 0..5 {
            p.connect_failed(&p.servers[1]);
        }
        let ports: Vec<u16> = (0..4).map(|_| p.pick(None).unwrap().addr.port()).collect();
        assert!(!ports.contains(&2), "{ports:?}");
        let retry = p.pick(Some(p.servers[0].addr)).unwrap();
        assert_eq!(retry.addr.port(), 3);
    }

    #[test]
    fn only_gateway_failures_in_a_row_eject() {
        let p = pool(2);
        let b = &p.servers[0];
        for status in [500, 501, 404, 500, 501, 500, 429] {
            p.responded(b, status);
        }
        assert!(p.usable(b, p.now_ms()), "application statuses never eject");
        for _ in 0..4 {
            p.responded(b, 502);
        }
        p.responded(b, 200);
        p.timed_out(b);
        assert!(p.usable(b, p.now_ms()), "a success breaks the run");
        for _ in 0..4 {
            p.responded(b, 503);
        }
        assert!(!p.usable(b, p.now_ms()));
        assert_eq!(p.pick(None).unwrap().addr.port(), 2);
    }

    #[test]
    fn the_last_usable_server_and_past_the_percentage_are_never_ejected() {
        let single = pool(1);
        for _ in 0..50 {
            single.connect_failed(&single.servers[0]);
        }
        assert!(single.pick(None).is_some());
        let p = pool(4); // 50% of 4: two may be ejected
        for s in 0..4 {
            for _ in 0..5 {
                p.connect_failed(&p.servers[s]);
            }
        }
        let now = p.now_ms();
        let usable = p.servers.iter().filter(|b| p.usable(b, now)).count();
        assert_eq!(usable, 2);
    }

    #[test]
    fn ejections_end_by_themselves_and_grow_in_a_row() {
        let mut p = pool(2);
        p.config.eject_time = Duration::from_millis(40);
        p.config.max_eject_time = Duration::from_millis(100);
        let b = &p.servers[0];
        let eject = || {
            for _ in 0..5 {
                p.connect_failed(b);
            }
            b.ejected_until.load(Ordering::Relaxed) - p.now_ms()
        };
        // Time passing is the point: each ejection ends after its own length.
        let wait_out = || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !p.usable(b, p.now_ms()) {
                assert!(Instant::now() < deadline, "the ejection never ended");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        assert!((30..=40).contains(&eject()));
        wait_out();
        assert!((70..=80).contains(&eject()), "doubled");
        wait_out();
        assert!((90..=100).contains(&eject()), "capped at max_eject_time");
        wait_out();
        p.responded(b, 200);
        assert!((30..=40).contains(&eject()), "a success starts over");
    }

    #[test]
    fn active_checks_move_servers_down_and_up() {
        let p = pool(1);
        let b = &p.servers[0];
        p.checked(b, true); // rise = 1
        assert!(b.is_up());
        p.checked(b, false);
        assert!(b.is_up()); // fall = 2
        p.checked(b, false);
        assert!(!b.is_up());
        assert!(p.pick(None).is_none());
        p.checked(b, true);
        assert!(b.is_up());
    }
}

//! The response cache: a thread-safe LRU (crate `lru`) of whole GET responses, with the
//! HTTP caching rules a shared cache must follow (RFC 9111), reduced to what plughost needs.
//!
//! Rules, in short:
//! - only GET responses are stored (HEAD is answered from a stored GET);
//! - the request's `Cache-Control: no-store` skips the cache entirely, `no-cache` (or
//!   `Pragma: no-cache`) skips the lookup but lets the fresh response be stored; requests with
//!   `Authorization` skip the cache, since one user's answer must not reach another;
//! - a response is stored only with a heuristically cacheable status, without `no-store`,
//!   `private`, `no-cache`, `Set-Cookie` or `Vary` (Vary is not honoured: such responses are
//!   simply not cached), with a body no larger than `cache_max_entry_bytes`;
//! - freshness is `s-maxage`, else `max-age`, else the configured default TTL; 0 is not stored.
//!
//! Concurrent misses on one key may all reach the origin; the last response stored wins, and
//! each entry is immutable (`Arc`) so readers never see a half-written one.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, HOST, PRAGMA, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode, request};
use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::Metrics;

/// A stored response. Immutable once stored.
#[derive(Debug)]
pub struct Entry {
    /// Status of the stored response.
    pub status: StatusCode,
    /// Its headers, as the origin sent them.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    stored_at: Instant,
    ttl: Duration,
}

impl Entry {
    /// Time since the entry was stored.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }
}

/// What a request lets the cache do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    /// May be answered from the cache.
    pub lookup: bool,
    /// Its response may be stored.
    pub store: bool,
}

/// Counts for `GET /cache` on the admin API.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Most entries kept.
    pub capacity: usize,
    /// Entries now.
    pub entries: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the origin.
    pub misses: u64,
    /// Entries pushed out by newer ones.
    pub evictions: u64,
    /// hits / (hits + misses), 0 when there were none.
    pub hit_ratio: f64,
}

/// The response cache.
pub struct Cache {
    /// `None` when `cache_capacity = 0`.
    lru: Option<Mutex<LruCache<String, Arc<Entry>>>>,
    capacity: usize,
    /// Freshness of responses that state none, in ns; a reload may change it.
    default_ttl_ns: AtomicU64,
    max_entry_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// A cache of `capacity` entries (0 disables it).
    pub fn new(
        capacity: usize,
        default_ttl: Duration,
        max_entry_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            lru: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            capacity,
            default_ttl_ns: AtomicU64::new(default_ttl.as_nanos() as u64),
            max_entry_bytes,
            metrics,
        }
    }

    /// Whether a request may use the cache at all, and how. `None`: not cacheable.
    pub fn request_policy(&self, parts: &request::Parts) -> Option<RequestPolicy> {
        if self.lru.is_none()
            || !(parts.method == Method::GET || parts.method == Method::HEAD)
            || parts.headers.contains_key(AUTHORIZATION)
        {
            return None;
        }
        let mut policy = RequestPolicy {
            lookup: true,
            store: parts.method == Method::GET,
        };
        for d in directives(&parts.headers) {
            match d {
                "no-store" => return None,
                "no-cache" => policy.lookup = false,
                _ => {}
            }
        }
        if parts
            .headers
            .get_all(PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            policy.lookup = false;
        }
        Some(policy)
    }

    /// The cache key: host + path + query.
    pub fn key(parts: &request::Parts) -> String {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut key = String::with_capacity(host.len() + pq.len());
        key.push_str(host);
        key.push_str(pq);
        key
    }

    /// A fresh entry for `key`, counting the hit or miss. Stale entries are removed.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let lru = self.lru.as_ref()?;
        let now = Instant::now();
        let found = {
            let mut lru = lru.lock();
            match lru.get(key) {
                Some(e) if e.is_fresh(now) => Some(e.clone()),
                Some(_) => {
                    lru.pop(key);
                    self.metrics.cache_entries.set(lru.len() as i64);
                    None
                }
                None => None,
            }
        };
        match found {
            Some(_) => self.metrics.cache_hits.inc(),
            None => self.metrics.cache_misses.inc(),
        };
        found
    }

    /// How long a response may be kept, or `None` if it must not be stored: the cache is off,
    /// its body length is unknown or over `cache_max_entry_bytes`, or its status or headers
    /// forbid it.
    pub fn admit(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        len: Option<u64>,
    ) -> Option<Duration> {
        self.lru.as_ref()?;
        if len? > self.max_entry_bytes as u64 {
            return None;
        }
        let default = Duration::from_nanos(self.default_ttl_ns.load(Ordering::Relaxed));
        response_ttl(status, headers, default)
    }

    /// Changes the freshness of responses stored from now on that state none.
    pub fn set_default_ttl(&self, ttl: Duration) {
        self.default_ttl_ns
            .store(ttl.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Stores a response admitted for `ttl`.
    pub fn put(
        &self,
        key: String,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        ttl: Duration,
    ) {
        let Some(lru) = &self.lru else { return };
        let entry = Arc::new(Entry {
            status,
            headers,
            body,
            stored_at: Instant::now(),
            ttl,
        });
        let mut lru = lru.lock();
        if let Some((old_key, _)) = lru.push(key, entry) {
            // `push` also returns the replaced entry of the same key; only others are evictions.
            if lru.peek(&old_key).is_none() {
                self.metrics.cache_evictions.inc();
            }
        }
        self.metrics.cache_entries.set(lru.len() as i64);
    }

    /// Removes every entry; returns how many there were.
    pub fn purge(&self) -> usize {
        let Some(lru) = &self.lru else { return 0 };
        let mut lru = lru.lock();
        let n = lru.len();
        lru.clear();
        self.metrics.cache_entries.set(0);
        n
    }

    /// Counts for the admin API.
    pub fn stats(&self) -> Stats {
        let hits = self.metrics.cache_hits.get();
        let misses = self.metrics.cache_misses.get();
        let lookups = hits + misses;
        Stats {
            capacity: self.capacity,
            entries: self.lru.as_ref().map_or(0, |l| l.lock().len()),
            hits,
            misses,
            evictions: self.metrics.cache_evictions.get(),
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
        }
    }
}

/// Lower-cased `Cache-Control` directives of a header map, names only for flags,
/// `name=value` kept whole.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// How long a response may be served from the cache; `None` if it must not be stored.
pub fn response_ttl(
    status: StatusCode,
    headers: &HeaderMap,
    default: Duration,
) -> Option<Duration> {
    // RFC 9110 §15.1: statuses cacheable without explicit freshness.
    if !matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    ) {
        return None;
    }
    if headers.contains_key(SET_COOKIE) || headers.contains_key(VARY) {
        return None;
    }
    let (mut max_age, mut s_maxage) = (None, None);
    for d in directives(headers) {
        let (name, value) = d.split_once('=').unwrap_or((d, ""));
        let name = name.trim();
        if ["no-store", "private", "no-cache"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        let secs = || value.trim().trim_matches('"').parse::<u64>().ok();
        if name.eq_ignore_ascii_case("max-age") {
            max_age = secs();
        } else if name.eq_ignore_ascii_case("s-maxage") {
            s_maxage = secs();
        }
    }
    let ttl = s_maxage.or(max_age).map_or(default, Duration::from_secs);
    (!ttl.is_zero()).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request};

    const MIN: Duration = Duration::from_secs(60);

    fn cache(capacity: usize) -> Cache {
        Cache::new(capacity, MIN, 1024, Arc::new(Metrics::new()))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Admits and stores an empty 200 response with the given headers.
    fn put(c: &Cache, key: &str, h: &[(&'static str, &'static str)]) {
        let h = headers(h);
        let ttl = c.admit(StatusCode::OK, &h, Some(0)).expect("admitted");
        c.put(key.into(), StatusCode::OK, h, Bytes::new(), ttl);
    }

    fn parts(method: &str, uri: &str, h: &[(&'static str, &'static str)]) -> request::Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn ttl_prefers_s_maxage_then_max_age_then_default() {
        let ok = StatusCode::OK;
        assert_eq!(response_ttl(ok, &headers(&[]), MIN), Some(MIN));
        let h = headers(&[("cache-control", "public, max-age=5")]);
        assert_eq!(response_ttl(ok, &h, MIN), Some(Duration::from_secs(5)));
        let h = headers(&[("cache-control", "max-age=5, s-maxage=7")]);
        assert_eq!(response_ttl(ok, &h, MIN), Some(Duration::from_secs(7)));
        let h = headers(&[("cache-control", "max-age=0")]);
        assert_eq!(response_ttl(ok, &h, MIN), None);
    }

    #[test]
    fn private_no_store_cookies_vary_and_errors_are_not_stored() {
        let ok = StatusCode::OK;
        for h in [
            headers(&[("cache-control", "no-store")]),
            headers(&[("cache-control", "Private")]),
            headers(&[("cache-control", "no-cache")]),
            headers(&[("set-cookie", "a=b")]),
            headers(&[("vary", "accept")]),
        ] {
            assert_eq!(response_ttl(ok, &h, MIN), None, "{h:?}");
        }
        let none = headers(&[]);
        assert_eq!(
            response_ttl(StatusCode::INTERNAL_SERVER_ERROR, &none, MIN),
            None
        );
        assert_eq!(response_ttl(StatusCode::CREATED, &none, MIN), None);
    }

    #[test]
    fn request_directives_decide_lookup_and_store() {
        let c = cache(10);
        let p = |m, h| c.request_policy(&parts(m, "/", h));
        assert_eq!(
            p("GET", &[]),
            Some(RequestPolicy {
                lookup: true,
                store: true
            })
        );
        assert_eq!(
            p("HEAD", &[]),
            Some(RequestPolicy {
                lookup: true,
                store: false
            })
        );
        assert_eq!(p("POST", &[]), None);
        assert_eq!(p("GET", &[("cache-control", "no-store")]), None);
        assert_eq!(p("GET", &[("authorization", "Bearer x")]), None);
        assert_eq!(
            p("GET", &[("cache-control", "no-cache")]),
            Some(RequestPolicy {
                lookup: false,
                store: true
            })
        );
        assert_eq!(
            p("GET", &[("pragma", "no-cache")]),
            Some(RequestPolicy {
                lookup: false,
                store: true
            })
        );
    }

    #[test]
    fn key_is_host_path_and_query() {
        let p = parts("GET", "/a/b?x=1", &[("host", "example.org")]);
        assert_eq!(Cache::key(&p), "example.org/a/b?x=1");
    }

    #[test]
    fn least_recently_used_entry_is_evicted() {
        let c = cache(2);
        put(&c, "a", &[]);
        put(&c, "b", &[]);
        assert!(c.get("a").is_some()); // a is now the most recent
        put(&c, "c", &[]);
        assert!(c.get("b").is_none());
        assert!(c.get("a").is_some() && c.get("c").is_some());
        let s = c.stats();
        assert_eq!((s.entries, s.evictions, s.hits, s.misses), (2, 1, 3, 1));
    }

    #[test]
    fn replacing_a_key_is_not_an_eviction() {
        let c = cache(2);
        put(&c, "a", &[]);
        put(&c, "a", &[]);
        assert_eq!(c.stats().evictions, 0);
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn stale_entries_are_dropped() {
        let c = cache(2);
        put(&c, "a", &[("cache-control", "max-age=1")]);
        assert!(c.get("a").is_some());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(c.get("a").is_none());
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn large_unknown_length_and_disabled_are_not_admitted() {
        let c = cache(2);
        let h = headers(&[]);
        assert_eq!(c.admit(StatusCode::OK, &h, Some(1024)), Some(MIN));
        assert_eq!(c.admit(StatusCode::OK, &h, Some(1025)), None);
        assert_eq!(c.admit(StatusCode::OK, &h, None), None);
        let off = cache(0);
        assert!(off.request_policy(&parts("GET", "/", &[])).is_none());
        assert_eq!(off.admit(StatusCode::OK, &h, Some(0)), None);
    }

    #[test]
    fn purge_empties_the_cache() {
        let c = cache(4);
        put(&c, "a", &[]);
        assert_eq!(c.purge(), 1);
        assert!(c.get("a").is_none());
    }
}

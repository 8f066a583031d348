//! The cache's store: each URL's stored variants in an LRU bounded by entries and bytes, the
//! collapsing of concurrent misses, and the cache's counters.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HOST, VARY};
use http::{HeaderMap, HeaderName, Method, StatusCode, request};
use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::policy::{self, Directives, Freshness, Present, Settings};
use crate::metrics::{Families, Metrics};

/// Responses kept per URL that differ by their `Vary` headers.
pub const MAX_VARIANTS: usize = 8;

/// A stored response. Immutable once stored.
#[derive(Debug)]
pub struct Entry {
    /// Status of the stored response.
    pub status: StatusCode,
    /// Its headers as received (hop-by-hop and `Age` removed).
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    /// When it was received and how long it stays fresh.
    pub freshness: Freshness,
    /// The request headers its `Vary` names, as the request that stored it had them.
    vary: Vec<(HeaderName, Option<String>)>,
    /// Bytes it weighs against `cache_max_bytes`.
    size: usize,
}

impl Entry {
    /// A copy of `self` with `headers` and `freshness`, stored by no one (a refreshed entry
    /// handed to a request when the store no longer has the original).
    pub fn unstored(&self, headers: HeaderMap, freshness: Freshness) -> Self {
        Self {
            status: self.status,
            headers,
            body: self.body.clone(),
            freshness,
            vary: Vec::new(),
            size: 0,
        }
    }

    /// The request headers its `Vary` names and their values when it was stored: what
    /// selects this variant of its URL.
    pub fn variant(&self) -> &[(HeaderName, Option<String>)] {
        &self.vary
    }

    /// Whether a request with `headers` selects this variant (RFC 9111 §4.1).
    fn selected_by(&self, headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| normalized(headers, name) == *value)
    }
}

/// A request header's field lines as one comparable value: joined with ", ", runs of
/// whitespace folded.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    Some(joined.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The request's host, lower-cased: `Host`, else the target's authority (HTTP/2).
pub(super) fn host_of(parts: &request::Parts) -> String {
    raw_host(parts).to_ascii_lowercase()
}

/// The request's host as sent.
fn raw_host(parts: &request::Parts) -> &str {
    parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// What a request lets the cache do.
#[derive(Debug, Clone)]
pub struct RequestPolicy {
    /// Its cache directives.
    pub directives: Directives,
    /// Its response may be stored (a GET without `no-store`).
    pub store: bool,
    /// Which of the fields the cache reads it carries.
    pub present: Present,
}

/// Counts for `GET /cache` on the admin API.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Most URLs kept.
    pub capacity: usize,
    /// URLs now.
    pub entries: usize,
    /// Bytes held now, and the most.
    pub bytes: usize,
    /// Most bytes held.
    pub max_bytes: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the origin.
    pub misses: u64,
    /// Entries pushed out by newer ones.
    pub evictions: u64,
    /// hits / (hits + misses), 0 when there were none.
    pub hit_ratio: f64,
}

/// The LRU and the bytes it holds.
struct Store {
    lru: LruCache<String, Vec<Arc<Entry>>>,
    bytes: usize,
}

/// The response cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// URLs kept (0 turns the cache off).
    pub capacity: usize,
    /// Bytes kept.
    pub max_bytes: usize,
    /// Largest body stored.
    pub max_entry_bytes: usize,
    /// Heuristic freshness rules.
    pub settings: Settings,
    /// Longest wait for a collapsed request.
    pub lock_timeout: Duration,
}

/// The response cache. Cheap to clone: background revalidations hold a handle.
#[derive(Clone)]
pub struct Cache(Arc<Inner>);

struct Inner {
    /// `None` when `cache_capacity = 0`.
    store: Option<Mutex<Store>>,
    limits: Limits,
    /// Freshness of plughost's own responses that state none, in ns; a reload may change it.
    own_ttl_ns: AtomicU64,
    /// URLs being fetched from the origin now; their followers wait for the semaphore to close.
    /// Hashed with foldhash, as the `lru` store is: SipHash of the key on its insert and its
    /// removal cost a miss ~450 instructions (callgrind 2026-11); the key is shared with the guard.
    inflight: Mutex<foldhash::HashMap<Arc<str>, Arc<Semaphore>>>,
    metrics: Arc<CacheMetrics>,
}

/// The cache's series.
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    entries: Gauge,
}

impl Families for CacheMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            hits: Counter::default(),
            misses: Counter::default(),
            evictions: Counter::default(),
            entries: Gauge::default(),
        };
        // prometheus-client appends `_total` to counter names.
        registry.register(
            "plughost_cache_hits",
            "Responses served from the cache",
            m.hits.clone(),
        );
        registry.register(
            "plughost_cache_misses",
            "Cacheable requests not found in the cache",
            m.misses.clone(),
        );
        registry.register(
            "plughost_cache_evictions",
            "Cache entries evicted by newer ones",
            m.evictions.clone(),
        );
        registry.register(
            "plughost_cache_entries",
            "Entries in the cache",
            m.entries.clone(),
        );
        m
    }
}

/// Who fetches a URL that is not in the cache.
pub enum Fetch {
    /// This request: others wait until the guard drops.
    Leader(FetchGuard),
    /// Another request is fetching it; wait for it, then look again.
    Follower(Arc<Semaphore>),
}

/// Held by the request fetching a URL; dropping it wakes the followers.
///
/// The followers wait on a semaphore that never has a permit and is closed when the fetch
/// ends: a follower that comes after the close returns at once, so none can miss it. A watch
/// channel did the same, but waking its eight lists of waiters cost every miss ~420
/// instructions, with no one waiting nearly always (callgrind 2026-11, path `proxy`).
pub struct FetchGuard {
    cache: Cache,
    key: Arc<str>,
    done: Arc<Semaphore>,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        self.cache.0.inflight.lock().remove(&*self.key);
        self.done.close();
    }
}

impl Cache {
    /// A cache with these limits (capacity 0 disables it).
    pub fn new(limits: Limits, own_ttl: Duration, metrics: &Metrics) -> Self {
        let store = NonZeroUsize::new(limits.capacity).map(|_| {
            Mutex::new(Store {
                lru: LruCache::unbounded(),
                bytes: 0,
            })
        });
        Self(Arc::new(Inner {
            store,
            limits,
            own_ttl_ns: AtomicU64::new(own_ttl.as_nanos() as u64),
            inflight: Mutex::default(),
            metrics: metrics.families(),
        }))
    }

    /// Whether a request may use the cache at all, and how. `None`: not cacheable (methods
    /// other than GET and HEAD; requests with `Authorization`, whose answers belong to one
    /// user; the cache off).
    pub fn request_policy(&self, parts: &request::Parts) -> Option<RequestPolicy> {
        if self.0.store.is_none() || !(parts.method == Method::GET || parts.method == Method::HEAD)
        {
            return None;
        }
        let present = Present::of(&parts.headers);
        if present.has(Present::AUTHORIZATION) {
            return None;
        }
        let directives = policy::request_directives(&parts.headers, present);
        Some(RequestPolicy {
            store: parts.method == Method::GET && !directives.no_store,
            directives,
            present,
        })
    }

    /// The cache key: host (lower-cased) + path + query.
    pub fn key(parts: &request::Parts) -> String {
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let host = raw_host(parts);
        // One allocation of the final size: lower-casing into a new string and then
        // appending the path grew it once more on every request.
        let mut key = String::with_capacity(host.len() + pq.len());
        key.push_str(host);
        key.make_ascii_lowercase();
        key.push_str(pq);
        key
    }

    /// The stored variant of `key` that a request with `headers` selects.
    pub fn lookup(&self, key: &str, headers: &HeaderMap) -> Option<Arc<Entry>> {
        let mut store = self.0.store.as_ref()?.lock();
        store
            .lru
            .get(key)?
            .iter()
            .find(|e| e.selected_by(headers))
            .cloned()
    }

    /// Counts a lookup answered from the cache, or not.
    pub fn count(&self, hit: bool) {
        if hit {
            self.0.metrics.hits.inc();
        } else {
            self.0.metrics.misses.inc();
        }
    }

    /// Claims the fetch of `key`, or returns the claim of the request already fetching it.
    pub fn begin_fetch(&self, key: &str) -> Fetch {
        let mut inflight = self.0.inflight.lock();
        // Not hashed while nothing is in flight: an empty map answers at once.
        if let Some(done) = inflight.get(key) {
            return Fetch::Follower(done.clone());
        }
        let (key, done): (Arc<str>, _) = (key.into(), Arc::new(Semaphore::new(0)));
        inflight.insert(key.clone(), done.clone());
        Fetch::Leader(FetchGuard {
            cache: self.clone(),
            key,
            done,
        })
    }

    /// Waits for the leader of a collapsed fetch, at most `cache_lock_timeout`.
    pub async fn wait(&self, leader_done: Arc<Semaphore>) {
        let _ = tokio::time::timeout(self.0.limits.lock_timeout, leader_done.acquire()).await;
    }

    /// The freshness of a response that may be stored, or `None`: the cache is off, the body
    /// is larger than `cache_max_entry_bytes`, or the rules forbid it. `own` responses
    /// (plughost's pages and plugins) that state no freshness get `own_response_ttl`.
    pub fn admit(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        len: Option<u64>,
        times: (SystemTime, SystemTime),
        own: bool,
    ) -> Option<Freshness> {
        self.0.store.as_ref()?;
        if len.is_some_and(|l| l > self.0.limits.max_entry_bytes as u64) {
            return None;
        }
        let own_ttl = own.then(|| Duration::from_nanos(self.0.own_ttl_ns.load(Ordering::Relaxed)));
        Freshness::of(
            status,
            headers,
            times.0,
            times.1,
            self.0.limits.settings,
            own_ttl,
        )
    }

    /// Whether it stores anything (`cache_capacity` above 0).
    pub fn enabled(&self) -> bool {
        self.0.store.is_some()
    }

    /// Largest body stored.
    pub fn max_entry_bytes(&self) -> usize {
        self.0.limits.max_entry_bytes
    }

    /// Changes the freshness of plughost's own responses stored from now on.
    pub fn set_own_ttl(&self, ttl: Duration) {
        self.0
            .own_ttl_ns
            .store(ttl.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Stores a response admitted with `freshness`, as the variant selected by the request
    /// headers `request` (replacing the variant they select, if any).
    pub fn put(
        &self,
        key: String,
        request: &HeaderMap,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        freshness: Freshness,
    ) -> Arc<Entry> {
        headers.remove(http::header::AGE);
        let vary: Vec<(HeaderName, Option<String>)> = headers
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::try_from(n.trim()).ok())
            .map(|n| {
                let value = normalized(request, &n);
                (n, value)
            })
            .collect();
        let size = body.len()
            + headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 32)
                .sum::<usize>()
            + key.len()
            + 256;
        let entry = Arc::new(Entry {
            status,
            headers,
            body,
            freshness,
            vary,
            size,
        });
        let Some(store) = &self.0.store else {
            return entry;
        };
        let mut store = store.lock();
        let mut variants = store.lru.pop(&key).unwrap_or_default();
        let mut freed = 0;
        variants.retain(|e| {
            let same = e
                .vary
                .iter()
                .map(|(n, _)| n)
                .eq(entry.vary.iter().map(|(n, _)| n))
                && e.selected_by(request);
            if same {
                freed += e.size;
            }
            !same
        });
        if variants.len() >= MAX_VARIANTS {
            freed += variants.remove(0).size;
        }
        variants.push(entry.clone());
        store.bytes = store.bytes - freed + entry.size;
        store.lru.push(key, variants);
        self.evict(&mut store);
        entry
    }

    /// Pops least recently used URLs until both limits hold.
    fn evict(&self, store: &mut Store) {
        let limits = &self.0.limits;
        while store.lru.len() > limits.capacity || store.bytes > limits.max_bytes {
            let Some((_, gone)) = store.lru.pop_lru() else {
                break;
            };
            store.bytes -= gone.iter().map(|e| e.size).sum::<usize>();
            self.0.metrics.evictions.inc();
        }
        self.0.metrics.entries.set(store.lru.len() as i64);
    }

    /// Every stored variant of `key` goes (RFC 9111 §4.4: an unsafe method changed it).
    pub fn invalidate(&self, key: &str) {
        let Some(store) = &self.0.store else { return };
        let mut store = store.lock();
        if let Some(gone) = store.lru.pop(key) {
            store.bytes -= gone.iter().map(|e| e.size).sum::<usize>();
            self.0.metrics.entries.set(store.lru.len() as i64);
        }
    }

    /// Removes every entry; returns how many URLs there were.
    pub fn purge(&self) -> usize {
        let Some(store) = &self.0.store else { return 0 };
        let mut store = store.lock();
        let n = store.lru.len();
        store.lru.clear();
        store.bytes = 0;
        self.0.metrics.entries.set(0);
        n
    }

    /// Counts for the admin API.
    pub fn stats(&self) -> Stats {
        let m = &self.0.metrics;
        let (hits, misses) = (m.hits.get(), m.misses.get());
        let lookups = hits + misses;
        let (entries, bytes) = self.0.store.as_ref().map_or((0, 0), |s| {
            let s = s.lock();
            (s.lru.len(), s.bytes)
        });
        Stats {
            capacity: self.0.limits.capacity,
            entries,
            bytes,
            max_bytes: self.0.limits.max_bytes,
            hits,
            misses,
            evictions: m.evictions.get(),
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use http::{HeaderValue, Request};

    fn cache(capacity: usize, max_bytes: usize) -> Cache {
        let limits = Limits {
            capacity,
            max_bytes,
            max_entry_bytes: 1024,
            settings: Settings {
                heuristic_fraction: 0.1,
                heuristic_max: Duration::from_secs(3600),
            },
            lock_timeout: Duration::from_millis(100),
        };
        Cache::new(limits, Duration::from_secs(60), &Metrics::new())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Admits and stores a 200 response with the given headers and body size.
    fn put(
        c: &Cache,
        key: &str,
        req: &[(&'static str, &'static str)],
        h: &[(&'static str, &'static str)],
        size: usize,
    ) {
        let h = headers(h);
        let now = SystemTime::now();
        let f = c
            .admit(StatusCode::OK, &h, Some(size as u64), (now, now), true)
            .expect("admitted");
        c.put(
            key.into(),
            &headers(req),
            StatusCode::OK,
            h,
            Bytes::from(vec![0; size]),
            f,
        );
    }

    fn parts(method: &str, h: &[(&'static str, &'static str)]) -> request::Parts {
        let mut b = Request::builder().method(method).uri("/a/b?x=1");
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn key_is_host_path_and_query() {
        assert_eq!(
            Cache::key(&parts("GET", &[("host", "Example.org")])),
            "example.org/a/b?x=1"
        );
    }

    #[test]
    fn request_policy_allows_get_and_head_without_authorization() {
        let c = cache(10, 1 << 20);
        assert!(c.request_policy(&parts("GET", &[])).unwrap().store);
        assert!(!c.request_policy(&parts("HEAD", &[])).unwrap().store);
        assert!(c.request_policy(&parts("POST", &[])).is_none());
        assert!(
            c.request_policy(&parts("GET", &[("authorization", "Bearer x")]))
                .is_none()
        );
        let no_store = c.request_policy(&parts("GET", &[("cache-control", "no-store")]));
        assert!(!no_store.unwrap().store);
        assert!(cache(0, 1).request_policy(&parts("GET", &[])).is_none());
    }

    #[test]
    fn variants_are_kept_by_their_vary_headers() {
        let c = cache(10, 1 << 20);
        let vary = [("vary", "Accept-Encoding"), ("cache-control", "max-age=60")];
        put(&c, "k", &[("accept-encoding", "gzip")], &vary, 1);
        put(&c, "k", &[("accept-encoding", "br")], &vary, 2);
        put(&c, "k", &[("accept-encoding", "br")], &vary, 3);
        let pick = |v: &'static str| {
            c.lookup("k", &headers(&[("accept-encoding", v)]))
                .map(|e| e.body.len())
        };
        assert_eq!(pick("gzip"), Some(1));
        assert_eq!(pick("br"), Some(3));
        assert_eq!(pick("identity"), None);
        assert!(c.lookup("k", &HeaderMap::new()).is_none());
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn capacity_counts_urls_and_bytes() {
        let c = cache(2, 1 << 20);
        put(&c, "a", &[], &[], 1);
        put(&c, "b", &[], &[], 1);
        assert!(c.lookup("a", &HeaderMap::new()).is_some()); // a is now the most recent
        put(&c, "c", &[], &[], 1);
        assert!(c.lookup("b", &HeaderMap::new()).is_none());
        assert_eq!(c.stats().evictions, 1);
        let small = cache(100, 3000);
        for k in ["a", "b", "c", "d"] {
            put(&small, k, &[], &[], 1000);
        }
        let s = small.stats();
        assert!(s.bytes <= 3000 && s.entries == 2, "{s:?}");
        assert!(small.lookup("d", &HeaderMap::new()).is_some());
    }

    #[test]
    fn invalidation_and_purge_empty_what_they_name() {
        let c = cache(10, 1 << 20);
        put(&c, "a", &[], &[], 10);
        put(&c, "b", &[], &[], 10);
        c.invalidate("a");
        assert!(c.lookup("a", &HeaderMap::new()).is_none());
        assert!(c.stats().bytes > 0);
        assert_eq!(c.purge(), 1);
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn bodies_over_the_entry_limit_are_not_admitted() {
        let c = cache(2, 1 << 20);
        let now = SystemTime::now();
        let h = headers(&[("cache-control", "max-age=60")]);
        assert!(
            c.admit(StatusCode::OK, &h, Some(1024), (now, now), false)
                .is_some()
        );
        assert!(
            c.admit(StatusCode::OK, &h, Some(1025), (now, now), false)
                .is_none()
        );
        let bare = headers(&[]);
        assert!(
            c.admit(StatusCode::OK, &bare, Some(1), (now, now), false)
                .is_none()
        );
        assert!(
            c.admit(StatusCode::OK, &bare, Some(1), (now, now), true)
                .is_some()
        );
    }

    #[tokio::test]
    async fn one_fetch_per_url_the_others_wait_for_it() {
        let c = cache(10, 1 << 20);
        let Fetch::Leader(guard) = c.begin_fetch("k") else {
            panic!("first is the leader")
        };
        let Fetch::Follower(rx) = c.begin_fetch("k") else {
            panic!("second follows")
        };
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait(rx).await })
        };
        drop(guard);
        waiter.await.unwrap();
        // A follower whose leader is done before it starts waiting does not wait at all: its
        // wait is over at the first poll.
        let Fetch::Leader(guard) = c.begin_fetch("k") else {
            panic!("the last fetch is over")
        };
        let Fetch::Follower(late) = c.begin_fetch("k") else {
            panic!("second follows")
        };
        drop(guard);
        assert!(c.wait(late).now_or_never().is_some());
    }
}

//! In-process costs of the core parts (`cargo bench -p plughost --bench core`): a cache hit
//! and a cache store with eviction at capacities 100 to 100,000 (how lookup cost grows with the
//! cache), a limiter acquire/release, and a round-robin pick over 5 backends.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, StatusCode};
use plughost::cache::{Cache, Freshness, Limits, Settings};
use plughost::config::UpstreamConfig;
use plughost::limiter::Limiter;
use plughost::metrics::Metrics;
use plughost::upstream::Pools;

/// Capacities of the cache-cost curve.
const CAPACITIES: [usize; 4] = [100, 1_000, 10_000, 100_000];

fn key(i: usize) -> String {
    format!("bench.test/items/{i}?page=1")
}

/// An hour of freshness for a stored 200.
fn hour() -> Freshness {
    let now = SystemTime::now();
    let settings = Settings {
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(3600),
    };
    let ttl = Some(Duration::from_secs(3600));
    Freshness::of(StatusCode::OK, &HeaderMap::new(), now, now, settings, ttl).expect("storable")
}

fn full_cache(capacity: usize) -> Cache {
    let limits = Limits {
        capacity,
        max_bytes: usize::MAX,
        max_entry_bytes: 1 << 20,
        settings: Settings {
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(3600),
        },
        lock_timeout: Duration::from_secs(5),
    };
    let cache = Cache::new(limits, Duration::from_secs(3600), &Metrics::new());
    let body = Bytes::from(vec![b'x'; 512]);
    let none = HeaderMap::new();
    for i in 0..capacity {
        cache.put(
            key(i),
            &none,
            StatusCode::OK,
            HeaderMap::new(),
            body.clone(),
            hour(),
        );
    }
    cache
}

fn cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_get_hit");
    for capacity in CAPACITIES {
        let cache = full_cache(capacity);
        // Keys spread over the whole cache, so lookups do not stay in one corner of it.
        let keys: Vec<String> = (0..1024).map(|i| key(i * 7919 % capacity)).collect();
        let none = HeaderMap::new();
        let mut n = 0;
        group.bench_with_input(BenchmarkId::from_parameter(capacity), &capacity, |b, _| {
            b.iter(|| {
                n = (n + 1) % keys.len();
                black_box(cache.lookup(&keys[n], &none).is_some())
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("cache_put_evict");
    for capacity in CAPACITIES {
        let cache = full_cache(capacity);
        let body = Bytes::from(vec![b'x'; 512]);
        let mut n = capacity;
        let (none, fresh) = (HeaderMap::new(), hour());
        group.bench_with_input(BenchmarkId::from_parameter(capacity), &capacity, |b, _| {
            b.iter(|| {
                n += 1;
                let f = fresh.clone();
                cache.put(
                    key(n),
                    &none,
                    StatusCode::OK,
                    HeaderMap::new(),
                    body.clone(),
                    f,
                );
            })
        });
    }
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = Limiter::new(10, Duration::from_secs(5), Arc::new(Metrics::new()));
    c.bench_function("limiter_acquire_release", |b| {
        b.iter(|| rt.block_on(async { drop(black_box(limiter.acquire().await.unwrap())) }))
    });
}

fn round_robin(c: &mut Criterion) {
    let servers = (1..=5)
        .map(|i| format!("127.0.0.1:{}", 9000 + i).parse().unwrap())
        .collect();
    let config: UpstreamConfig = toml::from_str("servers = []").expect("defaults for an upstream");
    let configs = BTreeMap::from([("bench".to_owned(), UpstreamConfig { servers, ..config })]);
    let pools = Pools::new(&configs, 1, &Arc::new(Metrics::new()));
    let pool = pools.get("bench").unwrap();
    c.bench_function("round_robin_pick_of_5", |b| {
        b.iter(|| black_box(pool.pick(None).is_some()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = cache, limiter, round_robin
}
criterion_main!(benches);

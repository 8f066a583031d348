//! The key-value capability: `wasi:keyvalue@0.2.0-draft` (`store`, `atomics`, `batch`, the
//! version wasmCloud's components import) over buckets the operator declares in
//! `[keyvalue.NAME]` and grants per plugin (`keyvalue = ["NAME"]`).
//!
//! - `link`: the three interfaces, once per engine. A component that imports none of them
//!   loads exactly as before.
//! - shared backend ([`Stores`]): one [`Bucket`] per declared name, built once per server and
//!   kept across reloads, so state survives instance recycling and hot reload. `memory` keeps
//!   keys in this process (bounded by `max_keys` / `max_bytes`: a write past them fails with
//!   the interface's error, so nothing a plugin counts is silently forgotten); `redis` keeps
//!   them in a Redis server shared by a fleet, through one multiplexed connection (the `redis`
//!   crate's `ConnectionManager`: it pipelines the commands of concurrent calls and reconnects
//!   by itself), every key namespaced `plughost:BUCKET:KEY`.
//! - per-instance state ([`Grants`]): the buckets the plugin may open; opening another is
//!   `access-denied` (declared elsewhere) or `no-such-store` (not declared).
//! - metrics: `plughost_kv_operations_total{bucket,op,outcome}` and
//!   `plughost_kv_duration_seconds{bucket}`.
//!
//! wasi:keyvalue has no expiry: a bucket's `ttl` is applied by every write (`EXPIRE` in
//! Redis). Counters are ASCII decimal, as Redis' `INCRBY` keeps them. Every call waits inside
//! the plugin's deadline, and a Redis command also within `command_timeout`: a slow or absent
//! Redis is an error the plugin sees, never a request that hangs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wasmtime::component::{HasSelf, Linker, Resource};

use super::State;
use crate::config::{KeyValueConfig, KvBackend};

/// Bindings of `wasi:keyvalue@0.2.0-draft` (documented in `wit/deps/keyvalue`).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Open },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::{Error as KvError, KeyResponse};

/// INCRBY and, with a ttl, PEXPIRE, as one atomic command (EVALSHA once loaded).
static INCREMENT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) \
         if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
         return n",
    )
});

/// Keys a `list-keys` page returns at most.
const PAGE: usize = 100;

/// Adds `wasi:keyvalue/{store,atomics,batch}` to the linker.
pub fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

/// Every declared bucket, shared by the whole server.
#[derive(Clone, Default)]
pub struct Stores {
    buckets: Arc<BTreeMap<String, Arc<Bucket>>>,
}

impl Stores {
    /// The buckets of `[keyvalue.*]`, counted in `registry`.
    pub fn new(config: &BTreeMap<String, KeyValueConfig>, registry: &mut Registry) -> Self {
        let metrics = KvMetrics::register(registry);
        let buckets = config
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    Arc::new(Bucket::new(name, c, metrics.clone())),
                )
            })
            .collect();
        Self {
            buckets: Arc::new(buckets),
        }
    }

    /// Buckets named `names`, counted nowhere, for `plughost plugin run`: in memory, or in
    /// the Redis server at `redis_url`.
    pub fn standalone(names: &[String], redis_url: Option<&str>) -> Self {
        let config = names
            .iter()
            .map(|n| {
                let mut c = KeyValueConfig::memory();
                if let Some(url) = redis_url {
                    c.backend = KvBackend::Redis;
                    c.url = Some(url.to_owned());
                }
                (n.clone(), c)
            })
            .collect();
        Self::new(&config, &mut Registry::default())
    }

    /// What a plugin granted `names` may open.
    pub fn grants(&self, names: &[String]) -> Grants {
        Grants {
            granted: names
                .iter()
                .filter_map(|n| self.buckets.get(n).cloned())
                .collect(),
            declared: self.buckets.keys().cloned().collect(),
        }
    }

    /// The declared buckets' names and backends, for `/plugins` and the status page.
    pub fn describe(&self) -> Vec<(String, &'static str)> {
        self.buckets
            .iter()
            .map(|(n, b)| (n.clone(), b.backend.kind()))
            .collect()
    }
}

/// The buckets one plugin may open.
#[derive(Clone, Default)]
pub struct Grants {
    granted: Vec<Arc<Bucket>>,
    declared: Arc<[String]>,
}

/// An open bucket: a resource in the instance's table.
pub struct Open(Arc<Bucket>);

/// The labels of key-value metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    bucket: String,
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabel {
    bucket: String,
}

/// This capability's metrics, registered by itself.
#[derive(Clone)]
struct KvMetrics {
    ops: Family<OpLabel, Counter>,
    duration: Family<BucketLabel, Histogram, fn() -> Histogram>,
}

fn op_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 4.0, 11))
}

impl KvMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            ops: Family::default(),
            duration: Family::new_with_constructor(op_histogram),
        };
        registry.register(
            "plughost_kv_operations",
            "Key-value operations by bucket, operation and outcome (ok, error)",
            m.ops.clone(),
        );
        registry.register(
            "plughost_kv_duration_seconds",
            "Time of one key-value operation",
            m.duration.clone(),
        );
        m
    }
}

/// One declared bucket and its backend.
pub struct Bucket {
    name: String,
    ttl: Option<Duration>,
    backend: Backend,
    metrics: KvMetrics,
    /// Its series, looked up once.
    duration: Histogram,
    /// Operation counters already looked up, by (operation, outcome): the family's lookup
    /// needs a label with the bucket's name, a `String` built per call otherwise.
    counters: Mutex<HashMap<(&'static str, &'static str), Counter>>,
}

enum Backend {
    Memory(Mutex<Memory>),
    Redis(Redis),
}

impl Backend {
    fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

/// A memory bucket: keys, values, expiry, and the bytes they take.
struct Memory {
    map: HashMap<String, (Vec<u8>, Option<Instant>)>,
    bytes: usize,
    max_keys: usize,
    max_bytes: usize,
}

/// A Redis bucket: the connection is made on first use (plughost starts without Redis) and
/// then kept and re-made by the connection manager.
struct Redis {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    connect_timeout: Duration,
    command_timeout: Duration,
    prefix: String,
}

fn other(e: impl std::fmt::Display) -> KvError {
    KvError::Other(e.to_string())
}

impl Bucket {
    fn new(name: &str, c: &KeyValueConfig, metrics: KvMetrics) -> Self {
        let backend = match c.backend {
            KvBackend::Memory => Backend::Memory(Mutex::new(Memory {
                map: HashMap::new(),
                bytes: 0,
                max_keys: c.max_keys,
                max_bytes: c.max_bytes,
            })),
            KvBackend::Redis => {
                let url = c.url.as_deref().unwrap_or_default();
                let client = redis::Client::open(url)
                    .expect("Config::validate and plugin run check the Redis url");
                Backend::Redis(Redis {
                    client,
                    conn: tokio::sync::Mutex::new(None),
                    connect_timeout: c.connect_timeout,
                    command_timeout: c.command_timeout,
                    prefix: format!("plughost:{name}:"),
                })
            }
        };
        let duration = metrics
            .duration
            .get_or_create(&BucketLabel {
                bucket: name.to_owned(),
            })
            .clone();
        Self {
            name: name.to_owned(),
            ttl: c.ttl,
            backend,
            metrics,
            duration,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Runs one operation, counting it.
    async fn run<T>(
        &self,
        op: &'static str,
        f: impl AsyncFnOnce(&Self) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = f(self).await;
        self.duration.observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.counters
            .lock()
            .entry((op, outcome))
            .or_insert_with(|| {
                self.metrics
                    .ops
                    .get_or_create(&OpLabel {
                        bucket: self.name.clone(),
                        op,
                        outcome,
                    })
                    .clone()
            })
            .inc();
        result
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.run("get", async |b| match &b.backend {
            Backend::Memory(m) => Ok(m.lock().get(&key)),
            Backend::Redis(r) => r.query(redis::cmd("GET").arg(r.key(&key))).await,
        })
        .await
    }

    async fn set(&self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.run("set", async |b| match &b.backend {
            Backend::Memory(m) => m.lock().set(key, value, b.ttl),
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(r.key(&key)).arg(value);
                if let Some(ttl) = b.ttl {
                    cmd.arg("PX").arg(ttl.as_millis() as u64);
                }
                r.query::<()>(&cmd).await
            }
        })
        .await
    }

    async fn delete(&self, keys: Vec<String>) -> Result<(), KvError> {
        self.run("delete", async |b| match &b.backend {
            Backend::Memory(m) => {
                let mut m = m.lock();
                for k in keys {
                    m.remove(&k);
                }
                Ok(())
            }
            Backend::Redis(_) if keys.is_empty() => Ok(()),
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("DEL");
                for k in &keys {
                    cmd.arg(r.key(k));
                }
                r.query::<()>(&cmd).await
            }
        })
        .await
    }

    async fn exists(&self, key: String) -> Result<bool, KvError> {
        self.run("exists", async |b| match &b.backend {
            Backend::Memory(m) => Ok(m.lock().get(&key).is_some()),
            Backend::Redis(r) => r.query(redis::cmd("EXISTS").arg(r.key(&key))).await,
        })
        .await
    }

    async fn list_keys(&self, cursor: Option<u64>) -> Result<KeyResponse, KvError> {
        self.run("list-keys", async |b| match &b.backend {
            Backend::Memory(m) => {
                let m = m.lock();
                let now = Instant::now();
                let mut keys: Vec<&String> = m
                    .map
                    .iter()
                    .filter(|(_, (_, exp))| exp.is_none_or(|e| e > now))
                    .map(|(k, _)| k)
                    .collect();
                keys.sort();
                let start = cursor.unwrap_or(0) as usize;
                let page: Vec<String> = keys
                    .iter()
                    .skip(start)
                    .take(PAGE)
                    .map(|k| (*k).clone())
                    .collect();
                let next = start + page.len();
                Ok(KeyResponse {
                    cursor: (next < keys.len()).then_some(next as u64),
                    keys: page,
                })
            }
            Backend::Redis(r) => {
                let pattern = format!("{}*", escape_glob(&r.prefix));
                let (next, found): (u64, Vec<String>) = r
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor.unwrap_or(0))
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(PAGE),
                    )
                    .await?;
                Ok(KeyResponse {
                    keys: found
                        .into_iter()
                        .filter_map(|k| k.strip_prefix(&r.prefix).map(str::to_owned))
                        .collect(),
                    cursor: (next != 0).then_some(next),
                })
            }
        })
        .await
    }

    async fn increment(&self, key: String, delta: u64) -> Result<u64, KvError> {
        self.run("increment", async |b| match &b.backend {
            Backend::Memory(m) => m.lock().increment(key, delta, b.ttl),
            Backend::Redis(r) => {
                let delta = i64::try_from(delta)
                    .map_err(|_| other("delta is larger than Redis counters allow"))?;
                let ttl_ms = b.ttl.map_or(0, |t| t.as_millis() as u64);
                // One command, atomic: the count and its expiry together (a MULTI/EXEC
                // pipeline is four commands: 0.44x the memory bucket's rate under wrk).
                let mut conn = r.connection().await?;
                let mut call = INCREMENT.prepare_invoke();
                call.key(r.key(&key)).arg(delta).arg(ttl_ms);
                let n: i64 = r.bounded(call.invoke_async(&mut conn)).await?;
                u64::try_from(n).map_err(|_| other("the counter is negative"))
            }
        })
        .await
    }

    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        self.run("get-many", async |b| match &b.backend {
            Backend::Memory(m) => {
                let m = m.lock();
                Ok(keys
                    .into_iter()
                    .map(|k| m.get(&k).map(|v| (k, v)))
                    .collect())
            }
            Backend::Redis(_) if keys.is_empty() => Ok(Vec::new()),
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("MGET");
                for k in &keys {
                    cmd.arg(r.key(k));
                }
                let values: Vec<Option<Vec<u8>>> = r.query(&cmd).await?;
                Ok(keys
                    .into_iter()
                    .zip(values)
                    .map(|(k, v)| v.map(|v| (k, v)))
                    .collect())
            }
        })
        .await
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.run("set-many", async |b| match &b.backend {
            Backend::Memory(m) => {
                let mut m = m.lock();
                pairs.into_iter().try_for_each(|(k, v)| m.set(k, v, b.ttl))
            }
            Backend::Redis(_) if pairs.is_empty() => Ok(()),
            Backend::Redis(r) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for (k, v) in &pairs {
                    let c = pipe.cmd("SET").arg(r.key(k)).arg(v);
                    if let Some(ttl) = b.ttl {
                        c.arg("PX").arg(ttl.as_millis() as u64);
                    }
                    c.ignore();
                }
                r.query_pipe::<()>(&pipe).await
            }
        })
        .await
    }
}

/// `*`, `?`, `[`, `]` and `\` of a SCAN pattern, escaped.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Memory {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (value, expires) = self.map.get(key)?;
        expires
            .is_none_or(|e| e > Instant::now())
            .then(|| value.clone())
    }

    fn remove(&mut self, key: &str) {
        if let Some((v, _)) = self.map.remove(key) {
            self.bytes -= key.len() + v.len();
        }
    }

    /// Stores `value`; past `max_keys` or `max_bytes` (after dropping expired keys) the write
    /// is refused.
    fn set(&mut self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let old = self.map.get(&key).map_or(0, |(v, _)| key.len() + v.len());
        let new = key.len() + value.len();
        let fits = |m: &Self| {
            (m.map.contains_key(&key) || m.map.len() < m.max_keys)
                && m.bytes - old + new <= m.max_bytes
        };
        if !fits(self) {
            let now = Instant::now();
            let expired: Vec<String> = self
                .map
                .iter()
                .filter(|(_, (_, e))| e.is_some_and(|e| e <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                self.remove(&k);
            }
            let old = self.map.get(&key).map_or(0, |(v, _)| key.len() + v.len());
            if !((self.map.contains_key(&key) || self.map.len() < self.max_keys)
                && self.bytes - old + new <= self.max_bytes)
            {
                return Err(other("bucket full (max_keys or max_bytes)"));
            }
        }
        self.remove(&key);
        self.bytes += new;
        self.map
            .insert(key, (value, ttl.map(|t| Instant::now() + t)));
        Ok(())
    }

    fn increment(
        &mut self,
        key: String,
        delta: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, KvError> {
        let current = match self.get(&key) {
            None => 0,
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| other("the value is not a counter"))?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| other("the counter would overflow"))?;
        self.set(key, next.to_string().into_bytes(), ttl)?;
        Ok(next)
    }
}

impl Redis {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The connection, made on first use within `connect_timeout`.
    async fn connection(&self) -> Result<ConnectionManager, KvError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.connect_timeout);
        let made = tokio::time::timeout(
            self.connect_timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| other("redis: connect timed out"))?
        .map_err(|e| other(format!("redis: {e}")))?;
        *conn = Some(made.clone());
        Ok(made)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KvError> {
        let mut conn = self.connection().await?;
        self.bounded(cmd.query_async(&mut conn)).await
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, KvError> {
        let mut conn = self.connection().await?;
        self.bounded(pipe.query_async(&mut conn)).await
    }

    /// A command's answer within `command_timeout`.
    async fn bounded<T>(
        &self,
        answer: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, KvError> {
        tokio::time::timeout(self.command_timeout, answer)
            .await
            .map_err(|_| other("redis: command timed out"))?
            .map_err(|e| other(format!("redis: {e}")))
    }
}

type Host<T> = wasmtime::Result<Result<T, KvError>>;

impl State {
    fn bucket(&self, r: &Resource<Open>) -> wasmtime::Result<Arc<Bucket>> {
        Ok(self.table.get(r)?.0.clone())
    }
}

impl store::Host for State {
    async fn open(&mut self, identifier: String) -> Host<Resource<Open>> {
        let granted = self.keyvalue.granted.iter().find(|b| b.name == identifier);
        match granted {
            Some(b) => Ok(Ok(self.table.push(Open(b.clone()))?)),
            None if self.keyvalue.declared.contains(&identifier) => Ok(Err(KvError::AccessDenied)),
            None => Ok(Err(KvError::NoSuchStore)),
        }
    }
}

impl store::HostBucket for State {
    async fn get(&mut self, b: Resource<Open>, key: String) -> Host<Option<Vec<u8>>> {
        Ok(self.bucket(&b)?.get(key).await)
    }

    async fn set(&mut self, b: Resource<Open>, key: String, value: Vec<u8>) -> Host<()> {
        Ok(self.bucket(&b)?.set(key, value).await)
    }

    async fn delete(&mut self, b: Resource<Open>, key: String) -> Host<()> {
        Ok(self.bucket(&b)?.delete(vec![key]).await)
    }

    async fn exists(&mut self, b: Resource<Open>, key: String) -> Host<bool> {
        Ok(self.bucket(&b)?.exists(key).await)
    }

    async fn list_keys(&mut self, b: Resource<Open>, cursor: Option<u64>) -> Host<KeyResponse> {
        Ok(self.bucket(&b)?.list_keys(cursor).await)
    }

    async fn drop(&mut self, b: Resource<Open>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for State {
    async fn increment(&mut self, b: Resource<Open>, key: String, delta: u64) -> Host<u64> {
        Ok(self.bucket(&b)?.increment(key, delta).await)
    }
}

impl batch::Host for State {
    async fn get_many(
        &mut self,
        b: Resource<Open>,
        keys: Vec<String>,
    ) -> Host<Vec<Option<(String, Vec<u8>)>>> {
        Ok(self.bucket(&b)?.get_many(keys).await)
    }

    async fn set_many(&mut self, b: Resource<Open>, pairs: Vec<(String, Vec<u8>)>) -> Host<()> {
        Ok(self.bucket(&b)?.set_many(pairs).await)
    }

    async fn delete_many(&mut self, b: Resource<Open>, keys: Vec<String>) -> Host<()> {
        Ok(self.bucket(&b)?.delete(keys).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(ttl: Option<Duration>, max_keys: usize) -> Bucket {
        let mut c = KeyValueConfig::memory();
        c.ttl = ttl;
        c.max_keys = max_keys;
        Bucket::new("b", &c, KvMetrics::register(&mut Registry::default()))
    }

    #[tokio::test]
    async fn memory_counts_expires_and_refuses_past_its_bounds() {
        let b = bucket(Some(Duration::from_millis(50)), 2);
        assert_eq!(b.increment("a".into(), 41).await.unwrap(), 41);
        assert_eq!(b.increment("a".into(), 1).await.unwrap(), 42);
        assert_eq!(b.get("a".into()).await.unwrap().unwrap(), b"42");
        b.set("x".into(), b"v".to_vec()).await.unwrap();
        assert!(
            b.set("y".into(), b"v".to_vec()).await.is_err(),
            "max_keys is 2"
        );
        b.set("x".into(), b"w".to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(b.get("a".into()).await.unwrap().is_none(), "expired");
        b.set("y".into(), b"v".to_vec()).await.unwrap();
        assert!(b.increment("y".into(), 1).await.is_err(), "not a counter");
    }

    #[tokio::test]
    async fn batches_and_pages_see_the_same_keys() {
        let b = bucket(None, 1000);
        let pairs: Vec<(String, Vec<u8>)> = (0..150)
            .map(|i| (format!("k{i:03}"), vec![i as u8]))
            .collect();
        b.set_many(pairs).await.unwrap();
        let got = b
            .get_many(vec!["k001".into(), "nope".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some(("k001".into(), vec![1])), None]);
        let first = b.list_keys(None).await.unwrap();
        assert_eq!(first.keys.len(), PAGE);
        let rest = b.list_keys(first.cursor).await.unwrap();
        assert_eq!(rest.keys.len(), 50);
        assert!(rest.cursor.is_none());
        b.delete(vec!["k000".into(), "k001".into()]).await.unwrap();
        assert!(!b.exists("k000".into()).await.unwrap());
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(
            escape_glob("plughost:a*b?[c]:"),
            "plughost:a\\*b\\?\\[c\\]:"
        );
    }
}

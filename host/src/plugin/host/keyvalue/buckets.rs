//! The buckets both interface versions serve: every declared bucket ([`Stores`]), what one
//! plugin may open ([`Grants`]), one bucket's operations under the shared rules with their
//! counts ([`Bucket`]), and what the versions' host functions share ([`View`],
//! [`bucket_methods`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wasmtime::component::Resource;

use super::memory;
use super::redis;
use super::rules::{Failure, Quota, Snapshot, check_key, distinct};
use crate::config::{KeyValueConfig, KvBackend};
use crate::plugin::host::budget::Answer;
use crate::plugin::host::capability::Scoped;
use crate::telemetry;

/// Every declared bucket, shared by the whole server.
#[derive(Clone, Default)]
pub struct Stores {
    buckets: Arc<BTreeMap<String, Arc<Bucket>>>,
}

impl Stores {
    /// The buckets of `[keyvalue.*]`, counted in `registry`.
    pub(super) fn new(config: &BTreeMap<String, KeyValueConfig>, registry: &mut Registry) -> Self {
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

    /// What a plugin granted `names` may open, handing back at most `answer_bytes` a call.
    pub(super) fn grants(&self, names: &[String], answer_bytes: usize) -> Grants {
        Grants {
            granted: names
                .iter()
                .filter_map(|n| self.buckets.get(n).cloned())
                .collect(),
            declared: self.buckets.keys().cloned().collect(),
            answer_bytes,
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

/// The buckets one plugin may open, and what one call may hand it back.
#[derive(Clone, Default)]
pub struct Grants {
    granted: Vec<Arc<Bucket>>,
    declared: Arc<[String]>,
    answer_bytes: usize,
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
pub(super) struct KvMetrics {
    ops: Family<OpLabel, Counter>,
    duration: Family<BucketLabel, Histogram, fn() -> Histogram>,
}

fn op_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 4.0, 11))
}

impl KvMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            ops: Family::default(),
            duration: Family::new_with_constructor(op_histogram),
        };
        registry.register(
            "plughost_kv_operations",
            "Key-value operations by bucket, operation and outcome (ok, error, unknown: a Redis write sent and not answered)",
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
    Memory(Mutex<memory::Memory>),
    Redis(redis::Redis),
}

impl Backend {
    fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

impl Bucket {
    pub(super) fn new(name: &str, c: &KeyValueConfig, metrics: KvMetrics) -> Self {
        let backend = match c.backend {
            KvBackend::Memory => Backend::Memory(Mutex::new(memory::Memory::new(Quota::of(c)))),
            KvBackend::Redis => Backend::Redis(redis::Redis::new(name, c)),
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

    /// Runs one operation, counting it as `ok` (or by its failure).
    async fn run<T>(
        &self,
        op: &'static str,
        f: impl AsyncFnOnce(&Self) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.run_judged(op, |_| "ok", f).await
    }

    /// Runs one operation, counting it as `judge` names a success (a swap's may be a
    /// `conflict`) or by its failure.
    async fn run_judged<T>(
        &self,
        op: &'static str,
        judge: fn(&T) -> &'static str,
        f: impl AsyncFnOnce(&Self) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let span = telemetry::Child::keyvalue(&self.name, op);
        let started = Instant::now();
        let result = f(self).await;
        self.duration.observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(done) => judge(done),
            Err(Failure(why)) if why.starts_with("outcome unknown") => "unknown",
            Err(_) => "error",
        };
        span.end_as(outcome, matches!(outcome, "error" | "unknown"));
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

    pub(super) async fn get(
        &self,
        key: String,
        mut answer: Answer,
    ) -> Result<Option<Vec<u8>>, Failure> {
        self.run("get", async |b| {
            check_key(&key)?;
            match &b.backend {
                Backend::Memory(m) => {
                    let value = m.lock().get(&key, &mut answer)?;
                    Ok(value.map(|v| v.to_vec()))
                }
                Backend::Redis(r) => r.get(&key, &answer).await,
            }
        })
        .await
    }

    pub(super) async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Failure> {
        self.write("set", vec![(key, value)]).await
    }

    pub(super) async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), Failure> {
        self.write("set-many", pairs).await
    }

    /// Writes every pair, or none.
    pub(super) async fn write(
        &self,
        op: &'static str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Failure> {
        self.run(op, async |b| {
            let pairs = distinct(pairs)?;
            if pairs.is_empty() {
                return Ok(());
            }
            match &b.backend {
                Backend::Memory(m) => m.lock().set_all(pairs, b.ttl),
                Backend::Redis(r) => r.set_all(&pairs).await,
            }
        })
        .await
    }

    pub(super) async fn delete(&self, op: &'static str, keys: Vec<String>) -> Result<(), Failure> {
        self.run(op, async |b| {
            keys.iter().try_for_each(|k| check_key(k))?;
            match &b.backend {
                Backend::Memory(m) => {
                    m.lock().delete(&keys);
                    Ok(())
                }
                Backend::Redis(_) if keys.is_empty() => Ok(()),
                Backend::Redis(r) => r.delete(&keys).await,
            }
        })
        .await
    }

    pub(super) async fn exists(&self, key: String) -> Result<bool, Failure> {
        self.run("exists", async |b| {
            check_key(&key)?;
            match &b.backend {
                Backend::Memory(m) => Ok(m.lock().exists(&key)),
                Backend::Redis(r) => r.exists(&key).await,
            }
        })
        .await
    }

    /// A page of keys from `cursor` on, and the cursor of the next page.
    pub(super) async fn list_keys(
        &self,
        cursor: Option<u64>,
        mut answer: Answer,
    ) -> Result<(Vec<String>, Option<u64>), Failure> {
        self.run("list-keys", async |b| match &b.backend {
            Backend::Memory(m) => m.lock().list(cursor, &mut answer),
            Backend::Redis(r) => r.list(cursor, &mut answer).await,
        })
        .await
    }

    /// Adds `delta` (which may be negative) to the counter at `key`; the new value.
    pub(super) async fn increment(&self, key: String, delta: i64) -> Result<i64, Failure> {
        self.run("increment", async |b| {
            check_key(&key)?;
            match &b.backend {
                Backend::Memory(m) => m.lock().increment(key, delta, b.ttl),
                Backend::Redis(r) => r.increment(&key, delta).await,
            }
        })
        .await
    }

    /// Each key with its value, if it has one.
    pub(super) async fn get_many(
        &self,
        keys: Vec<String>,
        mut answer: Answer,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, Failure> {
        self.run("get-many", async |b| {
            keys.iter().try_for_each(|k| check_key(k))?;
            let values: Vec<Option<Vec<u8>>> = match &b.backend {
                Backend::Memory(m) => {
                    let found = m.lock().get_many(&keys, &mut answer)?;
                    // Copied for the guest once the bucket's lock is released.
                    found.into_iter().map(|v| v.map(|v| v.to_vec())).collect()
                }
                Backend::Redis(_) if keys.is_empty() => Vec::new(),
                Backend::Redis(r) => r.get_many(&keys, &answer).await?,
            };
            Ok(keys.into_iter().zip(values).collect())
        })
        .await
    }

    /// What a new CAS handle on `key` holds: its version now, and its value if that fits
    /// `answer` (read in the same step, so `current` costs no second round trip).
    pub(super) async fn snapshot(
        &self,
        key: String,
        mut answer: Answer,
    ) -> Result<Snapshot, Failure> {
        self.run("cas", async |b| {
            check_key(&key)?;
            match &b.backend {
                Backend::Memory(m) => Ok(m.lock().snapshot(&key, &mut answer)),
                Backend::Redis(r) => r.snapshot(&key, &answer).await,
            }
        })
        .await
    }

    /// Writes `value` at `key` if the key's version is still `version`; otherwise writes
    /// nothing and returns what the key holds now, for the next try.
    pub(super) async fn swap(
        &self,
        key: &str,
        version: u64,
        value: Vec<u8>,
        mut answer: Answer,
    ) -> Result<Result<(), Snapshot>, Failure> {
        let judge = |r: &Result<(), Snapshot>| if r.is_ok() { "ok" } else { "conflict" };
        self.run_judged("swap", judge, async |b| match &b.backend {
            Backend::Memory(m) => {
                m.lock()
                    .swap(key, version, Bytes::from(value), b.ttl, &mut answer)
            }
            Backend::Redis(r) => r.swap(key, version, &value, &answer).await,
        })
        .await
    }
}

/// Why a bucket could not be opened, in either version's words.
pub(super) enum Refused {
    NoSuchStore,
    AccessDenied,
}

/// A plugin instance's view of its store during a key-value call.
pub(super) type View<'a> = Scoped<'a, Grants>;

impl View<'_> {
    /// The bucket named `identifier`, if this plugin may open it.
    pub(super) fn open(&self, identifier: &str) -> Result<Open, Refused> {
        let granted = self.instance.granted.iter().find(|b| b.name == identifier);
        match granted {
            Some(b) => Ok(Open(b.clone())),
            None if self.instance.declared.iter().any(|d| d == identifier) => {
                Err(Refused::AccessDenied)
            }
            None => Err(Refused::NoSuchStore),
        }
    }

    pub(super) fn bucket(&self, r: &Resource<Open>) -> wasmtime::Result<Arc<Bucket>> {
        Ok(self.table.get(r)?.0.clone())
    }

    /// The budget of one host call's answer.
    pub(super) fn answer(&self) -> Answer {
        Answer::new(self.instance.answer_bytes)
    }
}

/// The `bucket` resource's methods that both versions share word for word; `list-keys`,
/// whose cursor differs, each version implements itself.
macro_rules! bucket_methods {
    () => {
        async fn get(&mut self, b: Resource<Open>, key: String) -> Host<Option<Vec<u8>>> {
            let answer = self.answer();
            Ok(self.bucket(&b)?.get(key, answer).await.map_err(Into::into))
        }

        async fn set(&mut self, b: Resource<Open>, key: String, value: Vec<u8>) -> Host<()> {
            Ok(self.bucket(&b)?.set(key, value).await.map_err(Into::into))
        }

        async fn delete(&mut self, b: Resource<Open>, key: String) -> Host<()> {
            let deleted = self.bucket(&b)?.delete("delete", vec![key]).await;
            Ok(deleted.map_err(Into::into))
        }

        async fn exists(&mut self, b: Resource<Open>, key: String) -> Host<bool> {
            Ok(self.bucket(&b)?.exists(key).await.map_err(Into::into))
        }

        async fn drop(&mut self, b: Resource<Open>) -> wasmtime::Result<()> {
            self.table.delete(b)?;
            Ok(())
        }
    };
}
pub(super) use bucket_methods;

/// What both versions say the same way: a failure as `other` with its words, a refused
/// `open`, `open` itself. Needs the version's `store` module, its `Error` and its `Host`.
macro_rules! interface_glue {
    () => {
        impl From<Failure> for Error {
            fn from(f: Failure) -> Self {
                Error::Other(f.0)
            }
        }

        impl From<Refused> for Error {
            fn from(r: Refused) -> Self {
                match r {
                    Refused::NoSuchStore => Error::NoSuchStore,
                    Refused::AccessDenied => Error::AccessDenied,
                }
            }
        }

        impl store::Host for View<'_> {
            async fn open(&mut self, identifier: String) -> Host<Resource<Open>> {
                match View::open(self, &identifier) {
                    Ok(open) => Ok(Ok(self.table.push(open)?)),
                    Err(refused) => Ok(Err(refused.into())),
                }
            }
        }
    };
}
pub(super) use interface_glue;

/// The batch writes, the same in both versions (`get-many`'s answer differs).
macro_rules! batch_writes {
    () => {
        async fn set_many(&mut self, b: Resource<Open>, pairs: Vec<(String, Vec<u8>)>) -> Host<()> {
            Ok(self.bucket(&b)?.set_many(pairs).await.map_err(Into::into))
        }

        async fn delete_many(&mut self, b: Resource<Open>, keys: Vec<String>) -> Host<()> {
            let deleted = self.bucket(&b)?.delete("delete-many", keys).await;
            Ok(deleted.map_err(Into::into))
        }
    };
}
pub(super) use batch_writes;

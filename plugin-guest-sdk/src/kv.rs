//! The key-value store: buckets the operator declared (`[keyvalue.NAME]` in `plughost.toml`)
//! and granted to this plugin (`keyvalue = ["NAME"]` in its `[[plugins]]` entry). Several
//! plugins granted one bucket share it; with `backend = "redis"` every plughost instance of a
//! fleet does. Keys written keep for the bucket's `ttl`, when it has one.
//!
//! It is `wasi:keyvalue@0.2.0-draft2`, the version Spin's components import, so a plugin
//! written with it runs on Spin too (through Spin's own bucket names and grants).
//!
//! ```ignore
//! let bucket = plughost_plugin_sdk::kv::Bucket::open("limits")?;
//! let hits = bucket.increment("client-1", 1)?;
//! // A read-modify-write no other writer can interleave with:
//! let seen = bucket.update("visitors", 100, |now| {
//!     let mut list = now.unwrap_or_default();
//!     list.extend_from_slice(b"ann\n");
//!     list
//! })?;
//! ```

use crate::wit::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};

/// Why a store call failed, in words for a log line or an `Err` of `process`.
pub fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such bucket (declare it as [keyvalue.NAME])".into(),
        store::Error::AccessDenied => {
            "bucket not granted to this plugin (add it to the plugin's keyvalue list)".into()
        }
        store::Error::Other(why) => why.clone(),
    }
}

/// An open bucket.
pub struct Bucket(store::Bucket);

impl Bucket {
    /// Opens the bucket named `name`.
    pub fn open(name: &str) -> Result<Self, String> {
        store::open(name).map(Self).map_err(|e| describe(&e))
    }

    /// The value of `key`, if it has one.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(|e| describe(&e))
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(|e| describe(&e))
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(|e| describe(&e))
    }

    /// Adds `delta` (negative to subtract) to the counter at `key` (0 when absent)
    /// atomically and returns the new value: exact however many instances, or plughost
    /// processes, count at once. A counter never goes below 0 (that call fails, writing
    /// nothing).
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        atomics::increment(&self.0, key, delta).map_err(|e| describe(&e))
    }

    /// The values of `keys`, in order (`None` where a key has none).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let found = batch::get_many(&self.0, keys).map_err(|e| describe(&e))?;
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }

    /// A compare-and-swap handle on `key`: it holds the key's value now, and its
    /// [`Cas::swap`] writes only if nobody wrote the key in between.
    pub fn cas(&self, key: &str) -> Result<Cas, String> {
        atomics::Cas::new(&self.0, key)
            .map(Cas)
            .map_err(|e| describe(&e))
    }

    /// Replaces the value of `key` with `f(its value now)`, retrying when another writer
    /// got there first, at most `tries` times; returns what it wrote. `f` may run more than
    /// once. No update is lost, however many instances or plughost processes update at once.
    pub fn update(
        &self,
        key: &str,
        tries: u32,
        mut f: impl FnMut(Option<Vec<u8>>) -> Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let mut cas = self.cas(key)?;
        for _ in 0..tries {
            let value = f(cas.current()?);
            match cas.swap(&value) {
                Ok(()) => return Ok(value),
                Err(Swap::Changed(now)) => cas = now,
                Err(Swap::Failed(why)) => return Err(why),
            }
        }
        Err(format!("`{key}` changed under every one of {tries} tries"))
    }
}

/// A compare-and-swap handle (see [`Bucket::cas`]).
pub struct Cas(atomics::Cas);

/// Why a [`Cas::swap`] wrote nothing.
pub enum Swap {
    /// The key was written since the handle read it; this handle holds it as it is now.
    Changed(Cas),
    /// The store failed.
    Failed(String),
}

impl Cas {
    /// The key's value when this handle read it (`None`: it had none).
    pub fn current(&self) -> Result<Option<Vec<u8>>, String> {
        self.0.current().map_err(|e| describe(&e))
    }

    /// Writes `value` if the key is unchanged since this handle read it.
    pub fn swap(self, value: &[u8]) -> Result<(), Swap> {
        atomics::swap(self.0, value).map_err(|e| match e {
            atomics::CasError::CasFailed(now) => Swap::Changed(Cas(now)),
            atomics::CasError::StoreError(e) => Swap::Failed(describe(&e)),
        })
    }
}

//! The key-value store: buckets the operator declared (`[keyvalue.NAME]` in `plughost.toml`)
//! and granted to this plugin (`keyvalue = ["NAME"]` in its `[[plugins]]` entry). Several
//! plugins granted one bucket share it; with `backend = "redis"` every plughost instance of a
//! fleet does. Keys written keep for the bucket's `ttl`, when it has one.
//!
//! ```ignore
//! let bucket = plughost_plugin_sdk::kv::Bucket::open("limits")?;
//! let hits = bucket.increment("client-1", 1)?;
//! ```

use crate::wit::wasi::keyvalue::{atomics, batch, store};

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

    /// Adds `delta` to the counter at `key` (0 when absent) atomically and returns the new
    /// value: exact however many instances, or plughost processes, count at once.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, String> {
        atomics::increment(&self.0, key, delta).map_err(|e| describe(&e))
    }

    /// The values of `keys`, in order (`None` where a key has none).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let found = batch::get_many(&self.0, keys).map_err(|e| describe(&e))?;
        Ok(found.into_iter().map(|kv| kv.map(|(_, v)| v)).collect())
    }
}

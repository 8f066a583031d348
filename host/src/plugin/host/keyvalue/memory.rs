//! A memory bucket: keys in this process, within the bucket's quota, listed in a stable order.
//!
//! Values are `Bytes`, so an answer is gathered under the bucket's lock by reference counts
//! and copied for the guest after the lock is released. Every operation first drops the keys
//! whose time has passed, soonest first from an ordered index, so expiry costs O(log n) per
//! key once instead of a scan of the bucket per refused write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::budget::Answer;
use super::rules::{Failure, PAGE, Quota, Snapshot, counter, full, negative, overflow};

/// One memory bucket.
pub(super) struct Memory {
    entries: HashMap<Arc<str>, Entry>,
    /// Every key by the number it was first written under. `list-keys` walks this, and its
    /// cursor is the number of the next key: a page costs O(page · log n) whatever the
    /// bucket's size, and a key present through a whole listing is listed exactly once.
    order: BTreeMap<u64, Arc<str>>,
    /// The keys that expire, soonest first (with their number, to keep equal instants apart).
    expiry: BTreeMap<(Instant, u64), Arc<str>>,
    next: u64,
    /// The last version given to a write: every write gives its key the next one, so a key
    /// rewritten (or deleted and written again) never shows a CAS handle the version it read.
    version: u64,
    /// Bytes of keys and values.
    bytes: usize,
    quota: Quota,
}

struct Entry {
    value: Bytes,
    seq: u64,
    /// 0 is an absent key's.
    version: u64,
    expires: Option<Instant>,
}

impl Memory {
    pub(super) fn new(quota: Quota) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            expiry: BTreeMap::new(),
            next: 0,
            version: 0,
            bytes: 0,
            quota,
        }
    }

    /// Drops every key whose time has passed.
    fn purge(&mut self) {
        let now = Instant::now();
        while let Some(first) = self.expiry.first_entry() {
            if first.key().0 > now {
                break;
            }
            let key = first.remove();
            self.forget(&key);
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some((key, e)) = self.entries.remove_entry(key) {
            self.bytes -= key.len() + e.value.len();
            self.order.remove(&e.seq);
            if let Some(at) = e.expires {
                self.expiry.remove(&(at, e.seq));
            }
        }
    }

    pub(super) fn get(&mut self, key: &str, answer: &mut Answer) -> Result<Option<Bytes>, Failure> {
        self.purge();
        let value = self.entries.get(key).map(|e| e.value.clone());
        answer.take(value.as_ref().map_or(0, Bytes::len))?;
        Ok(value)
    }

    /// The values of `keys`, counted against `answer` one by one before any is gathered.
    pub(super) fn get_many(
        &mut self,
        keys: &[String],
        answer: &mut Answer,
    ) -> Result<Vec<Option<Bytes>>, Failure> {
        self.purge();
        let mut found = Vec::with_capacity(keys.len());
        for k in keys {
            let value = self.entries.get(k.as_str()).map(|e| e.value.clone());
            answer.take(k.len() + value.as_ref().map_or(0, Bytes::len))?;
            found.push(value);
        }
        Ok(found)
    }

    pub(super) fn exists(&mut self, key: &str) -> bool {
        self.purge();
        self.entries.contains_key(key)
    }

    /// Writes every pair (keys distinct), or none when they would pass the quota.
    pub(super) fn set_all(
        &mut self,
        pairs: Vec<(String, Bytes)>,
        ttl: Option<Duration>,
    ) -> Result<(), Failure> {
        self.purge();
        let (mut keys, mut freed, mut added) = (self.entries.len(), 0, 0);
        for (k, v) in &pairs {
            match self.entries.get(k.as_str()) {
                Some(e) => freed += k.len() + e.value.len(),
                None => keys += 1,
            }
            added += k.len() + v.len();
        }
        if keys > self.quota.max_keys || self.bytes - freed + added > self.quota.max_bytes {
            return Err(full(self.quota));
        }
        let expires = ttl.map(|t| Instant::now() + t);
        for (k, value) in pairs {
            let seq = match self.entries.get(k.as_str()) {
                Some(e) => e.seq,
                None => {
                    self.next += 1;
                    self.next
                }
            };
            self.forget(&k);
            self.version += 1;
            let key: Arc<str> = Arc::from(k);
            self.bytes += key.len() + value.len();
            self.order.insert(seq, key.clone());
            if let Some(at) = expires {
                self.expiry.insert((at, seq), key.clone());
            }
            self.entries.insert(
                key,
                Entry {
                    value,
                    seq,
                    version: self.version,
                    expires,
                },
            );
        }
        Ok(())
    }

    pub(super) fn delete(&mut self, keys: &[String]) {
        for k in keys {
            self.forget(k);
        }
    }

    /// Adds `delta` to the counter at `key` under the rules of [`counter`].
    pub(super) fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Failure> {
        self.purge();
        let current = match self.entries.get(key.as_str()) {
            None => 0,
            Some(e) => counter(&e.value)?,
        };
        let next = current.checked_add(delta).ok_or_else(overflow)?;
        if next < 0 {
            return Err(negative());
        }
        self.set_all(vec![(key, Bytes::from(next.to_string()))], ttl)?;
        Ok(next)
    }

    /// `key`'s version and, if it fits `answer`, its value.
    pub(super) fn snapshot(&mut self, key: &str, answer: &mut Answer) -> Snapshot {
        self.purge();
        match self.entries.get(key) {
            None => Snapshot {
                version: 0,
                value: Ok(None),
            },
            Some(e) => Snapshot {
                version: e.version,
                value: answer.take(e.value.len()).map(|()| Some(e.value.clone())),
            },
        }
    }

    /// Writes `value` at `key` if its version is still `version`; otherwise what it is now.
    pub(super) fn swap(
        &mut self,
        key: &str,
        version: u64,
        value: Bytes,
        ttl: Option<Duration>,
        answer: &mut Answer,
    ) -> Result<Result<(), Snapshot>, Failure> {
        let now = self.snapshot(key, answer);
        if now.version != version {
            return Ok(Err(now));
        }
        self.set_all(vec![(key.to_owned(), value)], ttl).map(Ok)
    }

    /// A page of keys from `cursor` on, and the cursor of the next page.
    pub(super) fn list(
        &mut self,
        cursor: Option<u64>,
        answer: &mut Answer,
    ) -> Result<(Vec<String>, Option<u64>), Failure> {
        self.purge();
        let mut walk = self.order.range(cursor.unwrap_or(0)..);
        let mut keys = Vec::new();
        for (_, k) in walk.by_ref().take(PAGE) {
            answer.take(k.len())?;
            keys.push(k.to_string());
        }
        Ok((keys, walk.next().map(|(seq, _)| *seq)))
    }
}

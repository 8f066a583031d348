//! The rules both key-value backends follow, so a plugin behaves the same on either: key and
//! page limits, the quota, what a counter is, and the words of each failure.

use std::collections::HashMap;

use bytes::Bytes;

use crate::config::KeyValueConfig;
use crate::plugin::host::budget::TooLarge;

/// Keys a `list-keys` page returns at most.
pub(super) const PAGE: usize = 100;

/// Longest key, in bytes: what bounds a page of keys, on both backends.
pub const KEY_MAX: usize = 1024;

/// A bucket's quota.
#[derive(Clone, Copy, Debug)]
pub(super) struct Quota {
    pub(super) max_keys: usize,
    pub(super) max_bytes: usize,
}

impl Quota {
    pub(super) fn of(c: &KeyValueConfig) -> Self {
        Self {
            max_keys: c.max_keys,
            max_bytes: c.max_bytes,
        }
    }
}

/// An operation that failed, in words for the guest (wasi:keyvalue's `other` error): it
/// did not happen, unless the text begins `outcome unknown`.
#[derive(Debug)]
pub struct Failure(pub String);

pub(super) fn other(e: impl std::fmt::Display) -> Failure {
    Failure(e.to_string())
}

pub(super) fn full(q: Quota) -> Failure {
    other(format!(
        "bucket full (max_keys {}, max_bytes {}); nothing was written",
        q.max_keys, q.max_bytes
    ))
}

pub(super) fn not_counter() -> Failure {
    other(
        "the value is not a counter (decimal digits from 0 to 9223372036854775807); nothing was written",
    )
}

pub(super) fn overflow() -> Failure {
    other("the counter would pass 9223372036854775807; nothing was written")
}

pub(super) fn negative() -> Failure {
    other("the counter would go below 0; nothing was written")
}

impl From<TooLarge> for Failure {
    fn from(e: TooLarge) -> Self {
        other(e)
    }
}

/// The counter a stored value holds: canonical decimal digits (no sign, no leading zero, as
/// Redis' INCRBY reads them, kept non-negative for the interface's `u64`), at most i64::MAX.
pub(super) fn counter(v: &[u8]) -> Result<i64, Failure> {
    let canonical = v == b"0"
        || (v.first().is_some_and(|d| (b'1'..=b'9').contains(d)))
            && v.iter().all(u8::is_ascii_digit);
    std::str::from_utf8(v)
        .ok()
        .filter(|_| canonical)
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_counter)
}

/// Refuses a key longer than [`KEY_MAX`].
pub(super) fn check_key(key: &str) -> Result<(), Failure> {
    if key.len() > KEY_MAX {
        return Err(other(format!(
            "a key of {} bytes; keys are at most {KEY_MAX} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// A batch's pairs with each key once (its last value), keys checked.
pub(super) fn distinct(pairs: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Bytes)>, Failure> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(pairs.len());
    for (i, (k, _)) in pairs.iter().enumerate() {
        check_key(k)?;
        last.insert(k, i);
    }
    let keep: Vec<bool> = (0..pairs.len())
        .map(|i| last.get(pairs[i].0.as_str()) == Some(&i))
        .collect();
    Ok(pairs
        .into_iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|((k, v), _)| (k, Bytes::from(v)))
        .collect())
}

/// What a CAS handle read of its key: the version it compares at `swap`, and the value
/// `current` hands back (or why it does not: the value passed the answer budget).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(super) version: u64,
    pub(super) value: Result<Option<Bytes>, TooLarge>,
}

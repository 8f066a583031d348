//! The response cache: a shared HTTP cache (RFC 9111) in front of every route, holding whole
//! responses in a thread-safe LRU (crate `lru`) bounded by entries (`cache_capacity`, the C
//! server's 100) and by bytes (`cache_max_bytes`). The rules of what may be stored and reused
//! are in [`policy`], the store in [`store`], and the order of a lookup, a validation and a
//! store in [`flow`], which the pipeline calls.
//!
//! Each URL (host, path, query) keeps up to [`MAX_VARIANTS`] responses that differ by the
//! request headers their `Vary` names. Entries are immutable (`Arc`), so readers never see a
//! half-written one; a 304 from the origin replaces an entry with a refreshed copy.
//! Concurrent misses on one URL are collapsed: one request goes to the origin and the others
//! wait for its response, at most `cache_lock_timeout` (nginx's `proxy_cache_lock`).

mod flow;
pub mod policy;
mod store;

pub use flow::{FromUpstream, Outcome, X_CACHE};
pub use policy::{Directives, Freshness, Present, Reuse, Settings};
pub use store::{Cache, Entry, Limits, MAX_VARIANTS, Stats};

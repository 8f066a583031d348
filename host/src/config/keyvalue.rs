//! The `[keyvalue.NAME]` tables: the key-value buckets the operator declares, which plugins
//! open by name when their `[[plugins]]` entry grants them (`keyvalue = ["NAME"]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::{
    DEFAULT_KV_COMMAND_TIMEOUT, DEFAULT_KV_CONNECT_TIMEOUT, DEFAULT_KV_MAX_BYTES,
    DEFAULT_KV_MAX_KEYS, DEFAULT_KV_PREFIX,
};
use super::error::ConfigError;

/// One bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValueConfig {
    /// `memory` (in this process, shared by every instance of the plugins granted it; the
    /// default) or `redis` (shared by every plughost instance using the same server).
    #[serde(default)]
    pub backend: KvBackend,
    /// With `redis`: `redis://HOST:PORT/DB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Every write keeps a key this long; unset: keys never expire. wasi:keyvalue has no
    /// expiry of its own, so this is what keeps counters and sessions from growing for ever.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// Most keys; a write of new keys past it is refused whole [default: 100000]. Held on
    /// both backends (on Redis by the script that writes).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Most bytes of keys and values; a write past it is refused whole [default: 64 MiB].
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// With `redis`: what every Redis key of this bucket starts with, as
    /// `PREFIX:LEN:BUCKET:KEY` [default: plughost]. Letters, digits, `_`, `-` and `.`. Give
    /// each deployment sharing one Redis its own prefix; every plughost of one fleet the same.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// With `redis`: time to connect [default: 1s].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// With `redis`: time for one command's answer [default: 250ms]. A plugin's own
    /// deadline bounds it too.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
}

/// Where a bucket's keys live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In this process.
    #[default]
    Memory,
    /// In a Redis server.
    Redis,
}

impl KeyValueConfig {
    /// A memory bucket with every default.
    pub fn memory() -> Self {
        Self {
            backend: KvBackend::Memory,
            url: None,
            ttl: None,
            max_keys: DEFAULT_KV_MAX_KEYS,
            max_bytes: DEFAULT_KV_MAX_BYTES,
            prefix: DEFAULT_KV_PREFIX.to_owned(),
            connect_timeout: DEFAULT_KV_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_KV_COMMAND_TIMEOUT,
        }
    }
}

impl KeyValueConfig {
    /// Checks the bucket `name`: a Redis one needs a Redis URL and a prefix without `:`.
    pub(super) fn check(&self, name: &str) -> Result<(), ConfigError> {
        if self.backend != KvBackend::Redis {
            return Ok(());
        }
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !prefix_ok {
            return Err(ConfigError::Invalid {
                key: "keyvalue.prefix",
                reason: format!(
                    "bucket `{name}`: `{}` must be letters, digits, `_`, `-` or `.`, like \"shop-prod\"",
                    self.prefix
                ),
            });
        }
        let invalid = |reason: String| {
            Err(ConfigError::Invalid {
                key: "keyvalue.url",
                reason,
            })
        };
        let Some(url) = &self.url else {
            return invalid(format!(
                "bucket `{name}`: backend = \"redis\" needs url = \"redis://127.0.0.1:6379/0\""
            ));
        };
        if redis::Client::open(url.as_str()).is_err() {
            return invalid(format!(
                "bucket `{name}`: `{url}` is not a Redis URL like redis://127.0.0.1:6379/0"
            ));
        }
        Ok(())
    }
}

fn default_max_keys() -> usize {
    DEFAULT_KV_MAX_KEYS
}
fn default_max_bytes() -> usize {
    DEFAULT_KV_MAX_BYTES
}
fn default_prefix() -> String {
    DEFAULT_KV_PREFIX.to_owned()
}
fn default_connect_timeout() -> Duration {
    DEFAULT_KV_CONNECT_TIMEOUT
}
fn default_command_timeout() -> Duration {
    DEFAULT_KV_COMMAND_TIMEOUT
}

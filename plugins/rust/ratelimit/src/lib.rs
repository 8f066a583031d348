//! `ratelimit`: a filter allowing each client IP `limit` requests per fixed window of
//! `window_secs` seconds; past it, 429 with `Retry-After`. The counts live in a key-value
//! bucket (`bucket`, default "limits"), one counter per client and window, updated by
//! compare-and-swap, so the limit is exact across instances, across reloads, and (with a
//! Redis bucket) across every plughost of a fleet. Give the bucket a `ttl` of at least the window so old windows go.
//!
//! Config: `limit` (default 10), `window_secs` (default 1), `bucket`, and `on_store_error`:
//! `"allow"` (the default: a store that fails lets requests through) or `"deny"` (503).
use plughost_plugin_sdk::kv::Bucket;
use plughost_plugin_sdk::{
    Action, Level, Plugin, Request, Response, config, export_plugin, log, next,
};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_limit")]
    limit: u64,
    #[serde(default = "default_window")]
    window_secs: u64,
    #[serde(default = "default_bucket")]
    bucket: String,
    #[serde(default)]
    on_store_error: OnStoreError,
}

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum OnStoreError {
    #[default]
    Allow,
    Deny,
}

fn default_limit() -> u64 {
    10
}
fn default_window() -> u64 {
    1
}
fn default_bucket() -> String {
    "limits".into()
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Compare-and-swap tries per request; each failed one means another request counted.
const CAS_TRIES: u32 = 1000;

fn parse_count(v: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the count is not a number: {:?}", String::from_utf8_lossy(v)))
}

/// The counter after one more request (a value that is not a count starts again at 1).
fn next_count(now: Option<Vec<u8>>) -> Vec<u8> {
    let n = now.and_then(|v| parse_count(&v).ok()).unwrap_or(0);
    (n + 1).to_string().into_bytes()
}

struct RateLimit;

impl Plugin for RateLimit {
    fn init(json: &str) -> Result<(), String> {
        let c: Config = config(json)?;
        if c.limit == 0 || c.window_secs == 0 {
            return Err("limit and window_secs must be at least 1".into());
        }
        // Fail at load, not on the first request, when the bucket is not granted.
        Bucket::open(&c.bucket)?;
        let _ = CONFIG.set(c);
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        let c = CONFIG.get().ok_or("not initialised")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let window = now / c.window_secs;
        let key = format!("{}:{window}", req.client_ip());
        // Read, add one, write only if nobody wrote in between (else again): the count is
        // exact however many instances and plughost processes share the bucket.
        let count = Bucket::open(&c.bucket)
            .and_then(|b| b.update(&key, CAS_TRIES, next_count))
            .and_then(|v| parse_count(&v));
        match count {
            Ok(n) if n <= c.limit => Ok(next()),
            Ok(_) => {
                let wait = (window + 1) * c.window_secs - now;
                Ok(Response::text(429, "too many requests\n")
                    .with_header("retry-after", &wait.max(1).to_string())
                    .into_action())
            }
            Err(e) if c.on_store_error == OnStoreError::Allow => {
                log(Level::Warn, &format!("store failed, request allowed: {e}"));
                Ok(next())
            }
            Err(e) => {
                log(Level::Warn, &format!("store failed, request refused: {e}"));
                Ok(Response::text(503, "rate limit store unavailable\n").into_action())
            }
        }
    }
}

export_plugin!(RateLimit);

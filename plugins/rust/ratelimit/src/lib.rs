//! `ratelimit`: a filter with a token bucket per client IP; an empty bucket answers 429.
//! Config: `capacity` (burst, default 10), `per_second` (refill rate, default 5).
//!
//! The buckets live in the instance. Run it with `instances = 1` (one instance, calls
//! serialized) so every request sees the same buckets and the limit is exact.
use plughost_plugin_sdk::{Action, Plugin, Request, Response, config, export_plugin, next};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

#[derive(serde::Deserialize, Clone, Copy)]
struct Config {
    #[serde(default = "default_capacity")]
    capacity: f64,
    #[serde(default = "default_rate")]
    per_second: f64,
}

fn default_capacity() -> f64 {
    10.0
}
fn default_rate() -> f64 {
    5.0
}

/// Buckets kept at most; the oldest are forgotten past it so memory stays bounded.
const MAX_CLIENTS: usize = 10_000;

struct State {
    config: Config,
    buckets: HashMap<String, (f64, Instant)>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct RateLimit;

impl Plugin for RateLimit {
    fn init(json: &str) -> Result<(), String> {
        let config: Config = config(json)?;
        if config.capacity < 1.0 || config.per_second <= 0.0 {
            return Err("capacity must be >= 1 and per_second > 0".into());
        }
        STATE.with(|s| *s.borrow_mut() = Some(State { config, buckets: HashMap::new() }));
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let s = s.as_mut().ok_or("not initialised")?;
            let now = Instant::now();
            let c = s.config;
            if s.buckets.len() >= MAX_CLIENTS && !s.buckets.contains_key(req.client_ip()) {
                s.buckets.clear();
            }
            let (tokens, last) = s
                .buckets
                .entry(req.client_ip().to_owned())
                .or_insert((c.capacity, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * c.per_second).min(c.capacity);
            *last = now;
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                return Ok(next());
            }
            let wait = ((1.0 - *tokens) / c.per_second).ceil().max(1.0);
            Ok(Response::text(429, "too many requests\n")
                .with_header("retry-after", &format!("{wait}"))
                .into_action())
        })
    }
}

export_plugin!(RateLimit);

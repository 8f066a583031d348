//! A Redis bucket: one multiplexed connection (the `redis` crate's `ConnectionManager`: it
//! pipelines concurrent calls and reconnects by itself), made on first use so plughost starts
//! without Redis, and one Lua script per operation, so that each is atomic on the server.
//!
//! The layout is in `common.lua`. The scripts do on the server what the memory bucket does in
//! this process: check the quota before writing (all of a batch or none), check a counter
//! before incrementing it, and measure an answer before sending it (a reply that would pass
//! the plugin's answer budget is refused by Redis, so it is never read here).
//!
//! Errors are honest: a refusal (quota, counter, budget) or a connection that could not be
//! made means nothing happened; a write whose command was sent and not answered (timeout,
//! connection lost) says its outcome is unknown. A command that cannot have reached Redis
//! (the connection was refused: a reconnect the manager had already tried and failed) is
//! tried once more, and so is an idempotent one whose connection broke; `increment` is not
//! idempotent, so a broken connection makes its outcome unknown instead.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, ScriptInvocation};

use bytes::Bytes;

use super::super::budget::{Answer, TooLarge, error_text};
use super::rules::{Failure, Quota, Snapshot, full, negative, not_counter, other, overflow};
use crate::config::KeyValueConfig;

/// One script: the shared layout and helpers, then its body.
macro_rules! script {
    ($body:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("common.lua"), $body)))
    };
}

/// ARGV: budget, key.
static GET: LazyLock<Script> = script!(
    "local k = data(ARGV[2])
     local n = redis.call('STRLEN', k)
     if n > tonumber(ARGV[1]) then return redis.error_reply('PLUGHOST_TOO_LARGE ' .. n) end
     return redis.call('GET', k)"
);

/// ARGV: budget, keys...
static GET_MANY: LazyLock<Script> = script!(
    "local budget, used = tonumber(ARGV[1]), 0
     for i = 2, #ARGV do
       used = used + #ARGV[i] + redis.call('STRLEN', data(ARGV[i]))
       if used > budget then return redis.error_reply('PLUGHOST_TOO_LARGE ' .. used) end
     end
     local out = {}
     for i = 2, #ARGV do out[i - 1] = redis.call('GET', data(ARGV[i])) end
     return out"
);

/// ARGV: key.
static EXISTS: LazyLock<Script> = script!("return redis.call('EXISTS', data(ARGV[1]))");

/// ARGV: ttl ms (0: none), max keys, max bytes, then key, value pairs (keys distinct).
static SET_MANY: LazyLock<Script> = script!(
    "local ttl, max_keys, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
     local now = now_ms()
     if ttl > 0 then purge(now, 64) end
     local ks, ns = {}, {}
     for i = 4, #ARGV, 2 do
       ks[#ks + 1] = ARGV[i]
       ns[#ns + 1] = #ARGV[i] + #ARGV[i + 1]
     end
     if not room(ks, ns, max_keys, max_bytes, now, ttl) then
       return redis.error_reply('PLUGHOST_FULL')
     end
     for i = 1, #ks do put(ks[i], ARGV[3 + 2 * i], ns[i], now, ttl) end
     return 'OK'"
);

/// ARGV: keys...
static DELETE: LazyLock<Script> = script!(
    "for i = 1, #ARGV do forget(ARGV[i]) end
     return 'OK'"
);

/// ARGV: ttl ms, max keys, max bytes, key, delta. The counter rules of `super::counter`:
/// canonical decimal digits (no sign, no leading zero), from 0 to i64::MAX; INCRBY refuses
/// an overflow without writing, and a result below 0 or a write past the quota is undone
/// before the script ends.
static INCREMENT: LazyLock<Script> = script!(
    "local ttl, max_keys, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
     local k = ARGV[4]
     local now = now_ms()
     if ttl > 0 then purge(now, 64) end
     local old = redis.call('GET', data(k))
     if old and old ~= '0' and not string.match(old, '^[1-9]%d*$') then
       return redis.error_reply('PLUGHOST_NOT_COUNTER')
     end
     local r = redis.pcall('INCRBY', data(k), ARGV[5])
     if type(r) == 'table' and r.err then
       if string.find(r.err, 'overflow') then return redis.error_reply('PLUGHOST_OVERFLOW') end
       return redis.error_reply('PLUGHOST_NOT_COUNTER')
     end
     local v = redis.call('GET', data(k))
     local refused = nil
     if string.sub(v, 1, 1) == '-' then
       refused = 'PLUGHOST_NEGATIVE'
     elseif not room({k}, {#k + #v}, max_keys, max_bytes, now, ttl) then
       refused = 'PLUGHOST_FULL'
     end
     if refused then
       if old then redis.call('SET', data(k), old, 'KEEPTTL') else redis.call('DEL', data(k)) end
       return redis.error_reply(refused)
     end
     put(k, v, #k + #v, now, ttl)
     return v"
);

/// ARGV: budget, key. What a new CAS handle holds (`snapshot` in common.lua).
static SNAPSHOT: LazyLock<Script> = script!("return snapshot(ARGV[2], tonumber(ARGV[1]))");

/// ARGV: ttl ms, max keys, max bytes, budget, key, version, value. Writes the value if the
/// key's version is still the one given: {'swapped'}; otherwise nothing, and answers
/// {'conflict', snapshot...} for the next try.
static SWAP: LazyLock<Script> = script!(
    "local ttl, max_keys, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
     local k, v = ARGV[5], ARGV[7]
     local now = now_ms()
     if ttl > 0 then purge(now, 64) end
     if (redis.call('HGET', versions, k) or '0') ~= ARGV[6] then
       local seen = snapshot(k, tonumber(ARGV[4]))
       table.insert(seen, 1, 'conflict')
       return seen
     end
     if not room({k}, {#k + #v}, max_keys, max_bytes, now, ttl) then
       return redis.error_reply('PLUGHOST_FULL')
     end
     put(k, v, #k + #v, now, ttl)
     return {'swapped'}"
);

/// ARGV: cursor, ttl ms. A page of the bucket's own keys (from its books, never a scan of the
/// server's keyspace), leaving out keys that expired but are not yet off the books.
static LIST: LazyLock<Script> = script!(
    "local ttl = tonumber(ARGV[2])
     if ttl > 0 then purge(now_ms(), 1000) end
     local r = redis.call('HSCAN', sizes, ARGV[1], 'COUNT', 100)
     local out = {r[1]}
     for i = 1, #r[2], 2 do
       local k = r[2][i]
       if ttl == 0 or redis.call('EXISTS', data(k)) == 1 then out[#out + 1] = k end
     end
     return out"
);

/// Whether an operation changes the bucket, and whether doing it twice is the same as once:
/// what an error after sending may say, and whether a broken connection is retried.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Read,
    /// set, set-many, delete: the same whether done once or twice.
    Idempotent,
    /// increment, swap.
    Once,
}

pub(super) struct Redis {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// `PREFIX:LEN:BUCKET`.
    base: String,
    ttl_ms: u64,
    quota: Quota,
}

impl Redis {
    pub(super) fn new(name: &str, c: &KeyValueConfig) -> Self {
        let url = c.url.as_deref().unwrap_or_default();
        Self {
            client: redis::Client::open(url)
                .expect("Config::validate and plugin run check the Redis url"),
            conn: tokio::sync::Mutex::new(None),
            connect_timeout: c.connect_timeout,
            command_timeout: c.command_timeout,
            base: base_key(&c.prefix, name),
            ttl_ms: c.ttl.map_or(0, |t| t.as_millis().max(1) as u64),
            quota: Quota::of(c),
        }
    }

    pub(super) async fn get(&self, key: &str, answer: &Answer) -> Result<Option<Vec<u8>>, Failure> {
        let mut call = GET.key(&self.base);
        call.arg(answer.limit()).arg(key);
        self.invoke(&call, Kind::Read, answer).await
    }

    pub(super) async fn get_many(
        &self,
        keys: &[String],
        answer: &Answer,
    ) -> Result<Vec<Option<Vec<u8>>>, Failure> {
        let mut call = GET_MANY.key(&self.base);
        call.arg(answer.limit()).arg(keys);
        self.invoke(&call, Kind::Read, answer).await
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, Failure> {
        let mut call = EXISTS.key(&self.base);
        call.arg(key);
        self.invoke(&call, Kind::Read, &Answer::new(0)).await
    }

    pub(super) async fn set_all(&self, pairs: &[(String, bytes::Bytes)]) -> Result<(), Failure> {
        let mut call = SET_MANY.key(&self.base);
        call.arg(self.ttl_ms)
            .arg(self.quota.max_keys)
            .arg(self.quota.max_bytes);
        for (k, v) in pairs {
            call.arg(k).arg(v.as_ref());
        }
        self.invoke(&call, Kind::Idempotent, &Answer::new(0)).await
    }

    pub(super) async fn delete(&self, keys: &[String]) -> Result<(), Failure> {
        let mut call = DELETE.key(&self.base);
        call.arg(keys);
        self.invoke(&call, Kind::Idempotent, &Answer::new(0)).await
    }

    pub(super) async fn increment(&self, key: &str, delta: i64) -> Result<i64, Failure> {
        let mut call = INCREMENT.key(&self.base);
        call.arg(self.ttl_ms)
            .arg(self.quota.max_keys)
            .arg(self.quota.max_bytes)
            .arg(key)
            .arg(delta);
        let n: String = self.invoke(&call, Kind::Once, &Answer::new(0)).await?;
        n.parse()
            .map_err(|_| other("redis: the counter came back unreadable"))
    }

    pub(super) async fn snapshot(&self, key: &str, answer: &Answer) -> Result<Snapshot, Failure> {
        let mut call = SNAPSHOT.key(&self.base);
        call.arg(answer.limit()).arg(key);
        let reply: Vec<Vec<u8>> = self.invoke(&call, Kind::Read, answer).await?;
        seen(&reply, answer)
    }

    pub(super) async fn swap(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
        answer: &Answer,
    ) -> Result<Result<(), Snapshot>, Failure> {
        let mut call = SWAP.key(&self.base);
        call.arg(self.ttl_ms)
            .arg(self.quota.max_keys)
            .arg(self.quota.max_bytes)
            .arg(answer.limit())
            .arg(key)
            .arg(version)
            .arg(value);
        let reply: Vec<Vec<u8>> = self.invoke(&call, Kind::Once, answer).await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"swapped") => Ok(Ok(())),
            Some(b"conflict") => seen(&reply[1..], answer).map(Err),
            _ => Err(unreadable()),
        }
    }

    pub(super) async fn list(
        &self,
        cursor: Option<u64>,
        answer: &mut Answer,
    ) -> Result<(Vec<String>, Option<u64>), Failure> {
        let mut call = LIST.key(&self.base);
        call.arg(cursor.unwrap_or(0)).arg(self.ttl_ms);
        let mut page: Vec<String> = self.invoke(&call, Kind::Read, answer).await?;
        if page.is_empty() {
            return Err(other("redis: a key page came back without its cursor"));
        }
        let next: u64 = page.remove(0).parse().unwrap_or(0);
        // Keys are at most KEY_MAX bytes and a page about 100 of them (Redis' COUNT is a
        // hint): bounded on the server, counted here too.
        for k in &page {
            answer.take(k.len())?;
        }
        Ok((page, (next != 0).then_some(next)))
    }

    /// The connection, made on first use within `connect_timeout`.
    async fn connection(&self) -> Result<ConnectionManager, Failure> {
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
        .map_err(|_| other("redis: cannot connect within connect_timeout; nothing was done"))?
        .map_err(|e| {
            other(format!(
                "redis: cannot connect ({}); nothing was done",
                error_text(e)
            ))
        })?;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// Runs one script within `command_timeout`, once more when the first try cannot have
    /// reached Redis (or, for a read or an idempotent write, lost its connection), and names
    /// its failure honestly.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
        kind: Kind,
        answer: &Answer,
    ) -> Result<T, Failure> {
        let mut conn = self.connection().await?;
        let attempts = async {
            match call.invoke_async(&mut conn).await {
                Err(e) if retry(&e, kind) => call.invoke_async(&mut conn).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.command_timeout, attempts).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failure(&e, kind, self.quota, answer)),
            Err(_) if kind == Kind::Read => Err(other(format!(
                "redis: no answer within command_timeout ({:?})",
                self.command_timeout
            ))),
            Err(_) => Err(other(format!(
                "outcome unknown: the write was sent to Redis but no answer came within command_timeout ({:?}); it may or may not have happened",
                self.command_timeout
            ))),
        }
    }
}

/// A snapshot as the scripts answer it: version, then `value` V, `none`, or `too-large` N.
fn seen(reply: &[Vec<u8>], answer: &Answer) -> Result<Snapshot, Failure> {
    let text = |i: usize| reply.get(i).and_then(|b| std::str::from_utf8(b).ok());
    let version = text(0)
        .and_then(|v| v.parse().ok())
        .ok_or_else(unreadable)?;
    let value = match text(1) {
        Some("value") => Ok(Some(Bytes::from(
            reply.get(2).ok_or_else(unreadable)?.clone(),
        ))),
        Some("none") => Ok(None),
        Some("too-large") => Err(TooLarge {
            needed: text(2).and_then(|n| n.parse().ok()).unwrap_or(0),
            limit: answer.limit(),
        }),
        _ => return Err(unreadable()),
    };
    Ok(Snapshot { version, value })
}

fn unreadable() -> Failure {
    other("redis: a compare-and-swap answer came back unreadable")
}

/// `PREFIX:LEN:BUCKET`: the bucket name's length makes the encoding injective (bucket `a`
/// key `x:k` is `p:1:a:x:k`, bucket `a:x` key `k` is `p:3:a:x:k`), and the prefix, which
/// holds no `:`, keeps deployments sharing one Redis apart.
fn base_key(prefix: &str, bucket: &str) -> String {
    format!("{prefix}:{}:{bucket}", bucket.len())
}

/// Whether a failed try is tried again.
fn retry(e: &RedisError, kind: Kind) -> bool {
    e.is_connection_refusal()
        || (kind != Kind::Once && (e.is_connection_dropped() || e.is_io_error()))
}

/// The guest's error for a failed script.
fn failure(e: &RedisError, kind: Kind, quota: Quota, answer: &Answer) -> Failure {
    // A script's refusal: `redis.error_reply('PLUGHOST_… [N]')`, which the client reads as a
    // code or as the detail of a generic error, depending on the server's version.
    let words: Vec<&str> = [e.code(), e.detail()]
        .into_iter()
        .flatten()
        .flat_map(str::split_whitespace)
        .collect();
    match words.iter().position(|w| w.starts_with("PLUGHOST_")) {
        Some(i) if words[i] == "PLUGHOST_FULL" => return full(quota),
        Some(i) if words[i] == "PLUGHOST_NOT_COUNTER" => return not_counter(),
        Some(i) if words[i] == "PLUGHOST_OVERFLOW" => return overflow(),
        Some(i) if words[i] == "PLUGHOST_NEGATIVE" => return negative(),
        Some(i) if words[i] == "PLUGHOST_TOO_LARGE" => {
            let needed = words.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(0);
            return TooLarge {
                needed,
                limit: answer.limit(),
            }
            .into();
        }
        _ => {}
    }
    let why = error_text(e);
    if e.is_connection_refusal() {
        other(format!("redis: cannot connect ({why}); nothing was done"))
    } else if kind != Kind::Read && (e.is_io_error() || e.is_connection_dropped()) {
        other(format!(
            "outcome unknown: the connection to Redis broke after the write was sent ({why}); it may or may not have happened"
        ))
    } else {
        // Redis refused the command (a server error): it did nothing.
        other(format!("redis: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_cannot_reach_each_others_keys() {
        let a = base_key("plughost", "a");
        let ax = base_key("plughost", "a:x");
        assert_ne!(format!("{a}:x:secret"), format!("{ax}:secret"));
        assert_eq!(ax, "plughost:3:a:x");
    }
}

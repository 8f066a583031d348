-- The layout of one bucket in Redis, shared by every script (each starts with this file).
-- KEYS[1] is the bucket's base name, `PREFIX:LEN:BUCKET` (LEN: the bucket name's length in
-- bytes, so no bucket's keys can be named through another bucket). A key K is stored at
-- `BASE:K`; the bucket's books are `BASE|sizes` (K -> bytes of K and its value: the bucket's
-- keys, counted and listed from here), `BASE|bytes` (their sum) and, with a ttl,
-- `BASE|expiry` (K -> the millisecond it expires, when its size leaves the books), and
-- `BASE|versions` (K -> the version of its last write, from the counter `BASE|version`, what
-- a CAS handle compares; a key without one, absent or written before versions, is at 0).
local base = KEYS[1]
local sizes, total, expiry = base .. '|sizes', base .. '|bytes', base .. '|expiry'
local versions, last_version = base .. '|versions', base .. '|version'

local function data(k)
  return base .. ':' .. k
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Removes key K and takes it off the books.
local function forget(k)
  local n = redis.call('HGET', sizes, k)
  if n then
    redis.call('DECRBY', total, n)
    redis.call('HDEL', sizes, k)
  end
  redis.call('ZREM', expiry, k)
  redis.call('HDEL', versions, k)
  redis.call('DEL', data(k))
end

-- Forgets up to `limit` keys whose time has passed; returns how many.
local function purge(now, limit)
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, limit)
  for _, k in ipairs(gone) do
    forget(k)
  end
  return #gone
end

-- Whether writing keys `ks` with sizes `ns` keeps the bucket within its quota.
local function fits(ks, ns, max_keys, max_bytes)
  local keys = redis.call('HLEN', sizes)
  local bytes = tonumber(redis.call('GET', total) or '0')
  for i = 1, #ks do
    local old = redis.call('HGET', sizes, ks[i])
    if old then
      bytes = bytes - tonumber(old)
    else
      keys = keys + 1
    end
    bytes = bytes + ns[i]
  end
  return keys <= max_keys and bytes <= max_bytes
end

-- `fits`, after taking expired keys off the books when it would not.
local function room(ks, ns, max_keys, max_bytes, now, ttl)
  if fits(ks, ns, max_keys, max_bytes) then
    return true
  end
  return ttl > 0 and purge(now, 1000000) > 0 and fits(ks, ns, max_keys, max_bytes)
end

-- Stores K = V (whose size is n) and keeps the books.
local function put(k, v, n, now, ttl)
  local old = redis.call('HGET', sizes, k)
  redis.call('HSET', sizes, k, n)
  redis.call('INCRBY', total, n - (tonumber(old) or 0))
  redis.call('HSET', versions, k, redis.call('INCR', last_version))
  if ttl > 0 then
    local at = string.format('%.0f', now + ttl)
    redis.call('SET', data(k), v, 'PXAT', at)
    redis.call('ZADD', expiry, at, k)
  else
    redis.call('SET', data(k), v)
  end
end


-- What a CAS handle holds of K: {version, 'value', V}, {version, 'none'}, or
-- {version, 'too-large', N} when its N bytes pass the answer budget.
local function snapshot(k, budget)
  local version = redis.call('HGET', versions, k) or '0'
  local n = redis.call('STRLEN', data(k))
  if n > budget then return {version, 'too-large', tostring(n)} end
  local v = redis.call('GET', data(k))
  if v then return {version, 'value', v} end
  return {version, 'none'}
end

//! The rules of RFC 9111 (HTTP caching) for a shared cache in front of an origin: what may be
//! stored, for how long it is fresh, how old it is, when a request lets a stored response be
//! reused, and how a stale one is validated.
//!
//! Written here rather than taken from `http-cache-semantics` (3.0, the Rust port of the npm
//! package): that crate follows RFC 7234 with its own opinions where the external cache suite
//! checks RFC 9111 — it parses only one of the three HTTP-date formats (a `Date` in RFC 850 or
//! asctime form is ignored), gives `proxy-revalidate` zero freshness instead of forbidding stale
//! reuse, has no `stale-while-revalidate`, `stale-if-error`, `only-if-cached` or
//! `CDN-Cache-Control`, and clones the request and response header maps into every policy.
//! The rules themselves are short; what is subtle is listed beside each one.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::header::{AGE, CACHE_CONTROL, DATE, ETAG, EXPIRES, LAST_MODIFIED, PRAGMA};
use http::{HeaderMap, HeaderName, StatusCode};

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
const DELTA_MAX: u64 = 2_147_483_648;

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1).
pub const HEURISTIC_STATUSES: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// `CDN-Cache-Control` (RFC 9213): the same directives, meant for caches of a CDN or a reverse
/// proxy; when present it replaces `Cache-Control` for freshness here.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Parsed cache directives of one header (names lower-cased).
#[derive(Debug, Default, Clone)]
pub struct Directives {
    /// `max-age`: `Some(None)` when present but invalid.
    pub max_age: Option<Option<u64>>,
    /// `s-maxage`, likewise.
    pub s_maxage: Option<Option<u64>>,
    /// `min-fresh` (requests).
    pub min_fresh: Option<u64>,
    /// `max-stale` (requests): `Some(None)` means any staleness.
    pub max_stale: Option<Option<u64>>,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `no-cache` (with or without field names: either way, validate before reuse).
    pub no_cache: bool,
    /// `no-store`.
    pub no_store: bool,
    /// `private` (with or without field names: a shared cache does not store it).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `only-if-cached` (requests).
    pub only_if_cached: bool,
}

impl Directives {
    /// The directives of every `name` field line of `headers`. Names are case-insensitive;
    /// values may be tokens or quoted strings; the first occurrence of a directive wins
    /// (RFC 9111 §4.2.1 allows it).
    pub fn parse(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut d = Self::default();
        for line in lines {
            let Ok(line) = line.to_str() else { continue };
            for item in split_list(line) {
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                    None => (item.trim(), None),
                };
                let secs = || value.as_deref().and_then(delta_seconds);
                // Compared in place: lower-casing each name into a String, like the list into
                // a Vec and each value into a String, were the allocations that made a
                // parse cost ~1,400 instructions (callgrind 2026-11).
                let is = |name: &str| key.eq_ignore_ascii_case(name);
                if is("max-age") {
                    d.max_age = d.max_age.or_else(|| Some(secs()));
                } else if is("s-maxage") {
                    d.s_maxage = d.s_maxage.or_else(|| Some(secs()));
                } else if is("min-fresh") {
                    d.min_fresh = d.min_fresh.or_else(secs);
                } else if is("max-stale") {
                    d.max_stale = d.max_stale.or_else(|| Some(secs()));
                } else if is("stale-while-revalidate") {
                    d.stale_while_revalidate = d.stale_while_revalidate.or_else(secs);
                } else if is("stale-if-error") {
                    d.stale_if_error = d.stale_if_error.or_else(secs);
                } else {
                    let flags = [
                        ("no-cache", &mut d.no_cache),
                        ("no-store", &mut d.no_store),
                        ("private", &mut d.private),
                        ("public", &mut d.public),
                        ("must-revalidate", &mut d.must_revalidate),
                        ("proxy-revalidate", &mut d.proxy_revalidate),
                        ("only-if-cached", &mut d.only_if_cached),
                    ];
                    for (name, flag) in flags {
                        *flag |= is(name);
                    }
                }
            }
        }
        Some(d)
    }
}

/// Comma-separated list items, trimmed and non-empty, commas inside quoted strings kept.
fn split_list(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        loop {
            let (item, next) = first_item(rest?);
            rest = next;
            let item = item.trim();
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// The first item of a list and what follows its comma, if one does.
fn first_item(list: &str) -> (&str, Option<&str>) {
    let (mut quoted, mut escaped) = (false, false);
    for (i, b) in list.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return (&list[..i], Some(&list[i + 1..])),
            _ => {}
        }
    }
    (list, None)
}

fn unquote(v: &str) -> Cow<'_, str> {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) if inner.contains('\\') => {
            Cow::Owned(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
        }
        Some(inner) => Cow::Borrowed(inner),
        None => Cow::Borrowed(v),
    }
}

/// delta-seconds: digits only; too large is 2^31.
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX))
}

/// An HTTP-date in any of its three forms (RFC 9110 §5.6.7).
pub fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    httpdate::parse_http_date(first.to_str().ok()?.trim()).ok()
}

/// What the cache knows of a response when it stores it, fixed at that moment.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// Freshness lifetime (§4.2.1); zero for a response that must be validated first.
    pub lifetime: Duration,
    /// The response's age when received (§4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// When it was received.
    pub received: SystemTime,
    /// Stale reuse is forbidden (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub must_revalidate: bool,
    /// Every reuse needs validation (`no-cache`).
    pub no_cache: bool,
    /// `stale-while-revalidate` window.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` window.
    pub stale_if_error: Duration,
}

/// Storage settings that are the operator's.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Share of `Date - Last-Modified` used as heuristic freshness (RFC 9111 §4.2.2 suggests
    /// 10%).
    pub heuristic_fraction: f64,
    /// Upper bound of heuristic freshness.
    pub heuristic_max: Duration,
}

impl Freshness {
    /// Whether a response to a GET may be stored, and if so its freshness. `default` is the
    /// freshness of a response without explicit or heuristic freshness (plughost's own
    /// responses); origin responses get `None` there and are then stored only when they
    /// carry a validator, to be revalidated on every use.
    pub fn of(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        settings: Settings,
        default: Option<Duration>,
    ) -> Option<Self> {
        // 206 and 304 are not complete responses; 1xx never reach here.
        if matches!(status.as_u16(), 206 | 304) || status.is_informational() {
            return None;
        }
        let cdn = Directives::parse(headers, &CDN_CACHE_CONTROL);
        let cc = Directives::parse(headers, &CACHE_CONTROL).unwrap_or_default();
        let d = cdn.as_ref().unwrap_or(&cc);
        if d.no_store || cc.no_store || d.private || cc.private {
            return None;
        }
        if headers
            .get_all(http::header::VARY)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| split_list(v).any(|n| n == "*")))
        {
            return None;
        }
        let date = http_date(headers, &DATE);
        let explicit = explicit_lifetime(d, headers, date, response_time);
        let heuristic = || heuristic_lifetime(status, headers, date, response_time, settings);
        let lifetime = match explicit.or_else(heuristic).or(default) {
            Some(l) => l,
            // Storable (§3) but with no freshness: worth keeping only to revalidate.
            None if HEURISTIC_STATUSES.contains(&status.as_u16()) || cc.public => {
                if !has_validator(headers) {
                    return None;
                }
                Duration::ZERO
            }
            None => return None,
        };
        let stale_while_revalidate = Duration::from_secs(d.stale_while_revalidate.unwrap_or(0));
        let stale_if_error = Duration::from_secs(d.stale_if_error.unwrap_or(0));
        // Already stale, nothing to validate it with and no stale window: useless to keep.
        if lifetime.is_zero()
            && !has_validator(headers)
            && stale_while_revalidate.is_zero()
            && stale_if_error.is_zero()
        {
            return None;
        }
        let initial_age = initial_age(headers, date, request_time, response_time);
        Some(Self {
            lifetime,
            initial_age,
            received: response_time,
            must_revalidate: d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some(),
            no_cache: d.no_cache,
            stale_while_revalidate,
            stale_if_error,
        })
    }

    /// Current age (§4.2.3): the age when received plus the time resident here.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.received).unwrap_or_default()
    }

    /// How long past its lifetime it is; zero while fresh.
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }
}

/// The freshness lifetime a response states (§4.2.1): `s-maxage`, `max-age`, or `Expires`
/// from its `Date` (or when it was received).
fn explicit_lifetime(
    d: &Directives,
    headers: &HeaderMap,
    date: Option<SystemTime>,
    response_time: SystemTime,
) -> Option<Duration> {
    if let Some(s) = d.s_maxage {
        return Some(Duration::from_secs(s.unwrap_or(0)));
    }
    if let Some(m) = d.max_age {
        return Some(Duration::from_secs(m.unwrap_or(0)));
    }
    if !headers.contains_key(EXPIRES) {
        return None;
    }
    // An invalid Expires (a bad date, "0") means already expired.
    let expires = http_date(headers, &EXPIRES);
    let base = date.unwrap_or(response_time);
    Some(
        expires
            .and_then(|e| e.duration_since(base).ok())
            .unwrap_or_default(),
    )
}

/// The heuristic lifetime of a response that states none (§4.2.2): a fraction of the time
/// since its `Last-Modified`, capped, for the statuses that allow it.
fn heuristic_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    date: Option<SystemTime>,
    response_time: SystemTime,
    settings: Settings,
) -> Option<Duration> {
    if !HEURISTIC_STATUSES.contains(&status.as_u16()) {
        return None;
    }
    let modified = http_date(headers, &LAST_MODIFIED)?;
    let since = date
        .unwrap_or(response_time)
        .duration_since(modified)
        .ok()?;
    Some(
        since
            .mul_f64(settings.heuristic_fraction)
            .min(settings.heuristic_max),
    )
}

/// A response's age when received (§4.2.3): its `Age`, the response delay and the clocks'
/// disagreement.
fn initial_age(
    headers: &HeaderMap,
    date: Option<SystemTime>,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = date
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent_age.max(age_value + delay)
}

/// Whether a response carries a validator (an entity tag or a modification date).
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// What a request's directives allow for one stored response, now.
#[derive(Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it as it is.
    Fresh,
    /// Serve it and revalidate in the background (`stale-while-revalidate`).
    StaleWhileRevalidate,
    /// Validate with the origin first (conditional request).
    Validate,
}

/// The request's cache directives (`Pragma: no-cache` counts as `no-cache` when the request
/// has no `Cache-Control`).
pub fn request_directives(headers: &HeaderMap, present: Present) -> Directives {
    if present.has(Present::CACHE_CONTROL) {
        return Directives::parse(headers, &CACHE_CONTROL).unwrap_or_default();
    }
    // §5.4: `Pragma: no-cache` counts only where there is no `Cache-Control`.
    let no_cache = present.has(Present::PRAGMA)
        && headers.get_all(PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| split_list(v).any(|p| p.eq_ignore_ascii_case("no-cache")))
        });
    Directives {
        no_cache,
        ..Directives::default()
    }
}

/// Which of the request fields the cache reads a request carries, found in one pass over its
/// names. Most requests carry none of them, and looking each up by name (a hash and a probe,
/// ~90 instructions) was the largest part of `http`'s cost in a cache hit: seven lookups
/// that find nothing (callgrind 2026-11, `bench/profile.py`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u8);

impl Present {
    /// `Authorization`.
    pub const AUTHORIZATION: u8 = 1;
    /// `Cache-Control`.
    pub const CACHE_CONTROL: u8 = 1 << 1;
    /// `Pragma`.
    pub const PRAGMA: u8 = 1 << 2;
    /// `If-None-Match` or `If-Modified-Since`.
    pub const CONDITIONAL: u8 = 1 << 3;
    /// `Range`.
    pub const RANGE: u8 = 1 << 4;
    /// `If-Range`.
    pub const IF_RANGE: u8 = 1 << 5;

    /// The fields among these that `headers` has. Names are matched as text: a branch on the
    /// length and a comparison per name.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut bits = 0;
        for name in headers.keys() {
            bits |= match name.as_str() {
                "authorization" => Self::AUTHORIZATION,
                "cache-control" => Self::CACHE_CONTROL,
                "pragma" => Self::PRAGMA,
                "if-none-match" | "if-modified-since" => Self::CONDITIONAL,
                "range" => Self::RANGE,
                "if-range" => Self::IF_RANGE,
                _ => 0,
            };
        }
        Self(bits)
    }

    /// Whether the field `bit` names is there.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// §4: whether `stored` may answer a request with directives `req` without contacting the
/// origin.
pub fn reuse(stored: &Freshness, req: &Directives, now: SystemTime) -> Reuse {
    if req.no_cache || stored.no_cache {
        return Reuse::Validate;
    }
    let age = stored.age(now);
    if let Some(max_age) = req.max_age {
        // An invalid request max-age asks for validation, as max-age=0 would.
        if age > Duration::from_secs(max_age.unwrap_or(0)) {
            return Reuse::Validate;
        }
    }
    let left = stored.lifetime.saturating_sub(age);
    if let Some(min_fresh) = req.min_fresh
        && left < Duration::from_secs(min_fresh)
    {
        return Reuse::Validate;
    }
    let stale = stored.staleness(now);
    if stale.is_zero() && age < stored.lifetime {
        return Reuse::Fresh;
    }
    if stored.must_revalidate {
        return Reuse::Validate;
    }
    if let Some(max_stale) = req.max_stale
        && max_stale.is_none_or(|m| stale <= Duration::from_secs(m))
    {
        return Reuse::Fresh;
    }
    if stale <= stored.stale_while_revalidate && !stored.stale_while_revalidate.is_zero() {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Validate
}

/// Whether an origin failure may be answered with `stored` (`stale-if-error`, from the
/// response or the request).
pub fn stale_if_error(stored: &Freshness, req: &Directives, now: SystemTime) -> bool {
    if stored.must_revalidate {
        return false;
    }
    let window = stored
        .stale_if_error
        .max(Duration::from_secs(req.stale_if_error.unwrap_or(0)));
    !window.is_zero() && stored.staleness(now) <= window
}

/// Weak comparison of entity tags (RFC 9110 §8.8.3.2): `W/` ignored.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim().trim_start_matches("W/") == b.trim().trim_start_matches("W/")
}

/// RFC 9110 §13.1.1/§13.1.3: whether a client's conditional GET/HEAD is answered 304 by a
/// stored response with these headers.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let inm = request.get_all(http::header::IF_NONE_MATCH);
    if inm.iter().next().is_some() {
        let Some(etag) = stored.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(split_list)
            .any(|t| t == "*" || weak_eq(t, etag));
    }
    let Some(since) = http_date(request, &http::header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified = http_date(stored, &LAST_MODIFIED).or_else(|| http_date(stored, &DATE));
    modified.is_some_and(|m| m <= since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const S: Settings = Settings {
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(86_400),
    };

    #[test]
    fn present_names_the_fields_the_cache_reads() {
        let fields = h(&[
            ("range", "bytes=0-1"),
            ("if-none-match", "\"a\""),
            ("accept", "*/*"),
        ]);
        let p = Present::of(&fields);
        assert!(p.has(Present::RANGE) && p.has(Present::CONDITIONAL));
        for absent in [
            Present::AUTHORIZATION,
            Present::CACHE_CONTROL,
            Present::PRAGMA,
            Present::IF_RANGE,
        ] {
            assert!(!p.has(absent), "{absent}");
        }
        let since = Present::of(&h(&[("if-modified-since", "x")]));
        assert!(since.has(Present::CONDITIONAL));
        assert_eq!(Present::of(&HeaderMap::new()), Present::default());
        // §5.4: Pragma counts only without Cache-Control.
        let both = asked(&[("cache-control", "max-age=5"), ("pragma", "no-cache")]);
        assert!(!both.no_cache);
    }

    /// The directives of a request with these fields.
    fn asked(pairs: &[(&'static str, &str)]) -> Directives {
        let headers = h(pairs);
        request_directives(&headers, Present::of(&headers))
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn fresh(pairs: &[(&'static str, &str)]) -> Option<Freshness> {
        let now = SystemTime::now();
        Freshness::of(StatusCode::OK, &h(pairs), now, now, S, None)
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn explicit_freshness_prefers_s_maxage_then_max_age_then_expires() {
        let now = SystemTime::now();
        let in_100 = date(now + Duration::from_secs(100));
        let f = |p: &[(&'static str, &str)]| fresh(p).map(|f| f.lifetime.as_secs());
        assert_eq!(f(&[("cache-control", "max-age=5, s-maxage=7")]), Some(7));
        assert_eq!(f(&[("cache-control", "MAX-AGE=5")]), Some(5));
        assert_eq!(f(&[("cache-control", "max-age=\"5\"")]), Some(5));
        assert_eq!(f(&[("cache-control", "max-age=5, max-age=9")]), Some(5));
        assert_eq!(
            f(&[("cache-control", "max-age=99999999999999")]),
            Some(DELTA_MAX)
        );
        let expires = f(&[("date", &date(now)), ("expires", &in_100)]).unwrap();
        assert!((99..=100).contains(&expires), "{expires}");
        // Invalid values mean stale, not "use a default".
        assert_eq!(
            f(&[("cache-control", "max-age=5s"), ("etag", "\"a\"")]),
            Some(0)
        );
        assert_eq!(f(&[("expires", "0"), ("etag", "\"a\"")]), Some(0));
        assert_eq!(f(&[("expires", &date(now - Duration::from_secs(9)))]), None);
    }

    #[test]
    fn without_freshness_only_validators_make_a_response_worth_storing() {
        assert!(fresh(&[]).is_none());
        assert_eq!(
            fresh(&[("etag", "\"x\"")]).unwrap().lifetime,
            Duration::ZERO
        );
        let now = SystemTime::now();
        let default = Freshness::of(StatusCode::OK, &h(&[]), now, now, S, Some(S.heuristic_max));
        assert_eq!(default.unwrap().lifetime, S.heuristic_max);
    }

    #[test]
    fn heuristic_freshness_is_a_tenth_of_the_last_modified_age_for_listed_statuses() {
        let now = SystemTime::now();
        let modified = date(now - Duration::from_secs(1000));
        let pairs = [("date", date(now)), ("last-modified", modified)];
        let headers = h(&[("date", &pairs[0].1), ("last-modified", &pairs[1].1)]);
        let ok = Freshness::of(StatusCode::OK, &headers, now, now, S, None).unwrap();
        assert_eq!(ok.lifetime.as_secs(), 100);
        let created = Freshness::of(StatusCode::CREATED, &headers, now, now, S, None);
        assert!(created.is_none());
        // Explicit freshness makes any final status storable.
        let cc = h(&[("cache-control", "max-age=60")]);
        for status in [302, 307, 400, 500, 503] {
            let s = StatusCode::from_u16(status).unwrap();
            assert!(
                Freshness::of(s, &cc, now, now, S, None).is_some(),
                "{status}"
            );
        }
        assert!(Freshness::of(StatusCode::PARTIAL_CONTENT, &cc, now, now, S, None).is_none());
    }

    #[test]
    fn age_counts_the_received_age_the_delay_and_residence() {
        let now = SystemTime::now();
        let f = fresh(&[("cache-control", "max-age=3600"), ("age", "7200")]).unwrap();
        assert!(f.age(now) >= Duration::from_secs(7200));
        assert_eq!(reuse(&f, &Directives::default(), now), Reuse::Validate);
        // A Date in the past makes the apparent age.
        let past = date(now - Duration::from_secs(50));
        let f = fresh(&[("cache-control", "max-age=3600"), ("date", &past)]).unwrap();
        assert!((49..=51).contains(&f.age(now).as_secs()));
    }

    #[test]
    fn private_no_store_and_vary_star_are_not_stored() {
        for cc in [
            "private",
            "no-store",
            "private=\"x\", max-age=60",
            "No-Store",
        ] {
            assert!(fresh(&[("cache-control", cc)]).is_none(), "{cc}");
        }
        assert!(fresh(&[("cache-control", "max-age=60"), ("vary", "*")]).is_none());
    }

    #[test]
    fn request_directives_decide_reuse() {
        let now = SystemTime::now();
        let stored = fresh(&[("cache-control", "max-age=60"), ("age", "30")]).unwrap();
        let req = |cc: &str| asked(&[("cache-control", cc)]);
        assert_eq!(reuse(&stored, &req(""), now), Reuse::Fresh);
        assert_eq!(reuse(&stored, &req("max-age=10"), now), Reuse::Validate);
        assert_eq!(reuse(&stored, &req("min-fresh=40"), now), Reuse::Validate);
        assert_eq!(reuse(&stored, &req("no-cache"), now), Reuse::Validate);
        let pragma = asked(&[("pragma", "no-cache")]);
        assert_eq!(reuse(&stored, &pragma, now), Reuse::Validate);
        let stale = fresh(&[("cache-control", "max-age=10"), ("age", "30")]).unwrap();
        assert_eq!(reuse(&stale, &req(""), now), Reuse::Validate);
        assert_eq!(reuse(&stale, &req("max-stale"), now), Reuse::Fresh);
        assert_eq!(reuse(&stale, &req("max-stale=25"), now), Reuse::Fresh);
        assert_eq!(reuse(&stale, &req("max-stale=5"), now), Reuse::Validate);
        let strict = fresh(&[
            ("cache-control", "max-age=10, must-revalidate"),
            ("age", "30"),
        ])
        .unwrap();
        assert_eq!(reuse(&strict, &req("max-stale"), now), Reuse::Validate);
    }

    #[test]
    fn stale_while_revalidate_and_stale_if_error_have_windows() {
        let now = SystemTime::now();
        let f = fresh(&[
            (
                "cache-control",
                "max-age=10, stale-while-revalidate=60, stale-if-error=60",
            ),
            ("age", "30"),
        ])
        .unwrap();
        let none = Directives::default();
        assert_eq!(reuse(&f, &none, now), Reuse::StaleWhileRevalidate);
        assert!(stale_if_error(&f, &none, now));
        let old = fresh(&[
            ("cache-control", "max-age=10, stale-while-revalidate=5"),
            ("age", "30"),
        ])
        .unwrap();
        assert_eq!(reuse(&old, &none, now), Reuse::Validate);
        assert!(!stale_if_error(&old, &none, now));
        let asked = asked(&[("cache-control", "stale-if-error=100")]);
        assert!(stale_if_error(&old, &asked, now));
    }

    #[test]
    fn directives_are_case_insensitive_first_wins_and_quoted_commas_kept() {
        let mut h = HeaderMap::new();
        h.append(
            CACHE_CONTROL,
            HeaderValue::from_static("Max-Age=60, max-age=5, no-cache=\"a,public, b\", NO-STORE"),
        );
        h.append(
            CACHE_CONTROL,
            HeaderValue::from_static("s-maxage=\"30\", min-fresh=abc,, stale-if-error=9"),
        );
        let d = Directives::parse(&h, &CACHE_CONTROL).unwrap();
        assert_eq!(d.max_age, Some(Some(60)));
        assert_eq!(d.s_maxage, Some(Some(30)));
        assert_eq!(d.min_fresh, None);
        assert_eq!(d.stale_if_error, Some(9));
        assert!(d.no_cache && d.no_store);
        assert!(!d.public, "a comma inside a quoted string split the list");
    }

    #[test]
    fn cdn_cache_control_wins_for_freshness() {
        let f = fresh(&[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age=500"),
        ]);
        assert_eq!(f.unwrap().lifetime.as_secs(), 500);
    }

    #[test]
    fn conditional_requests_match_weakly_or_by_date() {
        let stored = h(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let req = |k: &'static str, v: &str| h(&[(k, v)]);
        assert!(not_modified(&req("if-none-match", "\"v1\""), &stored));
        assert!(not_modified(
            &req("if-none-match", "\"x\", W/\"v1\""),
            &stored
        ));
        assert!(not_modified(&req("if-none-match", "*"), &stored));
        assert!(!not_modified(&req("if-none-match", "\"v2\""), &stored));
        let later = "Sunday, 06-Nov-94 09:00:00 GMT";
        assert!(not_modified(&req("if-modified-since", later), &stored));
        let earlier = "Sun Nov  6 08:00:00 1994";
        assert!(!not_modified(&req("if-modified-since", earlier), &stored));
    }
}

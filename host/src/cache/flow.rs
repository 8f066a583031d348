//! One request through the cache, in RFC 9111's order: a stored response that may be reused
//! answers (304 to a matching conditional request, 206 to a range); a stale one with a
//! validator is validated with a conditional request, and a 304 refreshes it; a stale one may
//! answer while it is revalidated in the background (`stale-while-revalidate`) or when the
//! origin fails (`stale-if-error`); otherwise the origin answers and what may be stored is.
//! Unsafe methods invalidate what they changed (§4.4).

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{
    AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE, DATE, ETAG, EXPIRES,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, RANGE, VARY,
};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, BodyStream, StreamBody};

use super::policy::{self, Present, Reuse};
use super::store::{Cache, Entry, Fetch, RequestPolicy};
use crate::body::{self, Body, BoxError};
use crate::error::RequestError;
use crate::telemetry;

/// The header that says what the cache did. Parsed once: by its name as a string it was
/// parsed and checked on every hit, 544 instructions (callgrind 2026-11).
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Marks a response that came from an upstream server: only plughost's own responses get
/// `own_response_ttl` when they state no freshness.
#[derive(Debug, Clone, Copy)]
pub struct FromUpstream;

/// What the cache did for one request (`x-cache` and the access log's `cache` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the cache.
    Hit,
    /// Answered from a stale entry (being revalidated, or the origin failed).
    Stale,
    /// Validated with the origin (304) and answered from the cache.
    Revalidated,
    /// Answered by the origin.
    Miss,
    /// The cache was not consulted.
    Bypass,
}

impl Outcome {
    /// As written in `x-cache` and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Revalidated => "revalidated",
            Self::Miss => "miss",
            Self::Bypass => "-",
        }
    }
}

/// Headers a 304 carries over from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [http::HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    LAST_MODIFIED,
    VARY,
];

impl Cache {
    /// Answers `parts` + `body` from the cache or through `route` (the router: the origin),
    /// storing what may be stored.
    pub async fn serve<R, F>(
        &self,
        parts: Parts,
        body: Body,
        route: R,
    ) -> Result<(Response<Body>, Outcome), RequestError>
    where
        R: Fn(Request<Body>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, RequestError>> + Send + 'static,
    {
        // The two ways to the origin (`pass`, `fetch`) are boxed: their futures hold the
        // route's and the settling of its answer, ~1.5 KB, and inline they made every
        // request's future that much larger, hits included, which hyper then moves by memcpy.
        let Some(policy) = self.request_policy(&parts) else {
            return Box::pin(self.pass(parts, body, route)).await;
        };
        let key = Cache::key(&parts);
        let mut stored = self.lookup(&key, &parts.headers);
        // Collapse concurrent misses: the first fetches, the others wait and look again.
        let mut leader = None;
        if stored.is_none() && policy.store && !policy.directives.only_if_cached {
            match self.begin_fetch(&key) {
                Fetch::Leader(guard) => leader = Some(guard),
                Fetch::Follower(rx) => {
                    self.wait(rx).await;
                    stored = self.lookup(&key, &parts.headers);
                }
            }
        }
        let now = SystemTime::now();
        if let Some(entry) = &stored {
            telemetry::variant(entry.variant());
            match policy::reuse(&entry.freshness, &policy.directives, now) {
                Reuse::Fresh => {
                    self.count(true);
                    return Ok((
                        answer(entry, &parts, policy.present, now, Outcome::Hit),
                        Outcome::Hit,
                    ));
                }
                Reuse::StaleWhileRevalidate => {
                    self.count(true);
                    self.revalidate_in_background(key, &parts, entry.clone(), &policy, route);
                    return Ok((
                        answer(entry, &parts, policy.present, now, Outcome::Stale),
                        Outcome::Stale,
                    ));
                }
                Reuse::Validate => {}
            }
        }
        self.count(false);
        if policy.directives.only_if_cached {
            let mut resp = Response::new(body::full("not in the cache (only-if-cached)\n"));
            *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            return Ok((resp, Outcome::Miss));
        }
        let view = request_view(&parts);
        let req = conditional(parts, body, stored.as_deref());
        let result = Box::pin(self.fetch(key, &view, req, stored, &policy, &route)).await;
        drop(leader);
        result
    }

    /// Sends `req` to the origin and settles the answer with the stored entry (validation,
    /// `stale-if-error`) and the store. `parts` is the client's request as it came (its
    /// headers select the variant stored; the answer follows its conditionals and range).
    async fn fetch<R, F>(
        &self,
        key: String,
        parts: &Parts,
        req: Request<Body>,
        stale: Option<Arc<Entry>>,
        policy: &RequestPolicy,
        route: &R,
    ) -> Result<(Response<Body>, Outcome), RequestError>
    where
        R: Fn(Request<Body>) -> F,
        F: Future<Output = Result<Response<Body>, RequestError>>,
    {
        let validated = stale.as_ref().filter(|e| policy::has_validator(&e.headers));
        let sent = SystemTime::now();
        let routed = route(req).await;
        let received = SystemTime::now();
        let stale_ok = |failed: bool| {
            failed
                && stale.as_ref().is_some_and(|s| {
                    policy::stale_if_error(&s.freshness, &policy.directives, received)
                })
        };
        let resp = match routed {
            Err(e) if stale_ok(matches!(e, RequestError::Upstream(_))) => {
                let s = stale.as_ref().expect("checked");
                return Ok((
                    answer(s, parts, policy.present, received, Outcome::Stale),
                    Outcome::Stale,
                ));
            }
            Err(e) => return Err(e),
            Ok(resp) if stale_ok(resp.status().is_server_error()) => {
                let s = stale.as_ref().expect("checked");
                return Ok((
                    answer(s, parts, policy.present, received, Outcome::Stale),
                    Outcome::Stale,
                ));
            }
            Ok(resp) => resp,
        };
        let own = resp.extensions().get::<FromUpstream>().is_none();
        if resp.status() == StatusCode::NOT_MODIFIED
            && let Some(old) = validated
        {
            let entry = self.refresh(key, parts, old, resp.headers(), (sent, received), own);
            let outcome = Outcome::Revalidated;
            return Ok((
                answer(&entry, parts, policy.present, received, outcome),
                outcome,
            ));
        }
        let mut resp = resp;
        if policy.store && parts.method == Method::GET {
            resp = match self
                .store(key, parts, resp, policy, (sent, received), own)
                .await?
            {
                Ok(answered) => return Ok((answered, Outcome::Miss)),
                Err(unstored) => unstored,
            };
        }
        resp.headers_mut()
            .insert(&X_CACHE, HeaderValue::from_static("miss"));
        Ok((resp, Outcome::Miss))
    }

    /// Stores a GET's response `resp` if it may be, and answers the request from the stored
    /// entry (`Ok(Ok)`); a response that may not be stored, or is larger than an entry may
    /// be, comes back to be sent on as it streams (`Ok(Err)`).
    async fn store(
        &self,
        key: String,
        parts: &Parts,
        resp: Response<Body>,
        policy: &RequestPolicy,
        (sent, received): (SystemTime, SystemTime),
        own: bool,
    ) -> Result<Result<Response<Body>, Response<Body>>, RequestError> {
        let Some(freshness) = self.admit(
            resp.status(),
            resp.headers(),
            resp.body().size_hint().exact(),
            (sent, received),
            own,
        ) else {
            return Ok(Err(resp));
        };
        let (head, body) = resp.into_parts();
        match collect_at_most(body, self.max_entry_bytes()).await {
            Ok(Ok(bytes)) => {
                let entry = self.put(
                    key,
                    &parts.headers,
                    head.status,
                    head.headers.clone(),
                    bytes.clone(),
                    freshness,
                );
                // The client may have asked for a range of it, or sent a validator.
                let mut r = answer(&entry, parts, policy.present, received, Outcome::Miss);
                // A response the origin made for this request has no age; one that came
                // with an `Age` (from a cache behind it) keeps it, corrected for its trip
                // (RFC 9111 §5.1, §4.2.3).
                if !head.headers.contains_key(AGE) {
                    r.headers_mut().remove(AGE);
                }
                Ok(Ok(r))
            }
            // Larger than an entry may be: sent on as it streams, not stored.
            Ok(Err(rest)) => Ok(Err(Response::from_parts(head, rest))),
            Err(_) => Err(RequestError::Internal("response body failed".into())),
        }
    }

    /// The entry `old` refreshed by a 304 (§4.3.4): its headers updated by the 304's
    /// `fields`, stored again if it may be, else handed to this request only. `times` are
    /// when the validation was sent and answered.
    fn refresh(
        &self,
        key: String,
        parts: &Parts,
        old: &Entry,
        fields: &http::HeaderMap,
        times: (SystemTime, SystemTime),
        own: bool,
    ) -> Arc<Entry> {
        let mut headers = old.headers.clone();
        for (name, value) in fields {
            if name != CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
                headers.insert(name.clone(), value.clone());
            }
        }
        let len = Some(old.body.len() as u64);
        match self.admit(old.status, &headers, len, times, own) {
            Some(f) => self.put(
                key,
                &parts.headers,
                old.status,
                headers,
                old.body.clone(),
                f,
            ),
            None => {
                self.invalidate(&key);
                let mut freshness = old.freshness.clone();
                freshness.received = times.1;
                Arc::new(old.unstored(headers, freshness))
            }
        }
    }

    /// A request the cache does not answer: routed as it is. An unsafe method that succeeds
    /// invalidates its target and the same-host `Location` and `Content-Location` (§4.4).
    async fn pass<R, F>(
        &self,
        parts: Parts,
        body: Body,
        route: R,
    ) -> Result<(Response<Body>, Outcome), RequestError>
    where
        R: Fn(Request<Body>) -> F,
        F: Future<Output = Result<Response<Body>, RequestError>>,
    {
        let safe = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if safe || !self.enabled() {
            return Ok((
                route(Request::from_parts(parts, body)).await?,
                Outcome::Bypass,
            ));
        }
        let (key, host) = (Cache::key(&parts), super::store::host_of(&parts));
        let resp = route(Request::from_parts(parts, body)).await?;
        if resp.status().is_success() || resp.status().is_redirection() {
            self.invalidate(&key);
            for name in [LOCATION, CONTENT_LOCATION] {
                if let Some(target) = resp.headers().get(&name).and_then(|v| v.to_str().ok())
                    && let Some(other) = same_host_key(&host, target)
                {
                    self.invalidate(&other);
                }
            }
        }
        Ok((resp, Outcome::Bypass))
    }

    /// Serves nothing: validates `entry` with the origin in a task of its own (one per URL
    /// at a time) and stores the answer.
    fn revalidate_in_background<R, F>(
        &self,
        key: String,
        parts: &Parts,
        entry: Arc<Entry>,
        policy: &RequestPolicy,
        route: R,
    ) where
        R: Fn(Request<Body>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, RequestError>> + Send + 'static,
    {
        let Fetch::Leader(guard) = self.begin_fetch(&key) else {
            return;
        };
        let view = request_view(parts);
        let mut head = request_view(parts);
        head.method = Method::GET;
        let req = conditional(head, body::full(Bytes::new()), Some(&entry));
        let (cache, policy) = (self.clone(), policy.clone());
        // A span of the request's trace, though the request has been answered: where its
        // backend's time went.
        let span = telemetry::Child::revalidation();
        tokio::spawn(async move {
            let _guard = guard;
            let fetched = cache.fetch(key, &view, req, Some(entry), &policy, &route);
            match span.scope(std::pin::pin!(fetched)).await {
                Ok((_, outcome)) => span.end_as(outcome.as_str(), false),
                Err(e) => {
                    tracing::debug!(error = %e, "background revalidation failed");
                    span.end("error");
                }
            }
        });
    }
}

/// The method, target and headers of a request, for answering it later.
fn request_view(parts: &Parts) -> Parts {
    // Field by field: through `Request::builder` each step moved the whole builder (~250
    // instructions of memcpy a miss, callgrind 2026-11).
    let mut view = Request::new(()).into_parts().0;
    view.method = parts.method.clone();
    view.uri = parts.uri.clone();
    view.version = parts.version;
    view.headers = parts.headers.clone();
    view
}

/// The request to send: with the stored response's validators when there is one to validate
/// (they replace the client's own: the answer is judged against the stored response).
fn conditional(mut parts: Parts, body: Body, stored: Option<&Entry>) -> Request<Body> {
    if let Some(e) = stored.filter(|e| policy::has_validator(&e.headers)) {
        parts.headers.remove(IF_NONE_MATCH);
        parts.headers.remove(IF_MODIFIED_SINCE);
        if let Some(etag) = e.headers.get(ETAG) {
            parts.headers.insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = e.headers.get(LAST_MODIFIED) {
            parts.headers.insert(IF_MODIFIED_SINCE, modified.clone());
        }
        // A validation fetches the whole response, whatever range the client wants.
        parts.headers.remove(RANGE);
    }
    Request::from_parts(parts, body)
}

/// The cache key of a `Location` / `Content-Location` on the same host, if it is one.
fn same_host_key(host: &str, target: &str) -> Option<String> {
    if target.starts_with('/') && !target.starts_with("//") {
        return Some(format!("{host}{target}"));
    }
    let uri: http::Uri = target.parse().ok()?;
    let authority = uri.authority()?;
    (authority.as_str().eq_ignore_ascii_case(host)).then(|| {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        format!("{}{pq}", host.to_ascii_lowercase())
    })
}

/// A response from a stored entry for the request `parts`: 304 when its conditional matches,
/// 206 or 416 for a single byte range of a stored 200, else the whole stored response.
fn answer(
    entry: &Entry,
    parts: &Parts,
    present: Present,
    now: SystemTime,
    outcome: Outcome,
) -> Response<Body> {
    let age = age_value(entry.freshness.age(now).as_secs());
    let label = HeaderValue::from_static(outcome.as_str());
    let ok = entry.status == StatusCode::OK;
    if ok
        && present.has(Present::CONDITIONAL)
        && policy::not_modified(&parts.headers, &entry.headers)
    {
        let mut resp = Response::new(body::full(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in NOT_MODIFIED_HEADERS {
            for v in entry.headers.get_all(&name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
        resp.headers_mut().insert(AGE, age);
        resp.headers_mut().insert(&X_CACHE, label);
        return resp;
    }
    let mut resp = Response::new(body::full(entry.body.clone()));
    *resp.status_mut() = entry.status;
    // A pre-built head with room for `Age` and `X-Cache` per entry (a clone of an exactly
    // full map grows and rehashes on the first insert) saved ~400 instructions a hit, but
    // under 10,000 connections RSS then kept growing (248 -> 302 MiB in 60 s, where it
    // levels off near 285), so the stored map is cloned as it is.
    *resp.headers_mut() = entry.headers.clone();
    // With If-Range the client wants the range only if its copy is current; the cache does
    // not judge that and sends the whole response, which RFC 9110 §14.2 allows.
    if ok
        && present.has(Present::RANGE)
        && !present.has(Present::IF_RANGE)
        && parts.method == Method::GET
        && let Some(range) = parts.headers.get(RANGE).and_then(|r| r.to_str().ok())
        && let Some(range) = byte_range(range, entry.body.len() as u64)
    {
        resp.headers_mut().remove(CONTENT_LENGTH);
        match range {
            Some((first, last)) => {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                *resp.body_mut() = body::full(entry.body.slice(first as usize..=last as usize));
                let value = format!("bytes {first}-{last}/{}", entry.body.len());
                resp.headers_mut()
                    .insert(CONTENT_RANGE, HeaderValue::try_from(value).expect("digits"));
            }
            None => {
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                *resp.body_mut() = body::full(Bytes::new());
                let value = format!("bytes */{}", entry.body.len());
                resp.headers_mut()
                    .insert(CONTENT_RANGE, HeaderValue::try_from(value).expect("digits"));
            }
        }
    }
    resp.headers_mut().insert(AGE, age);
    resp.headers_mut().insert(&X_CACHE, label);
    resp
}

/// Ages below this many seconds (2.7 hours) are sent from [`AGE_DIGITS`].
const STATIC_AGES: usize = 10_000;

/// `0000`, `0001`, … `9999`: the digits of every age below [`STATIC_AGES`], four apiece.
static AGE_DIGITS: [u8; 4 * STATIC_AGES] = {
    let mut digits = [0; 4 * STATIC_AGES];
    let mut n = 0;
    while n < STATIC_AGES {
        digits[4 * n] = b'0' + (n / 1000) as u8;
        digits[4 * n + 1] = b'0' + (n / 100 % 10) as u8;
        digits[4 * n + 2] = b'0' + (n / 10 % 10) as u8;
        digits[4 * n + 3] = b'0' + (n % 10) as u8;
        n += 1;
    }
    digits
};

/// The `Age` header of a response `secs` old. `HeaderValue::from(u64)` allocates twice (a
/// `BytesMut`, then the `Bytes` it freezes into), two mallocs and two frees on every hit; a
/// slice of a static table allocates nothing.
fn age_value(secs: u64) -> HeaderValue {
    let Ok(n) = usize::try_from(secs) else {
        return HeaderValue::from(secs);
    };
    if n >= STATIC_AGES {
        return HeaderValue::from(secs);
    }
    let width = match n {
        0..10 => 1,
        10..100 => 2,
        100..1000 => 3,
        _ => 4,
    };
    let digits = &AGE_DIGITS[4 * n + 4 - width..4 * n + 4];
    HeaderValue::from_maybe_shared(Bytes::from_static(digits)).expect("ASCII digits")
}

/// A single `bytes=` range of a body of `len` bytes (RFC 9110 §14.1.2): `None` when the
/// header is not one range the cache serves (the whole response is sent then),
/// `Some(None)` when it cannot be satisfied, else the inclusive first and last byte.
fn byte_range(header: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        (suffix > 0 && len > 0).then(|| (len.saturating_sub(suffix), len - 1))
    } else {
        let first: u64 = first.parse().ok()?;
        let last = match last {
            "" => len.saturating_sub(1),
            l => l.parse::<u64>().ok()?.min(len.saturating_sub(1)),
        };
        (first < len && first <= last).then_some((first, last))
    };
    Some(range)
}

/// The whole body when it is at most `limit` bytes; else a body that yields what was read
/// and then the rest, so nothing is lost.
async fn collect_at_most(body: Body, limit: usize) -> Result<Result<Bytes, Body>, BoxError> {
    if body.size_hint().exact().is_some_and(|n| n <= limit as u64) {
        return Ok(Ok(body.collect().await?.to_bytes()));
    }
    let mut stream = BodyStream::new(body);
    let mut read = BytesMut::new();
    while let Some(frame) = stream.next().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            read.extend_from_slice(data);
            if read.len() > limit {
                let first =
                    futures_util::stream::once(
                        async move { Ok(http_body::Frame::data(read.freeze())) },
                    );
                return Ok(Err(BodyExt::boxed(StreamBody::new(first.chain(stream)))));
            }
        }
    }
    Ok(Ok(read.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_from_the_table_read_as_their_numbers() {
        for secs in [
            0,
            7,
            10,
            99,
            100,
            999,
            1000,
            4321,
            9999,
            10_000,
            86_400,
            u64::MAX,
        ] {
            assert_eq!(
                age_value(secs).to_str().unwrap(),
                secs.to_string(),
                "{secs}"
            );
        }
    }

    #[test]
    fn single_byte_ranges_are_served_others_not() {
        assert_eq!(byte_range("bytes=0-4", 10), Some(Some((0, 4))));
        assert_eq!(byte_range("bytes=5-", 10), Some(Some((5, 9))));
        assert_eq!(byte_range("bytes=-3", 10), Some(Some((7, 9))));
        assert_eq!(byte_range("bytes=8-100", 10), Some(Some((8, 9))));
        assert_eq!(byte_range("bytes=10-12", 10), Some(None));
        assert_eq!(byte_range("bytes=0-1,4-5", 10), None);
        assert_eq!(byte_range("items=0-1", 10), None);
    }

    #[test]
    fn only_same_host_locations_are_invalidated() {
        assert_eq!(
            same_host_key("a.test", "/x?y").as_deref(),
            Some("a.test/x?y")
        );
        assert_eq!(
            same_host_key("a.test", "http://A.test/x").as_deref(),
            Some("a.test/x")
        );
        assert_eq!(same_host_key("a.test", "http://b.test/x"), None);
        assert_eq!(same_host_key("a.test", "//b.test/x"), None);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_stream_on_whole() {
        let chunks: Vec<Result<_, BoxError>> = (0..4)
            .map(|_| Ok(http_body::Frame::data(Bytes::from("abc"))))
            .collect();
        let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)));
        let Ok(Err(rest)) = collect_at_most(body, 5).await else {
            panic!("over the limit")
        };
        assert_eq!(rest.collect().await.unwrap().to_bytes(), "abcabcabcabc");
        let small = body::full("abc");
        assert_eq!(collect_at_most(small, 5).await.unwrap().unwrap(), "abc");
    }
}

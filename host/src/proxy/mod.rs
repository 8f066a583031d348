//! The reverse proxy: forwards a request to a pool's next healthy server over kept-alive
//! connections (`pool`), streaming both bodies, with hop-by-hop headers removed
//! and `X-Forwarded-*` / `Via` added. Idempotent requests without a body that fail to connect
//! are retried once on the next server, or that a kept-alive connection closed under, once
//! more; a request with a body is not (its body is already being streamed and cannot be
//! replayed).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::BodyExt;

use crate::balancer::{Backend, Pool};
use crate::body::{self, Body};
use crate::cache::FromUpstream;
use crate::error::{ClientError, RequestError, UpstreamError};
use crate::metrics::BackendErrorLabel;

pub mod h1;
pub mod pool;

use h1::Head;
use pool::{SendError, Upstream};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and `Upgrade`.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names tells, where a removal by
    // name for each of the nine (parse, hash, probe) cost 2,600 instructions a message,
    // twice per proxied request (callgrind). `Connection` is itself hop-by-hop, so a
    // message naming others takes the slow path too.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// How requests tell upstreams who sent them.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Peers whose forwarding headers are extended rather than replaced.
    pub trusted: Vec<ipnet::IpNet>,
    /// Also send RFC 7239 `Forwarded`.
    pub forwarded: bool,
    /// `max_body_bytes`, named in the 413 of a body that passes it while streaming.
    pub body_limit: usize,
}

impl Forwarding {
    fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// Set on requests that arrived over TLS, so upstreams are told `https`.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// The headers sent upstream: the client's, minus hop-by-hop ones, plus `X-Forwarded-*`,
/// `Via` and (when asked for) `Forwarded`. The client's own `X-Forwarded-For` and `Forwarded`
/// are kept only from a trusted proxy; from anyone else they are replaced. An HTTP/2 request
/// names its host in `:authority`, which becomes `Host`; its cookie crumbs are joined into one
/// `Cookie` line for an HTTP/1.1 upstream (RFC 9113 §8.2.3).
fn upstream_headers(parts: &mut Parts, client: SocketAddr, fwd: &Forwarding) -> HeaderMap {
    // The client's map itself, which the request does not need again, with room for the
    // forwarding headers added below (growing it one header at a time rehashes it twice):
    // copying it header by header cost more than the rest of this function (callgrind).
    let mut h = std::mem::take(&mut parts.headers);
    h.reserve(6);
    strip_hop_by_hop(&mut h);
    let host = h.get(header::HOST).cloned().or_else(|| {
        let authority = parts.uri.authority()?;
        HeaderValue::try_from(authority.as_str()).ok()
    });
    if let Some(host) = &host {
        h.insert(header::HOST, host.clone());
        h.insert(&X_FORWARDED_HOST, host.clone());
    }
    if h.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join("; ");
        if let Ok(v) = HeaderValue::try_from(joined) {
            h.insert(header::COOKIE, v);
        }
    }
    let trusted = fwd.trusts(client.ip());
    let mut xff = String::with_capacity(15);
    if let Some(prev) = h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok())
        && trusted
    {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    crate::logging::push_ip(&mut xff, client.ip());
    if let Ok(v) = HeaderValue::try_from(xff) {
        h.insert(&X_FORWARDED_FOR, v);
    }
    let proto = if parts.extensions.get::<Https>().is_some() {
        "https"
    } else {
        "http"
    };
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if fwd.forwarded {
        let node = match client.ip() {
            std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
            v4 => v4.to_string(),
        };
        let mut element = format!("for={node};proto={proto}");
        if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
            element.push_str(&format!(";host=\"{host}\""));
        }
        let value = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(prev) if trusted => format!("{prev}, {element}"),
            _ => element,
        };
        if let Ok(v) = HeaderValue::try_from(value) {
            h.insert(header::FORWARDED, v);
        }
    } else if !trusted {
        h.remove(header::FORWARDED);
    }
    // Earlier proxies' Via values stay; ours names the protocol the client spoke.
    let version = match parts.version {
        http::Version::HTTP_2 => "2 plughost",
        http::Version::HTTP_10 => "1.0 plughost",
        _ => "1.1 plughost",
    };
    h.append(header::VIA, HeaderValue::from_static(version));
    h
}

/// Tracks one request in flight to a backend.
struct InFlight<'a>(&'a Backend);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Forwards a request to `pool`, with `path` (path and query, prefix already stripped).
pub async fn forward(
    pool: &Pool,
    (mut parts, body): (Parts, Body),
    client: SocketAddr,
    fwd: &Forwarding,
    path: &str,
) -> Result<Response<Body>, RequestError> {
    let headers = upstream_headers(&mut parts, client, fwd);
    let resp = exchange(pool, &parts.method, headers, body, path, fwd.body_limit).await?;
    let (mut head, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    // plughost speaks its own HTTP version to the client (RFC 9110 §6.2): an HTTP/1.0
    // backend's status line must not make the client drop keep-alive.
    head.version = http::Version::HTTP_11;
    head.extensions.insert(FromUpstream);
    Ok(Response::from_parts(
        head,
        incoming.map_err(body::BoxError::from).boxed(),
    ))
}

/// Sends one request to the next healthy server of `pool` and returns its response head
/// (the body still streaming), keeping the pool's health and metrics: the reverse proxy's
/// path, and the one of plugins' outbound requests to `upstream:NAME`. Idempotent requests
/// without a body that fail to connect are tried once more on another server, and once more
/// when a kept-alive connection closes under them.
pub async fn exchange(
    pool: &Pool,
    method: &Method,
    headers: HeaderMap,
    body: Body,
    path: &str,
    body_limit: usize,
) -> Result<Response<Upstream>, RequestError> {
    let metrics = pool.metrics();
    let retryable = is_idempotent(method) && http_body::Body::is_end_stream(&body);
    // A plugin's request may come without a `Host`; the proxy's always has the client's.
    let has_host = headers.contains_key(header::HOST);
    let mut body = Some(body);
    let mut failed_on = None;
    // A request is sent again at most once.
    let mut again = false;
    loop {
        let Some(backend) = pool.pick(failed_on) else {
            return Err(UpstreamError::NoHealthyServer(pool.name.clone()).into());
        };
        let body = body
            .take()
            .unwrap_or_else(|| body::full(bytes::Bytes::new()));
        // Encoded for each try (the `Host` may be the server's), so the headers are never
        // cloned in case of a retry: that clone cost 850 instructions a request (callgrind).
        let host = (!has_host).then_some(&backend.host);
        let head = Head::encode(method, path, &headers, host, &body)
            .ok_or_else(|| RequestError::Internal("upstream URI".into()))?;
        backend.inflight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        backend.metered.requests.inc();
        let started = Instant::now();
        let result = {
            let _inflight = InFlight(backend);
            tokio::time::timeout(
                pool.config.response_timeout,
                backend.connections.send(&head, body),
            )
            .await
        };
        let fail = |reason: &'static str| {
            backend.failures.fetch_add(1, Ordering::Relaxed);
            metrics
                .backend_errors
                .get_or_create(&BackendErrorLabel::new(&backend.label, reason))
                .inc();
        };
        match result {
            Err(_) => {
                fail("timeout");
                pool.timed_out(backend);
                tracing::warn!(pool = %pool.name, server = %backend.addr, timeout = ?pool.config.response_timeout, "backend response timed out");
                return Err(UpstreamError::Timeout(pool.name.clone()).into());
            }
            Ok(Err(SendError::Connect(e))) => {
                fail("connect");
                pool.connect_failed(backend);
                tracing::debug!(pool = %pool.name, server = %backend.addr, error = %e, "backend connect failed");
                if retryable && !again {
                    again = true;
                    failed_on = Some(backend.addr);
                    continue;
                }
                return Err(UpstreamError::Connect(pool.name.clone()).into());
            }
            // As nginx's `proxy_next_upstream error` does for such requests; not the
            // backend's failure.
            Ok(Err(SendError::Stale(e))) if retryable && !again => {
                tracing::debug!(pool = %pool.name, server = %backend.addr, error = %e, "kept-alive backend connection closed under a request; sending it again");
                again = true;
            }
            // The request body went past its limit while streaming: the sender's fault, 413,
            // and nothing against the backend.
            Ok(Err(SendError::Http(e))) if body_too_large(&e) => {
                return Err(ClientError::BodyTooLarge { limit: body_limit }.into());
            }
            Ok(Err(SendError::Http(e) | SendError::Stale(e))) => {
                fail("io");
                tracing::warn!(pool = %pool.name, server = %backend.addr, error = %e, "backend request failed");
                return Err(UpstreamError::Failed(pool.name.clone()).into());
            }
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                pool.responded(backend, status);
                if status >= 500 {
                    fail("status_5xx");
                }
                backend
                    .metered
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                return Ok(resp);
            }
        }
    }
}

/// Whether a client error came from the request body's size limit.
fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let (mut parts, ()) = Request::get("/x")
            .header("host", "example.org")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("x-forwarded-for", "10.0.0.1")
            .header("via", "1.1 edge")
            .header("x-kept", "yes")
            .body(())
            .unwrap()
            .into_parts();
        let fwd = Forwarding::default();
        let h = upstream_headers(&mut parts, "192.0.2.7:5000".parse().unwrap(), &fwd);
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        // From an untrusted peer the client's own X-Forwarded-For is replaced.
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.org");
        assert_eq!(h["x-kept"], "yes");
        let via: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 plughost"]);
    }

    #[test]
    fn each_hop_by_hop_header_goes_even_without_connection_naming_it() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} kept");
            assert_eq!(h["x-kept"], "yes");
        }
        let mut plain = HeaderMap::new();
        plain.insert("x-a", HeaderValue::from_static("1"));
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn trusted_proxies_extend_forwarding_headers_others_replace_them() {
        let (mut parts, ()) = Request::get("/x")
            .header("host", "example.org")
            .header("x-forwarded-for", "10.0.0.1")
            .header("forwarded", "for=10.0.0.1")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(Https);
        let fwd = Forwarding {
            trusted: vec!["192.0.2.0/24".parse().unwrap()],
            forwarded: true,
            body_limit: 0,
        };
        let headers = parts.headers.clone();
        let h = upstream_headers(&mut parts, "192.0.2.7:5000".parse().unwrap(), &fwd);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1, for=192.0.2.7;proto=https;host=\"example.org\""
        );
        parts.headers = headers;
        let h = upstream_headers(&mut parts, "[2001:db8::1]:5000".parse().unwrap(), &fwd);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"example.org\""
        );
    }

    #[test]
    fn http2_authority_becomes_host_and_cookie_crumbs_are_joined() {
        let (mut parts, ()) = Request::get("https://api.example:8443/x")
            .version(http::Version::HTTP_2)
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap()
            .into_parts();
        let h = upstream_headers(
            &mut parts,
            "192.0.2.7:5000".parse().unwrap(),
            &Forwarding::default(),
        );
        assert_eq!(h["host"], "api.example:8443");
        assert_eq!(h["x-forwarded-host"], "api.example:8443");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }
}

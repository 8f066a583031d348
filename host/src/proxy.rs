//! The reverse proxy route: forwards a client's request to an upstream pool through
//! [`exchange`] (which picks the server, retries and keeps the pool's health), with hop-by-hop
//! headers removed and `X-Forwarded-*` / `Via` added, and hands the response on with both
//! bodies streaming.

use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::BodyExt;

use crate::body::{self, Body};
use crate::cache::FromUpstream;
use crate::client::Client;
use crate::error::RequestError;
use crate::http1::Interim;
use crate::telemetry;
use crate::upstream::{Pool, exchange, h1};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and `Upgrade`.
/// Compared as text: the lengths mostly differ, so a name is told apart from all nine in a
/// few instructions, where nine `HeaderName` comparisons cost a proxied request ~400
/// (callgrind 2026-11).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names tells, where a removal by
    // name for each of the nine (parse, hash, probe) cost 2,600 instructions a message,
    // twice per proxied request (callgrind 2026-11). `Connection` is itself hop-by-hop, so a
    // message naming others takes the slow path too.
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The fields a message's `Connection` names, hop-by-hop like the standard ones.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
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

/// What the proxy changes in a client's fields on their way to a backend: hop-by-hop ones (and
/// those `Connection` names) are left out, and `X-Forwarded-For`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `Via` and (when asked for) `Forwarded` follow the rest. The client's own
/// `X-Forwarded-For` and `Forwarded` are extended only from a trusted proxy; from anyone else
/// they are replaced. An HTTP/2 request's cookie crumbs are joined into one `Cookie` line for
/// an HTTP/1.1 upstream (RFC 9113 §8.2.3).
///
/// Written straight into the request head (`h1::Rewrite`) rather than into the client's header
/// map first: the five inserts, the host's re-insert and the removals cost a proxied request
/// ~3,000 instructions (callgrind 2026-11), more than the whole head costs to write.
struct Outgoing {
    /// Names the client's `Connection` lists.
    named: Vec<HeaderName>,
    /// The client's cookie crumbs joined, when it sent more than one.
    cookie: Option<Vec<u8>>,
    x_forwarded_for: String,
    proto: &'static str,
    host: Option<HeaderValue>,
    /// Ours, when `forwarded_header` is on.
    forwarded: Option<String>,
    /// The client's `Forwarded` is left out (ours replaces it, or it is not trusted).
    drop_forwarded: bool,
    via: &'static str,
    /// Our `traceparent` (and `tracestate`) when the request is traced: they replace the
    /// client's, so the backend's spans are children of the exchange's.
    trace: Vec<(HeaderName, HeaderValue)>,
    /// Where the backend's `103 Early Hints` go: the client's connection, when it takes them.
    interim: Option<Interim>,
}

impl Outgoing {
    /// The changes for `parts` from `client`. An HTTP/2 request names its host in
    /// `:authority`: it becomes the `Host` field of `parts`, which the head starts with.
    fn new(parts: &mut Parts, client: &Client, fwd: &Forwarding) -> Self {
        let h = &mut parts.headers;
        if !h.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::try_from(authority.as_str())
        {
            h.insert(header::HOST, v);
        }
        let host = h.get(header::HOST).cloned();
        let named = connection_named(h);
        let cookie = h.get_all(header::COOKIE).iter().nth(1).is_some().then(|| {
            let crumbs: Vec<&[u8]> = h
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            crumbs.join(&b"; "[..])
        });
        let trusted = fwd.trusts(client.addr().ip());
        let mut x_forwarded_for = String::with_capacity(15);
        if trusted && let Some(prev) = h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            x_forwarded_for.push_str(prev);
            x_forwarded_for.push_str(", ");
        }
        x_forwarded_for.push_str(client.ip_str());
        let proto = if parts.extensions.get::<Https>().is_some() {
            "https"
        } else {
            "http"
        };
        let forwarded = fwd.forwarded.then(|| {
            let node = match client.addr().ip() {
                std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
                v4 => v4.to_string(),
            };
            let mut element = format!("for={node};proto={proto}");
            if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
                element.push_str(&format!(";host=\"{host}\""));
            }
            match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
                Some(prev) if trusted => format!("{prev}, {element}"),
                _ => element,
            }
        });
        // Earlier proxies' Via values stay; ours names the protocol the client spoke.
        let via = match parts.version {
            http::Version::HTTP_2 => "2 plughost",
            http::Version::HTTP_10 => "1.0 plughost",
            _ => "1.1 plughost",
        };
        Self {
            named,
            cookie,
            x_forwarded_for,
            proto,
            host,
            forwarded,
            drop_forwarded: fwd.forwarded || !trusted,
            via,
            trace: Vec::new(),
            interim: client.interim().cloned(),
        }
    }
}

impl h1::Rewrite for Outgoing {
    fn interim(&self) -> Option<&Interim> {
        self.interim.as_ref()
    }

    fn drops(&self, name: &HeaderName) -> bool {
        hop_by_hop(name)
            || *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_HOST
            || *name == X_FORWARDED_PROTO
            || (self.drop_forwarded && name == header::FORWARDED)
            || (self.cookie.is_some() && name == header::COOKIE)
            || self.named.contains(name)
            || (!self.trace.is_empty() && (name == "traceparent" || name == "tracestate"))
    }

    fn add(&self, out: &mut h1::Fields<'_>) {
        if let Some(cookie) = &self.cookie {
            out.field("cookie", cookie);
        }
        out.field("x-forwarded-for", self.x_forwarded_for.as_bytes());
        out.field("x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = &self.host {
            out.field("x-forwarded-host", host.as_bytes());
        }
        if let Some(forwarded) = &self.forwarded {
            out.field("forwarded", forwarded.as_bytes());
        }
        out.field("via", self.via.as_bytes());
        for (name, value) in &self.trace {
            out.field(name.as_str(), value.as_bytes());
        }
    }
}

/// Forwards a request to `pool`, with `path` (path and query, prefix already stripped).
pub async fn forward(
    pool: &Pool,
    (mut parts, body): (Parts, Body),
    client: &Client,
    fwd: &Forwarding,
    path: &str,
) -> Result<Response<Body>, RequestError> {
    let mut outgoing = Outgoing::new(&mut parts, client, fwd);
    let span = telemetry::Child::upstream(&parts.method, &pool.name);
    outgoing.trace = span.headers();
    let resp = span
        .scope(std::pin::pin!(exchange(
            pool,
            &parts.method,
            &parts.headers,
            body,
            path,
            fwd.body_limit,
            Some(&outgoing),
        )))
        .await;
    let status = resp.as_ref().map(|r| r.status());
    span.end(match &status {
        Ok(s) if s.is_server_error() => s.as_str(),
        Ok(_) => "ok",
        Err(_) => "error",
    });
    let resp = resp?;
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

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::upstream::h1::Head;

    /// The fields of the head the proxy sends for `parts` from `client`, in order.
    fn sent(parts: &mut Parts, client: &str, fwd: &Forwarding) -> Vec<(String, String)> {
        let outgoing = Outgoing::new(parts, &Client::new(client.parse().unwrap()), fwd);
        let body = body::full(bytes::Bytes::new());
        let head = Head::encode(
            &parts.method,
            "/x",
            &parts.headers,
            None,
            &body,
            Some(&outgoing),
        )
        .unwrap();
        let text = String::from_utf8(head.bytes().to_vec()).unwrap();
        text.split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    /// The values of `name` in `fields`.
    fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

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
        let h = sent(&mut parts, "192.0.2.7:5000", &Forwarding::default());
        assert_eq!(h[0], ("host".into(), "example.org".into()));
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(values(&h, gone).is_empty(), "{gone} forwarded");
        }
        // From an untrusted peer the client's own X-Forwarded-For is replaced.
        assert_eq!(values(&h, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&h, "x-forwarded-host"), ["example.org"]);
        assert_eq!(values(&h, "x-kept"), ["yes"]);
        assert_eq!(values(&h, "via"), ["1.1 edge", "1.1 plughost"]);
    }

    #[test]
    fn each_hop_by_hop_header_goes_even_without_connection_naming_it() {
        for name in HOP_BY_HOP {
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
        let mut fwd = Forwarding {
            trusted: vec!["192.0.2.0/24".parse().unwrap()],
            forwarded: true,
            body_limit: 0,
        };
        let headers = parts.headers.clone();
        let h = sent(&mut parts, "192.0.2.7:5000", &fwd);
        assert_eq!(values(&h, "x-forwarded-for"), ["10.0.0.1, 192.0.2.7"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(
            values(&h, "forwarded"),
            ["for=10.0.0.1, for=192.0.2.7;proto=https;host=\"example.org\""]
        );
        parts.headers = headers.clone();
        let h = sent(&mut parts, "[2001:db8::1]:5000", &fwd);
        assert_eq!(values(&h, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(
            values(&h, "forwarded"),
            ["for=\"[2001:db8::1]\";proto=https;host=\"example.org\""]
        );
        // Without `forwarded_header`, a trusted proxy's `Forwarded` passes as it is, and an
        // untrusted client's is dropped.
        fwd.forwarded = false;
        parts.headers = headers.clone();
        let h = sent(&mut parts, "192.0.2.7:5000", &fwd);
        assert_eq!(values(&h, "forwarded"), ["for=10.0.0.1"]);
        parts.headers = headers;
        let h = sent(&mut parts, "198.51.100.1:5000", &fwd);
        assert!(values(&h, "forwarded").is_empty(), "{h:?}");
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
        let h = sent(&mut parts, "192.0.2.7:5000", &Forwarding::default());
        assert_eq!(h[0], ("host".into(), "api.example:8443".into()));
        assert_eq!(values(&h, "x-forwarded-host"), ["api.example:8443"]);
        assert_eq!(values(&h, "cookie"), ["a=1; b=2"]);
        assert_eq!(values(&h, "via"), ["2 plughost"]);
    }
}

//! Outbound HTTP from plugins (wasi:http/outgoing-handler): the `introspect` example checking
//! bearer tokens against a real endpoint, and the hostile plugin calling where it may not,
//! waiting on what never answers, reading what never ends and sending a thousand requests in
//! one call. Every destination is a real server on loopback; refused ones are checked to
//! have received nothing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, assert_no_leaks, outbound_requests, plugin, plugin_errors};

/// The hostile plugin as a responder on `/fetch` in `mode`, with `rest` added to its entry.
fn fetcher(mode: &str, amount: u64, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"fetch\"\nfile = {:?}\nkind = \"responder\"\nconfig = {{ mode = \"{mode}\", amount = {amount} }}\n{rest}\n[[routes]]\nprefix = \"/fetch\"\nplugin = \"fetch\"\n",
        plugin("hostile").display().to_string()
    )
}

/// What the fetcher said of a GET of `url` (named in the path too, so that no answer comes
/// from plughost's cache; `n` tells repeated calls apart).
async fn fetch(server: &Plughost, url: &str) -> (u16, String) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let r = reqwest::Client::new()
        .get(server.url(&format!("/fetch?n={n}")))
        .header("x-fetch", url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn introspect_lets_active_tokens_through_and_remembers_them() {
    let auth = TestBackend::start("auth");
    let app = TestBackend::start("app");
    let config = format!(
        "[[plugins]]\nname = \"introspect\"\nfile = {:?}\nkeyvalue = [\"tokens\"]\nallowed_outbound = [\"http://{auth}\"]\nconfig = {{ endpoint = \"http://{auth}/introspect\", cache_bucket = \"tokens\" }}\n\
         [keyvalue.tokens]\nttl = \"1m\"\n[upstreams.app]\nservers = [\"{app}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"app\"\nstrip_prefix = true\n",
        plugin("introspect").display().to_string(),
        auth = auth.addr,
        app = app.addr,
    );
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let get = |token: Option<&str>| {
        let mut req = client.get(server.url("/api/headers"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    let none = get(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(get(Some("stolen")).await.unwrap().status(), 401);
    for _ in 0..3 {
        let ok = get(Some("good-alice")).await.unwrap();
        assert_eq!(ok.status(), 200);
        let seen_by_app = ok.text().await.unwrap();
        assert!(
            seen_by_app.contains("x-auth-subject: alice"),
            "{seen_by_app}"
        );
    }
    // One introspection for alice (then the bucket), one for the stolen token.
    let introspections = || {
        auth.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == "POST /introspect")
            .count()
    };
    assert_eq!(introspections(), 2);
    let metrics = server.metrics_text().await;
    let dest = format!("http://{}", auth.addr);
    assert_eq!(outbound_requests(&metrics, "introspect", &dest, "ok"), 2.0);
    // The endpoint gone: a new token cannot be checked (503), a remembered one still passes.
    let mut auth = auth;
    auth.stop();
    let down = get(Some("good-bob")).await.unwrap();
    assert_eq!(down.status(), 503);
    assert_eq!(get(Some("good-alice")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn outbound_requests_go_only_where_allowed() {
    let allowed = TestBackend::start("allowed");
    let other = TestBackend::start("other");
    let rest = format!(
        "allowed_outbound = [\"http://{}\", \"http://localhost:{}\"]",
        allowed.addr,
        other.addr.port()
    );
    let server = Plughost::start(&fetcher("fetch", 0, &rest));
    let admin = server.admin.unwrap();
    let ok = fetch(&server, &format!("http://{}/x", allowed.addr)).await;
    assert_eq!(ok, (200, "status=200 bytes=7\n".into()));
    let denied = "error: destination not allowed (add it to the plugin's allowed_outbound)\n";
    for url in [
        // Listening, but not listed.
        format!("http://{}/x", other.addr),
        // The admin listener.
        format!("http://{admin}/plugins"),
        // The allowed server by another scheme or name.
        format!("https://{}/x", allowed.addr),
        format!("http://localhost:{}/x", allowed.addr.port()),
        // Metadata service: refused by the list, before any packet is sent.
        "http://169.254.169.254/latest/meta-data/".into(),
    ] {
        assert_eq!(fetch(&server, &url).await, (200, denied.into()), "{url}");
    }
    // A listed name resolving to loopback: refused at the address, nothing connected.
    let to_loopback = fetch(
        &server,
        &format!("http://localhost:{}/x", other.addr.port()),
    )
    .await;
    assert_eq!(
        to_loopback.1,
        "error: destination resolves to an address plugins may not reach\n"
    );
    assert_eq!(other.hits.load(Ordering::Relaxed), 0);
    assert_eq!(allowed.hits.load(Ordering::Relaxed), 1);
    let metrics = server.metrics_text().await;
    assert_eq!(
        outbound_requests(&metrics, "fetch", "(denied)", "denied"),
        5.0
    );
    let named = format!("http://localhost:{}", other.addr.port());
    assert_eq!(
        outbound_requests(&metrics, "fetch", &named, "refused_address"),
        1.0
    );
    // Each refused destination is logged once, with the entry it would need.
    let log = server.wait_log(&format!("needed=http://127.0.0.1:{}", other.addr.port()));
    assert_eq!(
        log.matches("outbound request denied").count(),
        5,
        "one line per destination:\n{log}"
    );
    fetch(&server, &format!("http://{}/again", other.addr)).await;
    assert_eq!(
        server.log().matches("outbound request denied").count(),
        5,
        "a destination's second refusal is only counted"
    );
}

/// Userinfo in the authority: the listed host before or after the `@` is no way in, and
/// nothing is connected to.
#[tokio::test]
async fn an_outbound_url_with_userinfo_is_refused() {
    let allowed = TestBackend::start("allowed");
    let other = TestBackend::start("other");
    let rest = format!("allowed_outbound = [\"http://{}\"]", allowed.addr);
    let server = Plughost::start(&fetcher("fetch", 0, &rest));
    let denied = "error: destination not allowed (add it to the plugin's allowed_outbound)\n";
    for url in [
        format!("http://{}@{}/x", other.addr, allowed.addr),
        format!("http://user:pw@{}/x", allowed.addr),
        format!("http://{}@{}/x", allowed.addr, other.addr),
    ] {
        assert_eq!(fetch(&server, &url).await, (200, denied.into()), "{url}");
    }
    assert_eq!(allowed.hits.load(Ordering::Relaxed), 0);
    assert_eq!(other.hits.load(Ordering::Relaxed), 0);
    server.wait_log("carries userinfo");
}

#[tokio::test]
async fn a_plugin_without_allowed_outbound_can_call_nothing() {
    let backend = TestBackend::start("b");
    let server = Plughost::start(&fetcher("fetch", 0, ""));
    let r = fetch(&server, &format!("http://{}/x", backend.addr)).await;
    assert!(r.1.starts_with("error: destination not allowed"), "{r:?}");
    assert_eq!(backend.hits.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_waits_bodies_and_bursts_are_bounded() {
    let backend = TestBackend::start("b");
    let rest = format!(
        "allowed_outbound = [\"http://{}\"]\ntimeout = \"2s\"\nmax_outbound_body_bytes = 1048576\nmax_outbound_requests = 8\n[outbound]\nfirst_byte_timeout = \"300ms\"\nbetween_bytes_timeout = \"300ms\"",
        backend.addr
    );
    let server = Plughost::start(&fetcher("fetch", 0, &rest));
    let b = backend.addr;
    // A backend that never answers: the first-byte timeout, well inside the plugin's deadline.
    let started = Instant::now();
    let (status, text) = fetch(&server, &format!("http://{b}/slow?ms=60000")).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "error: ErrorCode::ConnectionReadTimeout\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // An endless body: cut at the cap.
    let (_, text) = fetch(&server, &format!("http://{b}/endless")).await;
    assert_eq!(
        text,
        "error: HTTP response body size exceeds limit: 1048576 bytes\n"
    );
    // Under the cap, whole.
    let (_, text) = fetch(&server, &format!("http://{b}/big?mb=0")).await;
    assert_eq!(text, "status=200 bytes=0\n");
    assert_eq!(server.metric("plughost_plugin_errors_total").await, 0.0);
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_in_one_request_meet_the_cap_and_the_deadline() {
    let backend = TestBackend::start("b");
    let allow = format!(
        "allowed_outbound = [\"http://{}\"]\nmax_outbound_requests = 8",
        backend.addr
    );
    let url = format!("http://{}/slow?ms=20", backend.addr);
    // Sent at once: 8 in flight, the rest refused on the spot.
    let burst = Plughost::start(&fetcher(
        "fetch-burst",
        1000,
        &format!("{allow}\ntimeout = \"2s\""),
    ));
    let (status, text) = fetch(&burst, &url).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text,
        "{\"ErrorCode::ConnectionLimitReached\": 992, \"status=200\": 8}\n"
    );
    assert_eq!(backend.hits.load(Ordering::Relaxed), 8);
    drop(burst);
    // One after the other: the plugin's deadline ends the call (500), long before 1000.
    let looping = Plughost::start(&fetcher(
        "fetch-loop",
        1000,
        &format!("{allow}\ntimeout = \"300ms\""),
    ));
    let started = Instant::now();
    let (status, _) = fetch(&looping, &url).await;
    assert_eq!(status, 500);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let metrics = looping.metrics_text().await;
    assert_eq!(plugin_errors(&metrics, "fetch", "timeout"), 1.0);
    assert!(backend.hits.load(Ordering::Relaxed) < 8 + 100);
    // The server goes on serving, with nothing left held.
    assert_eq!(reqwest::get(looping.url("/")).await.unwrap().status(), 200);
    assert_no_leaks(&looping, 10.0).await;
}

#[tokio::test]
async fn upstream_destinations_go_through_the_pool() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let rest = format!(
        "allowed_outbound = [\"upstream:api\"]\n[upstreams.api]\nservers = [\"{}\", \"{}\"]",
        a.addr, b.addr
    );
    let server = Plughost::start(&fetcher("fetch", 0, &rest));
    for _ in 0..4 {
        let r = fetch(&server, "http://api.upstream.internal/x").await;
        assert_eq!(r, (200, "status=200 bytes=1\n".into()));
    }
    // Round robin over both servers (health checks aside).
    let hits = |s: &TestBackend| {
        s.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == "GET /x")
            .count()
    };
    assert_eq!((hits(&a), hits(&b)), (2, 2));
    // Another pool's name is not allowed.
    let r = fetch(&server, "http://other.upstream.internal/x").await;
    assert!(r.1.starts_with("error: destination not allowed"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_destinations_are_verified_and_a_plugin_may_trust_its_own_ca() {
    // The destination: another plughost serving HTTPS with a certificate for 127.0.0.1 that
    // no system store knows.
    let origin_dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let ca = origin_dir.path().join("site.crt");
    std::fs::write(&ca, made.cert.pem()).unwrap();
    std::fs::write(
        origin_dir.path().join("site.key"),
        made.signing_key.serialize_pem(),
    )
    .unwrap();
    let origin = Plughost::start_in(
        origin_dir,
        "[tls]\ncert = \"site.crt\"\nkey = \"site.key\"\n",
    );
    let dest = format!("https://{}", origin.addr);
    let allow = format!("allowed_outbound = [\"{dest}\"]");
    let untrusted = Plughost::start(&fetcher("fetch", 0, &allow));
    let (_, text) = fetch(&untrusted, &format!("{dest}/")).await;
    assert_eq!(text, "error: ErrorCode::TlsCertificateError\n");
    let metrics = untrusted.metrics_text().await;
    assert_eq!(outbound_requests(&metrics, "fetch", &dest, "tls"), 1.0);
    let ca_file = format!("{allow}\noutbound_ca_file = {:?}", ca.display().to_string());
    let trusted = Plughost::start(&fetcher("fetch", 0, &ca_file));
    let (_, text) = fetch(&trusted, &format!("{dest}/")).await;
    assert!(text.starts_with("status=200 bytes="), "{text}");
}

//! WASI 0.3 components: `wasi:http@0.3.0` services as routes and middleware in the filter
//! chain, built from source in the test set-up (the `wasip3` crate and wit-bindgen), several
//! requests per instance, and the hostile cases the sandbox must bound.

use std::time::Duration;

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, assert_no_leaks, eventually, plugin, plugin_errors, raw, run};

/// A 0.3 service on `/NAME`, with `rest` added to its entry.
fn service(name: &str, file: &str, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nkind = \"wasi-http\"\n{rest}\n[[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n",
        plugin(file).display().to_string()
    )
}

/// A 0.3 middleware in the chain, with `rest` added to its entry.
fn middleware(name: &str, file: &str, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nkind = \"middleware\"\n{rest}\n",
        plugin(file).display().to_string()
    )
}

/// A plughost:plugin filter adding `x-filtered: yes` to every response (not given the body,
/// which then streams past it, trailers included).
fn own_filter() -> String {
    format!(
        "[[plugins]]\nname = \"headers\"\nfile = {:?}\nrequest_body = false\nconfig = {{ response = {{ name = \"x-filtered\", value = \"yes\" }} }}\n",
        plugin("headers").display().to_string()
    )
}

fn upstream(name: &str, backend: &TestBackend) -> String {
    format!(
        "[upstreams.{name}]\nservers = [\"{}\"]\n[[routes]]\nprefix = \"/{name}\"\nupstream = \"{name}\"\nstrip_prefix = true\n",
        backend.addr
    )
}

async fn get(server: &Plughost, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap_or_default())
}

fn all<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_wasi_03_service_is_a_route_through_filters_and_the_cache_with_bodies_streamed() {
    let config = own_filter() + &service("p3", "p3_hello", "") + &service("svc", "p3_service", "");
    let server = Plughost::start(&config);
    let (status, headers, body) = get(&server, "/p3/a?b=c").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello from WASI 0.3 (/p3/a?b=c)\n");
    assert_eq!(headers["x-filtered"], "yes");
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["x-cache"], "miss");
    let (_, headers, _) = get(&server, "/p3/a?b=c").await;
    assert_eq!(headers["x-cache"], "hit");
    // The request body streams in and the response streams out (the echo consumes the one
    // into the other), over HTTP/1.1 and HTTP/2.
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for client in [
        reqwest::Client::new(),
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
    ] {
        let r = client
            .post(server.url("/svc/echo"))
            .body(payload.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let echoed = r.bytes().await.unwrap();
        assert!(
            echoed == payload,
            "{} bytes echoed of {}",
            echoed.len(),
            payload.len()
        );
    }
    // Trailers pass both ways (HTTP/1.1 sends those the head declares; the echo declares
    // the request's).
    let echoed = raw(
        server.addr,
        b"POST /svc/echo HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\
          Trailer: x-sum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(echoed.starts_with("HTTP/1.1 200"), "{echoed}");
    assert!(
        echoed.ends_with("hello\r\n0\r\nx-sum: 42\r\n\r\n"),
        "{echoed}"
    );
    let plugins = server.admin_json("/plugins").await;
    let p3 = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p3")
        .unwrap();
    assert_eq!(p3["kind"], "wasi-http", "{plugins}");
    assert_eq!(p3["calls"], 1, "{plugins}");
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test]
async fn plugin_check_names_the_03_worlds_and_plugin_run_runs_both() {
    let dir = tempfile::tempdir().unwrap();
    for (file, world) in [
        ("p3_hello", "world: wasi:http/service@0.3.0"),
        ("p3_headers", "world: wasi:http/middleware@0.3.0"),
    ] {
        let path = plugin(file);
        let check = run(dir.path(), &["plugin", "check", path.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(out.contains(world), "{out}");
        assert!(out.contains("exports: wasi:http/handler@0.3.0"), "{out}");
    }
    let hello = plugin("p3_hello");
    let ran = run(
        dir.path(),
        &["plugin", "run", hello.to_str().unwrap(), "--uri", "/x"],
    );
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(out.contains("hello from WASI 0.3 (/x)"), "{out}");
    let mw = plugin("p3_headers");
    let ran = run(
        dir.path(),
        &["plugin", "run", mw.to_str().unwrap(), "--uri", "/y"],
    );
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(out.contains("x-frame-options: DENY"), "{out}");
    assert!(out.contains("the rest of the chain got: GET"), "{out}");
}

#[tokio::test]
async fn a_wrong_kind_or_wasi_p3_off_is_refused_naming_the_fix() {
    let cases = [
        (
            middleware("svc", "p3_hello", ""),
            "give it kind = \"wasi-http\"",
        ),
        (
            service("mw", "p3_headers", ""),
            "give it kind = \"middleware\"",
        ),
        (
            format!("wasi_p3 = false\n{}", service("p3", "p3_hello", "")),
            "set `wasi_p3 = true`",
        ),
    ];
    for (config, fix) in cases {
        let (status, err) = plughost_e2e::fails_to_start(&config);
        assert!(!status.success());
        assert!(err.contains(fix), "no `{fix}` in: {err}");
    }
}

/// The chain: middleware `one`, then plughost's own filter, then middleware `two`, then the
/// cache and a proxied route. Each middleware sees the request on its way in and the
/// response on its way out, cache hits and plughost's own errors included.
#[tokio::test]
async fn middleware_runs_in_chain_order_in_front_of_the_cache_and_the_proxy() {
    let app = TestBackend::start("app");
    let config = middleware("one", "p3_middleware", "config = { MW_NAME = \"one\" }")
        + &own_filter()
        + &middleware("two", "p3_middleware", "config = { MW_NAME = \"two\" }")
        + &middleware("security", "p3_headers", "")
        + &upstream("api", &app);
    let server = Plughost::start(&config);
    let (status, headers, body) = get(&server, "/api/headers").await;
    assert_eq!(status, 200, "{body}");
    // The backend got the request as the middleware changed it.
    assert!(body.contains("x-mw-seen: 1"), "{body}");
    // Responses pass back out in reverse order: `two` adds first, then `one`.
    assert_eq!(all(&headers, "x-mw"), ["two", "one"]);
    assert_eq!(headers["x-filtered"], "yes");
    assert_eq!(headers["x-frame-options"], "DENY");
    // Through the cache: a hit is still seen by every middleware, the backend is not asked.
    let (_, first, _) = get(&server, "/api/cached").await;
    assert_eq!(first["x-cache"], "miss");
    let hits = app.hits.load(std::sync::atomic::Ordering::Relaxed);
    let (status, again, body) = get(&server, "/api/cached").await;
    assert_eq!((status, body.as_str()), (200, "app"));
    assert_eq!(again["x-cache"], "hit");
    assert_eq!(all(&again, "x-mw"), ["two", "one"]);
    assert_eq!(hits, app.hits.load(std::sync::atomic::Ordering::Relaxed));
    // plughost's own error, after the middleware: they see it and add their headers.
    let (status, headers, _) = get(&server, "/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(all(&headers, "x-mw"), ["two", "one"]);
    // A middleware may answer itself: nothing after it runs.
    let hits = app.hits.load(std::sync::atomic::Ordering::Relaxed);
    let (status, headers, body) = get(&server, "/mw/answer").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "answered by the middleware\n")
    );
    assert!(all(&headers, "x-mw").is_empty());
    assert_eq!(hits, app.hits.load(std::sync::atomic::Ordering::Relaxed));
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test]
async fn a_bearer_middleware_asks_the_introspection_endpoint_through_its_allowed_client() {
    let auth = TestBackend::start("auth");
    let app = TestBackend::start("app");
    let config = middleware(
        "bearer",
        "p3_bearer",
        &format!(
            "allowed_outbound = [\"http://{auth}\"]\nconfig = {{ INTROSPECT_URL = \"http://{auth}/introspect\" }}",
            auth = auth.addr
        ),
    ) + &upstream("api", &app)
        + &service("svc", "p3_service", "");
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let call = |token: Option<&str>, path: &str| {
        let mut req = client.get(server.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    let none = call(None, "/api/x").await.unwrap();
    assert_eq!(none.status(), 401, "{}", server.log());
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let stolen = call(Some("stolen"), "/api/x").await.unwrap();
    assert_eq!(stolen.status(), 401, "{}", server.log());
    let ok = call(Some("good-alice"), "/api/x").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "app");
    // The service's client has no allowed_outbound: its request is denied, not sent.
    let denied = call(
        Some("good-alice"),
        &format!("/svc/outbound?url=http://{}/x", app.addr),
    )
    .await
    .unwrap();
    assert_eq!(denied.status(), 502);
    assert!(denied.text().await.unwrap().contains("HttpRequestDenied"));
}

/// Waits until `n` requests are in flight.
async fn in_flight(server: &Plughost, n: f64) {
    eventually(Duration::from_secs(10), "requests in flight", async || {
        let now = server.metric("plughost_inflight_requests").await;
        match now >= n {
            true => Ok(()),
            false => Err(format!("{now} in flight")),
        }
    })
    .await
}

#[tokio::test]
async fn one_instance_serves_many_requests_at_once() {
    let server = Plughost::start(&service(
        "svc",
        "p3_service",
        "instances = 1\nmax_concurrent_requests = 8\ntimeout = \"10s\"",
    ));
    let mut calls = Vec::new();
    for i in 0..8 {
        let url = server.url(&format!("/svc/instance?ms=1500&n={i}"));
        calls.push(tokio::spawn(async move {
            reqwest::get(url).await.unwrap().text().await.unwrap()
        }));
        // Each arrives while the ones before are waiting in the guest.
        in_flight(&server, (i + 1) as f64).await;
    }
    let mut ids = Vec::new();
    for c in calls {
        let text = c.await.unwrap();
        ids.push(text.split_whitespace().nth(1).unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "every request served by one instance: {ids:?}"
    );
}

#[tokio::test]
async fn hostile_services_get_a_clean_status_and_the_server_keeps_serving() {
    let server = Plughost::start(&service(
        "svc",
        "p3_service",
        "timeout = \"500ms\"\nmax_memory_bytes = 67108864\nmax_response_body_bytes = 1048576\nfailure_threshold = 1000",
    ));
    // A handle that never resolves, an answer after the deadline: 500, within the deadline.
    for path in ["/svc/hang", "/svc/late?ms=3000"] {
        let (status, _, body) = get(&server, path).await;
        assert_eq!(status, 500, "{path}: {body}");
    }
    // A body that never ends is cut at max_response_body_bytes; one never closed, at the
    // deadline; one whose instance traps, there: a 500 when it fails before its head is sent (the cache reads a body before
    // it answers a miss), an error after it, never a short body taken as whole.
    for path in ["/svc/endless", "/svc/open", "/svc/trap-after-head"] {
        let r = reqwest::get(server.url(path)).await.unwrap();
        match r.status().as_u16() {
            500 => {}
            200 => assert!(r.bytes().await.is_err(), "{path}: the body must fail"),
            other => panic!("{path}: {other}"),
        }
    }
    // A memory grab past the cap.
    let (status, _, _) = get(&server, "/svc/memory").await;
    assert_eq!(status, 500);
    let text = server.metrics_text().await;
    assert!(plugin_errors(&text, "svc", "timeout") >= 2.0, "{text}");
    let (status, _, body) = get(&server, "/svc/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from a wasi:http 0.3 service\n")
    );
    assert_no_leaks(&server, 10.0).await;
}

/// A trap fails every request in the instance. Those that can be sent again are, once, on an
/// instance of their own; the plugin then isolates requests for its backoff time, where the
/// next trap is its sender's alone and counts toward that client's backoff.
#[tokio::test]
async fn a_query_of_death_costs_other_requests_one_retry_then_only_its_sender() {
    let server = Plughost::start(&service(
        "svc",
        "p3_service",
        "instances = 1\nmax_concurrent_requests = 8\nfailure_threshold = 2\nbackoff = \"30s\"\ntimeout = \"10s\"",
    ));
    let mut victims = Vec::new();
    for i in 0..3 {
        let url = server.url(&format!("/svc/slow?ms=2000&n={i}"));
        victims.push(tokio::spawn(async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
        in_flight(&server, (i + 1) as f64).await;
    }
    let post = {
        let url = server.url("/svc/slow?ms=2000&post");
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    in_flight(&server, 4.0).await;
    let (status, _, _) = get(&server, "/svc/trap").await;
    assert_eq!(status, 500);
    for v in victims {
        assert_eq!(v.await.unwrap(), (200, "slept 2000 ms\n".to_owned()));
    }
    // A request with a body cannot be sent again: it fails cleanly, counted as `shared`
    // (no client's fault). The query of death, retried on an instance of its own, trapped
    // there too: its sender's failure.
    assert_eq!(post.await.unwrap(), 500);
    let text = server.metrics_text().await;
    assert_eq!(plugin_errors(&text, "svc", "shared"), 1.0, "{text}");
    assert_eq!(plugin_errors(&text, "svc", "trap"), 1.0, "{text}");
    // Isolated now: the next trap is also its sender's, and puts that client in backoff.
    assert_eq!(get(&server, "/svc/trap").await.0, 500);
    let text = server.metrics_text().await;
    assert_eq!(plugin_errors(&text, "svc", "trap"), 2.0, "{text}");
    let (status, _, _) = get(&server, "/svc/").await;
    assert_eq!(status, 500, "in backoff for this client");
    let text = server.metrics_text().await;
    assert!(plugin_errors(&text, "svc", "backoff") >= 1.0, "{text}");
}

#[tokio::test]
async fn hostile_middleware_is_bounded() {
    let app = TestBackend::start("app");
    let config = middleware(
        "mw",
        "p3_middleware",
        "timeout = \"500ms\"\nfailure_threshold = 1000",
    ) + &upstream("api", &app);
    let server = Plughost::start(&config);
    // A thousand calls of the next hop: one goes through, the rest get an error-code.
    let (status, _, body) = get(&server, "/mw/loop").await;
    assert_eq!((status, body.as_str()), (200, "ok 1 refused 999\n"));
    // Calling on after its response: refused, nothing breaks.
    let (status, _, _) = get(&server, "/mw/after").await;
    assert_eq!(status, 200);
    for path in ["/mw/trap", "/mw/hang"] {
        let (status, _, body) = get(&server, path).await;
        assert_eq!(status, 500, "{path}: {body}");
    }
    let (status, headers, body) = get(&server, "/api/x").await;
    assert_eq!((status, body.as_str()), (200, "app"));
    assert_eq!(all(&headers, "x-mw"), ["mw"]);
    assert_no_leaks(&server, 10.0).await;
}

/// A reload replaces a 0.3 plugin like any other: requests from then on meet the new version.
#[tokio::test]
async fn hot_reload_replaces_a_03_middleware() {
    let config = |name: &str| {
        middleware(
            "mw",
            "p3_middleware",
            &format!("config = {{ MW_NAME = \"{name}\" }}"),
        )
    };
    let server = Plughost::start(&config("before"));
    let (_, headers, _) = get(&server, "/nowhere").await;
    assert_eq!(all(&headers, "x-mw"), ["before"]);
    server.rewrite_config(&config("after"));
    server.reload().await;
    let (_, headers, _) = get(&server, "/nowhere").await;
    assert_eq!(all(&headers, "x-mw"), ["after"]);
}

/// The rest of the chain a middleware waits on is cut off with its instance: past the
/// middleware's deadline the client gets a 500 at once, the slow backend's request is
/// dropped, and no slot or permit is left behind.
#[tokio::test]
async fn a_next_hop_outliving_its_middleware_is_cut_off_with_it() {
    let app = TestBackend::start("app");
    let config = middleware("mw", "p3_middleware", "timeout = \"300ms\"") + &upstream("api", &app);
    let server = Plughost::start(&config);
    let started = std::time::Instant::now();
    let (status, _, body) = get(&server, "/api/slow?ms=5000").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_no_leaks(&server, 10.0).await;
    let (status, _, body) = get(&server, "/api/x").await;
    assert_eq!((status, body.as_str()), (200, "app"));
}

/// `on_error = "continue"`: a middleware that fails is passed over, and the request goes on
/// through the rest of the chain as if it were not there.
#[tokio::test]
async fn a_failing_middleware_with_on_error_continue_is_passed_over() {
    let app = TestBackend::start("app");
    let config = middleware(
        "mw",
        "p3_middleware",
        "on_error = \"continue\"\nfailure_threshold = 1000",
    ) + &upstream("mw", &app);
    let server = Plughost::start(&config);
    // `/mw/trap` traps the middleware; the request then reaches the `/mw` route's backend.
    let (status, headers, body) = get(&server, "/mw/trap").await;
    assert_eq!((status, body.as_str()), (200, "app"));
    assert!(all(&headers, "x-mw").is_empty());
    assert_no_leaks(&server, 10.0).await;
}

//! The cache in front of a real origin, rule by rule (RFC 9111, RFC 5861, RFC 9110 §13): the
//! scripted origin records what reaches it, so each test asserts both what the client got and
//! whether the origin was asked. Every test runs with the shipped cache defaults.

use std::time::{Duration, SystemTime};

use plughost_e2e::origin::{Origin, Script};
use plughost_e2e::{Plughost, eventually};

fn proxied(origin: &Origin, extra: &str) -> Plughost {
    Plughost::start(&format!(
        "{extra}[upstreams.origin]\nservers = [\"{}\"]\nhealth_path = \"/health\"\n[[routes]]\nprefix = \"/\"\nupstream = \"origin\"\n",
        origin.addr
    ))
}

async fn get(server: &Plughost, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn x_cache(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cache")
        .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
}

fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

/// Asks for `path` twice; returns how many requests reached the origin.
async fn twice(server: &Plughost, origin: &Origin, path: &str) -> usize {
    for _ in 0..2 {
        assert_eq!(get(server, path, &[]).await.status(), 200, "{path}");
    }
    origin.seen(path).len()
}

#[tokio::test]
async fn freshness_comes_from_the_origin_never_from_a_default() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    let cases: &[(&str, Vec<(&str, String)>, usize)] = &[
        ("/none", vec![], 2),
        (
            "/max-age",
            vec![("cache-control", "max-age=3600".into())],
            1,
        ),
        (
            "/max-age-upper",
            vec![("cache-control", "MAX-AGE=3600".into())],
            1,
        ),
        (
            "/s-maxage",
            vec![("cache-control", "s-maxage=3600, max-age=0".into())],
            1,
        ),
        ("/max-age-0", vec![("cache-control", "max-age=0".into())], 2),
        (
            "/max-age-bad",
            vec![("cache-control", "max-age=1h".into())],
            2,
        ),
        ("/expires", vec![("expires", http_date(3600))], 1),
        ("/expires-past", vec![("expires", http_date(-3600))], 2),
        ("/expires-bad", vec![("expires", "0".into())], 2),
        (
            "/heuristic",
            vec![("last-modified", http_date(-86_400 * 10))],
            1,
        ),
        (
            "/aged",
            vec![
                ("cache-control", "max-age=3600".into()),
                ("age", "7200".into()),
            ],
            2,
        ),
        (
            "/private",
            vec![("cache-control", "private, max-age=3600".into())],
            2,
        ),
        (
            "/no-store",
            vec![("cache-control", "no-store, max-age=3600".into())],
            2,
        ),
        (
            "/cdn",
            vec![
                ("cache-control", "max-age=0".into()),
                ("cdn-cache-control", "max-age=3600".into()),
            ],
            1,
        ),
    ];
    for (path, headers, expected) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        origin.script(path, Script::ok(&h, "body"));
        assert_eq!(twice(&server, &origin, path).await, *expected, "{path}");
    }
}

#[tokio::test]
async fn statuses_with_explicit_freshness_are_stored_partial_ones_not() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    for status in [302, 307, 400, 500] {
        let path = format!("/status/{status}");
        let mut script = Script::ok(
            &[("cache-control", "max-age=3600"), ("location", "/x")],
            "s",
        );
        script.status = status;
        origin.script(&path, script);
        for _ in 0..2 {
            let r = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(server.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status);
        }
        assert_eq!(origin.seen(&path).len(), 1, "{path}");
    }
    let mut partial = Script::ok(
        &[
            ("cache-control", "max-age=3600"),
            ("content-range", "bytes 0-0/10"),
        ],
        "x",
    );
    partial.status = 206;
    origin.script("/partial", partial);
    for _ in 0..2 {
        get(&server, "/partial", &[]).await;
    }
    assert_eq!(origin.seen("/partial").len(), 2);
}

#[tokio::test]
async fn age_is_sent_and_counts_the_origins_age() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    origin.script(
        "/a",
        Script::ok(&[("cache-control", "max-age=3600"), ("age", "100")], "a"),
    );
    // The miss passes the origin's age on (it was stored, not made, for this request)...
    let miss = get(&server, "/a", &[]).await;
    assert_eq!(x_cache(&miss), "miss");
    let age: u64 = miss.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "age {age}");
    let hit = get(&server, "/a", &[]).await;
    assert_eq!(x_cache(&hit), "hit");
    let age: u64 = hit.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "age {age}");
    // ...and one the origin made for it gets none.
    origin.script("/b", Script::ok(&[("cache-control", "max-age=3600")], "b"));
    let fresh = get(&server, "/b", &[]).await;
    assert_eq!(x_cache(&fresh), "miss");
    assert!(
        fresh.headers().get("age").is_none(),
        "{:?}",
        fresh.headers()
    );
}

#[tokio::test]
async fn request_directives_are_honoured() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    origin.script(
        "/r",
        Script::ok(&[("cache-control", "max-age=3600"), ("age", "60")], "r"),
    );
    get(&server, "/r", &[]).await;
    assert_eq!(x_cache(&get(&server, "/r", &[]).await), "hit");
    get(&server, "/r", &[("cache-control", "max-age=10")]).await;
    get(&server, "/r", &[("Cache-Control", "No-Cache")]).await;
    get(&server, "/r", &[("pragma", "no-cache")]).await;
    get(&server, "/r", &[("cache-control", "min-fresh=7200")]).await;
    assert_eq!(origin.seen("/r").len(), 5);
    // only-if-cached: the stored one, or 504 without asking the origin.
    assert_eq!(
        get(&server, "/r", &[("cache-control", "only-if-cached")])
            .await
            .status(),
        200
    );
    let none = get(&server, "/absent", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(none.status(), 504);
    assert!(origin.seen("/absent").is_empty());
    // max-stale lets a stale response answer.
    origin.script(
        "/stale",
        Script::ok(&[("cache-control", "max-age=1"), ("age", "10")], "s"),
    );
    get(&server, "/stale", &[]).await;
    let r = get(&server, "/stale", &[("cache-control", "max-stale=60")]).await;
    assert_eq!(x_cache(&r), "hit");
    assert_eq!(origin.seen("/stale").len(), 1);
}

#[tokio::test]
async fn stale_responses_are_validated_and_a_304_refreshes_them() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    origin.script(
        "/v",
        Script::ok(
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            "payload",
        ),
    );
    let first = get(&server, "/v", &[]).await;
    assert_eq!(first.text().await.unwrap(), "payload");
    // The origin now answers the conditional request with 304 and new headers.
    origin.script(
        "/v",
        Script::ok(
            &[
                ("cache-control", "max-age=3600"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
            ],
            "payload",
        ),
    );
    let second = get(&server, "/v", &[]).await;
    assert_eq!(x_cache(&second), "revalidated");
    assert_eq!(second.headers()["x-version"], "2");
    assert_eq!(second.text().await.unwrap(), "payload");
    let seen = origin.seen("/v");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
    // Refreshed: fresh for an hour now.
    assert_eq!(x_cache(&get(&server, "/v", &[]).await), "hit");
    assert_eq!(origin.seen("/v").len(), 2);
    // no-cache responses are stored but validated on every use; must-revalidate too once stale.
    origin.script(
        "/nc",
        Script::ok(
            &[
                ("cache-control", "no-cache"),
                ("last-modified", &http_date(-3600)),
            ],
            "n",
        ),
    );
    get(&server, "/nc", &[]).await;
    get(&server, "/nc", &[]).await;
    let seen = origin.seen("/nc");
    assert_eq!(seen.len(), 2);
    assert!(seen[1].header("if-modified-since").is_some());
}

#[tokio::test]
async fn conditional_requests_on_a_hit_get_304_from_the_cache() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    let modified = http_date(-3600);
    origin.script(
        "/c",
        Script::ok(
            &[
                ("cache-control", "max-age=3600"),
                ("etag", "W/\"c1\""),
                ("last-modified", &modified),
            ],
            "c",
        ),
    );
    get(&server, "/c", &[]).await;
    let r = get(&server, "/c", &[("if-none-match", "\"c1\"")]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "W/\"c1\"");
    let r = get(&server, "/c", &[("if-modified-since", &http_date(0))]).await;
    assert_eq!(r.status(), 304);
    let r = get(&server, "/c", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(origin.seen("/c").len(), 1);
}

#[tokio::test]
async fn variants_are_stored_by_vary() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    origin.script(
        "/vary",
        Script::ok(
            &[
                ("cache-control", "max-age=3600"),
                ("vary", "Accept-Language"),
            ],
            "v",
        ),
    );
    for lang in ["en", "de", "en", "de"] {
        get(&server, "/vary", &[("accept-language", lang)]).await;
    }
    assert_eq!(origin.seen("/vary").len(), 2);
    origin.script(
        "/star",
        Script::ok(&[("cache-control", "max-age=3600"), ("vary", "*")], "v"),
    );
    assert_eq!(twice(&server, &origin, "/star").await, 2);
}

#[tokio::test]
async fn unsafe_methods_invalidate_their_target_and_locations() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    for p in ["/item", "/other"] {
        origin.script(p, Script::ok(&[("cache-control", "max-age=3600")], "i"));
        get(&server, p, &[]).await;
    }
    let mut created = Script::ok(&[("location", "/other")], "");
    created.status = 201;
    origin.script("/item", created.clone());
    let r = reqwest::Client::new()
        .post(server.url("/item"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    origin.script(
        "/item",
        Script::ok(&[("cache-control", "max-age=3600")], "i"),
    );
    get(&server, "/item", &[]).await;
    get(&server, "/other", &[]).await;
    assert_eq!(origin.seen("/item").len(), 3, "GET, POST, GET again");
    assert_eq!(origin.seen("/other").len(), 2);
}

#[tokio::test]
async fn chunked_responses_are_stored_and_ranges_served_from_them() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    let mut chunked = Script::ok(&[("cache-control", "max-age=3600")], "0123456789");
    chunked.chunked = true;
    origin.script("/chunked", chunked);
    assert_eq!(
        get(&server, "/chunked", &[]).await.text().await.unwrap(),
        "0123456789"
    );
    let r = get(&server, "/chunked", &[("range", "bytes=2-4")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
    assert_eq!(r.text().await.unwrap(), "234");
    let r = get(&server, "/chunked", &[("range", "bytes=50-")]).await;
    assert_eq!(r.status(), 416);
    // If-Range: the whole response, never a range of a copy the client may not have.
    let r = get(
        &server,
        "/chunked",
        &[("range", "bytes=2-4"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(origin.seen("/chunked").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_reach_the_origin_once() {
    let origin = Origin::start();
    let server = proxied(&origin, "max_concurrency = 50\n");
    let mut slow = Script::ok(&[("cache-control", "max-age=3600")], "slow");
    slow.delay = Duration::from_millis(300);
    origin.script("/slow", slow);
    let calls = (0..20).map(|_| get(&server, "/slow", &[]));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(origin.seen("/slow").len(), 1);
}

#[tokio::test]
async fn stale_while_revalidate_and_stale_if_error_serve_stale() {
    let origin = Origin::start();
    let server = proxied(&origin, "");
    origin.script(
        "/swr",
        Script::ok(
            &[
                ("cache-control", "max-age=1, stale-while-revalidate=60"),
                ("age", "5"),
            ],
            "old",
        ),
    );
    get(&server, "/swr", &[]).await;
    origin.script(
        "/swr",
        Script::ok(&[("cache-control", "max-age=3600")], "new"),
    );
    let r = get(&server, "/swr", &[]).await;
    assert_eq!(x_cache(&r), "stale");
    assert_eq!(r.text().await.unwrap(), "old");
    // The background revalidation stores the new one.
    eventually(
        Duration::from_secs(5),
        "the revalidated response served",
        async || match get(&server, "/swr", &[]).await.text().await.unwrap() {
            body if body == "new" => Ok(()),
            body => Err(body),
        },
    )
    .await;
    origin.script(
        "/sie",
        Script::ok(
            &[
                ("cache-control", "max-age=1, stale-if-error=60"),
                ("age", "5"),
            ],
            "kept",
        ),
    );
    get(&server, "/sie", &[]).await;
    let mut failing = Script::ok(&[], "down");
    failing.status = 503;
    origin.script("/sie", failing);
    let r = get(&server, "/sie", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&r), "stale");
    assert_eq!(r.text().await.unwrap(), "kept");
}

#[tokio::test]
async fn an_http_1_0_origin_does_not_make_plughost_speak_http_1_0() {
    use std::io::{Read, Write};
    // A raw HTTP/1.0 origin: one answer per connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let server = Plughost::start(&format!(
        "[upstreams.old]\nservers = [\"{addr}\"]\n[[routes]]\nprefix = \"/old\"\nupstream = \"old\"\n"
    ));
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        write!(s, "GET /old HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (status, head, body) = plughost_e2e::read_response(&mut s).unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"ok");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_while_streaming_is_413_and_not_the_backends_fault() {
    let origin = Origin::start();
    let server = proxied(&origin, "max_body_bytes = 1000\n");
    // The origin answers only after a while, as one reading the whole upload would: answering
    // at once raced the body, and a 200 could reach the client before the limit was passed.
    origin.script(
        "/upload",
        Script {
            delay: Duration::from_secs(3),
            ..Script::ok(&[], "ok")
        },
    );
    // Chunked, so no Content-Length announces the size: it is found while streaming.
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..10 {
        let _ = write!(s, "1f4\r\n{}\r\n", "x".repeat(500));
    }
    let _ = write!(s, "0\r\n\r\n");
    let (status, head, _) = plughost_e2e::read_response(&mut s).unwrap();
    assert_eq!(status, 413, "{head}");
    let m = server.metrics_text().await;
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_backend_errors_total"),
        0.0,
        "{m}"
    );
}

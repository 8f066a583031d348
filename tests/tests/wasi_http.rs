//! Standard wasi:http/proxy components as responders (`kind = "wasi-http"`): the hello
//! component `make bench` serves with `wasmtime serve` runs unchanged, and so do components
//! built by componentize-py and ComponentizeJS; they go through filters and the cache like
//! any route; and a hostile one is held to the same sandbox as a plugin.

use std::sync::atomic::Ordering;
use std::time::Duration;

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{
    Plughost, assert_no_leaks, js_plugin, outbound_requests, plugin, plugin_errors, python_plugin,
    raw, run, wasi_http_hello,
};

/// `file` as a wasi:http component named `name` on `/NAME`, with `rest` added to its entry.
fn component(name: &str, file: &std::path::Path, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nkind = \"wasi-http\"\n{rest}\n[[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n",
        file.display().to_string()
    )
}

fn hostile() -> std::path::PathBuf {
    plugin("http_hostile")
}

#[tokio::test]
async fn the_bench_hello_component_runs_unchanged_through_filters_and_the_cache() {
    let filter = format!(
        "[[plugins]]\nname = \"headers\"\nfile = {:?}\nconfig = {{ response = {{ name = \"x-filtered\", value = \"yes\" }} }}\n",
        plugin("headers").display().to_string()
    );
    let server = Plughost::start(&(filter + &component("hello", &wasi_http_hello(), "")));
    let first = reqwest::get(server.url("/hello/a?b=c")).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-filtered"], "yes");
    assert_eq!(first.headers()["x-cache"], "miss");
    assert_eq!(
        first.text().await.unwrap(),
        "Hello from wasmtime serve! You asked for /hello/a?b=c\n"
    );
    let second = reqwest::get(server.url("/hello/a?b=c")).await.unwrap();
    assert_eq!(second.headers()["x-cache"], "hit");
    let plugins = server.admin_json("/plugins").await;
    let hello = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello")
        .unwrap();
    assert_eq!(hello["kind"], "wasi-http", "{plugins}");
    assert_eq!(hello["calls"], 1, "{plugins}");
    // HTTP/1.0 without a Host (wasi:http needs an authority; plughost gives one).
    let old = raw(
        server.addr,
        b"GET /hello/old HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        old.starts_with("HTTP/1.1 200") || old.starts_with("HTTP/1.0 200"),
        "{old}"
    );
    assert!(old.ends_with("You asked for /hello/old\n"), "{old}");
    // HTTP/2 as well.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(server.url("/hello/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.text().await.unwrap().ends_with("/hello/h2\n"));
}

#[tokio::test]
async fn components_from_componentize_py_and_componentize_js_run_unchanged() {
    let config = component("py", &python_plugin("http-hello"), "timeout = \"5s\"")
        + &component("js", &js_plugin("http-hello"), "timeout = \"5s\"");
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    // The request body streams into the component.
    let body = vec![b'x'; 3 << 20];
    let r = client
        .post(server.url("/py/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "Hello from Python! POST /py/upload, 3145728 bytes received\n"
    );
    let r = client.get(server.url("/js/x?y=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "Hello from JavaScript! GET /js/x?y=1\n"
    );
}

#[tokio::test]
async fn pooled_instances_keep_state_and_fresh_ones_do_not_and_a_reload_switches() {
    let config = component("pooled", &hostile(), "instances = 1")
        + &component("fresh", &hostile(), "reuse = \"fresh\"");
    let server = Plughost::start(&config);
    let text = |path: &'static str| {
        let url = server.url(path);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    // The instance made at load answers first; it counts on across requests.
    assert_eq!(text("/pooled/count").await, "1\n");
    assert_eq!(text("/pooled/count").await, "2\n");
    assert_eq!(text("/fresh/count").await, "1\n");
    assert_eq!(text("/fresh/count").await, "1\n");
    // A handle the guest forgot retires its instance: the next one starts from 1.
    assert_eq!(text("/pooled/leak").await, "leaked\n");
    assert_eq!(text("/pooled/count").await, "1\n");
    // Hot reload: the pooled one becomes fresh, the other goes.
    server.rewrite_config(&component("pooled", &hostile(), "reuse = \"fresh\""));
    let report = server.reload().await;
    assert_eq!(report["loaded"], serde_json::json!(["pooled"]), "{report}");
    assert_eq!(report["removed"], serde_json::json!(["fresh"]), "{report}");
    assert_eq!(text("/pooled/count").await, "1\n");
    assert_eq!(text("/pooled/count").await, "1\n");
    assert_eq!(
        reqwest::get(server.url("/fresh/count"))
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_component_gets_clean_errors_and_the_server_keeps_serving() {
    let server = Plughost::start(&component(
        "h",
        &hostile(),
        "timeout = \"300ms\"\nfailure_threshold = 100",
    ));
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let url = server.url(path);
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/h/trap").await, 500);
    assert_eq!(status("/h/no-response").await, 500);
    assert_eq!(status("/h/sleep?ms=5000").await, 500);
    // A 101 would switch the client's connection to nobody's protocol.
    assert_eq!(status("/h/status?code=101").await, 500);
    let metrics = server.metrics_text().await;
    assert_eq!(plugin_errors(&metrics, "h", "trap"), 1.0);
    assert_eq!(plugin_errors(&metrics, "h", "timeout"), 1.0);
    assert_eq!(plugin_errors(&metrics, "h", "error"), 2.0);
    // A head then a trap: the connection is closed without the body's end (hyper had not
    // flushed the head yet: the client gets nothing), never a cut body passed off as whole;
    // a content-length of the guest's own never reaches the client.
    let cut = raw(
        server.addr,
        b"GET /h/trap-after-head HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(!cut.contains("content-length"), "{cut}");
    assert!(
        !cut.ends_with("0\r\n\r\n"),
        "a cut body ended as if whole: {cut}"
    );
    // A length of the guest's own: true, the response is whole; false, it is not sent as
    // whole (wasi:http checks the length; the connection closes).
    let honest = raw(
        server.addr,
        b"GET /h/status?code=201&length=7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(honest.starts_with("HTTP/1.1 201"), "{honest}");
    assert!(honest.contains("x-status: set"), "{honest}");
    assert!(
        honest.ends_with("status\n") || honest.ends_with("0\r\n\r\n"),
        "{honest}"
    );
    let lying = raw(
        server.addr,
        b"GET /h/status?code=201&length=999 HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(!lying.contains("999"), "{lying}");
    assert!(!lying.ends_with("0\r\n\r\n"), "{lying}");
    // Every failure cost its instance, not the server.
    assert_eq!(status("/h/count").await, 200);
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test]
async fn outbound_calls_of_a_component_obey_the_same_allow_list() {
    let allowed = TestBackend::start("allowed");
    let other = TestBackend::start("other");
    let rest = format!("allowed_outbound = [\"http://{}\"]", allowed.addr);
    let server = Plughost::start(&component("h", &hostile(), &rest));
    let fetch = |target: std::net::SocketAddr| {
        let url = server.url(&format!("/h/fetch?url=http://{target}/x"));
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    assert_eq!(fetch(allowed.addr).await, "status=200\n");
    assert_eq!(
        fetch(other.addr).await,
        "error: ErrorCode::HttpRequestDenied\n"
    );
    assert_eq!(other.hits.load(Ordering::Relaxed), 0);
    let metrics = server.metrics_text().await;
    let dest = format!("http://{}", allowed.addr);
    assert_eq!(outbound_requests(&metrics, "h", &dest, "ok"), 1.0);
}

#[test]
fn plugin_check_and_run_accept_wasi_http_components() {
    let dir = tempfile::tempdir().unwrap();
    let hello = wasi_http_hello();
    let file = hello.to_str().unwrap();
    let check = run(dir.path(), &["plugin", "check", file]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("kind: wasi-http"), "{out}");
    let ran = run(dir.path(), &["plugin", "run", file, "--uri", "/x?y"]);
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{out}");
    assert!(
        out.starts_with("respond 200\ncontent-type: text/plain; charset=utf-8\n\nHello from wasmtime serve! You asked for /x?y\n"),
        "{out}"
    );
    // As a filter it would never answer: refused with the fix.
    let config = format!("[[plugins]]\nname = \"f\"\nfile = {file:?}\n");
    let (status, err) = plughost_e2e::fails_to_start(&config);
    assert!(!status.success());
    assert!(err.contains("it is a wasi:http service"), "{err}");
}

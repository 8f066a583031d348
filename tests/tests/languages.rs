//! Plugins in languages other than Rust, built from source in the test set-up, each answering
//! through the real server.

use plughost_e2e::{Plughost, c_plugin, go_plugin, js_plugin, python_plugin};

/// Python (componentize-py): a responder describing the request as JSON; its `host.log` call
/// reaches plughost's log.
#[tokio::test]
async fn python_responder_describes_the_request() {
    let config = format!(
        "[[plugins]]\nname = \"describe\"\nfile = {:?}\nkind = \"responder\"\nconfig = {{ pretty = true }}\n\
         [[routes]]\nprefix = \"/describe\"\nplugin = \"describe\"\n",
        python_plugin("describe").display().to_string()
    );
    let server = Plughost::start(&config);
    let resp = reqwest::Client::new()
        .post(server.url("/describe/me?x=1"))
        .header("x-lang", "py")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    assert!(text.contains("\n  \"method\""), "not pretty: {text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["plugin"], "describe (python)");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["uri"], "/describe/me?x=1");
    assert_eq!(json["headers"]["x-lang"], "py");
    assert_eq!(json["body_bytes"], 5);
    assert!(json["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    server.wait_log("describe (python) ready");
}

/// C (wit-bindgen's C generator, clang, wasi-libc): a filter blocking path prefixes from its
/// config; its `host.log` call reaches the log; a bad config keeps it from loading.
#[tokio::test]
async fn c_filter_blocks_configured_prefixes() {
    let file = c_plugin("blocklist").display().to_string();
    let config = format!(
        "[[plugins]]\nname = \"blocklist\"\nfile = {file:?}\nconfig = {{ blocked = [\"/admin\", \"/.env\"] }}\n\
         [[plugins]]\nname = \"unconfigured\"\nfile = {file:?}\noptional = true\n"
    );
    let server = Plughost::start(&config);
    for path in ["/admin", "/admin/users", "/.env"] {
        let r = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.text().await.unwrap(), "blocked by blocklist (C)\n");
    }
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
    server.wait_log("blocklist (C) ready");
    server.wait_log("config needs a \"blocked\" list");
}

/// JavaScript (ComponentizeJS): a filter moving a header's value to another name.
#[tokio::test]
async fn javascript_filter_rewrites_a_header() {
    let config = format!(
        "[[plugins]]\nname = \"rewrite\"\nfile = {:?}\nconfig = {{ from = \"x-user\", to = \"x-forwarded-user\" }}\n",
        js_plugin("rewrite").display().to_string()
    );
    let server = Plughost::start(&config);
    let resp = reqwest::Client::new()
        .get(server.url("/_debug/headers"))
        .header("x-user", "ann")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-rewritten-by"], "rewrite (js)");
    let seen = resp.text().await.unwrap();
    assert!(seen.contains("x-forwarded-user: ann"), "{seen}");
    assert!(!seen.contains("x-user:"), "{seen}");
    let untouched = reqwest::get(server.url("/_debug/headers")).await.unwrap();
    assert!(!untouched.headers().contains_key("x-rewritten-by"));
    server.wait_log("rewrite (js) ready: x-user -> x-forwarded-user");
}

/// Go (standard Go, `//go:wasmexport`, the Go SDK): a CORS filter answering preflights from
/// its configured origins and marking their other responses; other origins go on unmarked;
/// a config without origins keeps it from loading.
#[tokio::test]
async fn go_filter_answers_cors_preflights() {
    let file = go_plugin("cors").display().to_string();
    let config = format!(
        "[[plugins]]\nname = \"cors\"\nfile = {file:?}\nconfig = {{ origins = [\"https://app.example\"], max_age = 60 }}\n\
         [[plugins]]\nname = \"unconfigured\"\nfile = {file:?}\noptional = true\n"
    );
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/api"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "x-token")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-methods"], "PUT");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    assert_eq!(h["access-control-max-age"], "60");
    let allowed = client
        .get(server.url("/"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = client
        .get(server.url("/"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    server.wait_log("cors (go) ready: 1 origins");
    server.wait_log("config needs \"origins\"");
}

/// Go: a responder echoing the request as JSON, over many requests whose garbage makes Go's
/// collector run inside calls (a Go component whose WASI adapter grew memory behind Go's heap
/// crashed within a few hundred of them), a 3 MiB body, and a panic that becomes a 500.
#[tokio::test]
async fn go_responder_echoes_requests_and_survives_its_collector() {
    let config = format!(
        "[[plugins]]\nname = \"echo\"\nfile = {:?}\nkind = \"responder\"\n\
         [[routes]]\nprefix = \"/echo\"\nplugin = \"echo\"\n",
        go_plugin("echo").display().to_string()
    );
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let body = "b".repeat(10_000);
    for i in 0..300 {
        let resp = client
            .post(server.url(&format!("/echo/{i}?q=1")))
            .header("x-lang", "go")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["x-echoed-by"], "echo (go)");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["uri"], format!("/echo/{i}?q=1"));
        assert_eq!(json["method"], "POST");
        assert_eq!(json["headers"]["x-lang"], "go");
        assert_eq!(json["body_bytes"], 10_000);
        assert!(json["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let big = client
        .post(server.url("/echo/big"))
        .body(vec![0xffu8; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 200);
    let json: serde_json::Value = big.json().await.unwrap();
    assert_eq!(json["body_bytes"], 3 << 20);
    assert!(json.get("body").is_none(), "not UTF-8, so not echoed");
    let panicked = client
        .get(server.url("/echo/x?panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(panicked.status(), 500);
    server.wait_log("panic: runtime error: index out of range");
    let after = client.get(server.url("/echo/after")).send().await.unwrap();
    assert_eq!(after.status(), 200);
}

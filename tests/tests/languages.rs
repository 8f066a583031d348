//! Plugins in languages other than Rust, built from source in the test set-up, each answering
//! through the real server.

use plughost_e2e::{Plughost, c_plugin, js_plugin, python_plugin};

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
         [[plugins]]\nname = \"unconfigured\"\nfile = {file:?}\n"
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

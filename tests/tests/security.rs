//! What an error response gives away: no backend address, panic message, trap backtrace or
//! file path in its headers or body, and no header beyond the ones HTTP needs.

use plughost_e2e::{Plughost, plugin};

/// Headers an error response may carry.
const ALLOWED: &[&str] = &[
    "content-type",
    "content-length",
    "date",
    "retry-after",
    "allow",
    "connection",
];

#[tokio::test(flavor = "multi_thread")]
async fn error_responses_do_not_leak_internal_details() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let hostile = plugin("hostile");
    let config = format!(
        "[[plugins]]\nname = \"boom\"\nfile = {:?}\nkind = \"responder\"\nconfig = {{ mode = \"panic\" }}\n\
         [upstreams.api]\nservers = [\"{dead_addr}\"]\n\
         [[routes]]\nprefix = \"/boom\"\nplugin = \"boom\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\n",
        hostile.display().to_string()
    );
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let secrets = [
        dead_addr.to_string(),
        hostile.display().to_string(),
        "panic".to_owned(),
        "wasm".to_owned(),
        "backtrace".to_owned(),
        ".rs".to_owned(),
    ];
    for (path, status) in [
        ("/boom", 500),
        ("/api/x", 502),
        ("/_debug/panic", 500),
        ("/nowhere", 404),
        ("/_debug/sleep?ms=x", 400),
    ] {
        let resp = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        for name in resp.headers().keys() {
            assert!(ALLOWED.contains(&name.as_str()), "{path}: header {name}");
        }
        let body = resp.text().await.unwrap();
        for secret in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "{path}: body {body:?} shows {secret}"
            );
        }
    }
    // The details are in the log, for the operator: the failure line carries the panic's
    // own message, not only the trap (`unreachable`) it ends in.
    let log = server.wait_log("plugin call failed");
    assert!(
        log.lines().any(|l| l.contains("plugin call failed")
            && l.contains("boom")
            && l.contains("hostile plugin panics on purpose")),
        "{log}"
    );
}

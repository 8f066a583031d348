//! Start-up fails closed and does not wait for compilers: a plugin that does not load stops
//! plughost (unless it is `optional`), plughost listens while its plugins compile and answers
//! what needs them 503 with `Retry-After` until they are ready, and a SIGTERM at any moment
//! ends it cleanly.

use std::time::Duration;

use plughost_e2e::{Plughost, fails_to_start, plugin, python_plugin};

/// An auth filter whose file is misspelled: before, plughost started without it and let every
/// request through.
#[test]
fn a_filter_that_does_not_load_stops_start_up_with_the_reason_and_the_fix() {
    let config = format!(
        "[[plugins]]\nname = \"auth\"\nfile = {:?}\nconfig = {{ keys = [\"k\"] }}\n",
        plugin("auth")
            .with_file_name("authh.wasm")
            .display()
            .to_string()
    );
    let (status, err) = fails_to_start(&config);
    assert!(!status.success());
    assert!(
        err.contains("plugin `auth` did not load: cannot read it")
            && err.contains("mark it optional = true"),
        "{err}"
    );
}

#[tokio::test]
async fn an_optional_plugin_that_does_not_load_is_skipped_and_its_route_says_so() {
    let config = format!(
        "[[plugins]]\nname = \"hello\"\nfile = {:?}\nkind = \"responder\"\noptional = true\n[[routes]]\nprefix = \"/hello\"\nplugin = \"hello\"\n",
        plugin("hello")
            .with_file_name("nowhere.wasm")
            .display()
            .to_string()
    );
    let server = Plughost::start(&config);
    let r = reqwest::get(server.url("/hello")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(!r.headers().contains_key("retry-after"));
    assert_eq!(
        r.text().await.unwrap(),
        "the plugin hello that answers this route is not loaded\n"
    );
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
    server.wait_log("plugin not loaded");
}

/// The Python `describe` component as a filter, compiled into the empty cache `cache`: seconds
/// of loading to test what happens meanwhile.
fn cold_python_filter(cache: &tempfile::TempDir) -> String {
    format!(
        "wasm_cache_dir = {:?}\n[[plugins]]\nname = \"describe\"\nfile = {:?}\ntimeout = \"2s\"\n",
        cache.path().join("c").display().to_string(),
        python_plugin("describe").display().to_string()
    )
}

/// A Python component compiled with an empty cache takes seconds: plughost listens at once,
/// answers 503 with `Retry-After` (a filter is pending: nothing passes it by its absence),
/// reports itself unhealthy, and serves once the filter is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plughost_listens_while_a_filter_compiles_and_fails_closed_meanwhile() {
    let cache = tempfile::tempdir().unwrap();
    let server = Plughost::start_listening(&cold_python_filter(&cache));
    let early = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(early.status(), 503);
    assert_eq!(early.headers()["retry-after"], "1");
    assert_eq!(
        early.text().await.unwrap(),
        "plughost is starting: plugin describe is still loading; retry shortly\n"
    );
    let health = reqwest::get(server.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    tokio::task::block_in_place(|| server.wait_ready());
    let ready = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(ready.status(), 200, "the filter answers every request");
    let health = reqwest::get(server.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// SIGTERM while a plugin compiles: the process ends at once, with exit status 0 and a log
/// that says why (before, it died of the signal with an empty log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_plugins_compile_ends_cleanly() {
    let cache = tempfile::tempdir().unwrap();
    let mut server = Plughost::start_listening(&cold_python_filter(&cache));
    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.wait(Duration::from_secs(30)));
    assert!(status.success(), "{status:?}");
    let log = server.wait_log("stopped before the plugins finished loading");
    assert!(
        log.contains("signal=\"SIGTERM\"") || log.contains("SIGTERM"),
        "{log}"
    );
}

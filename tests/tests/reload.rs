//! Hot reload: plugins replaced under load with no failed request, refused new versions, the
//! plugins_dir watcher, SIGHUP with live and restart-only config changes, and the admin API.

use std::path::Path;
use std::time::{Duration, Instant};

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, Wrk, eventually, native_plugin, plugin};

/// Replaces `dir/name` the way deployments should: write beside it, then rename over it.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!("{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn body(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Polls `url` until its body satisfies `ok`, for at most 10 s.
async fn wait_body(url: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(
        Duration::from_secs(10),
        "the new version answering",
        async || {
            let body = body(url).await;
            match ok(&body) {
                true => Ok(body),
                false => Err(body),
            }
        },
    )
    .await
}

/// A filter named `swap` from `swap.wasm`: `hello` answers every request itself with
/// "v from plughost", `headers` (empty config) lets the default page through.
const SWAP: &str = r#"
[[plugins]]
name = "swap"
file = "swap.wasm"
config = { greeting = "v" }
"#;

fn hello_answers(body: &str) -> bool {
    body.starts_with("v from plughost")
}

fn default_page(body: &str) -> bool {
    body.starts_with("plughost ")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_replaced_ten_times_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let hello = std::fs::read(plugin("hello")).unwrap();
    let headers = std::fs::read(plugin("headers")).unwrap();
    install(dir.path(), "swap.wasm", &hello);
    let server = Plughost::start_in(dir, &format!("plugins_dir = \".\"\n{SWAP}"));
    wait_body(&server.url("/"), hello_answers).await;
    let wrk = Wrk::start(&server.url("/"), 16, Duration::from_secs(8));
    // Swapped under load: wrk's requests are being answered.
    server
        .metric_reaches("plughost_requests_total", 200.0)
        .await;
    for swap in 0..10 {
        let (bytes, expect): (&[u8], fn(&str) -> bool) = if swap % 2 == 0 {
            (&headers, default_page)
        } else {
            (&hello, hello_answers)
        };
        install(server.dir.path(), "swap.wasm", bytes);
        wait_body(&server.url("/"), expect).await;
    }
    let result = wrk.finish();
    assert!(result.requests > 1000, "{}", result.report);
    assert_eq!(result.non_2xx, 0, "{}", result.report);
    assert_eq!(result.socket_errors, 0, "{}", result.report);
    // (The log is no witness here: under wrk its buffer overflows and drops lines, by design.)
    let metrics = server.metrics_text().await;
    let reloads = |outcome: &str| {
        plughost_e2e::metric_value(
            &metrics,
            &format!("plughost_reloads_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert!(reloads("ok") >= 10.0, "{metrics}");
    assert_eq!(reloads("refused"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_that_fails_to_load_is_refused_and_the_old_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "swap.wasm",
        &std::fs::read(plugin("hello")).unwrap(),
    );
    let config = format!("plugins_dir = \".\"\nwatch_plugins = false\n{SWAP}");
    let server = Plughost::start_in(dir, &config);
    let reload = || server.reload();
    // Not a component at all.
    install(server.dir.path(), "swap.wasm", b"\0asm garbage");
    let report = reload().await;
    assert_eq!(report["refused"][0]["plugin"], "swap", "{report}");
    assert_eq!(report["refused"][0]["kept_previous"], true, "{report}");
    let reason = report["refused"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("not a valid component"), "{reason}");
    assert!(hello_answers(&body(&server.url("/")).await));
    // A component whose plugin-init fails (hostile needs a `mode`).
    install(
        server.dir.path(),
        "swap.wasm",
        &std::fs::read(plugin("hostile")).unwrap(),
    );
    let report = reload().await;
    let reason = report["refused"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("plugin-init failed"), "{reason}");
    assert!(hello_answers(&body(&server.url("/")).await));
    let log = server.wait_log("new plugin version refused; the running version stays");
    assert!(log.contains("plugin-init failed"), "{log}");
    // A good version after the bad ones is taken.
    install(
        server.dir.path(),
        "swap.wasm",
        &std::fs::read(plugin("headers")).unwrap(),
    );
    let report = reload().await;
    assert_eq!(report["loaded"][0], "swap", "{report}");
    assert!(default_page(&body(&server.url("/")).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_added_to_and_removed_from_the_directory_take_effect() {
    let server = Plughost::start("plugins_dir = \"plugins\"");
    let plugins = server.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // The watcher started on a missing directory: SIGHUP makes the server look again.
    install(
        &plugins,
        "hello.wasm",
        &std::fs::read(plugin("hello")).unwrap(),
    );
    server.signal(libc::SIGHUP);
    wait_body(&server.url("/"), |b| b.starts_with("Hello from plughost")).await;
    let listed = server.admin_json("/plugins").await;
    assert_eq!(listed[0]["name"], "hello", "{listed}");
    std::fs::remove_file(plugins.join("hello.wasm")).unwrap();
    server.signal(libc::SIGHUP);
    wait_body(&server.url("/"), default_page).await;
    assert_eq!(server.admin_json("/plugins").await, serde_json::json!([]));
    server.wait_log("plugin unloaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_loads_a_plugin_dropped_into_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let server = Plughost::start_in(dir, "plugins_dir = \"plugins\"");
    server.wait_log("watching plugins_dir for changes");
    let plugins = server.dir.path().join("plugins");
    install(
        &plugins,
        "hello.wasm",
        &std::fs::read(plugin("hello")).unwrap(),
    );
    wait_body(&server.url("/"), |b| b.starts_with("Hello from plughost")).await;
    std::fs::remove_file(plugins.join("hello.wasm")).unwrap();
    wait_body(&server.url("/"), default_page).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_routes_and_says_which_changes_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("hello"), dir.path().join("hello.wasm")).unwrap();
    let server = Plughost::start_in(
        dir,
        "plugins_dir = \".\"\nwatch_plugins = false\n[[plugins]]\nname = \"hello\"\nfile = \"hello.wasm\"\nkind = \"responder\"\n",
    );
    assert_eq!(reqwest::get(server.url("/hi")).await.unwrap().status(), 404);
    server.rewrite_config(
        "plugins_dir = \".\"\nwatch_plugins = false\nmax_concurrency = 3\ncache_ttl = \"1s\"\n[[plugins]]\nname = \"hello\"\nfile = \"hello.wasm\"\nkind = \"responder\"\nconfig = { greeting = \"Hey\" }\n[[routes]]\nprefix = \"/hi\"\nplugin = \"hello\"\n",
    );
    server.signal(libc::SIGHUP);
    let body = wait_body(&server.url("/hi"), |b| b.starts_with("Hey from plughost")).await;
    assert!(body.contains("You asked for /hi"), "{body}");
    let log = server.wait_log("config changes that need a restart were not applied");
    assert!(log.contains("max_concurrency"), "{log}");
    // The limiter kept its size: that key needs a restart.
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("plughost_limiter_permits_available 10"),
        "{metrics}"
    );
    // A broken config file changes nothing.
    server.rewrite_config("port = \"not a number\"");
    server.signal(libc::SIGHUP);
    server.wait_log("reload refused: the config file is not valid");
    assert_eq!(reqwest::get(server.url("/hi")).await.unwrap().status(), 200);
}

/// Native libraries are never unloaded: a reload keeps the running one and says a restart is
/// needed for the change; upstream pools change live.
#[tokio::test(flavor = "multi_thread")]
async fn native_plugins_stay_loaded_and_upstreams_change_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(native_plugin("empty"), dir.path().join("empty.so")).unwrap();
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let pool = |backend: &TestBackend| {
        format!(
            "plugins_dir = \".\"\nwatch_plugins = false\n[upstreams.api]\nservers = [\"{}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\n",
            backend.addr
        )
    };
    let server = Plughost::start_in(dir, &pool(&a));
    assert_eq!(body(&server.url("/api/x")).await, "a");
    // A new build of the library, and a pool that now points at `b`.
    install(
        server.dir.path(),
        "empty.so",
        &std::fs::read(native_plugin("printer")).unwrap(),
    );
    server.rewrite_config(&pool(&b));
    server.signal(libc::SIGHUP);
    wait_body(&server.url("/api/x"), |body| body == "b").await;
    let log = server.wait_log("native plugins are not reloaded");
    assert!(log.contains("empty"), "{log}");
    let listed = server.admin_json("/plugins").await;
    assert_eq!(listed[0]["name"], "empty", "{listed}");
    assert_eq!(listed[0]["kind"], "native", "{listed}");
    let backends = server.admin_json("/backends").await;
    assert_eq!(backends[0]["server"], b.addr.to_string(), "{backends}");
}

/// Compiling a large component (the Python example, seconds of CPU) on reload runs on a
/// blocking thread: requests served meanwhile keep their latency.
#[tokio::test(flavor = "multi_thread")]
async fn requests_keep_their_latency_while_a_large_component_compiles_on_reload() {
    let python = plughost_e2e::python_plugin("describe")
        .display()
        .to_string();
    let base = "wasm_cache_dir = \"\"\nwatch_plugins = false\n";
    let server = Plughost::start(base);
    server.rewrite_config(&format!(
        "{base}[[plugins]]\nname = \"describe\"\nfile = {python:?}\nkind = \"responder\"\n[[routes]]\nprefix = \"/describe\"\nplugin = \"describe\"\n"
    ));
    let reload = {
        let url = server.admin_url("/plugins/reload");
        tokio::spawn(async move {
            let started = Instant::now();
            let r = reqwest::Client::new().post(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            started.elapsed()
        })
    };
    let client = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    let mut served = 0;
    while !reload.is_finished() {
        let started = Instant::now();
        let r = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        worst = worst.max(started.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let compile = reload.await.unwrap();
    eprintln!("reload took {compile:?}; {served} requests meanwhile, slowest {worst:?}");
    assert!(
        compile > Duration::from_secs(1),
        "nothing was compiled: {compile:?}"
    );
    assert!(
        served >= 20,
        "{served} requests during a {compile:?} reload"
    );
    assert!(
        worst < Duration::from_millis(500),
        "a request took {worst:?}"
    );
    let r = client.get(server.url("/describe")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

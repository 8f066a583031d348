//! Native plugins with the C server's ABI: loading, refusal of unsafe or incomplete
//! libraries, serialized calls, observers that never make requests wait.

use std::time::{Duration, Instant};

use plughost_e2e::{Plughost, fails_to_start_in, native_plugin};

/// A plugins_dir holding copies of the named native test plugins.
fn dir_with(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in names {
        std::fs::copy(native_plugin(name), plugins.join(format!("{name}.so"))).unwrap();
    }
    dir
}

async fn plugin_names(server: &Plughost) -> Vec<String> {
    let list = server.admin_json("/plugins").await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["kind"], "native");
            p["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Exactly the README's empty plugin, and a C-server-era plugin that prints `data`, load
/// unchanged; the printer sees each request as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_server_plugins_load_unchanged() {
    let mut server = Plughost::start_in(dir_with(&["empty", "printer"]), "");
    assert_eq!(plugin_names(&server).await, ["empty", "printer"]);
    for i in 0..3 {
        let r = reqwest::get(server.url(&format!("/printed/{i}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let page = reqwest::get(server.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("plugins loaded: empty, printer"), "{page}");
    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.wait(Duration::from_secs(10)));
    assert!(status.success());
    let out = server.stdout();
    for i in 0..3 {
        assert!(out.contains(&format!("GET /printed/{i} HTTP/1.1")), "{out}");
    }
    assert!(out.contains("host: 127.0.0.1:"), "{out}");
}

#[tokio::test]
async fn a_library_missing_plugin_process_stops_start_up() {
    let (status, err) = fails_to_start_in(dir_with(&["no_process", "empty"]), "");
    assert!(!status.success());
    assert!(
        err.contains("plugin `no_process` did not load")
            && err.contains("does not export `plugin_process`")
            && err.contains("remove it from plugins_dir"),
        "{err}"
    );
}

#[tokio::test]
async fn a_world_writable_library_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_with(&["empty"]);
    let lib = dir.path().join("plugins/empty.so");
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (status, err) = fails_to_start_in(dir, "");
    assert!(!status.success());
    assert!(err.contains("is writable by others"), "{err}");
}

/// Owned by someone other than the user running plughost (and not root): refused. Needs root
/// to hand the file to `nobody`; tests run as root here (CI too).
#[tokio::test]
async fn a_library_owned_by_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root to chown"
    );
    let dir = dir_with(&["empty"]);
    let lib = dir.path().join("plugins/empty.so");
    std::os::unix::fs::chown(&lib, Some(65534), Some(65534)).unwrap();
    let (status, err) = fails_to_start_in(dir, "");
    assert!(!status.success());
    assert!(err.contains("owned by uid 65534"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dir_world_writable_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_with(&["empty"]);
    std::fs::set_permissions(
        dir.path().join("plugins"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let server = Plughost::start_in(dir, "");
    server.wait_log("plugins_dir is world-writable");
}

/// The counter keeps a plain, non-atomic count; calls are serialized, so under 10-way
/// concurrent load its total is exact. It reports through the log callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_into_one_plugin_are_serialized_so_a_plain_counter_is_exact() {
    const N: usize = 2000;
    let dir = dir_with(&["counter", "rust_observer"]);
    let config = "max_concurrency = 10\nlog_buffer = 100000\n[[plugins]]\nname = \"counter\"\nfile = \"counter.so\"\nconfig = { every = 500 }\n[[plugins]]\nname = \"rust_observer\"\nfile = \"rust_observer.so\"\n";
    let mut server = Plughost::start_in(dir, config);
    let client = reqwest::Client::new();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let (client, url, sent) = (client.clone(), server.url("/"), sent.clone());
            tokio::spawn(async move {
                while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < N {
                    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.wait(Duration::from_secs(10)));
    assert!(status.success());
    let log = server.log();
    assert!(
        log.contains("counter ready, logging every 500 requests"),
        "{log}"
    );
    assert!(log.contains("requests so far: 1500"), "{log}");
    assert!(log.contains(&format!("total requests: {N}")), "{log}");
    assert_eq!(log.matches("observed GET / HTTP/1.1").count(), N);
}

/// Requests do not wait for observers: with a plugin sleeping a second per call, twenty
/// requests in a row are all answered long before the plugin has seen them.
#[tokio::test]
async fn a_slow_plugin_does_not_hold_requests() {
    let server = Plughost::start_in(dir_with(&["sleeper"]), "");
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests waited for the plugin"
    );
    server.wait_log("native plugin call was slow");
}

/// A slow observer holds at most `native_queue_bytes` of requests: past it, requests are
/// skipped for it and counted, however large their bodies.
#[tokio::test]
async fn a_slow_plugin_queues_at_most_native_queue_bytes() {
    let server = Plughost::start_in(
        dir_with(&["sleeper"]),
        "native_queue_bytes = 100000\nnative_body_cap = 65536\n",
    );
    let client = reqwest::Client::new();
    for _ in 0..6 {
        let r = client
            .post(server.url("/_debug/body"))
            .body(vec![b'x'; 60_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let plugins = server.admin_json("/plugins").await;
    let sleeper = &plugins[0];
    // The first is being processed (its bytes count until it is done), the second would
    // pass 100,000 bytes: at most one more than the first gets in.
    assert!(sleeper["calls"].as_u64().unwrap() <= 2, "{plugins}");
    assert!(sleeper["errors"].as_u64().unwrap() >= 4, "{plugins}");
    server.wait_log("max_queued_bytes=100000");
}

//! Plugin state in key-value buckets (wasi:keyvalue), with the `ratelimit` example counting
//! by compare-and-swap: shared by instances and surviving reloads in memory, granted per plugin,
//! expiring by the bucket's ttl, and exact across three plughost processes sharing a real
//! Redis, which may die, come back, or stall without a request hanging.

use std::time::{Duration, Instant};

use plughost_e2e::redis::Redis;
use plughost_e2e::{Plughost, eventually, eventually_blocking, plugin, run};

/// The ratelimit filter counting in `bucket` (declared with `bucket_table`), `limit` requests
/// per hour-long window.
fn ratelimit(name: &str, bucket_table: &str, limit: u64, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nkeyvalue = [\"limits\"]\nconfig = {{ limit = {limit}, window_secs = 3600 }}\n{rest}\n{bucket_table}\n",
        plugin("ratelimit").display().to_string()
    )
}

/// Sends `n` requests at once to `urls` in turn; returns (200s, 429s, others).
async fn burst(urls: &[String], n: usize) -> (usize, usize, usize) {
    let client = reqwest::Client::new();
    let calls = (0..n).map(|i| client.get(&urls[i % urls.len()]).send());
    let mut counts = (0, 0, 0);
    for r in futures_util::future::join_all(calls).await {
        match r.unwrap().status().as_u16() {
            200 => counts.0 += 1,
            429 => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bucket_is_shared_by_instances_and_survives_a_reload() {
    let table = "[keyvalue.limits]\nttl = \"1h\"\n";
    let server = Plughost::start(&ratelimit("rl", table, 5, ""));
    let plugins = server.admin_json("/plugins").await;
    assert_eq!(
        plugins[0]["keyvalue"],
        serde_json::json!(["limits"]),
        "{plugins}"
    );
    // Up to max_concurrency instances run at once; the counter is one.
    assert_eq!(burst(&[server.url("/")], 12).await, (5, 7, 0));
    // A new version of the plugin (its config changed) counts on where the old one stopped:
    // 12 counted (refused requests count too), so a limit of 13 lets exactly one more in.
    server.rewrite_config(&ratelimit("rl", table, 13, ""));
    let report = server.reload().await;
    assert_eq!(report["loaded"], serde_json::json!(["rl"]), "{report}");
    assert_eq!(burst(&[server.url("/")], 3).await, (1, 2, 0));
}

#[tokio::test]
async fn buckets_are_granted_per_plugin_and_shared_by_name() {
    // Two plugins granted the same bucket count the same key: each request counts twice.
    let table = "[keyvalue.limits]\n";
    let config = ratelimit("a", "", 6, "") + &ratelimit("b", table, 6, "");
    let server = Plughost::start(&config);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            reqwest::get(server.url("/"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // A plugin asking for a bucket it was not granted is refused at load, by name.
    let config = format!(
        "[[plugins]]\nname = \"greedy\"\nfile = {:?}\nconfig = {{ bucket = \"secrets\" }}\n[keyvalue.secrets]\n",
        plugin("ratelimit").display().to_string()
    );
    let (status, err) = plughost_e2e::fails_to_start(&config);
    assert!(!status.success());
    assert!(
        err.contains("plugin `greedy` did not load")
            && err.contains("bucket not granted to this plugin"),
        "{err}"
    );
    // One naming an undeclared bucket is a config error.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plughost.toml"),
        format!(
            "[[plugins]]\nname = \"x\"\nfile = {:?}\nkeyvalue = [\"nowhere\"]\n",
            plugin("ratelimit").display().to_string()
        ),
    )
    .unwrap();
    let out = run(dir.path(), &["config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no bucket named `nowhere`"), "{err}");
}

#[tokio::test]
async fn keys_expire_after_the_buckets_ttl() {
    let server = Plughost::start(&ratelimit("rl", "[keyvalue.limits]\nttl = \"1s\"\n", 1, ""));
    assert_eq!(burst(&[server.url("/")], 2).await, (1, 1, 0));
    // Time passing is what this test is about, not an event to poll for: every request
    // writes the counter, which renews its ttl.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(burst(&[server.url("/")], 1).await, (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_sharing_redis_enforce_one_limit_exactly() {
    let redis = Redis::start();
    let table = format!(
        "[keyvalue.limits]\nbackend = \"redis\"\nurl = \"{}\"\nttl = \"1h\"\n",
        redis.url()
    );
    let servers: Vec<Plughost> = (0..3)
        .map(|_| Plughost::start(&ratelimit("rl", &table, 10, "")))
        .collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url("/")).collect();
    // The example counts by compare-and-swap: 30 requests at once on one key, from three
    // processes, each one counted once however many of their swaps lost a race.
    assert_eq!(burst(&urls, 30).await, (10, 20, 0));
    let m = servers[0].metrics_text().await;
    assert!(
        m.contains("plughost_kv_operations_total{bucket=\"limits\",op=\"swap\",outcome=\"ok\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_stalled_redis_costs_bounded_time_and_counting_resumes() {
    let mut redis = Redis::start();
    let port = redis.port;
    let table = format!(
        "[keyvalue.limits]\nbackend = \"redis\"\nurl = \"{}\"\nttl = \"1h\"\n",
        redis.url()
    );
    let server = Plughost::start(&ratelimit("rl", &table, 2, "timeout = \"300ms\""));
    assert_eq!(burst(&[server.url("/")], 3).await, (2, 1, 0));
    redis.kill();
    // The store fails; the plugin's on_store_error ("allow") lets requests through, quickly.
    let started = Instant::now();
    let (ok, limited, other) = burst(&[server.url("/")], 5).await;
    assert_eq!(ok + limited + other, 5);
    assert_eq!(ok, 5, "fail open while the store is down");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Back (empty: no persistence): counting resumes.
    let _redis = Redis::start_on(port);
    eventually(
        Duration::from_secs(10),
        "counting resumed",
        async || match burst(&[server.url("/")], 3).await {
            (_, limited, _) if limited > 0 => Ok(()),
            seen => Err(format!("{seen:?}")),
        },
    )
    .await;
    // A stalled Redis (DEBUG SLEEP) is cut off at the plugin's deadline.
    let stall = std::thread::spawn(move || plughost_e2e::redis::command(port, "DEBUG SLEEP 2"));
    eventually_blocking(Duration::from_secs(5), "Redis stalled", || {
        match plughost_e2e::redis::command_within(port, "PING", Duration::from_millis(50)) {
            None => Ok(()),
            Some(answer) => Err(answer),
        }
    });
    let started = Instant::now();
    let r = reqwest::get(server.url("/")).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "a request waited {took:?} for a stalled Redis"
    );
    assert!(matches!(r.status().as_u16(), 200 | 500), "{}", r.status());
    let _ = stall.join();
}

#[test]
fn plugin_run_gives_the_plugin_a_memory_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let file = plugin("ratelimit").display().to_string();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "run",
            &file,
            "--kv",
            "limits",
            "--config",
            "{\"limit\": 2, \"window_secs\": 3600}",
            "--repeat",
            "3",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("respond 429"), "{stdout}");
}

#[tokio::test]
async fn a_python_plugin_counts_in_a_bucket_too() {
    let config = format!(
        "[[plugins]]\nname = \"visits\"\nfile = {:?}\nkind = \"responder\"\nkeyvalue = [\"visits\"]\ntimeout = \"2s\"\n[[routes]]\nprefix = \"/v\"\nplugin = \"visits\"\n[keyvalue.visits]\n",
        plughost_e2e::python_plugin("visits").display().to_string()
    );
    let server = Plughost::start(&config);
    for n in 1..=3 {
        let body = reqwest::get(server.url("/v/page"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, format!("/v/page visited {n} times\n"));
    }
}

/// The README's fleet: `examples/fleet/run.sh` puts three plughost processes behind HAProxy
/// with one Redis; exactly the limit gets through, spread over all three.
#[test]
fn the_fleet_example_enforces_one_limit_behind_haproxy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash")
        .arg(root.join("examples/fleet/run.sh"))
        .arg(plughost_e2e::binary())
        .arg(plugin("ratelimit"))
        .output()
        .expect("run examples/fleet/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("9 allowed, 21 limited"), "{stdout}");
}

#[tokio::test]
async fn a_javascript_plugin_keeps_notes_in_a_bucket() {
    let config = format!(
        "[[plugins]]\nname = \"notes\"\nfile = {:?}\nkind = \"responder\"\nkeyvalue = [\"notes\"]\ntimeout = \"2s\"\n[[routes]]\nprefix = \"/notes\"\nplugin = \"notes\"\n[keyvalue.notes]\n",
        plughost_e2e::js_plugin("notes").display().to_string()
    );
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let absent = client.get(server.url("/notes/todo")).send().await.unwrap();
    assert_eq!(absent.status(), 404);
    let put = client
        .put(server.url("/notes/todo"))
        .body("buy milk\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got = client.get(server.url("/notes/todo")).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "buy milk\n");
}

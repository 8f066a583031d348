//! The key-value capability against a plugin doing its worst (the `hostile` plugin's `kv`
//! mode: steps in the request body, an answer line each), on memory buckets and on a private
//! Redis alike: buckets whose names nest cannot reach each other's keys, an answer past the
//! plugin's budget is refused before it is built, a page of keys costs a page, quotas hold on
//! Redis too, counters follow one rule on both backends, an error means nothing happened (or
//! says the outcome is unknown), Redis coming back is seen at once, and leaked handles cost
//! the plugin its instance, not its next call.

use plughost_e2e::redis::Redis;
use plughost_e2e::{Plughost, plugin};

/// A `hostile` responder in `kv` mode named `name` on `/NAME`, granted `buckets`.
fn kv_plugin(name: &str, buckets: &[&str], rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nkind = \"responder\"\nkeyvalue = {buckets:?}\ntimeout = \"20s\"\nconfig = {{ mode = \"kv\" }}\n{rest}\n[[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n",
        plugin("hostile").display().to_string()
    )
}

/// Where buckets live in one run of a test.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis(u16),
}

impl Backend {
    /// `[keyvalue."NAME"]` on this backend, with `rest` added. A Redis bucket gets a
    /// `command_timeout` of 5 s unless `rest` sets one: these tests are about what an answer
    /// says, not about how fast a loaded machine gives it (15 MiB values, batches of 1,000).
    fn table(self, name: &str, rest: &str) -> String {
        let backend = match self {
            Self::Memory => String::new(),
            Self::Redis(port) => {
                let timeout = if rest.contains("command_timeout") {
                    ""
                } else {
                    "command_timeout = \"5s\"\n"
                };
                format!("backend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\n{timeout}")
            }
        };
        format!("[keyvalue.\"{name}\"]\n{backend}{rest}\n")
    }
}

/// Runs `steps` (a JSON array) through plugin `name`; its answer, a line a step.
async fn kv(server: &Plughost, name: &str, steps: serde_json::Value) -> Vec<String> {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/{name}")))
        .body(steps.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{name}");
    r.text().await.unwrap().lines().map(str::to_owned).collect()
}

/// Runs a test body on a memory bucket and on a Redis one.
macro_rules! on_both {
    (|$backend:ident| $body:block) => {{
        let redis = Redis::start();
        for $backend in [Backend::Memory, Backend::Redis(redis.port)] {
            $body
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_whose_names_nest_never_share_keys() {
    on_both!(|backend| {
        let config = kv_plugin("writer", &["a:x"], "")
            + &kv_plugin("reader", &["a"], "")
            + &backend.table("a", "")
            + &backend.table("a:x", "");
        let server = Plughost::start(&config);
        let set = serde_json::json!([{"op": "set", "bucket": "a:x", "key": "secret", "value": "AX-SECRET"}]);
        assert_eq!(kv(&server, "writer", set).await, ["ok"]);
        // Bucket `a`'s key `x:secret` is its own key, not `a:x`'s `secret`.
        let probe = serde_json::json!([
            {"op": "get", "bucket": "a", "key": "x:secret"},
            {"op": "list", "bucket": "a"},
            {"op": "set", "bucket": "a", "key": "x:secret", "value": "A"},
            {"op": "list", "bucket": "a"},
        ]);
        let seen = kv(&server, "reader", probe).await;
        assert_eq!(seen[0], "none", "{backend:?}: {seen:?}");
        assert!(seen[1].starts_with("keys=0 "), "{backend:?}: {seen:?}");
        assert!(seen[3].ends_with(" x:secret"), "{backend:?}: {seen:?}");
        let back = serde_json::json!([{"op": "get", "bucket": "a:x", "key": "secret"}, {"op": "list", "bucket": "a:x"}]);
        let seen = kv(&server, "writer", back).await;
        assert_eq!(seen[0], "value=AX-SECRET", "{backend:?}");
        assert!(seen[1].ends_with(" secret"), "{backend:?}: {seen:?}");
    });
}

/// A get-many naming one 256 KiB value 4,096 times asks for 1 GiB: refused, and the server's
/// peak memory stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_the_budget_is_refused_before_it_is_built() {
    on_both!(|backend| {
        let config = kv_plugin("kv", &["b"], "") + &backend.table("b", "");
        let server = Plughost::start(&config);
        let set =
            serde_json::json!([{"op": "set", "bucket": "b", "key": "big", "size": 256 * 1024}]);
        assert_eq!(kv(&server, "kv", set).await, ["ok"]);
        let (_, peak_before) = server.rss_kib();
        let many = serde_json::json!([
            {"op": "get-many", "bucket": "b", "key": "big", "times": 4096},
            {"op": "get-many", "bucket": "b", "key": "big", "times": 8},
            {"op": "cas-current", "bucket": "b", "key": "big"},
        ]);
        let seen = kv(&server, "kv", many).await;
        assert!(
            seen[0].starts_with("error: the answer would be over")
                && seen[0].contains("max_answer_bytes"),
            "{backend:?}: {seen:?}"
        );
        // A CAS handle reads the value when it is made, within the same budget.
        assert_eq!(seen[2], format!("len={}", 256 * 1024), "{backend:?}");
        let (_, peak_after) = server.rss_kib();
        eprintln!("{backend:?}: peak RSS {peak_before} -> {peak_after} KiB");
        assert!(
            peak_after < peak_before + 64 * 1024,
            "{backend:?}: peak RSS {peak_before} -> {peak_after} KiB"
        );
        // Past a plugin's own budget, the handle holds no value and `current` says why.
        drop(server);
        let small = kv_plugin("small", &["b"], "max_answer_bytes = 1024");
        let server = Plughost::start(&(small + &backend.table("b", "")));
        let steps = serde_json::json!([
            {"op": "set", "bucket": "b", "key": "big", "size": 4096},
            {"op": "cas-current", "bucket": "b", "key": "big"},
        ]);
        let refused = kv(&server, "small", steps).await;
        assert!(
            refused[1].starts_with("error: the answer would be over 4096 bytes")
                && refused[1].contains("max_answer_bytes (1024)"),
            "{backend:?}: {refused:?}"
        );
    });
}

/// 100,000 keys listed a page at a time: each page costs a page, not the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_large_bucket_costs_a_page_per_page() {
    on_both!(|backend| {
        let config = kv_plugin("kv", &["big"], "") + &backend.table("big", "");
        let server = Plughost::start(&config);
        let fill = serde_json::json!([
            {"op": "set-many", "bucket": "big", "prefix": "key-", "n": 100_000, "size": 1, "chunk": 1000},
            {"op": "list", "bucket": "big"},
        ]);
        let seen = kv(&server, "kv", fill).await;
        assert_eq!(seen[0], "ok", "{backend:?}");
        let field = |name: &str| -> u64 {
            seen[1]
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {:?}", seen[1]))
        };
        assert_eq!(field("keys="), 100_000, "{backend:?}: {}", seen[1]);
        // The figures in RELIABILITY.md come from this line.
        eprintln!("{backend:?}: {}", seen[1]);
        assert!(field("total_ms=") < 2000, "{backend:?}: {}", seen[1]);
        assert!(field("p99_page_us=") < 10_000, "{backend:?}: {}", seen[1]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_on_both_backends_and_a_refused_write_writes_nothing() {
    on_both!(|backend| {
        let config = kv_plugin("kv", &["q", "big"], "")
            + &backend.table("q", "max_keys = 3")
            + &backend.table("big", "max_bytes = 16777216");
        let server = Plughost::start(&config);
        let steps = serde_json::json!([
            {"op": "set-many", "bucket": "q", "prefix": "k", "n": 5, "size": 1, "chunk": 5},
            {"op": "exists", "bucket": "q", "key": "k0"},
            {"op": "set-many", "bucket": "q", "prefix": "k", "n": 3, "size": 1, "chunk": 3},
            {"op": "set", "bucket": "q", "key": "k9", "value": "v"},
            {"op": "set", "bucket": "q", "key": "k1", "value": "rewritten"},
            {"op": "get", "bucket": "q", "key": "k1"},
        ]);
        let seen = kv(&server, "kv", steps).await;
        assert!(
            seen[0].contains("bucket full") && seen[0].contains("nothing was written"),
            "{backend:?}: {seen:?}"
        );
        assert_eq!(seen[1..3], ["false", "ok"], "{backend:?}: {seen:?}");
        assert!(seen[3].contains("bucket full"), "{backend:?}: {seen:?}");
        assert_eq!(
            seen[4..],
            ["ok", "value=rewritten"],
            "{backend:?}: {seen:?}"
        );
        // 20 values of 15 MiB into a 16 MiB bucket: one fits.
        let big: Vec<serde_json::Value> = (0..20)
            .map(|i| serde_json::json!({"op": "set", "bucket": "big", "key": format!("v{i}"), "size": 15 << 20}))
            .collect();
        let seen = kv(&server, "kv", serde_json::Value::Array(big)).await;
        assert_eq!(seen[0], "ok", "{backend:?}");
        assert_eq!(
            seen.iter().filter(|l| l.contains("bucket full")).count(),
            19,
            "{backend:?}: {seen:?}"
        );
    });
}

/// One table of counter edges, run on both backends: the same answers and the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_one_rule_on_both_backends() {
    // (preset value, delta, answer, value after)
    let table: &[(Option<&str>, u64, &str, &str)] = &[
        (None, 1, "value=1", "value=1"),
        (Some("0"), 0, "value=0", "value=0"),
        (Some("41"), 1, "value=42", "value=42"),
        (
            Some("-5"),
            1,
            "error: the value is not a counter",
            "value=-5",
        ),
        (
            Some("007"),
            1,
            "error: the value is not a counter",
            "value=007",
        ),
        (
            Some("abc"),
            1,
            "error: the value is not a counter",
            "value=abc",
        ),
        (
            Some("9223372036854775806"),
            1,
            "value=9223372036854775807",
            "value=9223372036854775807",
        ),
        (
            Some("9223372036854775807"),
            1,
            "error: the counter would pass",
            "value=9223372036854775807",
        ),
        (
            Some("18446744073709551615"),
            1,
            "error: the value is not a counter",
            "value=18446744073709551615",
        ),
        (
            None,
            9223372036854775808,
            "error: the counter would pass",
            "none",
        ),
    ];
    let mut answers = Vec::new();
    on_both!(|backend| {
        let config = kv_plugin("kv", &["c"], "") + &backend.table("c", "");
        let server = Plughost::start(&config);
        let mut steps = Vec::new();
        for (i, (preset, delta, _, _)) in table.iter().enumerate() {
            let key = format!("k{i}");
            if let Some(v) = preset {
                steps.push(serde_json::json!({"op": "set", "bucket": "c", "key": key, "value": v}));
            }
            steps.push(
                serde_json::json!({"op": "increment", "bucket": "c", "key": key, "delta": delta}),
            );
            steps.push(serde_json::json!({"op": "get", "bucket": "c", "key": key}));
        }
        let mut seen = kv(&server, "kv", serde_json::Value::Array(steps))
            .await
            .into_iter();
        for (preset, delta, answer, after) in table {
            if preset.is_some() {
                assert_eq!(seen.next().as_deref(), Some("ok"));
            }
            let got = seen.next().unwrap();
            assert!(
                got.starts_with(answer),
                "{backend:?} {preset:?} + {delta}: {got}"
            );
            if got.starts_with("error") {
                assert!(got.ends_with("nothing was written"), "{backend:?}: {got}");
            }
            assert_eq!(
                seen.next().as_deref(),
                Some(*after),
                "{backend:?} {preset:?} + {delta}"
            );
            answers.push(got);
        }
    });
    let (memory, redis) = answers.split_at(answers.len() / 2);
    assert_eq!(memory, redis, "the backends disagree");
}

/// A write cut off by `command_timeout` after it was sent says its outcome is unknown; it
/// never claims a failure for a write that may have happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_write_that_timed_out_says_its_outcome_is_unknown() {
    let redis = Redis::start();
    let config = kv_plugin("kv", &["t"], "")
        + &Backend::Redis(redis.port).table("t", "max_keys = 1000000\ncommand_timeout = \"50ms\"");
    let server = Plughost::start(&config);
    let steps = serde_json::json!([
        {"op": "set-many", "bucket": "t", "prefix": "k", "n": 100_000, "size": 1, "chunk": 100_000},
        {"op": "exists", "bucket": "t", "key": "k99999"},
    ]);
    let seen = kv(&server, "kv", steps).await;
    eprintln!(
        "set-many of 100,000 keys, command_timeout 50ms: {}",
        seen[0]
    );
    if seen[0] == "ok" {
        // The read may itself miss the 50 ms on a loaded machine; when it answers, the keys
        // are there.
        assert!(
            seen[1] == "true" || seen[1].starts_with("error: redis: no answer within"),
            "{seen:?}"
        );
    } else {
        assert!(seen[0].starts_with("error: outcome unknown"), "{seen:?}");
    }
    let m = server.metrics_text().await;
    let unknown = plughost_e2e::labelled_metric(
        &m,
        "plughost_kv_operations_total",
        "bucket=\"t\",op=\"set-many\",outcome=\"unknown\"",
    );
    assert_eq!(unknown, if seen[0] == "ok" { 0.0 } else { 1.0 }, "{m}");
}

/// Redis killed and started again: a call while it is down fails saying nothing was done;
/// the first call once it is back succeeds (no stale "connection refused").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_redis_returns_succeeds() {
    let mut redis = Redis::start();
    let port = redis.port;
    let config = kv_plugin("kv", &["r"], "") + &Backend::Redis(port).table("r", "");
    let server = Plughost::start(&config);
    let set = serde_json::json!([{"op": "set", "bucket": "r", "key": "k", "value": "v"}]);
    assert_eq!(kv(&server, "kv", set.clone()).await, ["ok"]);
    redis.kill();
    let down = kv(&server, "kv", set.clone()).await;
    assert!(down[0].contains("nothing was done"), "{down:?}");
    // A second call while down leaves a failed reconnect behind for the next caller.
    let down = kv(&server, "kv", set.clone()).await;
    assert!(down[0].starts_with("error"), "{down:?}");
    let _back = Redis::start_on(port);
    let get = serde_json::json!([{"op": "get", "bucket": "r", "key": "k"}]);
    assert_eq!(kv(&server, "kv", get).await, ["none"], "restarted empty");
}

/// A plugin opening 40,000 handles a call and never dropping them: its instance is retired
/// after the call, so the next call starts clean instead of finding a full table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_handles_retire_the_instance_not_the_next_call() {
    let config = kv_plugin("kv", &["l"], "instances = 1") + &Backend::Memory.table("l", "");
    let server = Plughost::start(&config);
    let leak = serde_json::json!([{"op": "leak", "bucket": "l", "n": 40_000}]);
    for call in 0..3 {
        assert_eq!(
            kv(&server, "kv", leak.clone()).await,
            ["leaked 40000"],
            "call {call}"
        );
    }
}

/// A compare-and-swap over a key written since its handle read it writes nothing and says
/// so, handing back a handle that holds the key as it is now, whose swap then succeeds; on
/// both backends alike, and over keys written through the other interface version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_over_a_changed_key_fails_and_its_retry_succeeds() {
    let mut answers = Vec::new();
    on_both!(|backend| {
        let config = kv_plugin("kv", &["c"], "") + &backend.table("c", "");
        let server = Plughost::start(&config);
        let steps = serde_json::json!([
            {"op": "cas-stale", "bucket": "c", "key": "k", "value": "mine"},
            {"op": "get", "bucket": "c", "key": "k"},
            {"op": "set", "bucket": "c", "key": "j", "value": "old"},
            {"op": "cas-stale", "bucket": "c", "key": "j", "value": "mine"},
            {"op": "get2", "bucket": "c", "key": "j"},
        ]);
        let seen = kv(&server, "kv", steps).await;
        assert_eq!(
            seen,
            [
                "seen=none conflict now=value=changed retry swapped",
                "value=mine",
                "ok",
                "seen=value=old conflict now=value=changed retry swapped",
                "value=mine",
            ],
            "{backend:?}"
        );
        let metrics = server.metrics_text().await;
        assert!(
            metrics.contains(
                "plughost_kv_operations_total{bucket=\"c\",op=\"swap\",outcome=\"conflict\"} 2"
            ),
            "{backend:?}: {metrics}"
        );
        answers.push(seen);
    });
    assert_eq!(answers[0], answers[1], "the backends disagree");
}

/// A draft plugin and a draft2 plugin granted one bucket see one set of keys; draft2's
/// signed deltas never take a counter below 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_and_a_draft2_plugin_see_one_bucket() {
    on_both!(|backend| {
        let config =
            kv_plugin("old", &["s"], "") + &kv_plugin("new", &["s"], "") + &backend.table("s", "");
        let server = Plughost::start(&config);
        // (plugin, step, answer): `old` speaks draft, `new` draft2.
        let script = [
            (
                "old",
                serde_json::json!({"op": "set", "bucket": "s", "key": "a", "value": "from draft"}),
                "ok",
            ),
            (
                "new",
                serde_json::json!({"op": "get2", "bucket": "s", "key": "a"}),
                "value=from draft",
            ),
            (
                "new",
                serde_json::json!({"op": "increment2", "bucket": "s", "key": "n", "delta": 5}),
                "value=5",
            ),
            (
                "old",
                serde_json::json!({"op": "increment", "bucket": "s", "key": "n", "delta": 1}),
                "value=6",
            ),
            (
                "new",
                serde_json::json!({"op": "increment2", "bucket": "s", "key": "n", "delta": -6}),
                "value=0",
            ),
            (
                "new",
                serde_json::json!({"op": "increment2", "bucket": "s", "key": "n", "delta": -1}),
                "error: the counter would go below 0; nothing was written",
            ),
            (
                "old",
                serde_json::json!({"op": "get", "bucket": "s", "key": "n"}),
                "value=0",
            ),
        ];
        for (plugin, step, answer) in script {
            let seen = kv(&server, plugin, serde_json::json!([step])).await;
            assert_eq!(seen, [answer], "{backend:?} {plugin}: {step}");
        }
    });
}

/// Two plugins in each of three plughost processes add to one Redis key by compare-and-swap
/// in a loop, all at once: every addition is in the final count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_loses_no_update_across_three_processes() {
    let redis = Redis::start();
    let table = Backend::Redis(redis.port).table("n", "");
    let config = kv_plugin("a", &["n"], "") + &kv_plugin("b", &["n"], "") + &table;
    let servers: Vec<Plughost> = (0..3).map(|_| Plughost::start(&config)).collect();
    let add = serde_json::json!([{"op": "cas-add", "bucket": "n", "key": "count", "n": 25}]);
    let mut calls = Vec::new();
    for server in &servers {
        for name in ["a", "b"] {
            for _ in 0..4 {
                calls.push(kv(server, name, add.clone()));
            }
        }
    }
    for answer in futures_util::future::join_all(calls).await {
        assert!(answer[0].starts_with("value="), "{answer:?}");
    }
    let total = kv(
        &servers[0],
        "a",
        serde_json::json!([{"op": "get", "bucket": "n", "key": "count"}]),
    )
    .await;
    // 3 processes × 2 plugins × 4 requests × 25 additions.
    assert_eq!(total, ["value=600"]);
}

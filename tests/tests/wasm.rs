//! WebAssembly plugins end to end: the example plugins, config through `plugin-init`, reuse
//! policies, the compiled cache, and hostile plugins that must not hurt the server.

use std::time::{Duration, Instant};

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, assert_no_leaks, body_then_request, plugin, plugin_errors};

/// A `[[plugins]]` table for a test plugin file.
fn entry(name: &str, file: &str, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\n{rest}\n",
        plugin(file).display().to_string()
    )
}

/// A responder on `/{name}` running the hostile plugin in `mode`.
fn hostile(name: &str, config: &str, rest: &str) -> String {
    format!(
        "{}[[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n",
        entry(
            name,
            "hostile",
            &format!("kind = \"responder\"\nconfig = {{ {config} }}\n{rest}")
        )
    )
}

async fn get(server: &Plughost, path: &str) -> (u16, String) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn hello_responder_greets_with_its_configured_greeting() {
    let config = entry(
        "hello",
        "hello",
        "kind = \"responder\"\nconfig = { greeting = \"Howdy\" }",
    ) + "[[routes]]\nprefix = \"/hello\"\nplugin = \"hello\"\n";
    let server = Plughost::start(&config);
    let (status, body) = get(&server, "/hello/there?x=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "Howdy from plughost! You asked for /hello/there?x=1\n"
    );
    // Not its route: /helloworld is not under /hello.
    assert_eq!(get(&server, "/helloworld").await.0, 404);
    let (_, page) = get(&server, "/").await;
    assert!(page.contains("plugins loaded: hello"), "{page}");
    server.wait_log("hello ready, greeting \"Howdy\"");
}

#[tokio::test]
async fn headers_filter_edits_request_and_response() {
    let config = entry(
        "headers",
        "headers",
        "config = { request = { name = \"x-from-filter\", value = \"yes\" }, response = { name = \"x-added\", value = \"1\" } }",
    );
    let server = Plughost::start(&config);
    let r = reqwest::get(server.url("/_debug/headers")).await.unwrap();
    assert_eq!(r.headers()["x-added"], "1");
    let body = r.text().await.unwrap();
    assert!(body.contains("x-from-filter: yes"), "{body}");
    // Filters run on cache hits too.
    reqwest::get(server.url("/")).await.unwrap();
    let hit = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "hit");
    assert_eq!(hit.headers()["x-added"], "1");
}

/// A call yields to other requests at the epoch ticks it runs through, and only then. An
/// instance that waited in the pool used to keep its last call's deadline, long passed, so
/// every call after a quiet millisecond yielded at its first instruction.
#[tokio::test]
async fn a_call_yields_at_the_ticks_it_runs_through_not_for_the_time_it_sat_idle() {
    let config = entry(
        "headers",
        "headers",
        "config = { response = { name = \"x-added\", value = \"1\" } }",
    ) + &hostile("busy", "mode = \"busy\", amount = 50", "");
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    for _ in 0..20 {
        // Not a wait for anything: the idle time between calls is what is tested. Three
        // ticks of the epoch (1 ms each) pass while the filter's instance sits in the pool.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let r = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-added"], "1");
    }
    assert_eq!(get(&server, "/busy").await, (200, "done\n".into()));
    let plugins = server.admin_json("/plugins").await;
    let yields = |name: &str| {
        let all = plugins.as_array().unwrap();
        let p = all.iter().find(|p| p["name"] == name).unwrap();
        p["yields"].as_u64().unwrap()
    };
    // The filter ran 21 short calls: a tick rarely lands inside one. Before, 21 yields.
    assert!(yields("headers") < 10, "{plugins}");
    // 50 ms of guest code spans ~50 ticks.
    assert!(yields("busy") >= 10, "{plugins}");
}

/// A filter that answers (here a 401) before anything has read the body, which it is not
/// given: the body is read and dropped first, so the request behind it on the connection is
/// served. Left unread, the connection closed after the 401 and took that request with it.
#[tokio::test]
async fn a_filters_answer_does_not_cost_the_connection_its_next_request() {
    let server = Plughost::start(&entry(
        "auth",
        "auth",
        "config = { keys = [\"s3cret\"] }\nrequest_headers = [\"x-api-key\"]\nrequest_body = false",
    ));
    let addr = server.addr;
    let (first, second) = tokio::task::spawn_blocking(move || {
        let next = "GET / HTTP/1.1\r\nHost: t\r\nX-Api-Key: s3cret\r\n\r\n";
        body_then_request(addr, "POST / HTTP/1.1\r\nHost: t\r\n", 256 * 1024, next)
    })
    .await
    .unwrap();
    assert_eq!(first.unwrap().0, 401);
    assert_eq!(
        second.unwrap().0,
        200,
        "the connection closed after the 401"
    );
}

#[tokio::test]
async fn auth_filter_refuses_unknown_keys_with_401() {
    let server = Plughost::start(&entry("auth", "auth", "config = { keys = [\"s3cret\"] }"));
    let client = reqwest::Client::new();
    let refused = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "ApiKey header=\"x-api-key\""
    );
    let wrong = client
        .get(server.url("/"))
        .header("x-api-key", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client
        .get(server.url("/"))
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// `fresh` gives every request a new instance; `pooled` with `max_requests = 2` recycles every
/// second request.
#[tokio::test]
async fn reuse_policies_fresh_and_max_requests() {
    let config = entry("fresh", "headers", "reuse = \"fresh\"");
    let server = Plughost::start(&config);
    for _ in 0..5 {
        assert_eq!(get(&server, "/_debug/sleep?ms=0").await.0, 200);
    }
    let m = server.metrics_text().await;
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_instantiations_total"),
        5.0,
        "{m}"
    );

    let config = entry("recycled", "headers", "max_requests = 2\ninstances = 1");
    let server = Plughost::start(&config);
    // Each instance serves two requests, then a new one takes over.
    for _ in 0..6 {
        assert_eq!(get(&server, "/_debug/sleep?ms=0").await.0, 200);
    }
    let m = server.metrics_text().await;
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_instantiations_total"),
        2.0,
        "{m}"
    );
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_instance_reuses_total"),
        4.0,
        "{m}"
    );
}

#[tokio::test]
async fn plugin_whose_init_fails_is_skipped_and_the_server_starts() {
    let config = entry("auth", "auth", "config = { keys = [] }\noptional = true")
        + &entry(
            "bad",
            "hostile",
            "config = { mode = \"init-fail\" }\noptional = true",
        )
        + &entry("garbage", "../../../Cargo.toml", "optional = true")
        + &entry("headers", "headers", "config = { }");
    let server = Plughost::start(&config);
    let loaded = server.admin_json("/plugins").await;
    let names: Vec<&str> = loaded
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["headers"]);
    assert_eq!(get(&server, "/").await.0, 200);
    let log = server.wait_log("plugin=garbage");
    for needle in [
        "plugin=auth",
        "auth needs at least one key",
        "plugin=bad",
        "init-fail mode",
        "plugin=garbage",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("plugin not loaded") && l.contains(needle)),
            "no 'plugin not loaded' line with {needle:?} in\n{log}"
        );
    }
}

#[tokio::test]
async fn without_plugin_tables_every_wasm_in_plugins_dir_is_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    std::fs::create_dir(&plugins_dir).unwrap();
    std::fs::copy(plugin("headers"), plugins_dir.join("b-headers.wasm")).unwrap();
    std::fs::copy(plugin("headers"), plugins_dir.join("a-headers.wasm")).unwrap();
    std::fs::write(plugins_dir.join("notes.txt"), "not a plugin").unwrap();
    let server = Plughost::start_in(dir, "max_plugins = 10");
    let loaded = server.admin_json("/plugins").await;
    let names: Vec<&str> = loaded
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-headers", "b-headers"]);
    assert_eq!(loaded[0]["kind"], "filter");
    assert_eq!(loaded[1]["kind"], "filter");
}

#[tokio::test]
async fn max_plugins_caps_how_many_load() {
    let config = "max_plugins = 2\n".to_owned()
        + &entry("one", "headers", "")
        + &entry("two", "headers", "")
        + &entry("three", "headers", "optional = true");
    let server = Plughost::start(&config);
    assert_eq!(
        server
            .admin_json("/plugins")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    server.wait_log("max_plugins reached");
}

#[tokio::test]
async fn restart_loads_components_from_the_compiled_cache() {
    let cache = tempfile::tempdir().unwrap();
    let config = format!(
        "wasm_cache_dir = {:?}\n{}",
        cache.path().display().to_string(),
        entry("headers", "headers", "")
    );
    let first = Plughost::start(&config);
    first.wait_log("from_cache=false");
    drop(first);
    let second = Plughost::start(&config);
    second.wait_log("from_cache=true");
    assert_eq!(get(&second, "/").await.0, 200);
}

/// Each hostile plugin gets an error response within its deadline plus a margin, the failure
/// is counted with its reason, other routes answer meanwhile, and nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_alone_and_are_counted() {
    let config = hostile("loop", "mode = \"loop\"", "")
        + &hostile(
            "membomb",
            "mode = \"membomb\"",
            "max_memory_bytes = 33554432",
        )
        + &hostile("recursion", "mode = \"recursion\"", "")
        + &hostile("panic", "mode = \"panic\"", "")
        + &hostile("error", "mode = \"error\"", "")
        + &hostile("bigbody", "mode = \"big-body\"", "");
    let server = Plughost::start(&config);
    let margin = Duration::from_millis(900);
    for (route, reason) in [
        ("loop", "timeout"),
        ("membomb", "memory"),
        ("recursion", "trap"),
        ("panic", "trap"),
        ("error", "error"),
        ("bigbody", "memory"),
    ] {
        // Another route answers while the hostile call runs.
        let bystander = tokio::spawn(reqwest::get(server.url("/_debug/sleep?ms=1")));
        let started = Instant::now();
        let (status, body) = get(&server, &format!("/{route}")).await;
        let took = started.elapsed();
        assert_eq!(status, 500, "{route}: {body}");
        assert_eq!(body, format!("plugin {route} failed on this request\n"));
        assert!(
            took < Duration::from_millis(100) + margin,
            "{route} took {took:?}"
        );
        assert_eq!(bystander.await.unwrap().unwrap().status(), 200, "{route}");
        let m = server.metrics_text().await;
        assert_eq!(
            plugin_errors(&m, route, reason),
            1.0,
            "{route}/{reason}:\n{m}"
        );
        // The instance was replaced, not the plugin: it still answers (and fails) again.
        assert_eq!(get(&server, &format!("/{route}")).await.0, 500);
    }
    assert_eq!(get(&server, "/").await.0, 200);
    assert_no_leaks(&server, 10.0).await;
}

/// With one worker thread serving every connection, a wasm call spinning until its deadline
/// does not hold up the worker's other connections: the call yields to the worker's event
/// loop at each epoch tick, so other requests are answered while it still runs.
#[tokio::test]
async fn a_spinning_call_does_not_stall_the_other_connections_of_its_worker() {
    let config =
        "workers = 1\n".to_owned() + &hostile("loop", "mode = \"loop\"", "timeout = \"3s\"");
    let server = Plughost::start(&config);
    let spinning = tokio::spawn(reqwest::get(server.url("/loop")));
    server
        .metric_reaches("plughost_inflight_requests", 1.0)
        .await;
    for path in ["/", "/_debug/sleep?ms=1", "/"] {
        assert_eq!(get(&server, path).await.0, 200, "{path}");
    }
    assert!(
        !spinning.is_finished(),
        "the spinning call ended before the other requests were answered"
    );
    assert_eq!(spinning.await.unwrap().unwrap().status(), 500);
    assert_eq!(
        plugin_errors(&server.metrics_text().await, "loop", "timeout"),
        1.0
    );
}

#[tokio::test]
async fn on_error_continue_lets_the_request_through() {
    let config = entry(
        "flaky",
        "hostile",
        "on_error = \"continue\"\nconfig = { mode = \"panic\" }",
    );
    let server = Plughost::start(&config);
    assert_eq!(get(&server, "/").await.0, 200);
    let m = server.metrics_text().await;
    assert_eq!(plugin_errors(&m, "flaky", "trap"), 1.0, "{m}");
}

/// Limits are per plugin: the same work passes under one plugin's limits and fails under
/// another's.
#[tokio::test]
async fn per_plugin_limits_bite_where_set_and_nowhere_else() {
    let config = hostile(
        "smallmem",
        "mode = \"alloc\", amount = 24",
        "max_memory_bytes = 16777216",
    ) + &hostile("bigmem", "mode = \"alloc\", amount = 24", "")
        // Far past its deadline: on a loaded machine the epoch ticker may run late.
        + &hostile(
            "short",
            "mode = \"busy\", amount = 400",
            "timeout = \"30ms\"",
        )
        + &hostile("long", "mode = \"busy\", amount = 80", "timeout = \"2s\"");
    let server = Plughost::start(&config);
    assert_eq!(get(&server, "/smallmem").await.0, 500);
    assert_eq!(
        get(&server, "/bigmem").await,
        (200, "allocated 24 MiB\n".into())
    );
    assert_eq!(get(&server, "/short").await.0, 500);
    assert_eq!(get(&server, "/long").await, (200, "done\n".into()));
    let m = server.metrics_text().await;
    assert_eq!(plugin_errors(&m, "smallmem", "memory"), 1.0);
    assert_eq!(plugin_errors(&m, "short", "timeout"), 1.0);
}

#[tokio::test]
async fn the_sandbox_denies_files_outside_grants_and_writes_to_read_only_grants() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("ok.txt"), "granted").unwrap();
    let grant = format!(
        "grants = [{{ host = {:?}, guest = \"/data\" }}]",
        data.path().display().to_string()
    );
    let config = hostile("passwd", "mode = \"read\", path = \"/etc/passwd\"", "")
        + &hostile(
            "escape",
            "mode = \"read\", path = \"/data/../../etc/passwd\"",
            &grant,
        )
        + &hostile("readok", "mode = \"read\", path = \"/data/ok.txt\"", &grant)
        + &hostile(
            "write",
            "mode = \"write\", path = \"/data/new.txt\"",
            &grant,
        );
    let server = Plughost::start(&config);
    for route in ["passwd", "escape", "write"] {
        let (status, body) = get(&server, &format!("/{route}")).await;
        assert_eq!(status, 200);
        assert!(body.starts_with("denied: "), "{route}: {body}");
    }
    assert_eq!(get(&server, "/readok").await.1, "LEAKED: read succeeded\n");
    assert!(!data.path().join("new.txt").exists());
}

#[tokio::test]
async fn guest_stdout_and_stderr_go_to_the_log() {
    let server = Plughost::start(&entry(
        "printer",
        "hostile",
        "config = { mode = \"print\" }",
    ));
    assert_eq!(get(&server, "/").await.0, 200);
    server.wait_log("hostile says hello on stdout");
    let log = server.wait_log("hostile says hello on stderr");
    assert!(
        log.lines()
            .any(|l| l.contains("plugin=\"printer\"") || l.contains("plugin=printer")),
        "{log}"
    );
}

/// A plugin failing on every call goes into backoff after `failure_threshold` failures: its
/// requests are answered without calling it (calls stop growing), then it is tried again.
#[tokio::test]
async fn a_plugin_failing_every_call_is_backed_off_then_retried() {
    let config = hostile(
        "doomed",
        "mode = \"error\"",
        "failure_threshold = 3\nbackoff = \"700ms\"",
    );
    let server = Plughost::start(&config);
    for _ in 0..6 {
        assert_eq!(get(&server, "/doomed").await.0, 500);
    }
    let m = server.metrics_text().await;
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_calls_total"),
        3.0,
        "{m}"
    );
    assert_eq!(plugin_errors(&m, "doomed", "backoff"), 3.0, "{m}");
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_backoffs_total"),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(&server, "/doomed").await.0, 500);
    let m = server.metrics_text().await;
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_calls_total"),
        4.0,
        "{m}"
    );
    assert_eq!(
        server
            .log()
            .matches("skipping it for this client's requests during the backoff")
            .count(),
        1
    );
}

/// A query of death (a path the filter traps on) sent by one client backs the filter off for
/// that client alone: another client's requests still go through the filter, and pass.
#[tokio::test]
async fn a_query_of_death_backs_off_only_the_client_who_sends_it() {
    let config = entry(
        "guard",
        "hostile",
        "config = { mode = \"trap-if-asked\" }\nfailure_threshold = 3\nbackoff = \"1h\"",
    );
    let server = Plughost::start(&config);
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (attacker, victim) = (from([127, 0, 0, 2]), from([127, 0, 0, 1]));
    for n in 0..6 {
        let r = attacker
            .get(server.url(&format!("/trap/{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
    // The attacker is held off, on every path; the victim is served through the filter.
    let held = attacker.get(server.url("/")).send().await.unwrap();
    assert_eq!(held.status(), 500);
    for _ in 0..3 {
        let r = victim.get(server.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = server.metrics_text().await;
    assert_eq!(plugin_errors(&m, "guard", "trap"), 3.0, "{m}");
    assert_eq!(plugin_errors(&m, "guard", "backoff"), 4.0, "{m}");
    assert_eq!(
        plughost_e2e::metric_value(&m, "plughost_plugin_calls_total"),
        6.0,
        "three traps, then the victim's three calls: {m}"
    );
    let plugins = server.admin_json("/plugins").await;
    assert_eq!(plugins[0]["clients_in_backoff"], 1, "{plugins}");
}

#[tokio::test]
async fn filter_response_headers_reach_plughosts_own_error_responses() {
    let config = entry(
        "headers",
        "headers",
        "config = { response = { name = \"x-frame-options\", value = \"DENY\" } }",
    ) + &entry("lonely", "hello", "kind = \"responder\"");
    let server = Plughost::start(&config);
    let r = reqwest::get(server.url("/nowhere")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let r = reqwest::Client::new()
        .delete(server.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    // A responder without a route is loaded, and its author told it is never called.
    server.wait_log("responder has no [[routes]] entry and is never called");
}

/// What a filter is given follows `request_headers` and `request_body`: by default every
/// header and the body; configured, only the named headers (any case) and no body, and then
/// the body is not read whole before routing but streams to the backend: 10 MiB up grow
/// plughost's peak RSS by far less than 10 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_is_given_only_the_headers_and_body_it_asks_for() {
    const MIB: usize = 1 << 20;
    let backend = TestBackend::start("a");
    let upstream = format!(
        "[upstreams.api]\nservers = [\"{}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\nstrip_prefix = true\n",
        backend.addr
    );
    let tell = |rest: &str| {
        entry(
            "tell",
            "hostile",
            &format!("config = {{ mode = \"tell\" }}\n{rest}"),
        )
    };
    let upload = |server: &Plughost, body: Vec<u8>| {
        reqwest::Client::new()
            .post(server.url("/api/upload"))
            .header("x-a", "1")
            .header("x-b", "2")
            .body(body)
            .send()
    };

    let server = Plughost::start(&(tell("") + &upstream));
    let r = upload(&server, b"hello".to_vec()).await.unwrap();
    assert_eq!(r.headers()["x-seen-body"], "5");
    let seen = r.headers()["x-seen-headers"].to_str().unwrap().to_owned();
    for name in ["host", "x-a", "x-b", "content-length"] {
        assert!(
            seen.split(',').any(|n| n == name),
            "{name} not given: {seen}"
        );
    }
    assert_eq!(r.text().await.unwrap(), "5");
    drop(server);

    let server =
        Plughost::start(&(tell("request_headers = [\"X-A\"]\nrequest_body = false") + &upstream));
    let r = upload(&server, b"hello".to_vec()).await.unwrap();
    assert_eq!(r.headers()["x-seen-headers"], "x-a");
    assert_eq!(r.headers()["x-seen-body"], "0");
    assert_eq!(
        r.text().await.unwrap(),
        "5",
        "the backend gets the whole body"
    );
    let (idle, _) = server.rss_kib();
    let r = upload(&server, vec![b'u'; 10 * MIB]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), (10 * MIB).to_string());
    let (_, peak) = server.rss_kib();
    let growth_mib = peak.saturating_sub(idle) as f64 / 1024.0;
    assert!(
        growth_mib < 5.0,
        "peak RSS grew {growth_mib:.1} MiB over idle: the body was read whole"
    );
    drop(server);

    // A responder the same. The body it is not given is read and dropped, not left unread:
    // the connection then takes a second request.
    let server = Plughost::start(&hostile(
        "told",
        "mode = \"tell-respond\"",
        "request_headers = [\"x-b\"]\nrequest_body = false",
    ));
    let addr = server.addr;
    let (first, second) = tokio::task::spawn_blocking(move || {
        let head = "POST /told HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-B: 2\r\n";
        body_then_request(addr, head, MIB, "GET /told HTTP/1.1\r\nHost: t\r\n\r\n")
    })
    .await
    .unwrap();
    let (status, head, _) = first.unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("x-seen-headers: x-b\r\n"), "{head}");
    assert!(head.contains("x-seen-body: 0\r\n"), "{head}");
    assert_eq!(
        second.unwrap().0,
        200,
        "the connection was closed after the first answer"
    );
}

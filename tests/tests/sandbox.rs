//! The sandbox against hostile plugins (the `hostile` test plugin, built from source): what a
//! plugin returns cannot split, stall or mislabel a response; deadlines hold while a plugin
//! waits in a host call; what the host copies out of a guest and what a plugin logs stay
//! within caps; the compiled cache loads nothing that others could have written.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use plughost_e2e::{Plughost, assert_no_leaks, plugin, plugin_errors, read_response, run};

/// A `[[plugins]]` entry running the hostile plugin as `name` with `config` (TOML inline
/// table body) and more keys in `rest`; a responder on `/name` unless `rest` says filter.
fn hostile(name: &str, config: &str, rest: &str) -> String {
    let mut table = format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nconfig = {{ {config} }}\n{rest}\n",
        plugin("hostile").display().to_string()
    );
    if !rest.contains("kind = \"filter\"") {
        table += &format!(
            "kind = \"responder\"\n[[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n"
        );
    }
    table
}

fn connect(server: &Plughost) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn get_on(s: &mut TcpStream, path: &str) -> (u16, String, Vec<u8>) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_response(s).unwrap_or_else(|e| panic!("no complete response to {path}: {e}"))
}

/// The body a responder sends behind a lying `content-length: 0`: a second response, with a
/// header of the plugin's choosing, for the next request on the connection.
const SPLIT: &str = "HTTP/1.1 200 OK\\r\\nx-injected: yes\\r\\ncontent-length: 0\\r\\n\\r\\n";

#[tokio::test]
async fn plugin_framing_headers_cannot_split_stall_or_close_a_connection() {
    let mode = |headers: &str, body: &str| {
        format!("mode = \"respond-as\", status = 200, headers = [{headers}], body = \"{body}\"")
    };
    let config = [
        hostile("split", &mode("[\"content-length\", \"0\"]", SPLIT), ""),
        hostile("long", &mode("[\"Content-Length\", \"1000\"]", "short"), ""),
        hostile(
            "chunked",
            &mode("[\"transfer-encoding\", \"chunked\"]", "plain"),
            "",
        ),
        hostile(
            "hops",
            &mode(
                "[\"connection\", \"close\"], [\"upgrade\", \"h2c\"], [\"keep-alive\", \"x\"], \
                 [\"te\", \"x\"], [\"trailer\", \"x\"], [\"proxy-connection\", \"x\"], \
                 [\"bad name\", \"x\"], [\"x-kept\", \"yes\"]",
                "hops",
            ),
            "",
        ),
    ]
    .concat();
    let server = Plughost::start(&config);
    // One keep-alive connection through all of them: each answer is whole, framed by its
    // real body, and the next request gets its own response.
    let mut s = connect(&server);
    for (path, body) in [
        ("/split", SPLIT.replace("\\r\\n", "\r\n")),
        ("/long", "short".into()),
        ("/chunked", "plain".into()),
        ("/hops", "hops".into()),
    ] {
        let (status, head, got) = get_on(&mut s, path);
        assert_eq!(status, 200, "{path}: {head}");
        assert_eq!(String::from_utf8_lossy(&got), body, "{path}");
        let head = head.to_ascii_lowercase();
        for gone in [
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "trailer",
            "\nte:",
        ] {
            assert!(!head.contains(gone), "{path} sent {gone}: {head}");
        }
        assert!(!head.contains("connection: close"), "{path}: {head}");
        let (status, head, next) = get_on(&mut s, "/");
        assert_eq!(status, 200, "after {path}: {head}");
        assert!(!head.contains("x-injected"), "after {path}: {head}");
        assert!(next.starts_with(b"plughost "), "after {path}");
    }
    let (_, head, _) = get_on(&mut s, "/hops");
    assert!(head.contains("x-kept: yes"), "{head}");
    // Over HTTP/2 the stream is answered, not reset.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(server.url("/chunked")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "plain");
    let log = server.wait_log("plugin header dropped");
    assert!(log.contains("framing and connection headers are set by plughost"));
    assert!(log.contains("not a valid header name"));
}

#[tokio::test]
async fn a_filter_cannot_set_framing_headers_on_responses_or_requests() {
    let config = hostile(
        "edits",
        "mode = \"edit-response\", headers = [[\"content-length\", \"0\"], [\"x-from-filter\", \"1\"]]",
        "kind = \"filter\"",
    );
    let server = Plughost::start(&config);
    let mut s = connect(&server);
    for _ in 0..3 {
        let (status, head, body) = get_on(&mut s, "/");
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("x-from-filter: 1"), "{head}");
        assert!(body.starts_with(b"plughost "), "{head}");
    }
}

#[tokio::test]
async fn only_final_statuses_pass_and_the_reason_is_logged() {
    let config = [101u16, 42, 100, 600]
        .iter()
        .map(|s| {
            hostile(
                &format!("s{s}"),
                &format!("mode = \"respond-as\", status = {s}"),
                "",
            )
        })
        .collect::<String>();
    let server = Plughost::start(&config);
    let mut s = connect(&server);
    for status in [101, 42, 100, 600] {
        let (got, head, _) = get_on(&mut s, &format!("/s{status}"));
        assert_eq!(got, 500, "status {status}: {head}");
        server.wait_log(&format!("invalid status {status}"));
    }
    // The connection was never switched to another protocol.
    assert_eq!(get_on(&mut s, "/").0, 200);
    let metrics = server.metrics_text().await;
    assert_eq!(plugin_errors(&metrics, "s101", "error"), 1.0);
}

#[tokio::test]
async fn output_over_the_caps_is_refused_without_a_panic() {
    let config = [
        // Building 100,000 headers takes the guest tens of ms, more on a loaded machine:
        // the deadline must not be what refuses it.
        hostile(
            "many",
            "mode = \"many-headers\", amount = 100000",
            "timeout = \"5s\"",
        ),
        hostile(
            "fewer",
            "mode = \"many-headers\", amount = 3",
            "max_response_headers = 2",
        ),
        hostile(
            "body",
            "mode = \"respond-as\", status = 200, body = \"0123456789ABCDEF\"",
            "max_response_body_bytes = 8",
        ),
    ]
    .concat();
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    for (path, why) in [
        ("/many", "max_response_headers (100)"),
        ("/fewer", "max_response_headers (2)"),
        ("/body", "max_response_body_bytes (8)"),
    ] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 500, "{path}");
        server.wait_log(why);
    }
    assert!(!server.log().contains("panicked"));
    assert_eq!(
        client.get(server.url("/")).send().await.unwrap().status(),
        200
    );
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test]
async fn host_memory_stays_within_a_small_multiple_of_the_plugin_cap() {
    // 127 header values that all point at one 1 MiB buffer in a 4 MiB plugin: a host that
    // lifts them all copies 127 MiB per request.
    let cap = 4 << 20;
    let server = Plughost::start(&hostile(
        "alias",
        "mode = \"alias-headers\", amount = 1",
        &format!("max_memory_bytes = {cap}\nreuse = \"fresh\""),
    ));
    let client = reqwest::Client::new();
    let r = client.get(server.url("/alias")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let (before, peak_before) = server.rss_kib();
    for _ in 0..6 {
        let r = client.get(server.url("/alias")).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    let (after, peak) = server.rss_kib();
    // Both the resident set and its high-water mark.
    let growth = after
        .saturating_sub(before)
        .max(peak.saturating_sub(peak_before))
        * 1024;
    eprintln!("alias headers: RSS {before} -> {after} KiB, peak {peak_before} -> {peak} KiB");
    assert!(
        growth < 4 * cap as u64,
        "RSS grew by {growth} bytes under a plugin capped at {cap}"
    );
    server.wait_log("more than its budget");
}

#[tokio::test]
async fn deadlines_hold_while_a_plugin_waits_in_a_host_call() {
    let config = "max_concurrency = 2\nqueue_timeout = \"10s\"\n".to_owned()
        + &hostile(
            "sleepy",
            "mode = \"sleep\", amount = 3000",
            "timeout = \"100ms\"\nfailure_threshold = 1000",
        );
    let server = Plughost::start(&config);
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Three times the slots: each call ends at its deadline and frees its slot.
    let calls = (0..6).map(|_| client.get(server.url("/sleepy")).send());
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap().status(), 500);
    }
    let took = started.elapsed();
    eprintln!("6 calls of a plugin sleeping 3 s (timeout 100ms) through 2 slots: {took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "6 calls of a plugin sleeping 3 s through 2 slots took {took:?}"
    );
    assert_eq!(
        client.get(server.url("/")).send().await.unwrap().status(),
        200
    );
    let metrics = server.metrics_text().await;
    assert_eq!(plugin_errors(&metrics, "sleepy", "timeout"), 6.0);
    server.wait_log("wall-clock");
    assert_no_leaks(&server, 2.0).await;
}

#[tokio::test]
async fn a_sleeping_plugin_init_blocks_neither_start_up_nor_other_plugins() {
    let config = hostile(
        "slowinit",
        "mode = \"init-sleep\", amount = 20000",
        "init_timeout = \"300ms\"\noptional = true",
    ) + &format!(
        "[[plugins]]\nname = \"hello\"\nfile = {:?}\nkind = \"responder\"\n[[routes]]\nprefix = \"/hello\"\nplugin = \"hello\"\n",
        plugin("hello").display().to_string()
    );
    let started = Instant::now();
    let server = Plughost::start(&config);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "start-up took {took:?}");
    let r = reqwest::get(server.url("/hello")).await.unwrap();
    assert_eq!(r.status(), 200);
    server.wait_log("init_timeout (300ms)");
    // Its route says the plugin is not there, rather than that no route exists.
    let r = reqwest::get(server.url("/slowinit")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap(),
        "the plugin slowinit that answers this route is not loaded\n"
    );
}

#[test]
fn plugin_run_stops_a_sleeping_call_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = plugin("hostile").display().to_string();
    let started = Instant::now();
    let out = run(
        dir.path(),
        &[
            "plugin",
            "run",
            &file,
            "--config",
            "{\"mode\": \"sleep\", \"amount\": 3000}",
            "--timeout",
            "100ms",
        ],
    );
    let took = started.elapsed();
    eprintln!("plugin run of a 3 s sleep with --timeout 100ms: {took:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("timeout"), "{err}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test]
async fn plugin_log_lines_and_errors_are_cut_and_rate_limited() {
    let config = hostile(
        "flood",
        "mode = \"log-flood\", amount = 2",
        "log_bytes_per_sec = 20000",
    ) + &hostile("bigerr", "mode = \"big-error\", amount = 2", "");
    let server = Plughost::start(&config);
    let before = server.log().len();
    let r = reqwest::get(server.url("/flood")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(server.url("/bigerr")).await.unwrap();
    assert_eq!(r.status(), 500);
    server.wait_log("plugin log over its log_bytes_per_sec");
    server.wait_log("bytes cut]");
    let metrics = server.metrics_text().await;
    let dropped = plughost_e2e::metric_value(&metrics, "plughost_plugin_log_dropped_total");
    let cut = plughost_e2e::metric_value(&metrics, "plughost_plugin_log_truncated_total");
    assert!(dropped >= 10.0, "dropped {dropped}");
    assert!(cut >= 2.0, "cut {cut}");
    // 17 lines of 2 MiB and a 2 MiB error became a few KiB of log.
    let grown = server.log().len() - before;
    eprintln!("log flood of 36 MiB: log grew {grown} bytes, {dropped} lines dropped, {cut} cut");
    assert!(grown < 200 * 1024, "the log grew by {grown} bytes");
    let longest = server.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 16 * 1024, "a log line of {longest} bytes");
}

#[tokio::test]
async fn a_response_cut_off_mid_body_is_logged_as_aborted() {
    let backend = plughost_e2e::backend::TestBackend::start("big");
    let server = Plughost::start(&format!(
        "[upstreams.api]\nservers = [\"{}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\nstrip_prefix = true\n",
        backend.addr
    ));
    let mut s = connect(&server);
    write!(s, "GET /api/big?mb=64 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut some = [0u8; 4096];
    s.read_exact(&mut some).unwrap();
    drop(s);
    let log = server.wait_log("aborted=true");
    let line = log.lines().find(|l| l.contains("aborted=true")).unwrap();
    assert!(line.contains("status=200"), "{line}");
    assert!(!line.contains("bytes=67108864"), "{line}");
    // Whole responses are not.
    let r = reqwest::get(server.url("/api/x")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let log = server.wait_log("target=\"/api/x\"");
    let line = log
        .lines()
        .find(|l| l.contains("target=\"/api/x\""))
        .unwrap();
    assert!(!line.contains("aborted"), "{line}");
    assert!(server.metric("plughost_responses_aborted_total").await >= 1.0);
}

#[tokio::test]
async fn a_component_importing_what_plughost_lacks_is_refused_by_name() {
    let file = env!("PLUGHOST_UNLINKABLE");
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["plugin", "check", file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("test:unprovided/feature-flags@0.1.0") && err.contains("is-enabled"),
        "{err}"
    );
    let (status, err) =
        plughost_e2e::fails_to_start(&format!("[[plugins]]\nname = \"needy\"\nfile = {file:?}\n"));
    assert!(!status.success());
    assert!(err.contains("test:unprovided/feature-flags@0.1.0"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn compiled_cache_entries_others_could_write_are_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    // The cache outlives the servers (each has a temp dir of its own).
    let keep = tempfile::tempdir().unwrap();
    let cache = keep.path().join("cache");
    let config = format!(
        "wasm_cache_dir = {:?}\n[[plugins]]\nname = \"hello\"\nfile = {:?}\nkind = \"responder\"\n[[routes]]\nprefix = \"/hello\"\nplugin = \"hello\"\n",
        cache.display().to_string(),
        plugin("hello").display().to_string()
    );
    let start = || {
        let server = Plughost::start(&config);
        let log = server.wait_log("plugin loaded");
        (server, log)
    };
    let (first, log) = start();
    assert!(log.contains("from_cache=false"), "{log}");
    drop(first);
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a compiled entry");
    // Trusted: loaded from the cache.
    let (server, log) = start();
    assert!(log.contains("from_cache=true"), "{log}");
    drop(server);
    // A world-writable entry, then a group-writable directory: compiled again, with a
    // warning, whatever the entry holds.
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (server, log) = start();
    assert!(
        log.contains("not trusted") && log.contains("from_cache=false"),
        "{log}"
    );
    assert_eq!(
        reqwest::get(server.url("/hello")).await.unwrap().status(),
        200
    );
    drop(server);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o770)).unwrap();
    let (_server, log) = start();
    assert!(
        log.contains("not trusted") && log.contains("from_cache=false"),
        "{log}"
    );
}

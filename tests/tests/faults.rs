//! Faults under load: a plugin trapping on some requests, a plugin spinning into its deadline on
//! every call, a log file on a full disk, and SIGTERM in the middle of a wrk run — each fails
//! only what it must, and nothing accepted is lost.

use std::time::Duration;

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, Wrk, eventually, metric_value, plugin, plugin_errors};

fn hostile(name: &str, mode: &str, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nconfig = {{ mode = \"{mode}\" }}\nfailure_threshold = 1000000\n{rest}\n",
        plugin("hostile").display().to_string()
    )
}

/// One request in ten asks the filter to trap (`/?trap`); only those fail, with 500, and each
/// trap is counted once.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_trapping_on_one_request_in_ten_fails_only_those() {
    let server = Plughost::start(&hostile("trappy", "trap-if-asked", ""));
    let script = server.dir.path().join("tenth.lua");
    std::fs::write(
        &script,
        "local n = 0\nrequest = function()\n  n = n + 1\n  if n % 10 == 0 then return wrk.format(\"GET\", \"/?trap\") end\n  return wrk.format(\"GET\", \"/\")\nend\n",
    )
    .unwrap();
    let run = Wrk::start_with(
        &server.url("/"),
        8,
        Duration::from_secs(4),
        &["-s", script.to_str().unwrap()],
    )
    .finish();
    eprintln!(
        "trap on every tenth: {} requests, {} failed",
        run.requests, run.non_2xx
    );
    assert_eq!(run.socket_errors, 0, "{}", run.report);
    // wrk's two threads each send every tenth request with `?trap`; a request or two per
    // connection may still be in flight when wrk stops counting.
    let tenth = run.requests / 10;
    assert!(
        run.non_2xx.abs_diff(tenth) <= 16,
        "{} failed of {} (a tenth is {tenth})\n{}",
        run.non_2xx,
        run.requests,
        run.report
    );
    // Every 500 is a failed call of the plugin, counted once: a trap, or (on a loaded
    // machine, where a call may reach its deadline first) a timeout.
    let metrics = server.metrics_text().await;
    let failures: f64 = ["trap", "timeout", "memory", "error"]
        .iter()
        .map(|reason| plugin_errors(&metrics, "trappy", reason))
        .sum();
    let errors_500 = metric_value(&metrics, "plughost_requests_total{status=\"500\"}");
    assert_eq!(failures, errors_500, "{metrics}");
    assert!(plugin_errors(&metrics, "trappy", "trap") > 0.0, "{metrics}");
    // wrk does not count the answers to requests in flight when it stops.
    assert!(
        failures >= run.non_2xx as f64 && failures <= (run.non_2xx + 8) as f64,
        "{failures} failed calls for {} failed responses",
        run.non_2xx
    );
    plughost_e2e::assert_no_leaks(&server, 10.0).await;
}

/// A responder that spins until its 20 ms deadline on every call, under load: it fails every
/// time, and the default page stays answered meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_hitting_its_deadline_on_every_call_leaves_other_routes_responsive() {
    let config = hostile(
        "spin",
        "loop",
        "kind = \"responder\"\ntimeout = \"20ms\"\n[[routes]]\nprefix = \"/spin\"\nplugin = \"spin\"",
    );
    let server = Plughost::start(&config);
    let wrk = Wrk::start(&server.url("/spin"), 8, Duration::from_secs(3));
    // Under load: the plugin's calls are failing.
    server
        .metric_reaches("plughost_plugin_errors_total", 8.0)
        .await;
    let client = reqwest::Client::new();
    for _ in 0..30 {
        let resp = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = wrk.finish();
    assert_eq!(run.non_2xx, run.requests, "{}", run.report);
    assert!(run.requests > 0);
    let timeouts = server.metric("plughost_plugin_errors_total").await;
    assert!(timeouts >= run.requests as f64, "{timeouts}");
    plughost_e2e::assert_no_leaks(&server, 10.0).await;
}

/// The log file on a full disk (`/dev/full`): requests are served, every lost line is counted
/// in `plughost_log_dropped_total`, and the failure is said once on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_file_on_a_full_disk_keeps_serving_counts_the_lost_lines_and_says_so_once() {
    let server = Plughost::start("log_file = \"/dev/full\"");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        assert_eq!(
            client.get(server.url("/")).send().await.unwrap().status(),
            200
        );
    }
    // 300 access lines and the start-up lines, none of which reached the file: counted as
    // the log thread meets them.
    server
        .metric_reaches("plughost_log_dropped_total", 300.0)
        .await;
    let stderr = std::fs::read_to_string(server.dir.path().join("stderr.txt")).unwrap();
    assert_eq!(
        stderr
            .matches("cannot write the log file /dev/full")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
}

/// SIGTERM in the middle of a wrk run: every request wrk got an answer to has its access-log
/// line, plughost exits 0, and the stop line says no log line was dropped.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_loses_no_accepted_request_and_no_log_line() {
    let mut server = Plughost::start("log_buffer = 1000000\nlog_stderr = false");
    let wrk = Wrk::start(&server.url("/"), 16, Duration::from_secs(4));
    // In the middle of the run: wrk's requests are being answered.
    server
        .metric_reaches("plughost_requests_total", 1000.0)
        .await;
    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.wait(Duration::from_secs(15)));
    assert!(status.success(), "{status:?}");
    let run = wrk.finish();
    let log = server.log();
    let access_lines = log.lines().filter(|l| l.contains(" access: ")).count() as u64;
    eprintln!(
        "SIGTERM under load: wrk got {} responses, {access_lines} access lines",
        run.requests
    );
    assert!(run.requests > 1000, "{}", run.report);
    assert_eq!(
        access_lines, run.requests,
        "access lines vs responses wrk received\n{}",
        run.report
    );
    assert!(
        log.lines()
            .any(|l| l.contains("plughost stopped") && l.contains("log_dropped=0")),
        "no clean stop line"
    );
}

/// A backend killed and restarted while wrk drives GETs through the proxy: the GETs that were
/// on it are retried on the other backend, so at most the requests in flight fail, and the
/// restarted backend takes requests again.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_killed_and_restarted_under_load_costs_at_most_the_requests_in_flight() {
    let mut a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let config = format!(
        "[upstreams.api]\nservers = [\"{}\", \"{}\"]\nhealth_interval = \"200ms\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\n",
        a.addr, b.addr
    );
    let server = Plughost::start(&config);
    let a_addr = a.addr;
    let wrk = Wrk::start(&server.url("/api/x"), 16, Duration::from_secs(5));
    let hits = a.hits.clone();
    eventually(
        Duration::from_secs(10),
        "a taking its share of the load",
        async || match hits.load(std::sync::atomic::Ordering::Relaxed) {
            n if n >= 200 => Ok(()),
            n => Err(format!("{n} hits")),
        },
    )
    .await;
    a.stop();
    // Noticed: its failed connects ejected it, or its health check marked it down.
    server
        .metric_reaches("plughost_backend_errors_total", 1.0)
        .await;
    let a = TestBackend::start_on(a_addr, "a");
    let hits_at_restart = a.hits.load(std::sync::atomic::Ordering::Relaxed);
    let run = wrk.finish();
    eprintln!(
        "backend killed and restarted: {} requests, {} failed",
        run.requests, run.non_2xx
    );
    assert_eq!(run.socket_errors, 0, "{}", run.report);
    assert!(run.non_2xx <= 16, "{} failed\n{}", run.non_2xx, run.report);
    assert!(run.requests > 1000, "{}", run.report);
    assert!(
        a.hits.load(std::sync::atomic::Ordering::Relaxed) > hits_at_restart + 100,
        "the restarted backend got no traffic back"
    );
    plughost_e2e::assert_no_leaks(&server, 10.0).await;
}

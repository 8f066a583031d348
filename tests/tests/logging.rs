//! The async logger: access lines, drops under a flood, and the flush at SIGTERM.

use std::time::Duration;

use plughost_e2e::{Plughost, eventually};

#[tokio::test]
async fn every_request_writes_an_access_line() {
    let server = Plughost::start("");
    reqwest::get(server.url("/?from=test")).await.unwrap();
    let line = eventually(Duration::from_secs(5), "an access line", async || {
        let log = server.log();
        match log.lines().find(|l| l.contains("access:")) {
            Some(l) => Ok(l.to_owned()),
            None => Err(log),
        }
    })
    .await;
    // RFC 3339 time first, then the fields.
    let time = line.split_whitespace().next().unwrap();
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "{line}"
    );
    for field in [
        "client=127.0.0.1:",
        "method=GET",
        "target=\"/?from=test\"",
        "version=HTTP/1.1",
        "status=200",
        "bytes=",
        "duration_us=",
        "cache=\"miss\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

/// `log_format = "json"`: every line is a JSON object; access lines carry their fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_a_line() {
    let server = Plughost::start("log_format = \"json\"");
    reqwest::get(server.url("/?j=1")).await.unwrap();
    let log = tokio::task::block_in_place(|| server.wait_log("\"target\":\"access\""));
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines.iter().find(|l| l["target"] == "access").unwrap();
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["method"], "GET");
    assert_eq!(access["fields"]["target"], "/?j=1");
    assert!(access["timestamp"].as_str().unwrap().ends_with('Z'));
}

/// A flood of log lines far over the buffer: requests are still served, the lines that do not
/// fit are dropped, and `plughost_log_dropped_total` is exactly the number of lines missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_drops_and_counts_lines_without_blocking_requests() {
    const FLOOD: u64 = 300_000;
    let server = Plughost::start("log_buffer = 16\nlog_stderr = true");
    let lines = || server.log().lines().count() as u64;
    // The start-up lines, once the log thread has written them (the last one says the
    // plugins are loaded).
    server.wait_log("plughost ready");
    let before = lines();
    let flood = tokio::spawn(reqwest::get(
        server.url(&format!("/_debug/log?lines={FLOOD}")),
    ));
    let mut served = 0;
    while !flood.is_finished() {
        let r = reqwest::get(server.url("/")).await.unwrap();
        assert_eq!(r.status(), 200);
        served += 1;
    }
    assert_eq!(flood.await.unwrap().unwrap().status(), 200);
    assert!(served > 0);
    // Emitted since `before`: the flood, and one access line per request (the flood's own
    // too). Each is written or counted as dropped once the log thread reaches it.
    let emitted = FLOOD + served + 1;
    let (written, dropped) = eventually(
        Duration::from_secs(10),
        "every line written or counted",
        async || {
            let dropped = server.metric("plughost_log_dropped_total").await as u64;
            let written = lines() - before;
            match written + dropped >= emitted {
                true => Ok((written, dropped)),
                false => Err(format!("{written} written, {dropped} dropped of {emitted}")),
            }
        },
    )
    .await;
    assert!(dropped > 0, "nothing dropped with a 16-line buffer");
    assert_eq!(
        written + dropped,
        emitted,
        "{written} written + {dropped} dropped != {emitted} emitted"
    );
}

/// SIGTERM while requests are processed: they complete with 200, plughost exits 0, and their
/// access lines are in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_open_requests_and_flushes_their_log_lines() {
    let mut server = Plughost::start("");
    let client = reqwest::Client::new();
    let open: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(
                client
                    .get(server.url(&format!("/_debug/sleep?ms=800&n={i}")))
                    .send(),
            )
        })
        .collect();
    server
        .metric_reaches("plughost_inflight_requests", 5.0)
        .await;
    server.signal(libc::SIGTERM);
    for r in open {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "slept 800 ms\n");
    }
    let status = tokio::task::block_in_place(|| server.wait(Duration::from_secs(10)));
    assert!(status.success(), "{status:?}");
    let log = server.log();
    for i in 0..5 {
        let target = format!("target=\"/_debug/sleep?ms=800&n={i}\"");
        assert!(
            log.lines()
                .any(|l| l.contains(&target) && l.contains("status=200")),
            "no access line for request {i} in\n{log}"
        );
    }
    assert!(log.contains("plughost stopped"));
    // New connections are refused once it is gone.
    assert!(std::net::TcpStream::connect(server.addr).is_err());
}

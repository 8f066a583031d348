//! The reverse proxy and round-robin balancer against real backends on loopback.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, assert_no_leaks, eventually, read_response};

/// A config with one pool `api` over `backends`, routed at `/api` (prefix stripped).
fn config(backends: &[&TestBackend], extra_pool: &str) -> String {
    let servers: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[upstreams.api]\nservers = [{}]\nhealth_path = \"/healthz\"\nhealth_interval = \"300ms\"\n{extra_pool}\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"api\"\nstrip_prefix = true\n",
        servers.join(", ")
    )
}

async fn get(server: &Plughost, path: &str) -> (u16, String) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn thirty_requests_over_three_servers_go_ten_each_in_order() {
    let backends: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| TestBackend::start(id))
        .collect();
    let server = Plughost::start(&config(&backends.iter().collect::<Vec<_>>(), ""));
    let mut answers = Vec::new();
    for _ in 0..30 {
        let (status, id) = get(&server, "/api/who").await;
        assert_eq!(status, 200);
        answers.push(id);
    }
    let first = answers[..3].to_vec();
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, ["a", "b", "c"], "{answers:?}");
    for (i, id) in answers.iter().enumerate() {
        assert_eq!(id, &first[i % 3], "request {i} out of order: {answers:?}");
    }
    let backends_json = server.admin_json("/backends").await;
    for b in backends_json.as_array().unwrap() {
        assert_eq!(b["requests"], 10, "{backends_json}");
        assert_eq!(b["up"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_skipped_with_retries_and_taken_back_when_restarted() {
    let a = TestBackend::start("a");
    let mut b = TestBackend::start("b");
    let c = TestBackend::start("c");
    let server = Plughost::start(&config(&[&a, &b, &c], ""));
    let b_addr = b.addr;
    b.stop();
    // Idempotent requests that hit the dead server are retried on the next one: none fails.
    for _ in 0..30 {
        let (status, id) = get(&server, "/api/who").await;
        assert_eq!(status, 200);
        assert_ne!(id, "b");
    }
    // Its failed connects ejected it (passive health), besides what the checks say.
    let m = server.metrics_text().await;
    assert!(
        m.contains(&format!(
            "plughost_backend_ejections_total{{pool=\"api\",server=\"{b_addr}\"}} 1"
        )),
        "{m}"
    );
    let _b = TestBackend::start_on(b_addr, "b");
    // Taken back by its next passing health check (every 300 ms).
    eventually(Duration::from_secs(10), "b answers again", async || {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(get(&server, "/api/who").await.1);
        }
        match seen.iter().any(|id| id == "b") {
            true => Ok(()),
            false => Err(format!("{seen:?}; log:\n{}", server.log())),
        }
    })
    .await;
}

#[tokio::test]
async fn a_post_to_a_dead_server_is_not_retried() {
    let mut dead = TestBackend::start("dead");
    let live = TestBackend::start("live");
    let server = Plughost::start(
        &config(&[&dead, &live], "health_interval = \"1h\"")
            .replace("health_interval = \"300ms\"\n", ""),
    );
    dead.stop();
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = client
            .post(server.url("/api/x"))
            .body("data")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
}

#[tokio::test]
async fn a_slow_server_gets_504_at_the_timeout_and_the_slot_returns() {
    let slow = TestBackend::start("slow");
    let server = Plughost::start(&config(&[&slow], "response_timeout = \"300ms\""));
    let started = Instant::now();
    let (status, body) = get(&server, "/api/slow?ms=3000").await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(body.contains("did not answer in time"));
    assert_no_leaks(&server, 10.0).await;
    let m = server.metrics_text().await;
    assert!(m.contains("reason=\"timeout\""), "{m}");
}

#[tokio::test]
async fn all_servers_down_is_502_naming_the_pool() {
    let mut a = TestBackend::start("a");
    let server = Plughost::start(&config(&[&a], ""));
    a.stop();
    let (status, _) = get(&server, "/api/x").await; // connect error, marks it down
    assert_eq!(status, 502);
    let (status, body) = get(&server, "/api/x").await;
    assert_eq!(status, 502);
    assert_eq!(body, "upstream pool api has no healthy server\n");
}

#[tokio::test]
async fn gateway_errors_in_a_row_eject_a_server_but_never_the_whole_pool() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    // `max_5xx`, the key's older name, still reads.
    let server = Plughost::start(
        &config(&[&a, &b], "max_5xx = 2\nhealth_interval = \"1h\"")
            .replace("health_interval = \"300ms\"\n", ""),
    );
    // The first health check runs at start-up; after it, none for an hour. (A good check
    // brings a server back, so it must not land between the 503s and the last request.)
    eventually(
        Duration::from_secs(5),
        "a first passing health check",
        async || {
            let info = server.admin_json("/backends").await;
            match info
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["last_check_ok"] == true)
            {
                true => Ok(()),
                false => Err(info.to_string()),
            }
        },
    )
    .await;
    // Four requests alternate a, b, a, b: each answers 503 twice. The first to reach
    // max_fails is ejected; the other is not (50% of two servers is one), so the pool goes on.
    for _ in 0..4 {
        assert_eq!(get(&server, "/api/status/503").await.0, 503);
    }
    let info = server.admin_json("/backends").await;
    let ejected: Vec<_> = info
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["ejected_secs"].is_null())
        .collect();
    assert_eq!(ejected.len(), 1, "{info}");
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (status, id) = get(&server, "/api/x").await;
        assert_eq!(status, 200, "{info}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "only the server left answers: {ids:?}");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_added() {
    let a = TestBackend::start("a");
    // The test client is a trusted proxy here: its X-Forwarded-For is extended.
    let server =
        Plughost::start(&("trusted_proxies = [\"127.0.0.1\"]\n".to_owned() + &config(&[&a], "")));
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(
        b"GET /api/headers HTTP/1.1\r\nHost: front.example\r\nConnection: keep-alive, x-secret\r\n\
          X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 203.0.113.9\r\n\
          X-Kept: yes\r\n\r\n",
    )
    .unwrap();
    let (status, _, body) = read_response(&mut conn).unwrap();
    assert_eq!(status, 200);
    let seen = String::from_utf8(body).unwrap();
    for gone in ["x-secret:", "keep-alive:", "te:", "\nconnection: x-secret"] {
        assert!(!seen.contains(gone), "{gone} reached the backend:\n{seen}");
    }
    for kept in [
        "x-kept: yes",
        "x-forwarded-for: 203.0.113.9, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: front.example",
        "via: 1.1 plughost",
    ] {
        assert!(seen.contains(kept), "{kept} missing:\n{seen}");
    }
}

#[tokio::test]
async fn prefix_is_stripped_or_kept_as_configured() {
    let a = TestBackend::start("a");
    let kept = format!(
        "[upstreams.api]\nservers = [\"{}\"]\n[[routes]]\nprefix = \"/status\"\nupstream = \"api\"\n",
        a.addr
    );
    let server = Plughost::start(&kept);
    // /status/418 reaches the backend whole, and it answers with that status.
    assert_eq!(get(&server, "/status/418").await.0, 418);
    let stripped = Plughost::start(&config(&[&a], ""));
    assert_eq!(get(&stripped, "/api/status/418").await.0, 418);
}

#[tokio::test]
async fn proxied_responses_go_through_the_cache() {
    let a = TestBackend::start("a");
    let server = Plughost::start(&config(&[&a], ""));
    let first = reqwest::get(server.url("/api/cached")).await.unwrap();
    assert_eq!(first.headers()["x-cache"], "miss");
    let hits_before = a.hits.load(std::sync::atomic::Ordering::Relaxed);
    let second = reqwest::get(server.url("/api/cached")).await.unwrap();
    assert_eq!(second.headers()["x-cache"], "hit");
    assert_eq!(second.text().await.unwrap(), "a");
    // Health checks may reach the backend meanwhile, but no request for /cached did.
    let extra = a.hits.load(std::sync::atomic::Ordering::Relaxed) - hits_before;
    assert!(extra <= 1, "{extra} more hits at the backend");
}

/// 10 MiB up and 10 MiB down stream through: plughost's peak RSS stays well under 10 MiB above
/// what it was before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_up_and_down_stream_without_buffering() {
    const MIB: usize = 1 << 20;
    let a = TestBackend::start("a");
    let server = Plughost::start(&config(&[&a], ""));
    assert_eq!(get(&server, "/api/x").await.0, 200); // warm up the connection pool
    let (idle, _) = server.rss_kib();

    let mut down = reqwest::get(server.url("/api/big?mb=10")).await.unwrap();
    assert_eq!(down.headers()["content-length"], (10 * MIB).to_string());
    let mut received = 0;
    while let Some(chunk) = down.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, 10 * MIB);

    let addr = server.addr;
    let uploaded = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            conn,
            "POST /api/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            10 * MIB
        )
        .unwrap();
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..160 {
            conn.write_all(&chunk).unwrap();
        }
        let (status, _, body) = read_response(&mut conn).unwrap();
        (status, String::from_utf8(body).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(uploaded, (200, (10 * MIB).to_string()));

    let (_, peak) = server.rss_kib();
    let growth_mib = peak.saturating_sub(idle) as f64 / 1024.0;
    assert!(
        growth_mib < 5.0,
        "peak RSS grew {growth_mib:.1} MiB over idle while streaming 10 MiB"
    );
}

#[tokio::test]
async fn an_untrusted_clients_forwarding_headers_are_replaced() {
    let a = TestBackend::start("a");
    let server = Plughost::start(&("forwarded_header = true\n".to_owned() + &config(&[&a], "")));
    let r = reqwest::Client::new()
        .get(server.url("/api/headers"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let seen = r.text().await.unwrap();
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(!seen.contains("6.6.6.6"), "{seen}");
    assert!(
        seen.contains("forwarded: for=127.0.0.1;proto=http;host="),
        "{seen}"
    );
}

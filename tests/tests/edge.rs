//! The edge under raw-socket abuse, with the connection limits scaled down: silent sockets,
//! idle HTTP/2 connections and idle keep-alive connections cannot lock clients out; and
//! passive health that clients cannot use to switch backends off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{
    Plughost, eventually, labelled_metric, metric_value, poll_until, read_response,
};

/// An HTTP/1.1 GET on a new connection, answered within 5 s, or `None`.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
    read_response(&mut s).ok().map(|(status, _, _)| status)
}

/// A connection that got a response to `GET /` and is kept open, idle.
fn served_and_kept(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 200);
    s
}

/// Whether the server closes `s` within `within` (a read returns end of file or a reset).
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn closed_metric(text: &str, reason: &str) -> f64 {
    labelled_metric(
        text,
        "plughost_connections_closed_total",
        &format!("reason=\"{reason}\""),
    )
}

/// A new client is served at once though `sockets` fill every slot, and the first
/// `closed` of them are closed by the server.
fn clients_get_in_and_idle_sockets_close(
    server: &Plughost,
    sockets: &mut [TcpStream],
    closed: usize,
) {
    assert!(
        served_within(server.addr, Duration::from_secs(4)),
        "a real client stayed locked out"
    );
    for s in sockets.iter_mut().take(closed) {
        assert!(closed_by_server(s, Duration::from_secs(4)));
    }
}

/// Polls `get` until it answers 200, for at most `within`.
fn served_within(addr: SocketAddr, within: Duration) -> bool {
    poll_until(within, || match get(addr, "/") {
        Some(200) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_lock_clients_out() {
    let server = Plughost::start("max_connections = 20\nheader_read_timeout = \"1s\"\n");
    // Twice the limit of sockets that never send a byte.
    let mut silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Each silent socket is closed by the server within header_read_timeout of its accept
    // (or earlier, to make room).
    clients_get_in_and_idle_sockets_close(&server, &mut silent, 20);
    let m = server.metrics_text().await;
    assert!(closed_metric(&m, "no_request") + closed_metric(&m, "reclaimed") >= 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_cannot_lock_clients_out() {
    let server = Plughost::start("max_connections = 20\nheader_read_timeout = \"1s\"\n");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // Empty SETTINGS, then (for half of them) a HEADERS frame that promises more and stops.
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let headers_cut = [0u8, 0, 16, 1, 4, 0, 0, 0, 1, 0x82];
    let mut idle: Vec<TcpStream> = (0..30)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(preface).unwrap();
            s.write_all(&settings).unwrap();
            if i % 2 == 0 {
                s.write_all(&headers_cut).unwrap();
            }
            s
        })
        .collect();
    clients_get_in_and_idle_sockets_close(&server, &mut idle, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_make_room_busy_ones_do_not() {
    let server = Plughost::start(
        "max_connections = 10\nheader_read_timeout = \"30s\"\nkeepalive_timeout = \"60s\"\n",
    );
    // One connection busy for a while, nine idle after a request each.
    let busy = {
        let addr = server.addr;
        std::thread::spawn(move || get(addr, "/_debug/sleep?ms=1500"))
    };
    server
        .metric_reaches("plughost_inflight_requests", 1.0)
        .await;
    let mut idle: Vec<TcpStream> = (0..9).map(|_| served_and_kept(server.addr)).collect();
    // New clients that stay connected get in, each taking the slot of the longest idle one.
    let newcomers: Vec<TcpStream> = (0..5).map(|_| served_and_kept(server.addr)).collect();
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(2)));
    assert_eq!(
        busy.join().unwrap(),
        Some(200),
        "a busy connection was closed"
    );
    let m = server.metrics_text().await;
    assert!(closed_metric(&m, "reclaimed") >= 5.0, "{m}");
    drop(newcomers);
}

/// Also when the first request comes after longer than the keep-alive limit (but within the
/// longer first-request one): the limit that applies changes between two sweeps.
#[test]
fn keep_alive_connections_close_after_keepalive_timeout() {
    let server = Plughost::start("keepalive_timeout = \"300ms\"\n");
    for first_request_after in [Duration::ZERO, Duration::from_millis(700)] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::sleep(first_request_after);
        write!(s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).unwrap().0, 200);
        let started = Instant::now();
        assert!(closed_by_server(&mut s, Duration::from_secs(3)));
        let idle = started.elapsed();
        assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
        assert!(idle < Duration::from_secs(2), "closed after {idle:?}");
    }
}

fn pool(servers: &[&TestBackend], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[upstreams.api]\nservers = [{}]\nhealth_interval = \"1h\"\n{extra}\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\nstrip_prefix = true\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_switch_backends_off_with_the_statuses_they_ask_for() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let server = Plughost::start(&pool(&[&a, &b], "max_fails = 2"));
    let client = reqwest::Client::new();
    for status in [501, 500, 404, 501, 500, 501, 500, 505] {
        for _ in 0..4 {
            let r = client
                .get(server.url(&format!("/api/status/{status}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status);
        }
    }
    for _ in 0..20 {
        let r = client.get(server.url("/api/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = server.metrics_text().await;
    assert_eq!(metric_value(&m, "plughost_backend_ejections_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_is_ejected_for_a_while_then_gets_traffic_again() {
    let (a, mut b) = (TestBackend::start("a"), TestBackend::start("b"));
    let b_addr = b.addr;
    let server = Plughost::start(&pool(&[&a, &b], "max_fails = 2\neject_time = \"1s\""));
    b.stop();
    let client = reqwest::Client::new();
    // Connect failures are retried on the other server: nobody sees them.
    for _ in 0..20 {
        let r = client.get(server.url("/api/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "a");
    }
    let m = server.metrics_text().await;
    assert!(metric_value(&m, "plughost_backend_ejections_total") >= 1.0);
    let b = TestBackend::start_on(b_addr, "b");
    // The ejection ends by itself: b answers again within a few seconds.
    eventually(Duration::from_secs(5), "b answers again", async || {
        let r = client.get(server.url("/api/x")).send().await.unwrap();
        match r.text().await.unwrap() {
            b if b == "b" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    drop(b);
}

//! Hostile and malformed requests: each gets a clean status or a closed connection, and none
//! leaks a processing slot or stops the server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use plughost_e2e::{Plughost, assert_no_leaks, labelled_metric, raw, read_response, status_of};

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn oversize_head_and_too_many_headers_get_431() {
    let server = Plughost::start("max_header_bytes = 8192\nmax_headers = 20");
    let long = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(status_of(&raw(server.addr, long.as_bytes(), T)), 431);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    assert_eq!(status_of(&raw(server.addr, many.as_bytes(), T)), 431);
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_chunked() {
    let server = Plughost::start("max_body_bytes = 1000");
    let declared = "POST /_debug/body HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw(server.addr, declared.as_bytes(), T)), 413);
    let chunk = "a".repeat(600);
    let chunked = format!(
        "POST /_debug/body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    assert_eq!(status_of(&raw(server.addr, chunked.as_bytes(), T)), 413);
    let fits = format!(
        "POST /_debug/body HTTP/1.1\r\nHost: t\r\nContent-Length: 600\r\nConnection: close\r\n\r\n{chunk}"
    );
    let resp = raw(server.addr, fits.as_bytes(), T);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.ends_with("600 bytes\n"));
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test]
async fn malformed_requests_get_400_or_a_closed_connection() {
    let server = Plughost::start("");
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: \x00\r\n\r\n",
    ] {
        let resp = raw(server.addr, bad, T);
        let bad = String::from_utf8_lossy(bad);
        assert_eq!(status_of(&resp), 400, "{bad:?} -> {resp:?}");
    }
    // A TLS ClientHello on the cleartext port is not HTTP at all: a 400 or a clean close.
    let tls = raw(
        server.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        T,
    );
    assert!(tls.is_empty() || status_of(&tls) == 400, "{tls:?}");
    assert_no_leaks(&server, 10.0).await;
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
}

/// How long the server keeps a connection open to a client that sends a request head a
/// byte at a time, after `before` (bytes of complete requests it answers first).
fn drip_head(addr: std::net::SocketAddr, before: &[u8]) -> Duration {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 512];
    if !before.is_empty() {
        s.write_all(before).unwrap();
        assert_eq!(read_response(&mut s).unwrap().0, 200);
    }
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .unwrap();
    // Keep dripping bytes; stop when the server closes the connection.
    while started.elapsed() < Duration::from_secs(10) {
        if s.write_all(b"a").is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => break, // a 408 or similar, then close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    started.elapsed()
}

/// A client that sends its head a byte at a time never finishes it: the connection is closed
/// at `header_read_timeout`, and requests from others are served meanwhile. Also when the
/// slow head follows a request served on the same connection, with a keep-alive limit far
/// longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_at_the_header_read_timeout() {
    let server = Plughost::start("header_read_timeout = \"1s\"\nkeepalive_timeout = \"60s\"\n");
    let addr = server.addr;
    for before in [&b""[..], b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"] {
        let slow = tokio::task::spawn_blocking(move || drip_head(addr, before));
        for _ in 0..5 {
            assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
        }
        let held = slow.await.unwrap();
        assert!(
            held < Duration::from_secs(3),
            "slow client held on for {held:?} (after {} bytes)",
            before.len()
        );
    }
    let m = server.metrics_text().await;
    assert_eq!(
        labelled_metric(
            &m,
            "plughost_connections_closed_total",
            "reason=\"slow_head\""
        ),
        1.0,
        "{m}"
    );
    assert_no_leaks(&server, 10.0).await;
}

//! The public listener: default route, HTTP/1.1 keep-alive, pipelining, `100 Continue` and
//! HTTP/1.0, HTTP/2 cleartext, many idle
//! connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use plughost_e2e::{Plughost, body_then_request, eventually, labelled_metric, read_response};

#[tokio::test]
async fn default_route_names_server_and_version() {
    let server = Plughost::start("");
    let resp = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(
        body.starts_with(&format!("plughost {}", env!("CARGO_PKG_VERSION"))),
        "{body}"
    );
    assert!(body.contains("plugins loaded: none"), "{body}");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let server = Plughost::start("");
    let resp = reqwest::get(server.url("/nothing/here")).await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Plughost::start("");
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (status, head, body) = read_response(&mut conn).unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(body.starts_with(b"plughost "));
    }
}

/// A body sent to what does not read bodies (a 404, the default page's 405, a method plughost
/// does not implement) is read and dropped before the answer, as nginx does, so the
/// connection takes the next request: left unread, it was closed after the answer, and the
/// request pipelined behind the body was lost.
#[test]
fn a_body_nobody_reads_does_not_cost_the_connection() {
    let server = Plughost::start("");
    for (method, path, status) in [
        ("POST", "/nothing", 404),
        ("PUT", "/", 405),
        ("BREW", "/", 501),
    ] {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
        let (first, second) = body_then_request(
            server.addr,
            &head,
            256 * 1024,
            "GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let (got, head, _) = first.unwrap();
        assert_eq!(got, status, "{method} {path}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let (got, head, body) = second.unwrap();
        assert_eq!(got, 200, "after {method} {path}: {head}");
        assert!(body.starts_with(b"plughost "));
    }
}

/// Each connection goes to the worker thread with the fewest open and is served there: with
/// two workers, four kept-alive connections are two on each, and every one is answered on
/// every request, HTTP/1.1 and HTTP/2 alike; with one worker, all are on it.
#[tokio::test]
async fn connections_are_spread_over_the_workers_and_served_there() {
    for (workers, expected) in [(2, [2.0, 2.0]), (1, [4.0, 0.0])] {
        let server = Plughost::start(&format!("workers = {workers}"));
        let mut conns: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut conn = TcpStream::connect(server.addr).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                assert_eq!(read_response(&mut conn).unwrap().0, 200);
                conn
            })
            .collect();
        // The fourth is HTTP/2, kept open by its client.
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        assert_eq!(h2.get(server.url("/")).send().await.unwrap().status(), 200);
        let text = server.metrics_text().await;
        let on = |w: usize| {
            labelled_metric(
                &text,
                "plughost_worker_connections",
                &format!("worker=\"{w}\""),
            )
        };
        assert_eq!([on(1), on(2)], expected, "workers = {workers}:\n{text}");
        // Every connection still answers, on whichever worker holds it.
        for conn in &mut conns {
            conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(conn).unwrap().0, 200);
        }
        assert_eq!(h2.get(server.url("/")).send().await.unwrap().status(), 200);
        drop((conns, h2));
        // The admin API's own connection is not on a worker.
        eventually(
            Duration::from_secs(5),
            "the closed connections leave their workers",
            async || {
                let open = plughost_e2e::metric_value(
                    &server.metrics_text().await,
                    "plughost_worker_connections",
                );
                if open == 0.0 {
                    Ok(())
                } else {
                    Err(format!("{open} open"))
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let server = Plughost::start("");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

/// Connections are not limited by the 10 processing slots: 10,000 idle keep-alive connections
/// stay open and each can still be used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_ten_thousand_idle_keep_alive_connections() {
    const N: usize = 10_000;
    rlimit::increase_nofile_limit(2 * N as u64 + 1000).unwrap();
    let server = Plughost::start("");
    let addr = server.addr;
    let mut conns = tokio::task::spawn_blocking(move || {
        let mut conns = Vec::with_capacity(N);
        for _ in 0..N {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            conns.push(c);
        }
        for c in &mut conns {
            assert_eq!(read_response(c).unwrap().0, 200);
        }
        conns
    })
    .await
    .unwrap();
    assert_eq!(server.metric("plughost_connections").await, N as f64);
    for c in [conns.first_mut().unwrap()] {
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(c).unwrap().0, 200);
    }
    let last = conns.last_mut().unwrap();
    last.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(last).unwrap().0, 200);
}

/// The admin API off loopback needs a bearer token: without one plughost does not start, with
/// one every admin request must carry it.
#[tokio::test]
async fn admin_off_loopback_requires_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = plughost_e2e::run(
        dir.path(),
        &["--port", "0", "--admin", "0.0.0.0:0", "--log-file", "x.log"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set admin_token"));

    let server = Plughost::start("admin = \"0.0.0.0:0\"\nadmin_token = \"s3cret\"");
    let url = format!("http://127.0.0.1:{}/healthz", server.admin.unwrap().port());
    let client = reqwest::Client::new();
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// `Expect: 100-continue` is answered with `100 Continue` once the handler wants the body,
/// and the body then arrives and is read; a body declared too large gets its 413 without the
/// `100`, and the connection closes rather than read it.
#[test]
fn expect_continue_asks_for_the_body_only_when_it_is_wanted() {
    let server = Plughost::start("max_body_bytes = 1000");
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(
        b"POST /_debug/body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    conn.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(b"hello").unwrap();
    let (status, head, body) = read_response(&mut conn).unwrap();
    assert_eq!((status, &body[..]), (200, &b"5 bytes\n"[..]), "{head}");

    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(
        b"POST /_debug/body HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (status, head, _) = read_response(&mut conn).unwrap();
    assert_eq!(status, 413, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "{rest:?}");
}

/// Requests pipelined in one write, with chunked and sized bodies between them, are each
/// answered once and in order; a HEAD's answer has the GET's length and no body.
#[test]
fn pipelined_requests_with_bodies_are_answered_in_order() {
    let server = Plughost::start("");
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(
        b"POST /_debug/body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          POST /_debug/body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n\
          GET / HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (status, head, body) = read_response(&mut conn).unwrap();
        got.push((status, String::from_utf8_lossy(&body).into_owned(), head));
    }
    assert_eq!(
        (got[0].0, got[0].1.as_str()),
        (200, "3 bytes\n"),
        "{}",
        got[0].2
    );
    assert_eq!(
        (got[1].0, got[1].1.as_str()),
        (200, "5 bytes\n"),
        "{}",
        got[1].2
    );
    assert_eq!(got[2].0, 404, "{}", got[2].2);
    assert!(got[3].1.starts_with("plughost "), "{}", got[3].2);
    let length = got[3].1.len();
    // The HEAD's answer: a head alone.
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(
        rest.ends_with("\r\n\r\n"),
        "a body after the HEAD's head: {rest}"
    );
    assert!(
        rest.contains(&format!("content-length: {length}\r\n")),
        "{rest}"
    );
}

/// HTTP/1.0: the connection is kept only when the client asks, and the answer says so.
#[test]
fn http_1_0_keeps_the_connection_only_when_asked() {
    let server = Plughost::start("");
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        conn.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (status, head, body) = read_response(&mut conn).unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: keep-alive"),
            "{head}"
        );
        assert!(body.starts_with(b"plughost "));
    }
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (status, head, _) = read_response(&mut conn).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0);
}

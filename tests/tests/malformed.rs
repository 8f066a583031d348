//! A corpus of malformed and hostile raw HTTP requests sent over TCP: each gets the right
//! status or a clean close, request smuggling never reaches a real backend as two requests, and
//! afterwards nothing is in flight, no permit is held and memory is back near idle.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use plughost_e2e::backend::TestBackend;
use plughost_e2e::{Plughost, assert_no_leaks};

/// What one connection got back: the status of each response, in order, and whether the server
/// closed the connection (rather than keeping it alive).
#[derive(Debug, PartialEq)]
struct Exchange {
    statuses: Vec<u16>,
    closed: bool,
}

/// Sends `bytes` on a new connection (then `end` decides whether our side closes its writing
/// half, as a client that gave up would) and reads until the server closes or stays quiet for
/// 500 ms.
fn exchange(addr: SocketAddr, bytes: &[u8], end: bool) -> Exchange {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let _ = s.write_all(bytes);
    if end {
        let _ = s.shutdown(Shutdown::Write);
    }
    let (mut out, mut buf) = (Vec::new(), [0u8; 16384]);
    let mut quiet_since = Instant::now();
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                quiet_since = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
        if quiet_since.elapsed() > Duration::from_millis(500) {
            break false;
        }
    };
    let text = String::from_utf8_lossy(&out);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    Exchange { statuses, closed }
}

fn req(head: &str) -> Vec<u8> {
    head.replace('\n', "\r\n").into_bytes()
}

/// (name, bytes, statuses expected in order, whether the server must close the connection).
/// Where hyper answers a version it cannot parse with 400 rather than 505, that is what is
/// expected (see RELIABILITY.md).
fn corpus() -> Vec<(&'static str, Vec<u8>, Vec<u16>, bool)> {
    let post = |headers: &str, body: &str| {
        req(&format!("POST /_debug/body HTTP/1.1\nHost: t\n{headers}\n"))
            .into_iter()
            .chain(body.bytes())
            .collect::<Vec<u8>>()
    };
    let many: String = (0..200).map(|i| format!("X-{i}: v\n")).collect();
    vec![
        // Request lines.
        ("garbage", req("GARBAGE\n\n"), vec![400], true),
        ("no target", req("GET\n\n"), vec![400], true),
        ("HTTP/0.9 line", req("GET /\n\n"), vec![400], true),
        (
            "HTTP/3.0",
            req("GET / HTTP/3.0\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "HTTP/2.0 as text",
            req("GET / HTTP/2.0\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "HTTP/1.2",
            req("GET / HTTP/1.2\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "unknown protocol",
            req("GET / FOO/1.1\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "double space",
            req("GET  / HTTP/1.1\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "bad method byte",
            req("G(T / HTTP/1.1\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "space in target",
            req("GET /a b HTTP/1.1\nHost: t\n\n"),
            vec![400],
            true,
        ),
        (
            "control byte in target",
            b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            vec![400],
            true,
        ),
        (
            "NUL in target",
            b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            vec![400],
            true,
        ),
        (
            "NUL before the line",
            b"\x00GET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            vec![400],
            true,
        ),
        (
            "1 KiB method",
            req(&format!("{} / HTTP/1.1\nHost: t\n\n", "A".repeat(1024))),
            vec![501],
            false,
        ),
        (
            "CONNECT",
            req("CONNECT t:443 HTTP/1.1\nHost: t:443\n\n"),
            vec![501],
            false,
        ),
        (
            "authority-form GET",
            req("GET t:80 HTTP/1.1\nHost: t\n\n"),
            vec![400],
            false,
        ),
        (
            "asterisk GET",
            req("GET * HTTP/1.1\nHost: t\n\n"),
            vec![400],
            false,
        ),
        (
            "OPTIONS *",
            req("OPTIONS * HTTP/1.1\nHost: t\n\n"),
            vec![204],
            false,
        ),
        (
            "TRACE on the default page",
            req("TRACE / HTTP/1.1\nHost: t\n\n"),
            vec![405],
            false,
        ),
        (
            "absolute-form",
            req("GET http://t/ HTTP/1.1\nHost: t\n\n"),
            vec![200],
            false,
        ),
        (
            "20 KiB target",
            req(&format!(
                "GET /{} HTTP/1.1\nHost: t\n\n",
                "a".repeat(20_000)
            )),
            vec![431],
            true,
        ),
        (
            "bare LF line ends",
            b"GET / HTTP/1.1\nHost: t\n\n".to_vec(),
            vec![200],
            false,
        ),
        // Headers.
        (
            "no Host in HTTP/1.1",
            req("GET / HTTP/1.1\n\n"),
            vec![400],
            false,
        ),
        (
            "two Hosts",
            req("GET / HTTP/1.1\nHost: a\nHost: b\n\n"),
            vec![400],
            false,
        ),
        (
            "space in header name",
            req("GET / HTTP/1.1\nHost: t\nBad Header: x\n\n"),
            vec![400],
            true,
        ),
        (
            "space before colon",
            req("GET / HTTP/1.1\nHost : t\n\n"),
            vec![400],
            true,
        ),
        (
            "no colon",
            req("GET / HTTP/1.1\nHost: t\nNoColon\n\n"),
            vec![400],
            true,
        ),
        (
            "empty header name",
            req("GET / HTTP/1.1\nHost: t\n: x\n\n"),
            vec![400],
            true,
        ),
        (
            "NUL in header value",
            b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n".to_vec(),
            vec![400],
            true,
        ),
        (
            "bare CR in header value",
            b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n".to_vec(),
            vec![400],
            true,
        ),
        (
            "obsolete line folding",
            req("GET / HTTP/1.1\nHost: t\nX: a\n  b\n\n"),
            vec![400],
            true,
        ),
        (
            "20 KiB header line",
            req(&format!(
                "GET / HTTP/1.1\nHost: t\nX: {}\n\n",
                "a".repeat(20_000)
            )),
            vec![431],
            true,
        ),
        (
            "200 headers",
            req(&format!("GET / HTTP/1.1\nHost: t\n{many}\n")),
            vec![431],
            true,
        ),
        // Framing.
        (
            "two different Content-Lengths",
            post("Content-Length: 5\nContent-Length: 6\n", "hello!"),
            vec![400],
            true,
        ),
        (
            "Content-Length list",
            post("Content-Length: 5, 6\n", "hello!"),
            vec![400],
            true,
        ),
        (
            "negative Content-Length",
            post("Content-Length: -1\n", ""),
            vec![400],
            true,
        ),
        (
            "Content-Length with sign",
            post("Content-Length: +5\n", "hello"),
            vec![400],
            true,
        ),
        (
            "hex Content-Length",
            post("Content-Length: 0x5\n", "hello"),
            vec![400],
            true,
        ),
        (
            "Content-Length past u64",
            post("Content-Length: 99999999999999999999999\n", ""),
            vec![400],
            true,
        ),
        (
            "equal duplicate Content-Lengths",
            post("Content-Length: 5\nContent-Length: 5\n", "hello"),
            vec![200],
            false,
        ),
        (
            "Content-Length over the limit, Expect",
            post("Content-Length: 999999999\nExpect: 100-continue\n", ""),
            vec![413],
            true,
        ),
        (
            "Content-Length and Transfer-Encoding",
            post(
                "Content-Length: 4\nTransfer-Encoding: chunked\n",
                "0\r\n\r\n",
            ),
            vec![200],
            true,
        ),
        (
            "Transfer-Encoding gzip only",
            post("Transfer-Encoding: gzip\n", ""),
            vec![400],
            true,
        ),
        (
            "chunked not last",
            post("Transfer-Encoding: chunked, gzip\n", ""),
            vec![400],
            true,
        ),
        (
            "xchunked",
            post("Transfer-Encoding: xchunked\n", "0\r\n\r\n"),
            vec![400],
            true,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            req("POST /_debug/body HTTP/1.0\nTransfer-Encoding: chunked\n\n0\n\n"),
            vec![400],
            true,
        ),
        (
            "bad chunk size",
            post("Transfer-Encoding: chunked\n", "zz\r\nabc\r\n0\r\n\r\n"),
            vec![400],
            true,
        ),
        (
            "chunk size past u64",
            post(
                "Transfer-Encoding: chunked\n",
                "ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            ),
            vec![400],
            true,
        ),
        (
            "chunk without its CRLF",
            post("Transfer-Encoding: chunked\n", "3\r\nabcXX0\r\n\r\n"),
            vec![400],
            true,
        ),
        // HTTP/2 preface garbage: a GOAWAY frame (no HTTP/1 status) or 400, then close.
        (
            "h2 preface then garbage",
            [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[0xff; 64]].concat(),
            vec![],
            true,
        ),
        (
            "broken h2 preface",
            req("PRI * HTTP/2.0\n\nXX\n\n"),
            vec![400],
            true,
        ),
        // Pipelining.
        (
            "good then good",
            req("GET / HTTP/1.1\nHost: t\n\nGET / HTTP/1.1\nHost: t\n\n"),
            vec![200, 200],
            false,
        ),
        (
            "good then bad",
            req("GET / HTTP/1.1\nHost: t\n\nBAD LINE\n\n"),
            vec![200, 400],
            true,
        ),
        (
            "bad then good",
            req("BAD LINE\n\nGET / HTTP/1.1\nHost: t\n\n"),
            vec![400],
            true,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_malformed_request_gets_its_status_or_a_clean_close_and_nothing_leaks() {
    let server = Plughost::start("max_body_bytes = 1000000");
    // Warm up, then take the idle memory as the baseline.
    for _ in 0..20 {
        reqwest::get(server.url("/")).await.unwrap();
    }
    let (idle, _) = server.rss_kib();
    let cases = corpus();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let addr = server.addr;
    let results = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let runs: Vec<_> = cases
                .iter()
                .map(|(name, bytes, statuses, closes)| {
                    scope.spawn(move || {
                        let got = exchange(addr, bytes, false);
                        (*name, got, statuses.clone(), *closes)
                    })
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap())
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap();
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, got, statuses, closes)| got.statuses != *statuses || (*closes && !got.closed))
        .map(|(name, got, statuses, closes)| {
            format!("{name}: expected {statuses:?} (close: {closes}), got {got:?}")
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Bodies cut short by a client that gives up: no response is owed; nothing may hang.
    for cut in [
        req("POST /_debug/body HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n10\nabc"),
        req("POST /_debug/body HTTP/1.1\nHost: t\nContent-Length: 100\n\nshort"),
        req("GET / HTTP/1.1\nHost: t\nX-Half: "),
    ] {
        let got = exchange(addr, &cut, true);
        assert!(
            got.closed && got.statuses.iter().all(|s| *s == 400),
            "{got:?}"
        );
    }

    assert_no_leaks(&server, 10.0).await;
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
    let (after, _) = server.rss_kib();
    eprintln!("RSS idle {idle} KiB, after the corpus {after} KiB");
    assert!(
        after < idle + 8 * 1024,
        "RSS went from {idle} KiB at idle to {after} KiB after the corpus"
    );
}

/// Requests that would be two at a backend if the proxy and the backend framed them apart.
#[tokio::test(flavor = "multi_thread")]
async fn request_smuggling_never_reaches_a_backend_as_two_requests() {
    let backend = TestBackend::start("b");
    let config = format!(
        "[upstreams.api]\nservers = [\"{}\"]\nhealth_path = \"/healthz\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\n",
        backend.addr
    );
    let server = Plughost::start(&config);
    let smuggled = "GET /api/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let chunked_then_smuggled = format!("0\r\n\r\n{smuggled}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL.TE",
            format!("POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}", chunked_then_smuggled.len()).into_bytes(),
        ),
        (
            "TE.CL",
            format!("POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{chunked_then_smuggled}").into_bytes(),
        ),
        (
            "TE with a space before the colon",
            format!("POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n{chunked_then_smuggled}").into_bytes(),
        ),
        (
            "obfuscated TE",
            format!("POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n{chunked_then_smuggled}").into_bytes(),
        ),
        (
            "two Content-Lengths",
            format!("POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()).into_bytes(),
        ),
        (
            "line folding hiding TE",
            format!("POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}").into_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        let before = backend.seen.lock().unwrap().len();
        let got = exchange(server.addr, &bytes, false);
        assert!(got.closed, "{name}: connection left open: {got:?}");
        let seen: Vec<String> = backend.seen.lock().unwrap()[before..]
            .iter()
            .filter(|r| *r != "GET /healthz")
            .cloned()
            .collect();
        assert!(
            seen.iter().all(|r| !r.contains("smuggled")),
            "{name}: the backend saw a smuggled request: {seen:?}"
        );
        // The backend saw at most the one request the client sent, and only if plughost
        // answered it from the backend.
        let answered = got.statuses.iter().filter(|s| **s == 200).count();
        assert!(
            seen.len() <= 1 && seen.len() == answered,
            "{name}: {seen:?} for {got:?}"
        );
    }
    assert_no_leaks(&server, 10.0).await;
}

//! The reverse proxy's kept-alive connections to a backend, against a raw-socket backend that
//! counts the connections it accepts and closes them when a test says: reuse, a connection the
//! backend closes while it is idle, `Connection: close`, a response the client stops reading,
//! `103 Early Hints`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plughost_e2e::{Plughost, eventually};

/// A backend speaking HTTP/1.1 by hand, so that when it closes a connection is up to the test.
/// `/then-close` answers and closes without saying so (a keep-alive timeout that ran out just
/// then); `/closed-if-kept` closes a connection it has answered on before without answering;
/// `/conn-close` answers with `Connection: close`; `/early-hints` sends a 103 and waits for
/// the test before its 200; `/big` sends 8 MiB; `/no-content`
/// is a 204, `/chunked` sends `ok` in two chunks, a HEAD gets a head; anything else answers
/// `ok` and keeps the connection.
struct RawBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    /// The request line and `Host` of every request.
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

const BIG: usize = 8 << 20;

/// Set by the test once its client has `/early-hints`' interim response: only then does the
/// backend send the final one.
static EARLY_HINTS_SEEN: AtomicBool = AtomicBool::new(false);

impl RawBackend {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, c, s) = (accepted.clone(), closed.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                a.fetch_add(1, Ordering::SeqCst);
                let (c, s) = (c.clone(), s.clone());
                std::thread::spawn(move || {
                    serve(stream, &s);
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            closed,
            seen,
        }
    }
}

/// Writes a hostile answer's bytes.
type Hostile = fn() -> Vec<u8>;

/// Hostile answers by path, and (below) what the client gets from each.
const HOSTILE: [(&str, Hostile); 7] = [
    ("/two-lengths", || {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec()
    }),
    ("/garbage", || b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
    ("/huge-head", || {
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
            "b".repeat(70_000)
        )
        .into_bytes()
    }),
    ("/many-fields", || {
        let fields: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
        format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok").into_bytes()
    }),
    // Chunked wins over the length, which is not passed on.
    ("/chunked-and-length", || {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec()
    }),
    ("/short", || {
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok".to_vec()
    }),
    ("/bad-chunk", || {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n".to_vec()
    }),
];

/// Answers requests on one connection until the client or a script closes it.
fn serve(stream: TcpStream, seen: &Mutex<Vec<(String, String)>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut requests = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line.trim_end().to_owned();
        let mut host = String::new();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("host:") {
                host = v.trim().to_owned();
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let head = request_line.starts_with("HEAD ");
        requests += 1;
        seen.lock().unwrap().push((request_line, host));
        // Responses no HTTP/1.1 client may take as they are; each closes the connection.
        if let Some((_, hostile)) = HOSTILE.iter().find(|(p, _)| *p == path) {
            let _ = out.write_all(&hostile());
            return;
        }
        match path.as_str() {
            // A head says how long the body would be, and none follows.
            _ if head => {
                if out
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
            // Read, then the connection closed with no answer: a keep-alive timeout that ran
            // out as the request arrived.
            "/closed-if-kept" if requests > 1 => return,
            "/no-content" => {
                if out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                    return;
                }
            }
            "/chunked" => {
                let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n";
                if out.write_all(chunked).is_err() {
                    return;
                }
            }
            // Answers before reading the body, then reads it and closes.
            "/early" => {
                let _ = out.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!",
                );
                let _ = std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink());
                return;
            }
            "/then-close" => {
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                return;
            }
            "/conn-close" => {
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                return;
            }
            "/early-hints" => {
                let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\
                              X-Internal: secret\r\n\r\n";
                if out.write_all(hints).is_err() {
                    return;
                }
                // The final response only once the test has seen the hints.
                for _ in 0..1000 {
                    if EARLY_HINTS_SEEN.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if out
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
            "/big" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b'b'; 64 * 1024];
                for _ in 0..BIG / chunk.len() {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
            _ => {
                if out
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// A backend, and plughost with one pool over it at `/b`, its start-up health check done and
/// its connection kept; a client.
async fn proxied() -> (RawBackend, Plughost, reqwest::Client) {
    let backend = RawBackend::start();
    let server = Plughost::start(&format!(
        "[upstreams.b]\nservers = [\"{}\"]\nhealth_path = \"/healthz\"\nhealth_interval = \"1h\"\n\
         [[routes]]\nprefix = \"/b\"\nupstream = \"b\"\nstrip_prefix = true\n",
        backend.addr
    ));
    wait_for(&server, |b| {
        b["last_check_ok"] == true && b["idle_connections"] == 1
    })
    .await;
    (backend, server, reqwest::Client::new())
}

/// Asserts that `path` answers 200 `ok` through plughost.
async fn assert_ok(client: &reqwest::Client, server: &Plughost, path: &str) {
    assert_eq!(
        get(client, server, path).await,
        (200, "ok".into()),
        "{path}"
    );
}

/// Asserts the backend accepted `n` connections and plughost counted no failure at it;
/// returns its `GET /backends` entry.
async fn assert_connections(
    backend: &RawBackend,
    server: &Plughost,
    n: usize,
) -> serde_json::Value {
    assert_eq!(backend.accepted.load(Ordering::SeqCst), n);
    let b = server.admin_json("/backends").await[0].clone();
    assert_eq!(b["failures"], 0, "{b}");
    b
}

/// Waits until the backend has seen `n` connections closed.
async fn wait_closed(backend: &RawBackend, n: usize) {
    eventually(
        Duration::from_secs(10),
        &format!("{n} connections closed"),
        async || match backend.closed.load(Ordering::SeqCst) {
            closed if closed >= n => Ok(()),
            closed => Err(format!("{closed} closed")),
        },
    )
    .await
}

/// Polls `GET /backends` until the only server's entry satisfies `done`.
async fn wait_for(server: &Plughost, done: impl Fn(&serde_json::Value) -> bool) {
    eventually(Duration::from_secs(10), "the backend's state", async || {
        let backends = server.admin_json("/backends").await;
        match done(&backends[0]) {
            true => Ok(()),
            false => Err(backends.to_string()),
        }
    })
    .await
}

async fn get(client: &reqwest::Client, server: &Plughost, path: &str) -> (u16, String) {
    let r = client.get(server.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn requests_in_a_row_share_one_backend_connection_in_origin_form() {
    let (backend, server, client) = proxied().await;
    for _ in 0..20 {
        assert_ok(&client, &server, "/b/keep?x=1").await;
    }
    assert_connections(&backend, &server, 1).await;
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 21, "{seen:?}");
    assert_eq!(
        seen[0],
        ("GET /healthz HTTP/1.1".into(), backend.addr.to_string())
    );
    let host = server.addr.to_string();
    assert_eq!(seen[20], ("GET /keep?x=1 HTTP/1.1".into(), host));
}

/// Where a response's body ends is what puts its connection back: a HEAD's and a 204's have
/// none, a chunked one ends with its last chunk. Each is followed on the same connection by
/// a request whose answer must be its own.
#[tokio::test]
async fn connections_are_kept_after_bodiless_and_chunked_responses() {
    let (backend, server, client) = proxied().await;
    for _ in 0..3 {
        let head = client.head(server.url("/b/keep")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "2");
        assert_eq!(
            get(&client, &server, "/b/no-content").await,
            (204, String::new())
        );
        assert_ok(&client, &server, "/b/chunked").await;
        assert_ok(&client, &server, "/b/keep").await;
    }
    assert_connections(&backend, &server, 1).await;
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_used() {
    let (backend, server, client) = proxied().await;
    for round in 1..=5 {
        assert_ok(&client, &server, "/b/then-close").await;
        // The backend has closed it: the close is on its way to plughost, not yet read.
        wait_closed(&backend, round).await;
        assert_ok(&client, &server, "/b/keep").await;
    }
    let b = assert_connections(&backend, &server, 6).await;
    assert_eq!(b["idle_connections"], 1, "{b}");
}

/// A kept-alive connection the backend closes once the request has reached it: a GET is sent
/// again on a new connection, not failed; a POST, whose body cannot be replayed, gets 502.
#[tokio::test]
async fn a_request_a_kept_alive_connection_dropped_is_sent_again_when_it_can_be() {
    let (backend, server, client) = proxied().await;
    // It goes out on the health check's connection, which closes; then on a new one.
    assert_ok(&client, &server, "/b/closed-if-kept").await;
    assert_connections(&backend, &server, 2).await;
    let post = client
        .post(server.url("/b/closed-if-kept"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    assert_ok(&client, &server, "/b/keep").await;
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connection_close_answers_are_not_kept() {
    let (backend, server, client) = proxied().await;
    for _ in 0..3 {
        assert_ok(&client, &server, "/b/conn-close").await;
    }
    assert_ok(&client, &server, "/b/keep").await;
    // The health check's connection, closed by the first answer, then one per request.
    assert_connections(&backend, &server, 4).await;
}

#[tokio::test]
async fn a_response_the_client_stopped_reading_does_not_reach_the_next_request() {
    let (backend, server, client) = proxied().await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"GET /b/big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut some = vec![0; 256 * 1024];
        conn.read_exact(&mut some).unwrap();
        assert!(some.starts_with(b"HTTP/1.1 200"));
        // Gone with most of the 8 MiB unread.
    })
    .await
    .unwrap();
    // The connection that carried it is closed, not put back with the rest of the body.
    wait_closed(&backend, 1).await;
    for _ in 0..3 {
        assert_ok(&client, &server, "/b/keep").await;
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
    wait_for(&server, |b| {
        b["idle_connections"] == 1 && b["inflight"] == 0
    })
    .await;
}

/// A backend's response plughost cannot frame is a 502 and counts against the backend; one
/// that breaks off in its body breaks off the client's; one framed twice is read as chunked and
/// its length dropped. After each, plughost keeps serving, and a good connection keeps working.
#[tokio::test]
async fn malformed_backend_responses_are_502_or_cut_short_and_plughost_keeps_serving() {
    let (backend, server, client) = proxied().await;
    for path in ["/two-lengths", "/garbage", "/huge-head", "/many-fields"] {
        assert_eq!(
            get(&client, &server, &format!("/b{path}")).await.0,
            502,
            "{path}"
        );
        assert_ok(&client, &server, "/b/keep").await;
    }
    let r = client
        .get(server.url("/b/chunked-and-length"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.unwrap(), "ok");
    // The head may or may not have gone out before the body broke off.
    for path in ["/short", "/bad-chunk"] {
        let cut = match client.get(server.url(&format!("/b{path}"))).send().await {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(cut, "{path}: a cut body reached the client as whole");
    }
    assert_ok(&client, &server, "/b/keep").await;
    let b = server.admin_json("/backends").await[0].clone();
    assert_eq!(b["failures"], 4, "{b}");
    assert!(backend.accepted.load(Ordering::SeqCst) >= 8);
}

/// A backend that answers an upload before reading it (a 413, say) is heard: the client gets
/// that answer while it is still sending, not a 502 or a wait for a body it may never finish.
#[tokio::test]
async fn an_answer_before_the_request_body_is_read_reaches_the_client() {
    let (_backend, server, client) = proxied().await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // 64 KiB of the 4 MiB it announces, and then nothing more.
        let head = format!(
            "POST /b/early HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            4 << 20
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&[b'x'; 64 * 1024]).unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.ends_with("big!"), "{answer}");
    })
    .await
    .unwrap();
    assert_ok(&client, &server, "/b/keep").await;
}

/// Reads one response head, a byte at a time.
fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A backend's `103 Early Hints` reaches an HTTP/1.1 client while the final response does not
/// exist yet (the backend sends it only once the client has the hints), with its `Link`
/// fields alone; an HTTP/1.0 client, which cannot take interim responses, gets the final
/// response only.
#[tokio::test(flavor = "multi_thread")]
async fn early_hints_reach_the_client_before_the_response_exists() {
    let (_backend, server, _) = proxied().await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"GET /b/early-hints HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let hints = read_head(&mut conn);
        assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
        assert!(
            hints.contains("link: </style.css>; rel=preload\r\n"),
            "{hints}"
        );
        assert!(
            !hints.to_ascii_lowercase().contains("x-internal"),
            "{hints}"
        );
        EARLY_HINTS_SEEN.store(true, Ordering::SeqCst);
        let head = read_head(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let mut body = [0u8; 2];
        conn.read_exact(&mut body).unwrap();
        assert_eq!(&body, b"ok");

        let mut old = TcpStream::connect(addr).unwrap();
        old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        old.write_all(b"GET /b/early-hints HTTP/1.0\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        old.read_to_end(&mut all).unwrap();
        let all = String::from_utf8_lossy(&all);
        assert!(
            all.starts_with("HTTP/1.1 200 OK\r\n") && all.ends_with("ok"),
            "{all}"
        );
        assert!(!all.contains("103"), "{all}");
    })
    .await
    .unwrap();
}

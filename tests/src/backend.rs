//! Real backends for the balancer tests: small hyper servers on loopback, each answering with
//! its own id, that a test can stop (closing every connection) and restart on the same port.
//!
//! Routes: `/healthz` → 200; `/headers` → the request headers, a `name: value` line each;
//! `/slow?ms=N` → waits N ms; `/status/N` → status N; `/big?mb=N` → N MiB streamed with a
//! Content-Length; `POST /upload` → the number of body bytes received (read as a stream);
//! `/cached` → its id with `Cache-Control: max-age=60`; `/vary` → the same, with
//! `Vary: Accept-Encoding` (the request's one in `x-encoding`); `/swr` → its id, fresh for 1 s
//! and then stale-while-revalidate for 60; `/endless` → a body that never ends;
//! `POST /introspect` → RFC 7662 token introspection (`token=good-NAME` is active with `sub`
//! NAME, any other token inactive; its `Authorization` and `traceparent` are recorded in
//! `seen`, a line each); anything else → its id, `no-store`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, Infallible>;

/// A running test backend.
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it answers with.
    pub id: String,
    /// Requests it received (health checks included).
    pub hits: Arc<AtomicU64>,
    /// `METHOD path` of every request it received, health checks included.
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBackend {
    /// Starts a backend on a free port.
    pub fn start(id: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), id)
    }

    /// Starts a backend on `addr` (a restart uses the port it had). It runs on a thread and
    /// runtime of its own, so a test can stop it from anywhere.
    pub fn start_on(addr: SocketAddr, id: &str) -> Self {
        crate::install_tls_provider();
        let listener = std::net::TcpListener::bind(addr).expect("bind test backend");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (id_owned, counter, log) = (id.to_owned(), hits.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (id, counter, log) = (id_owned.clone(), counter.clone(), log.clone());
                        tokio::spawn(async move {
                            let service =
                                hyper::service::service_fn(move |req: Request<Incoming>| {
                                    counter.fetch_add(1, Ordering::Relaxed);
                                    let mut seen = log.lock().unwrap();
                                    seen.push(format!("{} {}", req.method(), req.uri().path()));
                                    // What an introspection client authenticated with,
                                    // and the trace it said it was in.
                                    if req.uri().path() == "/introspect" {
                                        for name in ["authorization", "traceparent"] {
                                            if let Some(v) = req.headers().get(name) {
                                                seen.push(format!(
                                                    "{name}: {}",
                                                    String::from_utf8_lossy(v.as_bytes())
                                                ));
                                            }
                                        }
                                    }
                                    drop(seen);
                                    answer(id.clone(), req)
                                });
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels every connection task: their sockets close.
        });
        Self {
            addr,
            id: id.to_owned(),
            hits,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops it: the listener and every open connection close.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn text(status: u16, cache: &'static str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("cache-control", cache)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

async fn answer(id: String, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let number = |name: &str| -> u64 {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    Ok(match path.as_str() {
        "/healthz" => text(200, "no-store", "ok".into()),
        "/cached" => text(200, "max-age=60", id),
        "/vary" => {
            let encoding = req.headers().get("accept-encoding").cloned();
            let mut resp = text(200, "max-age=60", id);
            resp.headers_mut().insert(
                "vary",
                hyper::header::HeaderValue::from_static("accept-encoding"),
            );
            if let Some(encoding) = encoding {
                resp.headers_mut().insert("x-encoding", encoding);
            }
            resp
        }
        "/swr" => text(200, "max-age=1, stale-while-revalidate=60", id),
        "/headers" => {
            let lines: String = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect();
            text(200, "no-store", lines)
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            text(200, "no-store", id)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    n += data.map_or(0, |d| d.len() as u64);
                }
            }
            text(200, "no-store", format!("{n}"))
        }
        "/big" => {
            let mib = number("mb");
            let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
            let chunks =
                (0..mib * 16).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
            Response::builder()
                .header("content-length", mib << 20)
                .header("cache-control", "no-store")
                .body(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
                .unwrap()
        }
        "/endless" => {
            let chunk = Bytes::from(vec![b'e'; 64 * 1024]);
            let chunks = futures_util::stream::repeat_with(move || {
                Ok::<_, Infallible>(Frame::data(chunk.clone()))
            });
            Response::builder()
                .header("cache-control", "no-store")
                .body(StreamBody::new(chunks).boxed())
                .unwrap()
        }
        "/introspect" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let form = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
            let answer = match form.strip_prefix("token=good-") {
                Some(sub) => format!("{{\"active\":true,\"sub\":\"{sub}\"}}"),
                None => "{\"active\":false}".to_owned(),
            };
            text(200, "no-store", answer)
        }
        p if p.starts_with("/status/") => {
            let status = p["/status/".len()..].parse().unwrap_or(500);
            text(status, "no-store", id)
        }
        _ => text(200, "no-store", id),
    })
}

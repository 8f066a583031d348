//! A scripted origin for the HTTP cache tests: each path answers with the status, headers and
//! body a test set for it, and every request it receives is recorded (method, path, headers),
//! so a test asserts what reached the origin. A path with an `etag` answers a matching
//! `If-None-Match` with 304, as a real origin validates.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a path answers.
#[derive(Clone, Debug)]
pub struct Script {
    /// Status of the answer.
    pub status: u16,
    /// Its headers (a `Date` of now is added unless given).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
    /// Sent chunked, without a length.
    pub chunked: bool,
    /// Waits this long before answering.
    pub delay: Duration,
}

impl Script {
    /// A 200 with these headers and body.
    pub fn ok(headers: &[(&str, &str)], body: &str) -> Self {
        Self {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_owned(),
            chunked: false,
            delay: Duration::ZERO,
        }
    }
}

/// One request the origin received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Its headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The value of header `name`, if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Scripts = Arc<Mutex<HashMap<String, Script>>>;

/// A running origin; it stops with the test process.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    scripts: Scripts,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    /// Starts an origin on a free loopback port, on a thread and runtime of its own.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let scripts: Scripts = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s, l) = (scripts.clone(), seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (s, l) = (s.clone(), l.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            answer(req, s.clone(), l.clone())
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Self {
            addr,
            scripts,
            seen,
        }
    }

    /// Sets what `path` (path and query) answers from now on.
    pub fn script(&self, path: &str, script: Script) {
        self.scripts.lock().unwrap().insert(path.to_owned(), script);
    }

    /// The requests received for `path` so far.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target == path)
            .cloned()
            .collect()
    }
}

async fn answer(
    req: Request<Incoming>,
    scripts: Scripts,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        headers: headers.clone(),
    });
    let script = scripts.lock().unwrap().get(&target).cloned();
    let Some(script) = script else {
        let mut r = Response::new(Full::new(Bytes::from("no script\n")).boxed());
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(r);
    };
    tokio::time::sleep(script.delay).await;
    let etag = script
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    let inm = headers
        .iter()
        .find(|(k, _)| k == "if-none-match")
        .map(|(_, v)| v.clone());
    let not_modified =
        matches!((&etag, &inm), (Some(e), Some(i)) if i.split(',').any(|t| t.trim() == e));
    let mut builder = Response::builder().status(if not_modified { 304 } else { script.status });
    if !script
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("date"))
    {
        builder = builder.header(
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
    }
    for (k, v) in &script.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if not_modified {
        Full::new(Bytes::new()).boxed()
    } else if script.chunked {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = script
            .body
            .as_bytes()
            .chunks(3)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(chunks)).boxed()
    } else {
        Full::new(Bytes::from(script.body)).boxed()
    };
    Ok(builder.body(body).unwrap())
}

//! A real OTLP/HTTP trace receiver for the tracing tests: a hyper server on a free loopback
//! port that decodes each `POST /v1/traces` body (protobuf) with the `opentelemetry-proto`
//! types and keeps every span, on a thread and runtime of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// The receiver; it stops with the test.
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let kept = kept.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                let decoded = body
                                    .ok()
                                    .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
                                let status = match decoded {
                                    Some(export) => {
                                        let mut kept = kept.lock().unwrap();
                                        for r in export.resource_spans {
                                            for s in r.scope_spans {
                                                kept.extend(s.spans);
                                            }
                                        }
                                        200
                                    }
                                    None => 400,
                                };
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Self { addr, spans }
    }

    /// Its traces URL.
    pub fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// The spans of trace `trace_id` (32 hex digits) received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

/// Bytes as lower-case hex, as W3C headers write ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! One request to an upstream pool: the server is chosen round robin among the healthy ones,
//! the request sent over a kept-alive connection, and the pool's health and metrics kept.
//! Both the reverse proxy route and plugins' outbound requests to `upstream:NAME` come here.
//!
//! Idempotent requests without a body that fail to connect are tried once more on the next
//! server, or once more when a kept-alive connection closes under them; a request with a body
//! is not (its body is already being streamed and cannot be replayed).

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header;
use http::{HeaderMap, Method, Response};

use super::balance::{Backend, Pool};
use super::h1::{self, Head};
use super::pool::{SendError, Upstream};
use crate::body::{self, Body};
use crate::telemetry;

/// The upstream side of a request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every server of the pool is down.
    #[error("upstream pool {0} has no healthy server")]
    NoHealthyServer(String),
    /// The chosen server refused or did not answer the connection.
    #[error("could not connect to a server of upstream pool {0}")]
    Connect(String),
    /// The server took longer than `response_timeout` for its response head.
    #[error("a server of upstream pool {0} did not answer in time")]
    Timeout(String),
    /// The connection failed mid-request.
    #[error("a server of upstream pool {0} failed")]
    Failed(String),
    /// The request body went past its limit while streaming: the sender's fault, and nothing
    /// against the backend.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit it passed.
        limit: usize,
    },
    /// The request's target or fields cannot be written as an HTTP/1.1 head.
    #[error("the request cannot be sent upstream as HTTP/1.1")]
    Unencodable,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// Tracks one request in flight to a backend.
struct InFlight<'a>(&'a Backend);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one request to the next healthy server of `pool` and returns its response head
/// (the body still streaming), keeping the pool's health and metrics: the reverse proxy's
/// path, and the one of plugins' outbound requests to `upstream:NAME`. Idempotent requests
/// without a body that fail to connect are tried once more on another server, and once more
/// when a kept-alive connection closes under them. `rewrite` changes the fields on the way
/// (the reverse proxy's forwarding headers).
pub async fn exchange(
    pool: &Pool,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    path: &str,
    body_limit: usize,
    rewrite: Option<&dyn h1::Rewrite>,
) -> Result<Response<Upstream>, UpstreamError> {
    let retryable = is_idempotent(method) && http_body::Body::is_end_stream(&body);
    // A plugin's request may come without a `Host`; the proxy's always has the client's.
    let has_host = headers.contains_key(header::HOST);
    let mut body = Some(body);
    let mut failed_on = None;
    // A request is sent again at most once.
    let mut resends = 0;
    let mut tried = None;
    let result = loop {
        let Some(backend) = pool.pick(failed_on) else {
            break Err(UpstreamError::NoHealthyServer(pool.name.clone()));
        };
        let body = body
            .take()
            .unwrap_or_else(|| body::full(bytes::Bytes::new()));
        // Encoded for each try (the `Host` may be the server's), so the headers are never
        // cloned in case of a retry: that clone cost 850 instructions a request (callgrind 2026-11).
        let host = (!has_host).then_some(&backend.host);
        let head = Head::encode(method, path, headers, host, &body, rewrite)
            .ok_or(UpstreamError::Unencodable)?;
        tried = Some(backend.addr);
        let started = Instant::now();
        let result = send_to(pool, backend, &head, body).await;
        let fail = |reason: &'static str| pool.count_error(backend, reason);
        match result {
            Err(_) => {
                fail("timeout");
                pool.timed_out(backend);
                tracing::warn!(pool = %pool.name, server = %backend.addr, timeout = ?pool.config.response_timeout, "backend response timed out");
                break Err(UpstreamError::Timeout(pool.name.clone()));
            }
            Ok(Err(SendError::Connect(e))) => {
                fail("connect");
                pool.connect_failed(backend);
                tracing::debug!(pool = %pool.name, server = %backend.addr, error = %e, "backend connect failed");
                if retryable && resends == 0 {
                    resends += 1;
                    failed_on = Some(backend.addr);
                    telemetry::retry(backend.addr, "connect");
                    continue;
                }
                break Err(UpstreamError::Connect(pool.name.clone()));
            }
            // As nginx's `proxy_next_upstream error` does for such requests; not the
            // backend's failure.
            Ok(Err(SendError::Stale(e))) if retryable && resends == 0 => {
                tracing::debug!(pool = %pool.name, server = %backend.addr, error = %e, "kept-alive backend connection closed under a request; sending it again");
                resends += 1;
                telemetry::retry(backend.addr, "closed");
            }
            // The request body went past its limit while streaming: the sender's fault, 413,
            // and nothing against the backend.
            Ok(Err(SendError::Http(e))) if body_too_large(&e) => {
                break Err(UpstreamError::BodyTooLarge { limit: body_limit });
            }
            Ok(Err(SendError::Http(e) | SendError::Stale(e))) => {
                fail("io");
                tracing::warn!(pool = %pool.name, server = %backend.addr, error = %e, "backend request failed");
                break Err(UpstreamError::Failed(pool.name.clone()));
            }
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                pool.responded(backend, status);
                if status >= 500 {
                    fail("status_5xx");
                }
                backend
                    .metered
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                break Ok(resp);
            }
        }
    };
    if let Some(server) = tried {
        telemetry::sent_to(server, resends);
    }
    result
}

/// Sends one encoded request to `backend`, counted as sent and in flight until it is
/// answered, within the pool's response timeout.
async fn send_to(
    pool: &Pool,
    backend: &Backend,
    head: &Head,
    body: Body,
) -> Result<Result<Response<Upstream>, SendError>, tokio::time::error::Elapsed> {
    backend.inflight.fetch_add(1, Ordering::Relaxed);
    backend.requests.fetch_add(1, Ordering::Relaxed);
    backend.metered.requests.inc();
    let _inflight = InFlight(backend);
    tokio::time::timeout(
        pool.config.response_timeout,
        backend.connections.send(head, body),
    )
    .await
}

/// Whether a client error came from the request body's size limit.
fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return true;
        }
        cause = c.source();
    }
    false
}

//! The admin API, on its own listener (loopback by default): `GET /healthz`, `GET /metrics`
//! (Prometheus/OpenMetrics text), `GET /cache` (JSON stats), `DELETE /cache` (purge) and
//! `GET /plugins` (loaded plugins with their counters, JSON) and `GET /backends` (upstream
//! servers: up or down, in flight, requests, failures, last check; JSON).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tracing_appender::non_blocking::ErrorCounter;

use crate::body::{self, Body};
use crate::pipeline::Pipeline;

/// State the admin API reads.
pub struct Admin {
    pipeline: Arc<Pipeline>,
    /// The log writer's count of dropped lines; `None` when logging is not set up (tests).
    log_dropped: Option<ErrorCounter>,
    /// `Bearer TOKEN` every request must carry, when a token is configured.
    expected_authorization: Option<String>,
}

impl Admin {
    /// The admin API over a running pipeline.
    pub fn new(
        pipeline: Arc<Pipeline>,
        log_dropped: Option<ErrorCounter>,
        token: Option<&str>,
    ) -> Self {
        Self {
            pipeline,
            log_dropped,
            expected_authorization: token.map(|t| format!("Bearer {t}")),
        }
    }

    /// Whether the request carries the configured token (always, when none is configured).
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(expected) = &self.expected_authorization else {
            return true;
        };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .map_or(&[][..], |v| v.as_bytes());
        // Compare in time independent of where the first difference is.
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Answers one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        if !self.authorized(req) {
            let mut resp = respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "admin token required\n",
            );
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        let method = req.method();
        match req.uri().path() {
            "/healthz" if method == Method::GET => respond(StatusCode::OK, "text/plain", "ok\n"),
            "/metrics" if method == Method::GET => {
                let m = self.pipeline.metrics();
                m.permits_available
                    .set(self.pipeline.limiter.available() as i64);
                if let Some(d) = &self.log_dropped {
                    m.set_log_dropped(d.dropped_lines() as u64);
                }
                self.pipeline.plugins.refresh_metrics(m);
                respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    m.encode(),
                )
            }
            "/cache" if method == Method::GET => json(&self.pipeline.cache.stats()),
            "/plugins" if method == Method::GET => json(&self.pipeline.plugins.info()),
            "/backends" if method == Method::GET => json(&self.pipeline.pools.info()),
            "/cache" if method == Method::DELETE => {
                let purged = self.pipeline.cache.purge();
                tracing::info!(purged, "cache purged through the admin API");
                json(&serde_json::json!({ "purged": purged }))
            }
            "/healthz" | "/metrics" | "/plugins" | "/backends" => not_allowed("GET"),
            "/cache" => not_allowed("GET, DELETE"),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    let mut text = serde_json::to_vec_pretty(value).expect("stats always serialize");
    text.push(b'\n');
    respond(StatusCode::OK, "application/json", text)
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "method not allowed\n",
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use http_body_util::BodyExt;

    async fn call(admin: &Admin, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let resp = admin.handle(&req);
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The admin API over a default pipeline without plugins.
    fn admin(token: Option<&str>) -> Admin {
        let metrics = Arc::new(Metrics::new());
        let pipeline = Pipeline::new(&Config::default(), metrics, Arc::default());
        Admin::new(Arc::new(pipeline), None, token)
    }

    #[tokio::test]
    async fn health_metrics_and_cache_answer() {
        let admin = admin(None);
        assert_eq!(
            call(&admin, Method::GET, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        let (status, metrics) = call(&admin, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for name in [
            "plughost_inflight_requests",
            "plughost_queue_waiting",
            "plughost_cache_hits_total",
            "plughost_cache_misses_total",
            "plughost_cache_entries",
            "plughost_log_dropped_total",
            "plughost_limiter_permits_available 10",
        ] {
            assert!(metrics.contains(name), "{name} missing from\n{metrics}");
        }
        let (_, stats) = call(&admin, Method::GET, "/cache").await;
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["capacity"], 100);
        let (status, _) = call(&admin, Method::DELETE, "/cache").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&admin, Method::POST, "/cache").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn a_configured_token_is_required() {
        let admin = admin(Some("s3cret"));
        assert_eq!(
            call(&admin, Method::GET, "/healthz").await.0,
            StatusCode::UNAUTHORIZED
        );
        for (auth, status) in [
            ("Bearer s3cret", StatusCode::OK),
            ("Bearer s3creT", StatusCode::UNAUTHORIZED),
            ("Bearer s3cret2", StatusCode::UNAUTHORIZED),
        ] {
            let req = Request::get("/healthz")
                .header("authorization", auth)
                .body(())
                .unwrap();
            assert_eq!(admin.handle(&req).status(), status, "{auth}");
        }
    }
}

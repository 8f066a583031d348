//! The admin API, on its own listener (loopback by default): `GET /` (the live status page) and
//! `GET /status.json` (its data), `GET /healthz`, `GET /metrics` (Prometheus/OpenMetrics
//! text), `GET /cache` (JSON stats), `DELETE /cache` (purge), `GET /plugins` (loaded plugins
//! with their counters, JSON), `POST /plugins/reload` (hot reload, JSON report) and
//! `GET /backends` (upstream servers: up or down, in flight, requests, failures, last check).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::logging::LogDrops;
use crate::pipeline::Pipeline;
use crate::reload::Reloader;
use crate::status::{self, Status};

/// State the admin API reads.
pub struct Admin {
    pipeline: Arc<Pipeline>,
    /// `Bearer TOKEN` every request must carry, when a token is configured.
    expected_authorization: Option<String>,
    /// Parts only a running server has; `None` in unit tests of the API.
    server: Option<ServerParts>,
}

/// What the admin API reaches beyond the pipeline in a running server.
pub struct ServerParts {
    /// Lines that never reached the log file.
    pub log_dropped: LogDrops,
    /// History for the status page.
    pub status: Arc<Status>,
    /// Hot reload.
    pub reloader: Arc<Reloader>,
}

impl Admin {
    /// The admin API over a running pipeline.
    pub fn new(pipeline: Arc<Pipeline>, token: Option<&str>, server: Option<ServerParts>) -> Self {
        Self {
            pipeline,
            expected_authorization: token.map(|t| format!("Bearer {t}")),
            server,
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
        // In time independent of where the first difference is (a token guessed byte by byte).
        subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes()).into()
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        let method = req.method();
        // The page holds no data, so it loads without the token and asks for it.
        if req.uri().path() == "/" && method == Method::GET {
            return respond(StatusCode::OK, "text/html; charset=utf-8", status::PAGE);
        }
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
        match req.uri().path() {
            // Not healthy until the plugins have loaded: a load balancer sends no traffic
            // that would only get 503s.
            "/healthz" if method == Method::GET && self.pipeline.live().starting => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "starting: plugins are loading\n",
            ),
            "/healthz" if method == Method::GET => respond(StatusCode::OK, "text/plain", "ok\n"),
            "/metrics" if method == Method::GET => {
                let m = self.pipeline.metrics();
                m.permits_available
                    .set(self.pipeline.limiter.available() as i64);
                if let Some(s) = &self.server {
                    m.set_log_dropped(s.log_dropped.total());
                }
                self.pipeline.live().plugins.refresh_metrics();
                respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    m.encode(),
                )
            }
            "/cache" if method == Method::GET => json(&self.pipeline.cache.stats()),
            "/plugins" if method == Method::GET => json(&self.pipeline.live().plugins.info()),
            "/backends" if method == Method::GET => json(&self.pipeline.live().pools.info()),
            "/status.json" if method == Method::GET => match &self.server {
                Some(s) => json(&s.status.snapshot(&self.pipeline)),
                None => unavailable(),
            },
            "/plugins/reload" if method == Method::POST => match &self.server {
                Some(s) => json(&s.reloader.reload("admin").await),
                None => unavailable(),
            },
            "/cache" if method == Method::DELETE => {
                let purged = self.pipeline.cache.purge();
                tracing::info!(purged, "cache purged through the admin API");
                json(&serde_json::json!({ "purged": purged }))
            }
            "/healthz" | "/metrics" | "/plugins" | "/backends" | "/status.json" => {
                not_allowed("GET")
            }
            "/plugins/reload" => not_allowed("POST"),
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

fn unavailable() -> Response<Body> {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "not available without a running server\n",
    )
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
    use crate::pipeline::Live;
    use http_body_util::BodyExt;

    async fn call(admin: &Admin, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let resp = admin.handle(&req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The admin API over a default pipeline without plugins.
    fn admin(token: Option<&str>) -> Admin {
        let metrics = Arc::new(Metrics::new());
        let config = Config::default();
        let pipeline = Pipeline::new(&config, metrics);
        let pools = pipeline.live().pools.clone();
        pipeline.replace(Live::new(&config, Arc::default(), pools));
        Admin::new(Arc::new(pipeline), token, None)
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
        let (status, page) = call(&admin, Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.starts_with("<!doctype html>") && page.contains("status.json"));
    }

    #[tokio::test]
    async fn a_configured_token_is_required() {
        let admin = admin(Some("s3cret"));
        assert_eq!(
            call(&admin, Method::GET, "/healthz").await.0,
            StatusCode::UNAUTHORIZED
        );
        // The page itself carries no data and asks for the token.
        assert_eq!(call(&admin, Method::GET, "/").await.0, StatusCode::OK);
        for (auth, status) in [
            ("Bearer s3cret", StatusCode::OK),
            ("Bearer s3creT", StatusCode::UNAUTHORIZED),
            ("Bearer s3cret2", StatusCode::UNAUTHORIZED),
        ] {
            let req = Request::get("/healthz")
                .header("authorization", auth)
                .body(())
                .unwrap();
            assert_eq!(admin.handle(&req).await.status(), status, "{auth}");
        }
    }
}

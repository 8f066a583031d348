//! The `[tracing]` table: OpenTelemetry traces of requests, exported over OTLP/HTTP
//! (protobuf) to a collector. Absent: no trace is started, read or exported.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::{DEFAULT_TRACE_EXPORT_TIMEOUT, DEFAULT_TRACE_QUEUE};
use super::error::ConfigError;

/// Where and what to export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// Headers sent with every export (an API key, say); `plughost config` shows their names
    /// only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Share of new traces kept, 0 to 1 [default: 1]. A request carrying a `traceparent`
    /// follows its caller's choice.
    #[serde(default = "default_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the spans [default: plughost].
    #[serde(default = "default_service")]
    pub service_name: String,
    /// More resource attributes (`deployment.environment = "prod"`, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<String, String>,
    /// Ended spans waiting for export at most; past it spans are dropped and counted, and no
    /// request waits [default: 2048].
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Time one export may take [default: 5s].
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
}

fn default_ratio() -> f64 {
    1.0
}

fn default_service() -> String {
    "plughost".to_owned()
}

fn default_queue() -> usize {
    DEFAULT_TRACE_QUEUE
}

fn default_timeout() -> Duration {
    DEFAULT_TRACE_EXPORT_TIMEOUT
}

impl TracingConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let uri: Result<http::Uri, _> = self.endpoint.parse();
        let scheme_ok = uri
            .as_ref()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !scheme_ok {
            return invalid(
                "tracing.endpoint",
                format!(
                    "`{}` is not an http(s) URL like http://127.0.0.1:4318/v1/traces",
                    self.endpoint
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return invalid(
                "tracing.sample_ratio",
                format!("must be from 0 to 1, got {}", self.sample_ratio),
            );
        }
        if self.queue_size == 0 {
            return invalid("tracing.queue_size", "must be at least 1, got 0".into());
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return invalid("tracing.headers", format!("`{name}` is not a header name"));
            }
        }
        Ok(())
    }
}

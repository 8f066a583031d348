//! The `[[plugins]]` entries: which component or library, its kind, its sandbox limits, its
//! grants and its failure policy, and the checks of each entry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::{
    DEFAULT_PLUGIN_ANSWER_BYTES, DEFAULT_PLUGIN_BACKOFF, DEFAULT_PLUGIN_CONCURRENT_REQUESTS,
    DEFAULT_PLUGIN_FAILURE_THRESHOLD, DEFAULT_PLUGIN_FAILURE_WINDOW, DEFAULT_PLUGIN_HANDLER_CALLS,
    DEFAULT_PLUGIN_INIT_TIMEOUT, DEFAULT_PLUGIN_LOG_BYTES_PER_SEC, DEFAULT_PLUGIN_MEMORY_BYTES,
    DEFAULT_PLUGIN_OUTBOUND_BODY_BYTES, DEFAULT_PLUGIN_OUTBOUND_REQUESTS,
    DEFAULT_PLUGIN_RESPONSE_BODY_BYTES, DEFAULT_PLUGIN_RESPONSE_HEADER_BYTES,
    DEFAULT_PLUGIN_RESPONSE_HEADERS, DEFAULT_PLUGIN_TIMEOUT,
};
use super::error::ConfigError;
use super::keyvalue::KeyValueConfig;
use super::outbound::Destination;
use super::secrets::SecretConfig;
use super::upstreams::UpstreamConfig;

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name in logs, metrics and routes.
    pub name: String,
    /// The component, relative to `plugins_dir` unless absolute.
    pub file: PathBuf,
    /// `filter` (runs on every request), `responder` (answers its routes) or `wasi-http` (a
    /// standard `wasi:http/proxy` component answering its routes).
    #[serde(default)]
    pub kind: PluginKind,
    /// Whether plughost may serve without it. By default a plugin that cannot be loaded
    /// (file, compile, link, init) stops start-up with the reason: an auth filter that is not
    /// there must not let requests through. `true`: it is skipped with a warning, and its
    /// routes answer 503. On reload a plugin that fails keeps its running version either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Passed to `plugin-init` as a JSON object; its strings, numbers and booleans are also
    /// the component's environment variables (how a `wasi:http` component, which has no
    /// `plugin-init`, is configured).
    #[serde(default)]
    pub config: toml::Table,
    /// The request headers a filter or responder is given, by name; the others are left out
    /// of its `request.headers`. Absent: every header. Each header given is copied into the
    /// plugin's memory on every call (as Envoy's ext_authz `allowed_headers` limits what its
    /// service is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Vec<String>>,
    /// Whether a filter or responder is given the request body [default: true]. When no
    /// filter (and no native plugin) reads it, a request body streams to its route instead of
    /// being read whole first; a responder's is read and dropped before it answers.
    #[serde(default = "default_request_body")]
    pub request_body: bool,
    /// Instance reuse: `pooled` (kept across requests) or `fresh` (one instance per request).
    #[serde(default)]
    pub reuse: Reuse,
    /// With `pooled`: recycle an instance after this many requests (bounds leaks).
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Instances that may run at once [default: max_concurrency]. `1` serializes calls, so
    /// state in the instance (a rate limiter's buckets) is exact.
    #[serde(default)]
    pub instances: Option<usize>,
    /// Requests one instance of a WASI 0.3 component serves at once (its `handle` is async)
    /// [default: 16]. `1`: one at a time, as 0.2 and plughost:plugin components always are.
    #[serde(default = "default_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Times a 0.3 middleware may call its imported `handler` (the rest of the chain) for
    /// one request; past it the call gets an error-code [default: 1].
    #[serde(default = "default_handler_calls")]
    pub max_handler_calls: u32,
    /// Wall-clock time one `plugin-process` call may take, guest code and the host calls it
    /// waits in (clocks, files) together; past it the call fails as `timeout` and its
    /// instance is discarded [default: 100ms].
    #[serde(default = "default_plugin_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Wall-clock time to create an instance and run `plugin-init` [default: 1s].
    #[serde(default = "default_init_timeout", with = "humantime_serde")]
    pub init_timeout: Duration,
    /// Linear memory one instance may use, in bytes [default: 64 MiB].
    #[serde(default = "default_plugin_memory")]
    pub max_memory_bytes: usize,
    /// Most headers in a response or in a filter's edits [default: 100].
    #[serde(default = "default_response_headers")]
    pub max_response_headers: usize,
    /// Most bytes of header names and values in a response or in edits [default: 64 KiB].
    #[serde(default = "default_response_header_bytes")]
    pub max_response_header_bytes: usize,
    /// Largest response body [default: 16 MiB].
    #[serde(default = "default_response_body_bytes")]
    pub max_response_body_bytes: usize,
    /// Bytes of log lines (host.log, stdout, stderr) per second; past it lines are dropped
    /// and counted [default: 256 KiB].
    #[serde(default = "default_log_bytes_per_sec")]
    pub log_bytes_per_sec: usize,
    /// What a failed call does to its request: `fail` (500) or `continue` (as if absent).
    #[serde(default)]
    pub on_error: OnError,
    /// Directories the plugin may open. None by default.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Bytes one host call may hand the plugin back: a key-value value, batch or page of
    /// keys, counted before it is gathered; past it the call fails with an error naming this
    /// key [default: 8 MiB].
    #[serde(default = "default_answer_bytes")]
    pub max_answer_bytes: usize,
    /// `[keyvalue.NAME]` buckets the plugin may open. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyvalue: Vec<String>,
    /// `[secrets.NAME]` the plugin may read through `wasi:config`. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Where it may send HTTP requests (`wasi:http/outgoing-handler`): `http://HOST[:PORT]`,
    /// `https://HOST[:PORT]` or `upstream:NAME`. Nothing by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound: Vec<Destination>,
    /// Outbound requests in flight at once; past it a request fails at once with
    /// `connection-limit-reached` [default: 16].
    #[serde(default = "default_outbound_requests")]
    pub max_outbound_requests: usize,
    /// Largest outbound response body, and request body sent to a pool [default: 1 MiB].
    #[serde(default = "default_outbound_body_bytes")]
    pub max_outbound_body_bytes: usize,
    /// PEM file of CA certificates this plugin's `https` destinations may use besides the
    /// system's and `[outbound] ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_ca_file: Option<PathBuf>,
    /// Failures within `failure_window` that start a backoff [default: 5].
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// [default: 10s]
    #[serde(default = "default_failure_window", with = "humantime_serde")]
    pub failure_window: Duration,
    /// How long the plugin is skipped once in backoff [default: 5s].
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
}

fn default_request_body() -> bool {
    true
}
fn default_concurrent_requests() -> usize {
    DEFAULT_PLUGIN_CONCURRENT_REQUESTS
}
fn default_handler_calls() -> u32 {
    DEFAULT_PLUGIN_HANDLER_CALLS
}
fn default_plugin_timeout() -> Duration {
    DEFAULT_PLUGIN_TIMEOUT
}
fn default_init_timeout() -> Duration {
    DEFAULT_PLUGIN_INIT_TIMEOUT
}
fn default_plugin_memory() -> usize {
    DEFAULT_PLUGIN_MEMORY_BYTES
}
fn default_response_headers() -> usize {
    DEFAULT_PLUGIN_RESPONSE_HEADERS
}
fn default_response_header_bytes() -> usize {
    DEFAULT_PLUGIN_RESPONSE_HEADER_BYTES
}
fn default_response_body_bytes() -> usize {
    DEFAULT_PLUGIN_RESPONSE_BODY_BYTES
}
fn default_log_bytes_per_sec() -> usize {
    DEFAULT_PLUGIN_LOG_BYTES_PER_SEC
}
fn default_answer_bytes() -> usize {
    DEFAULT_PLUGIN_ANSWER_BYTES
}
fn default_outbound_requests() -> usize {
    DEFAULT_PLUGIN_OUTBOUND_REQUESTS
}
fn default_outbound_body_bytes() -> usize {
    DEFAULT_PLUGIN_OUTBOUND_BODY_BYTES
}
fn default_failure_threshold() -> u32 {
    DEFAULT_PLUGIN_FAILURE_THRESHOLD
}
fn default_failure_window() -> Duration {
    DEFAULT_PLUGIN_FAILURE_WINDOW
}
fn default_backoff() -> Duration {
    DEFAULT_PLUGIN_BACKOFF
}

impl PluginConfig {
    /// A filter with every default, as loaded from a bare `*.wasm` in `plugins_dir`.
    pub fn filter(name: String, file: PathBuf) -> Self {
        Self {
            name,
            file,
            kind: PluginKind::Filter,
            optional: false,
            config: toml::Table::new(),
            request_headers: None,
            request_body: true,
            reuse: Reuse::Pooled,
            max_requests: None,
            instances: None,
            max_concurrent_requests: DEFAULT_PLUGIN_CONCURRENT_REQUESTS,
            max_handler_calls: DEFAULT_PLUGIN_HANDLER_CALLS,
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            init_timeout: DEFAULT_PLUGIN_INIT_TIMEOUT,
            max_memory_bytes: DEFAULT_PLUGIN_MEMORY_BYTES,
            max_response_headers: DEFAULT_PLUGIN_RESPONSE_HEADERS,
            max_response_header_bytes: DEFAULT_PLUGIN_RESPONSE_HEADER_BYTES,
            max_response_body_bytes: DEFAULT_PLUGIN_RESPONSE_BODY_BYTES,
            log_bytes_per_sec: DEFAULT_PLUGIN_LOG_BYTES_PER_SEC,
            on_error: OnError::Fail,
            grants: Vec::new(),
            max_answer_bytes: DEFAULT_PLUGIN_ANSWER_BYTES,
            keyvalue: Vec::new(),
            secrets: Vec::new(),
            allowed_outbound: Vec::new(),
            max_outbound_requests: DEFAULT_PLUGIN_OUTBOUND_REQUESTS,
            max_outbound_body_bytes: DEFAULT_PLUGIN_OUTBOUND_BODY_BYTES,
            outbound_ca_file: None,
            failure_threshold: DEFAULT_PLUGIN_FAILURE_THRESHOLD,
            failure_window: DEFAULT_PLUGIN_FAILURE_WINDOW,
            backoff: DEFAULT_PLUGIN_BACKOFF,
        }
    }
}

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// On every request, in chain order, before the cache.
    #[default]
    Filter,
    /// On the requests of its `[[routes]]`.
    Responder,
    /// A standard `wasi:http` service (what `wasmtime serve` and Spin run: 0.2's
    /// `wasi:http/proxy` or 0.3's `wasi:http/service`, told apart by its exports), unchanged,
    /// on the requests of its `[[routes]]`: it gets the request's head and streamed body and
    /// streams its response.
    WasiHttp,
    /// A standard `wasi:http@0.3` middleware, in the filter chain in order with the filters:
    /// its imported `handler` is the rest of the chain, the cache and the route. A `filter`
    /// entry naming a middleware component runs it as one.
    Middleware,
}

impl PluginKind {
    /// Its name in the config, `/plugins` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Responder => "responder",
            Self::WasiHttp => "wasi-http",
            Self::Middleware => "middleware",
        }
    }

    /// Whether it answers the requests of its routes (rather than filtering every request).
    pub fn answers_routes(self) -> bool {
        matches!(self, Self::Responder | Self::WasiHttp)
    }
}

/// Instance reuse policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    /// Instances are kept and reused across requests.
    #[default]
    Pooled,
    /// A new instance for every request: no state survives a request.
    Fresh,
}

/// What a failed plugin call does to its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The request gets 500.
    #[default]
    Fail,
    /// The request goes on as if the plugin were absent.
    Continue,
}

/// A directory a plugin may open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/data`.
    pub guest: String,
    /// Refuse writes [default: true].
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

impl PluginConfig {
    /// Rejects values that parse but cannot work; `buckets` and `pools` are the declared ones
    /// its grants may name.
    pub(super) fn check(
        &self,
        buckets: &BTreeMap<String, KeyValueConfig>,
        secrets: &BTreeMap<String, SecretConfig>,
        pools: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.timeout.is_zero() {
            return invalid(
                "plugins.timeout",
                format!("plugin `{}`: must be longer than 0s", self.name),
            );
        }
        if self.max_concurrent_requests == 0 {
            return invalid(
                "plugins.max_concurrent_requests",
                format!("plugin `{}`: must be at least 1", self.name),
            );
        }
        if self.instances == Some(0) || self.max_requests == Some(0) {
            return invalid(
                "plugins.instances",
                format!(
                    "plugin `{}`: instances and max_requests must be at least 1",
                    self.name
                ),
            );
        }
        if self.reuse == Reuse::Fresh && self.max_requests.is_some() {
            return invalid(
                "plugins.max_requests",
                format!(
                    "plugin `{}`: max_requests applies to reuse = \"pooled\" only",
                    self.name
                ),
            );
        }
        if matches!(self.kind, PluginKind::WasiHttp | PluginKind::Middleware)
            && (self.request_headers.is_some() || !self.request_body)
        {
            return invalid(
                "plugins.request_headers",
                format!(
                    "plugin `{}`: request_headers and request_body apply to filters and responders; a wasi:http component is given the request as it is",
                    self.name
                ),
            );
        }
        if let Some(bad) = self
            .request_headers
            .iter()
            .flatten()
            .find(|n| http::HeaderName::from_bytes(n.as_bytes()).is_err())
        {
            return invalid(
                "plugins.request_headers",
                format!("plugin `{}`: `{bad}` is not a header name", self.name),
            );
        }
        self.check_grants(buckets, secrets, pools)?;
        if self.max_outbound_requests == 0 {
            return invalid(
                "plugins.max_outbound_requests",
                format!("plugin `{}`: must be at least 1", self.name),
            );
        }
        for g in &self.grants {
            if !g.host.is_dir() {
                return invalid(
                    "plugins.grants.host",
                    format!(
                        "plugin `{}`: {} is not a directory",
                        self.name,
                        g.host.display()
                    ),
                );
            }
        }
        Ok(())
    }

    /// Rejects a grant of a bucket, a secret or an upstream pool that is not declared, and a
    /// secret named like a `config` key (wasi:config would have to give one of them).
    fn check_grants(
        &self,
        buckets: &BTreeMap<String, KeyValueConfig>,
        secrets: &BTreeMap<String, SecretConfig>,
        pools: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        for secret in &self.secrets {
            if !secrets.contains_key(secret) {
                return invalid(
                    "plugins.secrets",
                    format!(
                        "plugin `{}`: no secret named `{secret}`; declare it as [secrets.{secret}] with env or file",
                        self.name
                    ),
                );
            }
            if self.config.contains_key(secret) {
                return invalid(
                    "plugins.secrets",
                    format!(
                        "plugin `{}`: `{secret}` is both a config key and a granted secret, and wasi:config can give only one; rename one",
                        self.name
                    ),
                );
            }
        }
        for bucket in &self.keyvalue {
            if !buckets.contains_key(bucket) {
                return invalid(
                    "plugins.keyvalue",
                    format!(
                        "plugin `{}`: no bucket named `{bucket}`; declare it as [keyvalue.{bucket}]",
                        self.name
                    ),
                );
            }
        }
        for d in &self.allowed_outbound {
            if let Destination::Upstream(pool) = d
                && !pools.contains_key(pool)
            {
                return invalid(
                    "plugins.allowed_outbound",
                    format!(
                        "plugin `{}`: no upstream pool named `{pool}`; declare it as [upstreams.{pool}]",
                        self.name
                    ),
                );
            }
        }
        Ok(())
    }
}

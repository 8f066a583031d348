//! Plugins: the registry of loaded plugins (filters in chain order, responders by route), each
//! plugin's counters and the backoff that keeps a plugin failing on every call from costing
//! the server its time. The errors a call can end in are in [`error`], the series in
//! [`metrics`]; the engine in [`wasm`], native libraries in [`native`], what a plugin may
//! import in [`host`].

pub mod authoring;
pub mod backoff;
pub mod bindings;
pub mod error;
pub mod host;
pub mod loader;
pub mod metrics;
pub mod native;
pub mod output;
pub mod scaffold;
pub mod wasm;

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::client::Client;
use crate::config::{OnError, PluginConfig, PluginKind, Reuse};
use crate::metrics::Latency;
use crate::telemetry;
use backoff::{Backoff, Failure};
pub use bindings::{HeaderParam, Request};
pub use error::{Failed, FailureReason, PluginError};
pub use host::handler::Rest;
use metrics::{PluginErrorLabel, PluginLabel, PluginMetrics, Series};
use native::NativePlugin;
pub use output::{Decision, Edits};
use output::{Dropped, OutputLimits};
use wasm::WasmPlugin;

/// A loaded plugin with its counters and failure bookkeeping.
pub struct LoadedPlugin {
    /// Name from the config (or the file's stem).
    pub name: String,
    /// Filter or responder.
    pub kind: PluginKind,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// What a failed call does to its request.
    pub on_error: OnError,
    /// The `[[plugins]]` entry it was loaded with and the SHA-256 of its file: a reload keeps
    /// the running plugin when both are unchanged.
    pub(crate) source: (PluginConfig, [u8; 32]),
    reuse: Reuse,
    wasm: Arc<WasmPlugin>,
    /// Caps on what a call may return.
    limits: OutputLimits,
    /// What of a request it is given.
    sees: Sees,
    /// Header names already warned about.
    dropped: Dropped,
    calls: AtomicU64,
    errors: AtomicU64,
    /// Its failures and backoffs, per client.
    backoff: Backoff,
    label: PluginLabel,
    /// This plugin's series, looked up once: the call path then only touches atomics.
    series: Series,
    /// Call times since this version was loaded, for the p99 of the status page.
    latency: Latency,
    metrics: Arc<PluginMetrics>,
}

/// What of a request a plugin is given (`request_headers`, `request_body`).
struct Sees {
    /// `None`: every header.
    headers: Option<Vec<HeaderName>>,
    body: bool,
}

/// What `GET /plugins` says of a plugin.
#[derive(Debug, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// `filter`, `responder` or `native`.
    pub kind: &'static str,
    /// File it was loaded from.
    pub file: String,
    /// Reuse policy (wasm plugins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (or were skipped in backoff); for native plugins, requests skipped
    /// because the plugin fell behind.
    pub errors: u64,
    /// Clients it is in backoff for now (not called for their requests).
    pub clients_in_backoff: usize,
    /// Largest linear memory an instance reached, in bytes.
    pub peak_memory_bytes: usize,
    /// Time the last instantiation with `plugin-init` took, in µs.
    pub last_instantiation_us: u64,
    /// Times its calls were paused at an epoch tick (every `1 ms` of a call's time) so that
    /// other requests could run: it grows with the time its calls take (wasm plugins).
    pub yields: u64,
    /// 99th percentile of call time since it was loaded, in ms (wasm plugins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Key-value buckets it may open.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keyvalue: Vec<String>,
    /// Secrets it may read (their names; never their values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl LoadedPlugin {
    fn new(
        config: &PluginConfig,
        file: PathBuf,
        digest: [u8; 32],
        wasm: WasmPlugin,
        metrics: Arc<PluginMetrics>,
    ) -> Self {
        let label = PluginLabel {
            plugin: config.name.clone(),
        };
        Self {
            name: config.name.clone(),
            kind: wasm.kind(),
            file,
            on_error: config.on_error,
            source: (config.clone(), digest),
            reuse: config.reuse,
            wasm: Arc::new(wasm),
            limits: OutputLimits::of(config),
            sees: Sees {
                headers: config.request_headers.as_ref().map(|names| {
                    // Checked when the configuration was read.
                    names
                        .iter()
                        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                        .collect()
                }),
                body: config.request_body,
            },
            dropped: Dropped::default(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            backoff: Backoff::new(
                config.failure_threshold,
                config.failure_window,
                config.backoff,
            ),
            series: Series::new(&metrics, &label),
            latency: Latency::default(),
            label,
            metrics,
        }
    }

    /// Calls `plugin-process`, unless the plugin is in backoff for `client`, and checks what
    /// it returned ([`output::check`]). Failures, an invalid answer included, are counted,
    /// logged and fed to the client's backoff.
    pub async fn call(&self, req: Request<'_>, client: IpAddr) -> Result<Decision, PluginError> {
        let span =
            telemetry::Child::plugin(&self.name, self.kind.as_str(), self.wasm.world().name());
        let result = span
            .scope(std::pin::pin!(self.checked_call(req, client, &span)))
            .await;
        span.end(outcome_of(&result));
        result
    }

    async fn checked_call(
        &self,
        req: Request<'_>,
        client: IpAddr,
        span: &telemetry::Child,
    ) -> Result<Decision, PluginError> {
        self.not_in_backoff(client)?;
        let started = Instant::now();
        let outcome = self.wasm.process(req).await;
        span.instance(outcome.instantiated.is_some());
        self.observe(started, outcome.instantiated);
        let result = outcome.result.and_then(|action| {
            output::check(action, self.limits, &self.name, &self.dropped)
                .map_err(|why| PluginError::Failed(FailureReason::Error, why))
        });
        if let Err(e) = &result {
            self.failed(e, client);
        }
        result
    }

    /// The request as this plugin is given it: the headers it asked for (all unless
    /// `request_headers` names some) and the body unless `request_body = false`. Every
    /// string is copied into the plugin's memory by a call of its allocator, ~800
    /// instructions each (callgrind 2026-11), so what it does not read is not sent.
    pub fn given<'a>(&self, parts: &'a Parts, body: &'a Bytes, client: &'a Client) -> Given<'a> {
        let sees = &self.sees;
        let wanted = |name: &HeaderName| sees.headers.as_ref().is_none_or(|h| h.contains(name));
        Given::new(parts, sees.body.then_some(body), client, wanted)
    }

    /// Whether it is given the request body.
    pub fn sees_body(&self) -> bool {
        self.sees.body
    }

    /// [`LoadedPlugin::call`] for a request: `Ok(None)` when the call failed and the plugin's
    /// `on_error = "continue"` says to go on as if it were absent; the one place where a
    /// failure becomes the request's error.
    pub async fn run(
        &self,
        given: &Given<'_>,
        client: &Client,
    ) -> Result<Option<Decision>, Failed> {
        let headers = given.headers();
        let result = self.call(given.request(&headers), client.addr().ip()).await;
        self.on_error(result)
    }

    fn on_error<T>(&self, result: Result<T, PluginError>) -> Result<Option<T>, Failed> {
        match result {
            Ok(t) => Ok(Some(t)),
            Err(_) if self.on_error == OnError::Continue => Ok(None),
            Err(source) => Err(Failed {
                plugin: self.name.clone(),
                source,
            }),
        }
    }

    /// Lets a wasi:http component answer `req`, with the same backoff, counting and checks
    /// as [`LoadedPlugin::run`]: the head is checked like a plugin's response and the body
    /// capped at `max_response_body_bytes`. `Ok(None)` as in `run`.
    pub async fn respond_http(
        self: &Arc<Self>,
        req: http::Request<crate::body::Body>,
        https: bool,
        client: &Client,
    ) -> Result<Option<http::Response<crate::body::Body>>, Failed> {
        let result = self.handle_http(req, https, client.addr().ip(), None).await;
        self.on_error(result)
    }

    /// Lets a `wasi:http@0.3` middleware handle `req`, its imported `handler` being `rest`
    /// (the rest of the chain), with the same backoff, counting and checks as
    /// [`LoadedPlugin::respond_http`]. `Ok(None)` as in `run`: the caller then sends the
    /// request on itself.
    pub async fn middleware(
        self: &Arc<Self>,
        req: http::Request<crate::body::Body>,
        https: bool,
        client: &Client,
        rest: Rest,
    ) -> Result<Option<http::Response<crate::body::Body>>, Failed> {
        let result = self
            .handle_http(req, https, client.addr().ip(), Some(rest))
            .await;
        self.on_error(result)
    }

    async fn handle_http(
        self: &Arc<Self>,
        req: http::Request<crate::body::Body>,
        https: bool,
        client: IpAddr,
        rest: Option<Rest>,
    ) -> Result<http::Response<crate::body::Body>, PluginError> {
        let span =
            telemetry::Child::plugin(&self.name, self.kind.as_str(), self.wasm.world().name());
        let head = span
            .scope(std::pin::pin!(
                self.checked_handle(req, https, client, rest, &span)
            ))
            .await;
        span.end(outcome_of(&head));
        head
    }

    async fn checked_handle(
        self: &Arc<Self>,
        req: http::Request<crate::body::Body>,
        https: bool,
        client: IpAddr,
        rest: Option<Rest>,
        span: &telemetry::Child,
    ) -> Result<http::Response<crate::body::Body>, PluginError> {
        self.not_in_backoff(client)?;
        let started = Instant::now();
        let plugin = self.clone();
        let on_failure = Box::new(move |e: PluginError| plugin.failed(&e, client));
        let call = self.wasm.handle(req, https, on_failure, rest).await;
        span.instance(call.instantiated.is_some());
        self.observe(started, call.instantiated);
        let head = call.head.and_then(|resp| {
            let (mut head, body) = resp.into_parts();
            if self.kind == PluginKind::Middleware {
                // A middleware passes on the head the rest of the chain gave it, framing
                // included; plughost frames the response again, so that one goes quietly.
                head.headers.remove(http::header::CONTENT_LENGTH);
            }
            output::check_head(&mut head, self.limits, &self.name, &self.dropped)
                .map_err(|why| PluginError::Failed(FailureReason::Error, why))?;
            let body = crate::body::limited(body, self.limits.body_bytes);
            Ok(http::Response::from_parts(head, body))
        });
        if let Err(e) = &head {
            self.failed(e, client);
        }
        head
    }

    fn not_in_backoff(&self, client: IpAddr) -> Result<(), PluginError> {
        if !self.backoff.holds(client) {
            return Ok(());
        }
        self.count_error(FailureReason::Backoff);
        Err(PluginError::Failed(
            FailureReason::Backoff,
            "skipped for this client: in backoff after its requests failed repeatedly".into(),
        ))
    }

    /// Counts a call that took from `started` until now.
    fn observe(&self, started: Instant, instantiated: Option<Duration>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let series = &self.series;
        series.calls.inc();
        let took = started.elapsed().as_secs_f64();
        series.duration.observe(took);
        self.latency.observe(took);
        match instantiated {
            Some(t) => {
                series.instantiations.inc();
                series.instantiation_duration.observe(t.as_secs_f64());
            }
            None => {
                series.reuses.inc();
            }
        }
    }

    /// Counts, logs and feeds to `client`'s backoff a failed call (unless the failure was
    /// not its request's: a shared instance's trap).
    fn failed(&self, e: &PluginError, client: IpAddr) {
        self.count_error(e.reason());
        tracing::warn!(plugin = %self.name, %client, reason = %e.reason(), error = %e, "plugin call failed");
        if e.reason() != FailureReason::Shared && self.backoff.failed(client) == Failure::BackedOff
        {
            self.metrics.backoffs.get_or_create(&self.label).inc();
            tracing::warn!(
                plugin = %self.name,
                %client,
                "plugin failed repeatedly for this client; skipping it for this client's requests during the backoff (other clients still call it)",
            );
        }
    }

    fn count_error(&self, reason: FailureReason) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .errors
            .get_or_create(&PluginErrorLabel {
                plugin: self.name.clone(),
                reason,
            })
            .inc();
    }

    /// What `GET /plugins` shows.
    pub fn info(&self) -> PluginInfo {
        let stats = self.wasm.stats();
        PluginInfo {
            name: self.name.clone(),
            kind: self.kind.as_str(),
            file: self.file.display().to_string(),
            reuse: Some(self.reuse),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            clients_in_backoff: self.backoff.clients_held(),
            peak_memory_bytes: stats.peak_memory,
            last_instantiation_us: stats.last_instantiation.as_micros() as u64,
            yields: stats.yields,
            p99_ms: Latency::quantile(&self.latency.snapshot(), 0.99).map(|s| s * 1e3),
            keyvalue: self.source.0.keyvalue.clone(),
            secrets: self.source.0.secrets.clone(),
        }
    }
}

/// A call's outcome as its span says it: `ok`, or the failure's reason (`trap`, `timeout`,
/// `memory`, `error`, `backoff`, `shared`, `load`).
fn outcome_of<T>(result: &Result<T, PluginError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(PluginError::Failed(reason, _)) => reason.as_str(),
        Err(PluginError::Load(_) | PluginError::Init(_)) => "load",
    }
}

/// Every loaded plugin, as the pipeline uses them.
#[derive(Default)]
pub struct Plugins {
    /// Filters in chain order.
    pub filters: Vec<Arc<LoadedPlugin>>,
    all: Vec<Arc<LoadedPlugin>>,
    /// Native observers, in load order. Shared with the next version of the registry: native
    /// libraries are never unloaded while the server runs.
    pub natives: Vec<Arc<NativePlugin>>,
    /// Bytes of the body natives see.
    pub native_body_cap: usize,
}

impl Plugins {
    /// The loaded wasm plugins, in load order.
    pub fn wasm(&self) -> &[Arc<LoadedPlugin>] {
        &self.all
    }

    /// The loaded wasm plugin named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.all.iter().find(|p| p.name == name).cloned()
    }

    /// Names of the loaded plugins, wasm then native, in load order.
    pub fn names(&self) -> Vec<&str> {
        let wasm = self.all.iter().map(|p| p.name.as_str());
        wasm.chain(self.natives.iter().map(|n| n.name.as_str()))
            .collect()
    }

    /// Whether requests pass through plugins before routing: a filter or a native plugin.
    pub fn any_before_route(&self) -> bool {
        !self.filters.is_empty() || !self.natives.is_empty()
    }

    /// Whether requests must be read whole before routing: a native plugin, or a filter not
    /// configured with `request_body = false`, sees the body.
    pub fn need_body(&self) -> bool {
        self.filters.iter().any(|f| f.sees_body()) || !self.natives.is_empty()
    }

    /// Shows the request to every native plugin (they run on their own threads), rendered
    /// once for all of them.
    pub fn observe(&self, parts: &Parts, body: &Bytes) {
        if self.natives.is_empty() {
            return;
        }
        let data = Arc::new(native::render(parts, body, self.native_body_cap));
        for n in &self.natives {
            n.observe(&data);
        }
    }

    /// Copies values kept outside the registry into it; called when `/metrics` is scraped
    /// rather than on every call.
    pub fn refresh_metrics(&self) {
        for p in &self.all {
            p.metrics
                .peak_memory
                .get_or_create(&p.label)
                .set(p.wasm.stats().peak_memory as i64);
        }
    }

    /// What `GET /plugins` shows.
    pub fn info(&self) -> Vec<PluginInfo> {
        let natives = self.natives.iter().map(|n| PluginInfo {
            name: n.name.clone(),
            kind: "native",
            file: n.file.display().to_string(),
            reuse: None,
            calls: n.calls.load(Ordering::Relaxed),
            errors: n.dropped.load(Ordering::Relaxed),
            clients_in_backoff: 0,
            peak_memory_bytes: 0,
            last_instantiation_us: 0,
            yields: 0,
            p99_ms: None,
            keyvalue: Vec::new(),
            secrets: Vec::new(),
        });
        self.all.iter().map(|p| p.info()).chain(natives).collect()
    }
}

/// The request as a plugin is given it, borrowed from the request's parts. wasmtime copies
/// each string once, straight into the guest's memory; the owned strings of the record
/// before (`ownership: Borrowing` in the bindings) cost an allocation and a copy apiece, ~8
/// a call on `bench/profile.py`'s two-header request.
pub struct Given<'a> {
    method: &'a str,
    uri: &'a str,
    /// Names and values; a value that is not UTF-8 is converted lossily, as the WIT says.
    headers: Vec<(&'a str, Cow<'a, str>)>,
    body: &'a [u8],
    client: &'a str,
}

impl<'a> Given<'a> {
    /// The whole request: every header and the body.
    pub fn whole(parts: &'a Parts, body: &'a Bytes, client: &'a Client) -> Self {
        Self::new(parts, Some(body), client, |_| true)
    }

    /// The headers `wanted` says and the body if given.
    fn new(
        parts: &'a Parts,
        body: Option<&'a Bytes>,
        client: &'a Client,
        wanted: impl Fn(&HeaderName) -> bool,
    ) -> Self {
        Self {
            method: parts.method.as_str(),
            uri: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            headers: parts
                .headers
                .iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())))
                .collect(),
            body: body.map_or(&[], |b| b),
            client: client.as_str(),
        }
    }

    /// The header list of the record, which [`Given::request`] borrows.
    pub fn headers(&self) -> Vec<HeaderParam<'_>> {
        self.headers
            .iter()
            .map(|(name, value)| HeaderParam { name, value })
            .collect()
    }

    /// The WIT record.
    pub fn request<'b>(&'b self, headers: &'b [HeaderParam<'b>]) -> Request<'b> {
        Request {
            method: self.method,
            uri: self.uri,
            headers,
            body: self.body,
            client: self.client,
        }
    }
}

/// Response headers the filters add, in the order they were added.
pub type ResponseHeaders = Vec<(HeaderName, HeaderValue)>;

/// Applies a filter's edits to the request headers and gathers its response headers.
pub fn apply_edits(edits: Edits, headers: &mut HeaderMap, response_headers: &mut ResponseHeaders) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (k, v) in edits.set {
        headers.insert(k, v);
    }
    if response_headers.is_empty() {
        *response_headers = edits.response;
    } else {
        response_headers.extend(edits.response);
    }
}

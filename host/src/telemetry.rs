//! OpenTelemetry traces of requests (`[tracing]`): W3C trace context read from each request
//! and passed on to its backends, spans for the request, its plugin calls and its upstream
//! exchanges, exported over OTLP/HTTP (protobuf) by the official `opentelemetry-otlp`
//! exporter.
//!
//! Off (no `[tracing]`), nothing is read, started or exported: each place that would make a
//! span checks one `OnceLock`. On, the request's context is the current OpenTelemetry
//! context while its future runs ([`FutureExt::with_context`]), so a child span is made from
//! wherever it happens without passing the context down every call.
//!
//! Export never makes a request wait: an ended span goes into a bounded queue ([`Queue`]),
//! and one thread of its own batches and exports them. When the collector is slow or gone
//! the queue fills and further spans are dropped; `plughost_trace_spans_total{outcome}`
//! counts each span exported, failed (its export failed) or dropped. The SDK's own batch
//! processor drops silently, which is why this queue is written here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Uri, Version};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use futures_util::future::Either;
pub use opentelemetry::context::{FutureExt, WithContext};

use crate::config::TracingConfig;

/// The tracer, set when `[tracing]` is on.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Spans exported in one request to the collector at most.
const BATCH: usize = 512;

/// Longest an ended span waits for its batch to fill.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// Why tracing could not start; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("tracing: {0}; fix [tracing] or remove it")]
pub struct TracingError(String);

/// The exporter of a running server; [`Telemetry::shutdown`] exports what is queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Starts exporting as `config` says (nothing when it is `None`), counted in `registry`.
    pub fn start(
        config: Option<&TracingConfig>,
        registry: &mut Registry,
    ) -> Result<Self, TracingError> {
        let Some(config) = config else {
            return Ok(Self { provider: None });
        };
        let spans = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "plughost_trace_spans",
            "Spans by what became of them: exported, failed (the export failed) or dropped (the queue was full)",
            spans.clone(),
        );
        let roots = rustls_native_certs::load_native_certs().certs;
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(roots);
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TracingError(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            opentelemetry_http::hyper::HyperClient::new(connector, config.export_timeout, None);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(config.endpoint.clone())
            .with_headers(
                config
                    .headers
                    .clone()
                    .into_iter()
                    .collect::<HashMap<_, _>>(),
            )
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| TracingError(format!("endpoint `{}`: {e}", config.endpoint)))?;
        let queue = Queue::start(exporter, config.queue_size, spans)?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .with_span_processor(queue)
            .build();
        // A second server in one process (tests of the pipeline) keeps the first tracer.
        let _ = TRACER.set(provider.tracer("plughost"));
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Exports what is queued (within 5 s) and stops.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "tracing: spans still queued at shutdown were not exported");
        }
    }
}

/// The label of the span counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The server span of a request, from the W3C `traceparent`/`tracestate` it carries (a new
/// trace when it has none, or none that parses), or `None` when tracing is off. Sampled or
/// not, the context it makes is what the request's backends are sent.
pub fn request(
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    version: Version,
    client: &str,
) -> Option<Context> {
    let tracer = TRACER.get()?;
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let mut span = tracer
        .span_builder(method.as_str().to_owned())
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, &parent);
    // Set once sampled: an unsampled request (most, at a low ratio) builds none of them.
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("url.path", uri.path().to_owned()),
            KeyValue::new("network.protocol.version", protocol(version)),
            KeyValue::new("client.address", client.to_owned()),
        ]);
    }
    Some(parent.with_span(span))
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Puts the server span's context in the request's own headers, in place of the caller's:
/// the plugins that read `traceparent` see the host's span, and cannot make one up for it.
pub fn replace_context(cx: &Context, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Ends a request's server span with what was sent.
pub fn finish(cx: &Context, status: u16, bytes: u64, cache: &'static str, aborted: bool) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    span.set_attribute(KeyValue::new("http.response.body.size", bytes as i64));
    span.set_attribute(KeyValue::new("plughost.cache", cache));
    if aborted {
        span.set_attribute(KeyValue::new("plughost.aborted", true));
    }
    if status >= 500 || aborted {
        span.set_status(Status::error(""));
    }
    span.end();
}

/// A request's trace id, for its access line.
pub fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

/// A span inside the current request's trace (a plugin call, an upstream exchange), or
/// nothing when the request is not traced.
pub struct Child(Option<Context>);

impl Child {
    /// Starts span `name` of `kind`, a child of the current context's span; its name and
    /// `attributes` are only made when the request is sampled.
    pub fn start(
        name: impl FnOnce() -> String,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        let Some(tracer) = TRACER.get() else {
            return Self(None);
        };
        let current = Context::current();
        // An unsampled request makes no child spans: the sampler would drop them, and its
        // backends are sent the server span's context (in the request's own headers).
        if !current.span().span_context().is_sampled() {
            return Self(None);
        }
        let span = tracer
            .span_builder(name())
            .with_kind(kind)
            .with_attributes(attributes())
            .start_with_context(tracer, &current);
        Self(Some(current.with_span(span)))
    }

    /// A plugin call: the plugin's name, kind and world.
    pub fn plugin(name: &str, kind: &'static str, world: &'static str) -> Self {
        Self::start(
            || format!("plugin {name}"),
            SpanKind::Internal,
            || {
                vec![
                    KeyValue::new("plughost.plugin.name", name.to_owned()),
                    KeyValue::new("plughost.plugin.kind", kind),
                    KeyValue::new("plughost.plugin.world", world),
                ]
            },
        )
    }

    /// An exchange with a server of upstream pool `pool`.
    pub fn upstream(method: &Method, pool: &str) -> Self {
        Self::start(
            || method.as_str().to_owned(),
            SpanKind::Client,
            || {
                vec![
                    KeyValue::new("http.request.method", method.as_str().to_owned()),
                    KeyValue::new("plughost.upstream", pool.to_owned()),
                ]
            },
        )
    }

    /// A plugin's outbound request to `destination` (its `allowed_outbound` entry, or
    /// `(denied)`: a refused request's URL is the guest's and is not recorded).
    pub fn outbound(plugin: &str, destination: &str) -> Self {
        Self::start(
            || "outbound".to_owned(),
            SpanKind::Client,
            || {
                vec![
                    KeyValue::new("plughost.plugin.name", plugin.to_owned()),
                    KeyValue::new("plughost.outbound.destination", destination.to_owned()),
                ]
            },
        )
    }

    /// A key-value operation `op` on `bucket`.
    pub fn keyvalue(bucket: &str, op: &'static str) -> Self {
        Self::start(
            || "keyvalue".to_owned(),
            SpanKind::Client,
            || {
                vec![
                    KeyValue::new("plughost.kv.bucket", bucket.to_owned()),
                    KeyValue::new("plughost.kv.op", op),
                ]
            },
        )
    }

    /// Runs `work` with this span as the current one, so the spans it makes (a plugin's
    /// key-value operations and outbound requests) are this span's children.
    pub fn scope<F: Future>(&self, work: F) -> Either<WithContext<F>, F> {
        match &self.0 {
            Some(cx) => Either::Left(work.with_context(cx.clone())),
            None => Either::Right(work),
        }
    }

    /// A request's lookup in the cache, and the origin fetch it makes on a miss.
    pub fn cache() -> Self {
        Self::start(|| "cache".to_owned(), SpanKind::Internal, Vec::new)
    }

    /// A stale entry's revalidation after its request was answered from it
    /// (`stale-while-revalidate`).
    pub fn revalidation() -> Self {
        Self::start(|| "revalidate".to_owned(), SpanKind::Internal, Vec::new)
    }

    /// A request's wait in the limiter's queue (the permits were all taken).
    pub fn limiter() -> Self {
        Self::start(|| "limiter".to_owned(), SpanKind::Internal, Vec::new)
    }

    /// Records that the call ran on a fresh instance (made for it), or a reused one.
    pub fn instance(&self, fresh: bool) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(
                "plughost.plugin.instance",
                if fresh { "fresh" } else { "reused" },
            ));
        }
    }

    /// The W3C headers (`traceparent`, and `tracestate` when there is one) that make a
    /// backend's spans children of this one.
    pub fn headers(&self) -> Vec<(String, String)> {
        let Some(cx) = &self.0 else {
            return Vec::new();
        };
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut fields);
        fields.into_iter().collect()
    }

    /// Ends it with `outcome` (`ok`, or what went wrong).
    pub fn end(self, outcome: &str) {
        self.end_as(outcome, outcome != "ok");
    }

    /// Ends it with `outcome`, marked as an error when `error` is (a cache `miss` or a lost
    /// compare-and-swap race is an outcome, not an error).
    pub fn end_as(self, outcome: &str, error: bool) {
        let Some(cx) = self.0 else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("plughost.outcome", outcome.to_owned()));
        if error {
            span.set_status(Status::error(outcome.to_owned()));
        }
        span.end();
    }
}

/// Runs `record` on the current span when the request is traced and sampled: facts found
/// deep in a call (the server an upstream exchange went to, a retry, an ejection) are
/// written on the span of the call they happen in ([`Child::scope`]) without passing it
/// down.
fn current(record: impl FnOnce(&opentelemetry::trace::SpanRef<'_>)) {
    if TRACER.get().is_none() {
        return;
    }
    let cx = Context::current();
    let span = cx.span();
    if span.span_context().is_sampled() {
        record(&span);
    }
}

fn address(addr: SocketAddr) -> [KeyValue; 2] {
    [
        KeyValue::new("server.address", addr.ip().to_string()),
        KeyValue::new("server.port", i64::from(addr.port())),
    ]
}

/// An upstream exchange is sent to `server`, after `resends` failed tries: one span covers
/// the exchange and its tries, and names the last server (OpenTelemetry's
/// `http.request.resend_count` on it counts the tries before).
pub fn sent_to(server: SocketAddr, resends: u32) {
    current(|span| {
        span.set_attributes(address(server));
        if resends > 0 {
            span.set_attribute(KeyValue::new(
                "http.request.resend_count",
                i64::from(resends),
            ));
        }
    });
}

/// A try of the current exchange at `server` failed for `reason` and the request is sent
/// again: an event on the exchange's span.
pub fn retry(server: SocketAddr, reason: &'static str) {
    current(|span| {
        let mut attributes = address(server).to_vec();
        attributes.push(KeyValue::new("plughost.reason", reason));
        span.add_event("retry", attributes);
    });
}

/// Passive health ejected `server` from its pool for `time` after the current exchange
/// failed there: an event on the exchange's span.
pub fn ejected(server: SocketAddr, time: Duration) {
    current(|span| {
        let mut attributes = address(server).to_vec();
        attributes.push(KeyValue::new(
            "plughost.ejected_ms",
            time.as_millis() as i64,
        ));
        span.add_event("ejected", attributes);
    });
}

/// `work` with the current context, for a task spawned from a traced call: the spans it
/// makes join the call's trace.
pub fn carried<F: Future>(work: F) -> Either<WithContext<F>, F> {
    if TRACER.get().is_none() {
        return Either::Right(work);
    }
    let cx = Context::current();
    if cx.span().span_context().is_sampled() {
        Either::Left(work.with_context(cx))
    } else {
        Either::Right(work)
    }
}

/// The linear memory of the instance that ran the current plugin call, at its end: wasm
/// memory only grows, so this is the instance's peak over the calls it has served.
pub fn memory(bytes: usize) {
    current(|span| {
        span.set_attribute(KeyValue::new("plughost.plugin.memory_bytes", bytes as i64));
    });
}

/// The variant of its URL a request was answered from, on the current (cache) span: the
/// request headers its `Vary` names, and an id of their values. The values themselves are
/// not exported (`Vary: Cookie` or `Authorization` would put credentials in a trace); the
/// id, keyed anew each run, tells two variants apart within one server's traces.
pub fn variant(vary: &[(http::HeaderName, Option<String>)]) {
    if vary.is_empty() {
        return;
    }
    current(|span| {
        static KEY: OnceLock<std::hash::RandomState> = OnceLock::new();
        let id = std::hash::BuildHasher::hash_one(KEY.get_or_init(Default::default), vary);
        let names = vary.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>();
        span.set_attribute(KeyValue::new("plughost.cache.vary", names.join(", ")));
        span.set_attribute(KeyValue::new(
            "plughost.cache.variant",
            format!("{id:016x}"),
        ));
    });
}

/// What goes to the export thread.
enum Msg {
    Span(Box<SpanData>),
    Resource(Resource),
    /// Export what is queued, then answer.
    Flush(mpsc::Sender<()>),
}

/// The bounded queue between ended spans and the exporter's thread.
#[derive(Debug)]
struct Queue {
    tx: SyncSender<Msg>,
    dropped: Counter,
}

impl Queue {
    fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        size: usize,
        spans: Family<OutcomeLabel, Counter>,
    ) -> Result<Self, TracingError> {
        let (tx, rx) = mpsc::sync_channel(size);
        let count = |outcome| spans.get_or_create(&OutcomeLabel { outcome }).clone();
        let (exported, failed) = (count("exported"), count("failed"));
        // Not joined: it ends when every sender is gone, with the provider.
        std::thread::Builder::new()
            .name("plughost-trace-export".into())
            .spawn(move || export_loop(exporter, &rx, &exported, &failed))
            .map_err(|e| TracingError(format!("cannot start the export thread: {e}")))?;
        Ok(Self {
            tx,
            dropped: count("dropped"),
        })
    }

    /// Asks the thread to export what is queued; waits for it at most `timeout`. A full
    /// queue (the collector slow or gone) is not waited for.
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (done, wait) = mpsc::channel();
        self.tx
            .try_send(Msg::Flush(done))
            .map_err(|_| OTelSdkError::InternalFailure("the span queue is full".into()))?;
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.tx.try_send(Msg::Resource(resource.clone()));
    }
}

/// The export thread: batches of up to [`BATCH`] spans, each sent when full or
/// [`BATCH_WAIT`] after its first span, on a runtime of its own (the HTTP client needs one).
fn export_loop(
    mut exporter: opentelemetry_otlp::SpanExporter,
    rx: &Receiver<Msg>,
    exported: &Counter,
    failed: &Counter,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("tracing: cannot start the export runtime; no span will be exported");
        return;
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut first: Option<Instant> = None;
    loop {
        let wait = first.map_or(BATCH_WAIT, |t| BATCH_WAIT.saturating_sub(t.elapsed()));
        let mut flushed = None;
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(span)) => {
                first.get_or_insert_with(Instant::now);
                batch.push(*span);
            }
            Ok(Msg::Resource(resource)) => exporter.set_resource(&resource),
            Ok(Msg::Flush(done)) => flushed = Some(done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                send(&runtime, &exporter, &mut batch, exported, failed);
                return;
            }
        }
        let due = first.is_some_and(|t| t.elapsed() >= BATCH_WAIT);
        if batch.len() >= BATCH || due || flushed.is_some() {
            send(&runtime, &exporter, &mut batch, exported, failed);
            first = None;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

fn send(
    runtime: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    exported: &Counter,
    failed: &Counter,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match runtime.block_on(exporter.export(std::mem::take(batch))) {
        Ok(()) => {
            exported.inc_by(n);
        }
        Err(e) => {
            failed.inc_by(n);
            tracing::debug!(error = %e, spans = n, "tracing: an export failed");
        }
    }
}

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
//! Export never makes a request wait: ended spans go through a bounded queue to a thread of
//! their own, and are dropped and counted when the collector is slow or gone ([`export`]).
//! The W3C headers are read and written by hand ([`w3c`]), as every request pays for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, SdkTracer, SdkTracerProvider,
    ShouldSample as _,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use opentelemetry::context::{FutureExt, WithContext};

use self::export::{OutcomeLabel, Queue};
use crate::config::TracingConfig;

mod export;
mod w3c;

/// Set when `[tracing]` is on.
static TRACER: OnceLock<Tracing> = OnceLock::new();

/// What makes spans: the SDK's tracer, and the sampler and ids it is configured with, which
/// the server span asks first so that an unsampled request builds no SDK span at all.
struct Tracing {
    tracer: SdkTracer,
    sampler: Sampler,
    ids: RandomIdGenerator,
}

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
        let queue = Queue::start(exporter, config.queue_size, spans)
            .map_err(|e| TracingError(format!("cannot start the export thread: {e}")))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        // The SDK makes only the spans already decided on: a server span that `request`'s
        // sampler chose, and children of sampled spans ([`Child::start`]).
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .with_span_processor(queue)
            .build();
        // A second server in one process (tests of the pipeline) keeps the first tracer.
        let _ = TRACER.set(Tracing {
            tracer: provider.tracer("plughost"),
            sampler: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))),
            ids: RandomIdGenerator::default(),
        });
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
    let t = TRACER.get()?;
    let caller = w3c::parent(headers);
    let trace_id = caller
        .as_ref()
        .map_or_else(|| t.ids.new_trace_id(), SpanContext::trace_id);
    let parent = match &caller {
        Some(sc) => Context::new().with_remote_span_context(sc.clone()),
        None => Context::new(),
    };
    let decision = t
        .sampler
        .should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[])
        .decision;
    if decision != SamplingDecision::RecordAndSample {
        // Not recorded: a context of our own span id and nothing else, which the backends
        // and plugins are given; no SDK span (its builder and state) only to be dropped.
        let state = caller
            .map(|sc| sc.trace_state().clone())
            .unwrap_or_default();
        let own = SpanContext::new(
            trace_id,
            t.ids.new_span_id(),
            TraceFlags::default(),
            false,
            state,
        );
        return Some(Context::new().with_remote_span_context(own));
    }
    // A new trace gets the SDK's own id: ours only decided (a ratio of random ids).
    let tracer = &t.tracer;
    let span = tracer
        .span_builder(method.as_str().to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("url.path", uri.path().to_owned()),
            KeyValue::new("network.protocol.version", protocol(version)),
            KeyValue::new("client.address", client.to_owned()),
        ])
        .start_with_context(tracer, &parent);
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
    w3c::write(cx.span().span_context(), headers);
}

/// Ends a request's server span with what was sent.
pub fn finish(cx: &Context, status: u16, bytes: u64, cache: &'static str, aborted: bool) {
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
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
pub fn trace_id(cx: &Context) -> TraceIdHex {
    let mut hex = [0; 32];
    w3c::hex(&cx.span().span_context().trace_id().to_bytes(), &mut hex);
    TraceIdHex(hex)
}

/// A trace id in hex, written without an allocation.
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits")
    }
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
        let Some(Tracing { tracer, .. }) = TRACER.get() else {
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
    /// key-value operations and outbound requests) are this span's children. `work` is
    /// pinned where it is (`pin!`): wrapped by value, a request's futures were each moved
    /// once more, ~450 instructions of memcpy a cache hit with tracing off (callgrind).
    pub fn scope<'a, F: Future>(
        &self,
        work: Pin<&'a mut F>,
    ) -> Either<WithContext<Pin<&'a mut F>>, Pin<&'a mut F>> {
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
    /// backend's spans children of this one; none when it is not recorded (the proxy's
    /// request then carries its request's context, put in its headers by
    /// [`replace_context`]).
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match &self.0 {
            Some(cx) => w3c::fields(cx.span().span_context()),
            None => Vec::new(),
        }
    }

    /// Puts this span's context in `headers`, for a request a plugin made, in place of the
    /// guest's: for a request not sampled, its request's context. With tracing on and no
    /// context known (a WASI 0.3 service's call runs on its instance's task, apart from its
    /// request), the guest's are removed all the same: a plugin never sends a context of its
    /// own making.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if TRACER.get().is_none() {
            return;
        }
        headers.remove(&w3c::TRACEPARENT);
        headers.remove(&w3c::TRACESTATE);
        let current;
        let cx = match &self.0 {
            Some(cx) => cx,
            None => {
                current = Context::current();
                &current
            }
        };
        let span = cx.span();
        if span.span_context().is_valid() {
            for (name, value) in w3c::fields(span.span_context()) {
                headers.insert(name, value);
            }
        }
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

//! The outbound-HTTP capability: `wasi:http/outgoing-handler` (0.2) and `wasi:http/client`
//! (0.3), as wasmtime-wasi-http 48 provides them, deny by default.
//!
//! - `link`: wasmtime-wasi-http's `outgoing-handler`, `client` and `types` of both versions,
//!   once per engine; every request a guest sends, by either, reaches [`Hooks::send_request`],
//!   the only way out.
//! - shared backend ([`Outbound`]): one TLS client (rustls with the system's roots and
//!   `[outbound] ca_file`) whose connector refuses addresses a destination may not resolve
//!   to, the reverse proxy's pools for `upstream:NAME`, and the metrics
//!   `plughost_outbound_requests_total{plugin,destination,outcome}` and
//!   `plughost_outbound_duration_seconds{plugin,destination}`.
//! - per-plugin state ([`Grants`]): the destinations of its `allowed_outbound`, its in-flight
//!   cap and its body cap; with none listed every request is `http-request-denied`.
//! - per-instance state ([`Instance`]): wasi:http's context (the largest header section it
//!   accepts: the plugin's `max_response_header_bytes`) and the hooks every request passes.
//!
//! What a request hands back is bounded before it is built: the response head by hyper's read
//! buffer (about 400 KiB, 100 headers) and then wasi:http's field limit (the plugin's
//! `max_response_header_bytes`), the body by `max_outbound_body_bytes` as it streams, error
//! strings by [`super::budget::error_text`].
//!
//! A URL whose authority carries userinfo (`http://user@host/`) is refused whatever its host:
//! the allow-list names hosts, and userinfo would be forwarded in `Host`. A refused request is
//! logged once per plugin and destination (up to [`DENIALS_LOGGED`] destinations a plugin),
//! naming the `allowed_outbound` entry it would need.
//!
//! The decision is made before anything is spawned or resolved: a request to a destination
//! not listed, or past the plugin's in-flight cap, fails at once. A destination given by
//! name is resolved and each address checked before connecting to that very address:
//! loopback, private, link-local (cloud metadata at 169.254.169.254 included), unique-local
//! and plughost's own listeners are refused unless `[outbound] allow_networks` lists them; a
//! destination given by address was listed explicitly and is connected to as such.
//! Redirects are returned to the guest, never followed. Every wait is bounded: connecting by
//! `[outbound] connect_timeout`, the response head by `first_byte_timeout`, each pause in the
//! body by `between_bytes_timeout`, all of them by the plugin's own deadline (a call cut off
//! drops its store, and with it every request the guest had in flight).

mod capped;
mod connect;
mod metrics;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::budget::error_text;
use super::capability::{Capability, CapabilityError, Getter};
use crate::body;
use crate::config::{Config, Destination, OutboundConfig, PluginConfig, UPSTREAM_HOST_SUFFIX};
use crate::telemetry;
use crate::upstream::{Pools, UpstreamError};
use capped::Capped;
use connect::{AddressPolicy, HttpClient, classify, http_client};
use metrics::{DestinationLabel, OutboundMetrics, OutcomeLabel};

/// The outbound-HTTP capability.
pub struct OutboundHttp;

impl Capability for OutboundHttp {
    type Backend = Outbound;
    type Grants = Grants;
    type Instance = Instance;

    /// Adds `wasi:http/outgoing-handler` and `wasi:http/types` to the linker.
    /// Through the store data's own [`WasiHttpView`], which hands out [`Instance::http`].
    fn link<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        _: Getter<T, Instance>,
    ) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }

    /// 0.3's `wasi:http/client`: its `send` reaches the same hooks, so the same allow-list.
    fn link_p3<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        _: Getter<T, Instance>,
    ) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p3::add_to_linker(linker)
    }

    fn backend(
        config: &Config,
        own: &[SocketAddr],
        registry: &mut Registry,
    ) -> Result<Outbound, CapabilityError> {
        Ok(Outbound::new(&config.outbound, own.to_vec(), registry)?)
    }

    fn grants(outbound: &Outbound, plugin: &PluginConfig) -> Result<Grants, CapabilityError> {
        Ok(outbound.grants(plugin)?)
    }

    fn instance(grants: &Grants, plugin: &PluginConfig) -> Instance {
        Instance::new(grants, plugin)
    }
}

/// What the guest's request future resolves to: the response and the task driving its
/// connection (hyper-util's client drives its own, so that one is empty).
type Sent = Result<(Response<WasiBody>, IoFuture), Error>;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// A CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot use {path}: {reason}; give a PEM file of CA certificates")]
pub struct CaFileError {
    /// The config key naming it.
    key: &'static str,
    /// The file.
    path: String,
    /// What went wrong.
    reason: String,
}

/// The server-wide part: client, address policy, pools and metrics.
#[derive(Clone)]
pub struct Outbound(Arc<Shared>);

struct Shared {
    config: OutboundConfig,
    policy: Arc<AddressPolicy>,
    /// `[outbound] ca_file`'s certificates, read at start-up so that a bad file stops it.
    extra_roots: Vec<CertificateDer<'static>>,
    /// The system's roots with those, and the client trusting them. Made when a plugin first
    /// gets a grant: reading the system store costs start-up time and memory that a server
    /// without outbound plugins should not pay.
    tls: OnceLock<(RootCertStore, HttpClient)>,
    /// The reverse proxy's pools, replaced when a reload changes them.
    pools: ArcSwapOption<Pools>,
    metrics: OutboundMetrics,
}

impl Shared {
    fn tls(&self) -> &(RootCertStore, HttpClient) {
        self.tls.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!(
                    "no system CA certificates found; https destinations need [outbound] ca_file or a plugin's outbound_ca_file"
                );
            }
            roots.add_parsable_certificates(self.extra_roots.iter().cloned());
            let client = http_client(&roots, &self.policy, self.config.connect_timeout);
            (roots, client)
        })
    }
}

impl Outbound {
    /// The backend of `config`, refusing connections to `own` (plughost's listeners) by name,
    /// counted in `registry`. Fails when `[outbound] ca_file` cannot be used.
    fn new(
        config: &OutboundConfig,
        own: Vec<SocketAddr>,
        registry: &mut Registry,
    ) -> Result<Self, CaFileError> {
        let extra_roots = match &config.ca_file {
            Some(path) => ca_certs(path, "outbound.ca_file")?,
            None => Vec::new(),
        };
        let policy = Arc::new(AddressPolicy {
            own,
            allow: config.allow_networks.iter().map(|n| n.0).collect(),
        });
        Ok(Self(Arc::new(Shared {
            config: config.clone(),
            policy,
            extra_roots,
            tls: OnceLock::new(),
            pools: ArcSwapOption::empty(),
            metrics: OutboundMetrics::register(registry),
        })))
    }

    /// The pools `upstream:NAME` destinations are sent through from now on.
    pub fn set_pools(&self, pools: Arc<Pools>) {
        self.0.pools.store(Some(pools));
    }

    /// What plugin `p` may call. Fails when its `outbound_ca_file` cannot be used.
    fn grants(&self, p: &PluginConfig) -> Result<Grants, CaFileError> {
        if p.allowed_outbound.is_empty() {
            return Ok(Grants::default());
        }
        let shared = &self.0;
        let (roots, client) = shared.tls();
        let client = match &p.outbound_ca_file {
            None => client.clone(),
            Some(path) => {
                let mut roots = roots.clone();
                roots.add_parsable_certificates(ca_certs(path, "plugins.outbound_ca_file")?);
                http_client(&roots, &shared.policy, shared.config.connect_timeout)
            }
        };
        Ok(Grants(Some(Arc::new(PluginOutbound {
            plugin: p.name.clone(),
            allowed: p.allowed_outbound.iter().cloned().collect(),
            shared: shared.clone(),
            client,
            permits: Arc::new(Semaphore::new(p.max_outbound_requests)),
            body_cap: p.max_outbound_body_bytes,
            deadline: p.timeout,
            denials: Mutex::new(HashSet::new()),
        }))))
    }
}

/// The CA certificates of a PEM file, each checked to be usable as a root.
fn ca_certs(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let fail = |reason: String| CaFileError {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs = crate::tls::pem_certs(path).map_err(fail)?;
    let mut check = RootCertStore::empty();
    for c in &certs {
        check.add(c.clone()).map_err(|e| fail(e.to_string()))?;
    }
    Ok(certs)
}

/// What one plugin may call; `None`: nothing.
#[derive(Clone, Default)]
pub struct Grants(Option<Arc<PluginOutbound>>);

struct PluginOutbound {
    plugin: String,
    allowed: HashSet<Destination>,
    shared: Arc<Shared>,
    client: HttpClient,
    /// Caps its requests in flight (held until the response body is dropped).
    permits: Arc<Semaphore>,
    body_cap: usize,
    /// The plugin's own deadline: no phase of a request waits longer.
    deadline: Duration,
    /// The destinations whose refusal was logged.
    denials: Mutex<HashSet<String>>,
}

/// Destinations a plugin's refusals are logged for; past them refusals are only counted.
pub const DENIALS_LOGGED: usize = 32;

/// One instance's wasi:http state.
pub struct Instance {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl Instance {
    /// The state of an instance of plugin `config` with `grants`.
    fn new(grants: &Grants, config: &PluginConfig) -> Self {
        let mut ctx = WasiHttpCtx::new();
        // A header section a guest builds or receives is copied within its header cap.
        ctx.set_field_size_limit(config.max_response_header_bytes);
        Self {
            ctx,
            hooks: Hooks(grants.clone()),
        }
    }
}

impl Instance {
    /// The wasi:http view of this instance's store, whose resources live in `table`.
    pub fn http<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// The `wasi:http` hooks of one instance: every outgoing request passes here.
struct Hooks(Grants);

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: IoFuture,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let Some(p) = self.0.0.clone() else {
            return Box::new(std::future::ready(Err(Error::HttpRequestDenied)));
        };
        let Some(dest) = p.destination(request.uri()) else {
            p.count("(denied)", "denied");
            p.log_denial(request.uri());
            telemetry::Child::outbound(&p.plugin, "(denied)").end("denied");
            return Box::new(std::future::ready(Err(Error::HttpRequestDenied)));
        };
        let span = telemetry::Child::outbound(&p.plugin, &dest.to_string());
        // Taken now rather than awaited: a guest looping over `handle` gets an error per
        // request past the cap, not a growing queue of waiting tasks.
        let Ok(permit) = p.permits.clone().try_acquire_owned() else {
            p.count(&dest.to_string(), "limited");
            span.end("limited");
            return Box::new(std::future::ready(Err(Error::ConnectionLimitReached)));
        };
        // The trace context is the host's: it replaces any the guest wrote.
        let mut request = request;
        span.propagate(request.headers_mut());
        Box::new(async move {
            let sent = span
                .scope(std::pin::pin!(p.send(dest, request, options, permit)))
                .await;
            span.end(match &sent {
                Ok(_) => "ok",
                Err(_) => "error",
            });
            sent
        })
    }
}

/// The waits of one request, the guest's options clamped to the host's.
#[derive(Clone, Copy)]
struct Waits {
    first_byte: Duration,
    between_bytes: Duration,
}

impl PluginOutbound {
    /// The allowed destination `uri` goes to, if any. An authority with userinfo has none.
    fn destination(&self, uri: &Uri) -> Option<Destination> {
        if uri.authority()?.as_str().contains('@') {
            return None;
        }
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return None,
        };
        let host = uri.host()?.trim_matches(['[', ']']).to_ascii_lowercase();
        let dest = match host.strip_suffix(UPSTREAM_HOST_SUFFIX) {
            Some(pool) if !tls && uri.port().is_none() => Destination::Upstream(pool.to_owned()),
            _ => Destination::Origin {
                tls,
                port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
                host,
            },
        };
        self.allowed.contains(&dest).then_some(dest)
    }

    /// Logs a refusal once per destination (the first [`DENIALS_LOGGED`] of them), with the
    /// `allowed_outbound` entry it would need. The URL is the guest's: only its scheme and
    /// authority are logged, cut short.
    fn log_denial(&self, uri: &Uri) {
        let scheme = uri.scheme_str().unwrap_or("(none)");
        let authority = uri.authority().map_or("(none)", |a| a.as_str());
        let destination = error_text(format!("{scheme}://{authority}"));
        let mut logged = self.denials.lock();
        if logged.len() > DENIALS_LOGGED || logged.contains(&destination) {
            return;
        }
        if logged.len() == DENIALS_LOGGED {
            logged.insert(String::new());
            tracing::warn!(plugin = %self.plugin, "outbound requests denied to {DENIALS_LOGGED} destinations; further ones are only counted in plughost_outbound_requests_total");
            return;
        }
        if authority.contains('@') {
            tracing::warn!(plugin = %self.plugin, destination = %destination, "outbound request denied: its URL carries userinfo (user@host), which plughost never sends; put credentials in a header");
        } else {
            let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            let needed = format!("{scheme}://{}{port}", uri.host().unwrap_or("(none)"));
            tracing::warn!(plugin = %self.plugin, destination = %destination, needed = %error_text(needed), "outbound request denied: not in the plugin's allowed_outbound; add the needed entry to it if the plugin should reach this destination");
        }
        logged.insert(destination);
    }

    fn waits(&self, options: Option<RequestOptions>) -> Waits {
        let config = &self.shared.config;
        let clamp = |guest: Option<Duration>, host: Duration| {
            guest.map_or(host, |g| g.min(host)).min(self.deadline)
        };
        let o = options.unwrap_or_default();
        Waits {
            first_byte: clamp(o.first_byte_timeout, config.first_byte_timeout),
            between_bytes: clamp(o.between_bytes_timeout, config.between_bytes_timeout),
        }
    }

    async fn send(
        self: Arc<Self>,
        dest: Destination,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        permit: OwnedSemaphorePermit,
    ) -> Sent {
        let waits = self.waits(options);
        let started = Instant::now();
        let result = match &dest {
            Destination::Upstream(pool) => self
                .via_pool(pool, request, waits)
                .await
                .map(|resp| self.capped(resp, waits, permit)),
            Destination::Origin { .. } => self
                .direct(request, waits)
                .await
                .map(|resp| self.capped(resp, waits, permit)),
        };
        let label = dest.to_string();
        match result {
            Ok(resp) => {
                self.count(&label, "ok");
                self.shared
                    .metrics
                    .duration
                    .get_or_create(&DestinationLabel {
                        plugin: self.plugin.clone(),
                        destination: label,
                    })
                    .observe(started.elapsed().as_secs_f64());
                Ok((resp, Box::new(async { Ok(()) }) as IoFuture))
            }
            Err(e) => {
                self.count(&label, outcome(&e));
                Err(e)
            }
        }
    }

    /// The guest's view of a response: its body within the plugin's cap and pauses.
    fn capped<B>(
        &self,
        resp: Response<B>,
        waits: Waits,
        permit: OwnedSemaphorePermit,
    ) -> Response<WasiBody>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Error>,
    {
        resp.map(|inner| {
            Capped {
                inner,
                left: self.body_cap,
                cap: self.body_cap,
                between: waits.between_bytes,
                idle: Box::pin(tokio::time::sleep(waits.between_bytes)),
                _permit: permit,
            }
            .boxed_unsync()
        })
    }

    /// To a destination by name or address, through the guarded connector.
    async fn direct(
        &self,
        request: Request<WasiBody>,
        waits: Waits,
    ) -> Result<Response<hyper::body::Incoming>, Error> {
        match tokio::time::timeout(waits.first_byte, self.client.request(request)).await {
            Err(_) => Err(Error::ConnectionReadTimeout),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// To `[upstreams.NAME]`, with the reverse proxy's round robin, health and retry. The
    /// request body is read first (within the body cap), so a failed connect can be retried
    /// on the next server.
    async fn via_pool(
        &self,
        pool: &str,
        request: Request<WasiBody>,
        waits: Waits,
    ) -> Result<Response<crate::upstream::pool::Upstream>, Error> {
        let pool = self
            .shared
            .pools
            .load()
            .as_ref()
            .and_then(|pools| pools.get(pool))
            .ok_or(Error::DestinationNotFound)?;
        let (parts, body) = request.into_parts();
        let cap = self.body_cap;
        let bytes = http_body_util::Limited::new(body, cap)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(Some(cap as u64)))?
            .to_bytes();
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let exchange = crate::upstream::exchange(
            &pool,
            &parts.method,
            &parts.headers,
            body::full(bytes),
            path,
            cap,
            None,
        );
        match tokio::time::timeout(waits.first_byte, exchange).await {
            Err(_) => Err(Error::ConnectionReadTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(match e {
                UpstreamError::NoHealthyServer(_) => Error::DestinationUnavailable,
                UpstreamError::Connect(_) => Error::ConnectionRefused,
                UpstreamError::Timeout(_) => Error::ConnectionReadTimeout,
                UpstreamError::Failed(_) => Error::HttpProtocolError,
                UpstreamError::BodyTooLarge { .. } => Error::HttpRequestBodySize(Some(cap as u64)),
                UpstreamError::Unencodable => Error::HttpRequestUriInvalid,
            }),
        }
    }

    fn count(&self, destination: &str, outcome: &'static str) {
        self.shared
            .metrics
            .requests
            .get_or_create(&OutcomeLabel {
                plugin: self.plugin.clone(),
                destination: destination.to_owned(),
                outcome,
            })
            .inc();
    }
}

/// The metrics label of a failure.
fn outcome(e: &Error) -> &'static str {
    match e {
        Error::DestinationIpProhibited => "refused_address",
        Error::ConnectionTimeout | Error::ConnectionReadTimeout => "timeout",
        Error::ConnectionRefused | Error::DestinationUnavailable | Error::DnsError { .. } => {
            "connect"
        }
        Error::HttpRequestBodySize(_) => "too_large",
        Error::TlsProtocolError | Error::TlsCertificateError => "tls",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(allowed: &[&str]) -> Arc<PluginOutbound> {
        let mut p = PluginConfig::filter("p".into(), "p.wasm".into());
        p.allowed_outbound = allowed
            .iter()
            .map(|d| Destination::try_from(d.to_string()).unwrap())
            .collect();
        let out =
            Outbound::new(&OutboundConfig::default(), vec![], &mut Registry::default()).unwrap();
        out.grants(&p).unwrap().0.unwrap()
    }

    #[tokio::test]
    async fn only_listed_scheme_host_and_port_are_allowed() {
        let g = grants(&[
            "http://127.0.0.1:8081",
            "https://auth.example",
            "upstream:api",
        ]);
        let allowed = |u: &str| g.destination(&u.parse().unwrap()).is_some();
        assert!(allowed("http://127.0.0.1:8081/x?y"));
        assert!(allowed("https://AUTH.example/token"));
        assert!(allowed("https://auth.example:443/"));
        assert!(allowed("http://api.upstream.internal/v1"));
        assert!(!allowed("http://127.0.0.1:8082/"));
        assert!(!allowed("https://127.0.0.1:8081/"));
        assert!(!allowed("http://auth.example/"));
        assert!(!allowed("http://localhost:8081/"));
        assert!(!allowed("http://other.upstream.internal/"));
        assert!(!allowed("http://169.254.169.254/latest/meta-data"));
        // Userinfo: the listed host after `@`, or before it, is no way in.
        assert!(!allowed("http://127.0.0.1:9@127.0.0.1:8081/"));
        assert!(!allowed("http://user@127.0.0.1:8081/"));
        assert!(!allowed("http://127.0.0.1:8081@evil.example/"));
    }
}

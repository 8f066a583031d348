//! The outbound-HTTP capability: `wasi:http/outgoing-handler` (the 0.2 version wasmtime 48
//! provides, through `wasmtime-wasi-http`), deny by default.
//!
//! - `link`: wasmtime-wasi-http's `outgoing-handler` and `types`, once per engine; every
//!   request a guest sends reaches [`Hooks::send_request`], the only way out.
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

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::budget::error_text;
use super::{Capability, CapabilityError, State};
use crate::balancer::Pools;
use crate::body;
use crate::config::{Config, Destination, OutboundConfig, PluginConfig, UPSTREAM_HOST_SUFFIX};
use crate::error::{ClientError, RequestError, UpstreamError};
use crate::proxy::h1;

/// The outbound-HTTP capability.
pub struct OutboundHttp;

impl Capability for OutboundHttp {
    type Backend = Outbound;
    type Grants = Grants;
    type Instance = Instance;

    /// Adds `wasi:http/outgoing-handler` and `wasi:http/types` to the linker.
    fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
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

/// The client every plugin's direct requests go through.
type HttpClient = Client<HttpsConnector<Guarded>, WasiBody>;

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

fn http_client(
    roots: &RootCertStore,
    policy: &Arc<AddressPolicy>,
    connect: Duration,
) -> HttpClient {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Guarded {
            policy: policy.clone(),
            timeout: connect,
        });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
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

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.caps.outbound.ctx,
            table: &mut self.table,
            hooks: &mut self.caps.outbound.hooks,
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
            return Box::new(std::future::ready(Err(Error::HttpRequestDenied)));
        };
        // Taken now rather than awaited: a guest looping over `handle` gets an error per
        // request past the cap, not a growing queue of waiting tasks.
        let Ok(permit) = p.permits.clone().try_acquire_owned() else {
            p.count(&dest.to_string(), "limited");
            return Box::new(std::future::ready(Err(Error::ConnectionLimitReached)));
        };
        Box::new(async move { p.send(dest, request, options, permit).await })
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
    ) -> Result<Response<crate::proxy::pool::Upstream>, Error> {
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
        let exchange = crate::proxy::exchange(
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
            Ok(Err(RequestError::Upstream(e))) => Err(match e {
                UpstreamError::NoHealthyServer(_) => Error::DestinationUnavailable,
                UpstreamError::Connect(_) => Error::ConnectionRefused,
                UpstreamError::Timeout(_) => Error::ConnectionReadTimeout,
                UpstreamError::Failed(_) => Error::HttpProtocolError,
            }),
            Ok(Err(RequestError::Client(ClientError::BodyTooLarge { .. }))) => {
                Err(Error::HttpRequestBodySize(Some(cap as u64)))
            }
            Ok(Err(e)) => Err(Error::InternalError(Some(e.to_string()))),
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

/// The interface's error for a failed request of hyper-util's client.
fn classify(e: &hyper_util::client::legacy::Error) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<Refused>() {
            return Error::DestinationIpProhibited;
        }
        if let Some(Lookup(why)) = c.downcast_ref::<Lookup>() {
            return Error::DnsError {
                rcode: Some(why.clone()),
                info_code: None,
            };
        }
        if c.is::<rustls::Error>() {
            return Error::TlsCertificateError;
        }
        cause = match c.downcast_ref::<io::Error>() {
            Some(io) => match io.kind() {
                io::ErrorKind::ConnectionRefused => return Error::ConnectionRefused,
                io::ErrorKind::TimedOut => return Error::ConnectionTimeout,
                // The connector's refusals and TLS errors travel inside io::Errors (nested,
                // by hyper-rustls), whose `source` skips the error they carry.
                _ => io
                    .get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static)),
            },
            None => c.source(),
        };
    }
    if e.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::HttpProtocolError
    }
}

/// A response body within the plugin's byte cap and the pause allowed between chunks. It
/// holds the request's in-flight permit until the guest drops it.
struct Capped<B> {
    inner: B,
    left: usize,
    cap: usize,
    between: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<B> http_body::Body for Capped<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > this.left {
                    this.left = 0;
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                        this.cap as u64,
                    )))));
                }
                this.left -= len;
                let next = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The interface's error for a body from `[upstreams.NAME]` that failed while it was read.
impl From<h1::Error> for Error {
    fn from(e: h1::Error) -> Self {
        match e {
            h1::Error::Io(_) | h1::Error::Closed => Error::ConnectionTerminated,
            h1::Error::Truncated(_) => Error::HttpResponseIncomplete,
            h1::Error::Malformed(_) | h1::Error::Body(_) => Error::HttpProtocolError,
        }
    }
}

/// A connection the address policy refused; nothing was connected.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves only to addresses outbound requests may not reach ({addrs:?}); list the address itself in allowed_outbound, or its network in [outbound] allow_networks"
)]
struct Refused {
    host: String,
    addrs: Vec<SocketAddr>,
}

/// A name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {0}")]
struct Lookup(String);

/// Which addresses a request may connect to.
struct AddressPolicy {
    /// plughost's own listeners.
    own: Vec<SocketAddr>,
    /// `[outbound] allow_networks`.
    allow: Vec<ipnet::IpNet>,
}

impl AddressPolicy {
    /// Whether a connection to `addr` may be made; `named`: it came from resolving a name
    /// (an address written in `allowed_outbound` was listed explicitly).
    fn permits(&self, addr: SocketAddr, named: bool) -> bool {
        let ip = canonical(addr.ip());
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return false;
        }
        if !named {
            return true;
        }
        let own = self.own.iter().any(|l| {
            l.port() == addr.port() && (l.ip().is_unspecified() || canonical(l.ip()) == ip)
        });
        if own {
            return false;
        }
        self.allow.iter().any(|n| n.contains(&ip)) || !special(ip)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses that are not on the public internet: loopback, private, shared, link-local
/// (cloud metadata services), reserved and documentation ranges, unique-local IPv6, and
/// NAT64 addresses of any of those.
fn special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [_, _, _, _, _, _, hi, lo] = s;
                let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
                return special(IpAddr::V4(v4));
            }
            v6 == Ipv6Addr::LOCALHOST
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0xdb8)
        }
    }
}

/// The connector under TLS: resolves, checks every address against the policy and connects
/// to the first one allowed, within the connect timeout. hyper-util's `HttpConnector` would
/// resolve and connect in one step, with no place to refuse an address in between.
#[derive(Clone)]
struct Guarded {
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Guarded {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = self.policy.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let connect = connect(&policy, &uri);
            tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }
}

async fn connect(policy: &AddressPolicy, uri: &Uri) -> io::Result<TokioIo<TcpStream>> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
        .trim_matches(['[', ']']);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let (addrs, named): (Vec<SocketAddr>, bool) = match host.parse::<IpAddr>() {
        Ok(ip) => (vec![SocketAddr::new(ip, port)], false),
        Err(_) => {
            let found = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| io::Error::other(Lookup(error_text(format!("{host}: {e}")))))?;
            (found.collect(), true)
        }
    };
    let Some(addr) = addrs.iter().copied().find(|a| policy.permits(*a, named)) else {
        tracing::warn!(
            host,
            ?addrs,
            "outbound connection refused: the destination resolves to an address plugins may not reach"
        );
        return Err(io::Error::other(Refused {
            host: host.to_owned(),
            addrs,
        }));
    };
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(stream))
}

/// The labels of outbound metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    plugin: String,
    /// An `allowed_outbound` entry, or `(denied)`: never the guest's own URL, so the series
    /// stay as few as the config's entries.
    destination: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabel {
    plugin: String,
    destination: String,
}

/// This capability's metrics, registered by itself.
struct OutboundMetrics {
    requests: Family<OutcomeLabel, Counter>,
    duration: Family<DestinationLabel, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

impl OutboundMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "plughost_outbound_requests",
            "Outbound HTTP requests of plugins by destination and outcome (ok, denied, limited, refused_address, timeout, connect, tls, too_large, error)",
            m.requests.clone(),
        );
        registry.register(
            "plughost_outbound_duration_seconds",
            "Time from an outbound request to its response head",
            m.duration.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AddressPolicy {
        AddressPolicy {
            own: vec![
                "127.0.0.1:9091".parse().unwrap(),
                "0.0.0.0:9090".parse().unwrap(),
            ],
            allow: vec!["10.1.0.0/16".parse().unwrap()],
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn named_destinations_may_not_resolve_to_internal_addresses() {
        let p = policy();
        for refused in [
            "127.0.0.1:80",
            "169.254.169.254:80",
            "10.0.0.1:80",
            "192.168.1.1:443",
            "100.64.0.1:80",
            "[::1]:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            // Any address on the port of a listener bound to all interfaces.
            "93.184.216.34:9090",
        ] {
            assert!(!p.permits(addr(refused), true), "{refused} permitted");
        }
        for permitted in ["93.184.216.34:443", "10.1.2.3:80", "[2606:4700::1]:443"] {
            assert!(p.permits(addr(permitted), true), "{permitted} refused");
        }
    }

    #[test]
    fn addresses_listed_explicitly_are_permitted() {
        let p = policy();
        assert!(p.permits(addr("127.0.0.1:8081"), false));
        assert!(p.permits(addr("127.0.0.1:9091"), false));
        assert!(!p.permits(addr("0.0.0.0:80"), false));
    }

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

    /// A name allowed by the list that resolves to loopback is refused before any
    /// connection: the listener never sees one.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_without_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri: Uri = format!("http://localhost:{port}/").parse().unwrap();
        let e = connect(&policy(), &uri).await.unwrap_err();
        assert!(e.get_ref().is_some_and(|e| e.is::<Refused>()), "{e}");
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
        // The same listener by its address, listed explicitly, is reached.
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        connect(&policy(), &uri).await.unwrap();
        listener.accept().await.unwrap();
    }
}

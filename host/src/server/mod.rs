//! Listeners and connections: binding with errors a user can act on, the accept loop, one task
//! per connection (HTTP/1.1 with keep-alive, or HTTP/2 — by prior knowledge in cleartext, by
//! ALPN over TLS — chosen by hyper-util's auto builder), and the graceful drain at shutdown.
//! As mini-redis does, the accept loop (`Listener`) is apart from one connection's task
//! (`Connection`). The deadlines of one connection, and the reclaiming of idle ones at
//! `max_connections`, are in [`conn`]; the threads that run the public listener's
//! connections in [`crate::workers`].

pub mod conn;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::body::Body;
use crate::client::Client;
use crate::config::Config;
use crate::metrics::{Metrics, ReasonLabel};
use crate::pipeline::Pipeline;
use crate::workers::Workers;
use conn::{Close, ConnState, Deadlines, Tracked, Tracker, Watched};

/// A listener that could not be opened, in words that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process holds the port.
    #[error(
        "cannot listen on {addr}: the address is already in use; find its owner with `ss -ltnp 'sport = :{port}'` or `lsof -i :{port}`, stop it or choose another port (--port)",
        port = addr.port()
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A privileged port without the right to bind it.
    #[error(
        "cannot listen on {addr}: permission denied; ports below 1024 need privileges, choose a port above 1024 (--port 9090)"
    )]
    PermissionDenied {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Anything else the OS refused.
    #[error("cannot listen on {addr}: {source}")]
    Other {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Connections the kernel completes and queues before plughost accepts them. tokio's default
/// (128) overflows under a burst of new connections, and each overflow costs the client a
/// 1 s SYN retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Opens a listening socket on `addr`.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // Lets a restarted plughost bind while old connections sit in TIME_WAIT. (On Windows
        // the flag would let another process steal the port, so it is Unix only.)
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse { addr },
        io::ErrorKind::PermissionDenied => BindError::PermissionDenied { addr },
        _ => BindError::Other { addr, source },
    })
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// Per-connection settings shared by every connection of one listener.
#[derive(Clone)]
pub struct ConnLimits {
    /// Connections held at once; the rest wait in the accept backlog.
    pub max_connections: usize,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Most headers in a request.
    pub max_headers: usize,
    /// Time allowed for a request head to arrive, and for the first one from accept.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request after its last response.
    pub keepalive_timeout: Duration,
    /// How long open requests may run on at shutdown.
    pub shutdown_timeout: Duration,
}

impl ConnLimits {
    /// The limits of the public listener.
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            header_read_timeout: config.header_read_timeout,
            keepalive_timeout: config.keepalive_timeout,
            shutdown_timeout: config.shutdown_timeout,
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            // No timer: the time a head may take is kept by the listener's sweeper
            // (`conn::Tracker::sweep`), as is every other connection deadline.
            // Heads larger than the buffer, or with too many headers, get 431 from hyper.
            .max_buf_size(self.max_header_bytes)
            .max_headers(self.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.max_header_bytes.try_into().unwrap_or(u32::MAX))
            // Pings find peers that vanished while streams are open; an idle HTTP/2
            // connection is closed by the listener's sweeper like an HTTP/1 one.
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_INTERVAL);
        builder
    }
}

/// Serves connections from `listener` with `handler` until `shutdown` is cancelled, then stops
/// accepting and lets open requests finish for up to `shutdown_timeout`. With `tls`, each
/// connection completes a TLS handshake (within `header_read_timeout`) first. Connections run
/// on `workers` when given, else on the runtime that runs this.
///
/// Errors of one connection are logged in its task and never stop the accept loop.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    metrics: Option<Arc<Metrics>>,
    workers: Option<&Workers>,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let tracker = Tracker::new();
    let sweeper = tokio::spawn({
        let tracker = tracker.clone();
        let deadlines = Deadlines {
            header_read: limits.header_read_timeout,
            keepalive: limits.keepalive_timeout,
        };
        async move { tracker.sweep(deadlines).await }
    });
    let accept = Listener {
        listener,
        tls,
        builder: Arc::new(limits.builder()),
        tracker,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        metrics,
        workers,
        handler,
    };
    accept.run(&shutdown).await;
    let Listener {
        listener,
        tracker,
        slots,
        ..
    } = accept;
    drop(listener);
    tracker.shut_down();
    sweeper.abort();
    // Every connection task gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(timeout = ?limits.shutdown_timeout, "requests still open at the end of the shutdown timeout were cut off");
        }
    }
}

/// The accept loop of one listener and what its connections share. Lives until shutdown.
struct Listener<'w, H> {
    listener: TcpListener,
    /// Makes the listener HTTPS.
    tls: Option<TlsAcceptor>,
    /// hyper-util's HTTP/1 + HTTP/2 server, configured from the limits.
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Every open connection's state, for the sweeper, reclaiming and shutdown.
    tracker: Arc<Tracker>,
    /// Permits for open connections; one moves into each connection task and drops with it.
    slots: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
    /// Where connections run; `None`: on the accept loop's runtime.
    workers: Option<&'w Workers>,
    handler: H,
}

impl<H, F> Listener<'_, H>
where
    H: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Accepts connections, one task each, until `shutdown` is cancelled.
    async fn run(&self, shutdown: &CancellationToken) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let (stream, client) = match accepted {
                Ok((stream, addr)) => (stream, Client::new(addr)),
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: the
                    // listener itself is fine, so wait a little and go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.slot(shutdown).await else {
                return;
            };
            // Responses are written whole; Nagle's algorithm would only delay them.
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                client,
                state: self.tracker.open(),
                tracker: self.tracker.clone(),
                metrics: self.metrics.clone(),
                _slot: slot,
            };
            let service = service(
                self.handler.clone(),
                conn.state.clone(),
                conn.client.clone(),
                self.tls.is_some(),
            );
            let (builder, tls) = (self.builder.clone(), self.tls.clone());
            let Some(workers) = self.workers else {
                tokio::spawn(conn.run(stream, tls, builder, service));
                continue;
            };
            // The socket leaves this runtime's event loop and joins the worker's.
            match stream.into_std() {
                Ok(stream) => workers.spawn(move || async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => conn.run(stream, tls, builder, service).await,
                        Err(e) => conn.lost(&e),
                    }
                }),
                Err(e) => conn.lost(&e),
            }
        }
    }

    /// A connection slot, once one is free: when all are taken, the connection idle longest
    /// makes room; with none idle (every one has a request in progress), the new client waits
    /// for a slot. `None` at shutdown.
    async fn slot(&self, shutdown: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        if self.tracker.reclaim_idle()
            && let Some(m) = &self.metrics
        {
            m.connections_closed
                .get_or_create(&ReasonLabel {
                    reason: "reclaimed",
                })
                .inc();
        }
        tokio::select! {
            slot = self.slots.clone().acquire_owned() => Some(slot.expect("never closed")),
            () = shutdown.cancelled() => None,
        }
    }
}

/// One connection's task: its TLS handshake, hyper's connection, and the deadlines its state
/// says it passed. Lives as long as the connection, and holds its slot until then.
struct Connection {
    client: Client,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
    metrics: Option<Arc<Metrics>>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection until it ends, is closed for a deadline, or drains at shutdown.
    async fn run<S>(
        self,
        stream: TcpStream,
        tls: Option<TlsAcceptor>,
        builder: Arc<auto::Builder<TokioExecutor>>,
        service: S,
    ) where
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Tracked<Body>>,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        if let Some(m) = &self.metrics {
            m.connections.inc();
        }
        // The TLS handshake counts against the time to the first request head.
        let io = match tls {
            None => Some(Either::Left(stream)),
            Some(tls) => tokio::select! {
                done = tls.accept(stream) => match done {
                    Ok(io) => Some(Either::Right(io)),
                    Err(e) => {
                        tracing::debug!(client = %self.client, error = %e, "TLS handshake failed");
                        None
                    }
                },
                reason = self.state.closed() => {
                    self.closed(reason);
                    None
                }
            },
        };
        if let Some(io) = io {
            let io = TokioIo::new(Watched::new(io, self.state.clone()));
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            let result = tokio::select! {
                biased;
                result = conn.as_mut() => Some(result),
                reason = self.state.closed() => {
                    if reason == Close::Shutdown {
                        // Idle connections close now; open requests may finish.
                        conn.as_mut().graceful_shutdown();
                        Some(conn.await)
                    } else {
                        self.closed(reason);
                        None
                    }
                }
            };
            if let Some(Err(e)) = result {
                // Client resets and protocol errors: the client's business.
                tracing::debug!(client = %self.client, error = %e, "connection ended with an error");
            }
        }
        self.tracker.close(&self.state);
        if let Some(m) = &self.metrics {
            m.connections.dec();
        }
    }

    /// Gives up a connection whose socket could not move to its worker (it is closed).
    fn lost(self, e: &io::Error) {
        tracing::warn!(client = %self.client, error = %e, "connection dropped: its socket could not join a worker's event loop");
        self.tracker.close(&self.state);
    }

    /// Counts and logs a close for a deadline (reclaims are counted where the accept loop
    /// asks for them).
    fn closed(&self, reason: Close) {
        tracing::debug!(client = %self.client, reason = reason.as_str(), "connection closed by plughost");
        if let Some(m) = &self.metrics
            && !matches!(reason, Close::Reclaimed | Close::Shutdown)
        {
            m.connections_closed
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
        }
    }
}

/// The hyper service of one connection: each request goes to `handler` with the connection's
/// `client`, and its response body keeps the connection's `state` told of when it is done.
fn service<H, F>(
    handler: H,
    state: Arc<ConnState>,
    client: Client,
    https: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<Body>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Tracked<Body>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static
where
    H: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    service_fn(move |mut req: Request<Incoming>| {
        if https {
            req.extensions_mut().insert(crate::proxy::Https);
        }
        let busy = state.begin(req.version() == http::Version::HTTP_2);
        let (handler, client) = (handler.clone(), client.clone());
        // The handler's future holds the whole pipeline's state (kilobytes), and hyper moves a
        // service's future a few times before polling it: each move was a memcpy of that
        // size, 8,900 instructions of a 39,600-instruction cache hit (callgrind 2026-11).
        // Boxed, and made only when first polled, it moves as a pointer.
        Box::pin(async move {
            Ok::<_, Infallible>(handler(req, client).await.map(|b| Tracked::new(b, busy)))
        })
    })
}

/// The bound listeners of a server.
pub struct Listeners {
    /// Requests go through the pipeline here.
    pub public: TcpListener,
    /// Makes `public` HTTPS.
    pub tls: Option<TlsAcceptor>,
    /// Cleartext listener that redirects to `public` (with `tls.redirect_port`).
    pub redirect: Option<TcpListener>,
    /// The admin API and its listener.
    pub admin: Option<(TcpListener, Arc<Admin>)>,
}

/// Serves the public listener through `pipeline` on `workers` and, when given, the redirect
/// and admin listeners on this runtime, until `shutdown` is cancelled and all have drained.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    workers: &Workers,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
) {
    let Listeners {
        public,
        tls,
        redirect,
        admin,
    } = listeners;
    let https_port = public.local_addr().map_or(config.port, |a| a.port());
    let metrics = Some(pipeline.clone_metrics());
    let public = serve(
        public,
        tls,
        ConnLimits::from_config(config),
        metrics,
        Some(workers),
        move |req, client| {
            let pipeline = pipeline.clone();
            async move { pipeline.handle(req, client).await }
        },
        shutdown.clone(),
    );
    let admin = async {
        if let Some((listener, api)) = admin {
            let limits = ConnLimits {
                // The admin API is for a few operators and scrapers.
                max_connections: 64,
                ..ConnLimits::from_config(config)
            };
            let handler = move |req: Request<Incoming>, _| {
                let api = api.clone();
                async move { api.handle(&req).await }
            };
            serve(
                listener,
                None,
                limits,
                None,
                None,
                handler,
                shutdown.clone(),
            )
            .await;
        }
    };
    let redirect = async {
        if let Some(listener) = redirect {
            let handler = move |req: Request<Incoming>, _| {
                std::future::ready(crate::tls::redirect(&req, https_port))
            };
            let limits = ConnLimits::from_config(config);
            serve(
                listener,
                None,
                limits,
                None,
                None,
                handler,
                shutdown.clone(),
            )
            .await;
        }
    };
    tokio::join!(public, admin, redirect);
}

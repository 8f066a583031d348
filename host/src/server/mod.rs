//! Listeners and connections: binding with errors a user can act on, the accept loop, one task
//! per connection, and the graceful drain at shutdown. A connection speaks HTTP/1.1 through
//! plughost's own server ([`h1`]) unless it begins with the HTTP/2 preface (prior knowledge in
//! cleartext, or after ALPN over TLS), which hyper serves ([`h2`]).
//! As mini-redis does, the accept loop (`Listener`) is apart from one connection's task
//! (`Connection`). The deadlines of one connection, and the reclaiming of idle ones at
//! `max_connections`, are in [`conn`]; the threads that run the public listener's
//! connections in [`crate::workers`].

pub mod conn;
pub mod h1;
pub mod h2;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::body::{Body, BoxError};
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

    /// What an HTTP/1 head may hold: heads larger, or with more fields, get 431.
    fn head(&self) -> h1::HeadLimits {
        h1::HeadLimits {
            bytes: self.max_header_bytes,
            fields: self.max_headers,
        }
    }
}

/// A request's body as a handler gets it: read off an HTTP/1 connection by plughost, or an
/// HTTP/2 stream's by hyper.
pub enum RequestBody {
    /// From plughost's HTTP/1 server.
    H1(h1::wire::Body),
    /// From hyper's HTTP/2 server.
    H2(Incoming),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(body) => body.is_end_stream(),
            Self::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::H1(body) => body.size_hint(),
            Self::H2(body) => body.size_hint(),
        }
    }
}

/// What every connection of a listener is served with.
struct Serving<H> {
    handler: H,
    head: h1::HeadLimits,
    /// hyper's HTTP/2 server, configured from the limits.
    h2: http2::Builder<TokioExecutor>,
    https: bool,
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
    H: Fn(Request<RequestBody>, Client) -> F + Clone + Send + Sync + 'static,
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
    let serving = Arc::new(Serving {
        handler,
        head: limits.head(),
        h2: h2::builder(limits.max_header_bytes),
        https: tls.is_some(),
    });
    let accept = Listener {
        listener,
        tls,
        serving,
        tracker,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        metrics,
        workers,
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
    serving: Arc<Serving<H>>,
    /// Every open connection's state, for the sweeper, reclaiming and shutdown.
    tracker: Arc<Tracker>,
    /// Permits for open connections; one moves into each connection task and drops with it.
    slots: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
    /// Where connections run; `None`: on the accept loop's runtime.
    workers: Option<&'w Workers>,
}

impl<H, F> Listener<'_, H>
where
    H: Fn(Request<RequestBody>, Client) -> F + Clone + Send + Sync + 'static,
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
            let (serving, tls) = (self.serving.clone(), self.tls.clone());
            let Some(workers) = self.workers else {
                tokio::spawn(conn.run(stream, tls, serving));
                continue;
            };
            // The socket leaves this runtime's event loop and joins the worker's.
            match stream.into_std() {
                Ok(stream) => workers.spawn(move || async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => conn.run(stream, tls, serving).await,
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

/// One connection's task: its TLS handshake, its HTTP/1 or HTTP/2 connection, and the deadlines
/// its state says it passed. Lives as long as the connection, and holds its slot until then.
struct Connection {
    client: Client,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
    metrics: Option<Arc<Metrics>>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection until it ends, is closed for a deadline, or drains at shutdown.
    async fn run<H, F>(self, stream: TcpStream, tls: Option<TlsAcceptor>, serving: Arc<Serving<H>>)
    where
        H: Fn(Request<RequestBody>, Client) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
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
            let io = Watched::new(io, self.state.clone());
            let s = &*serving;
            let handler = |req: Request<h1::wire::Body>, client| {
                (s.handler)(req.map(RequestBody::H1), client)
            };
            match h1::serve(io, &self.state, s.head, &self.client, s.https, &handler).await {
                h1::Ended::Done => {}
                h1::Ended::Closed(reason) => self.closed(reason),
                h1::Ended::Http2(io, read) => self.http2(h2::rewound(io, read), s).await,
            }
        }
        self.tracker.close(&self.state);
        if let Some(m) = &self.metrics {
            m.connections.dec();
        }
    }

    /// Serves an HTTP/2 connection through hyper until it ends, is closed for a deadline, or
    /// drains at shutdown.
    async fn http2<H, F>(&self, io: h2::Rewound, serving: &Serving<H>)
    where
        H: Fn(Request<RequestBody>, Client) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let service = service(
            serving.handler.clone(),
            self.state.clone(),
            self.client.clone(),
            serving.https,
        );
        let conn = serving.h2.serve_connection(io, service);
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

/// The hyper service of one HTTP/2 connection: each request goes to `handler` with the
/// connection's `client`, and its response body keeps the connection's `state` told of when it
/// is done.
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
    H: Fn(Request<RequestBody>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(RequestBody::H2);
        if https {
            req.extensions_mut().insert(crate::proxy::Https);
        }
        let busy = state.begin(true);
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
            let handler = move |req: Request<RequestBody>, _| {
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
            let handler = move |req: Request<RequestBody>, _| {
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

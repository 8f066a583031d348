//! Listeners and connections: binding with errors a user can act on, the accept loop, one task
//! per connection (HTTP/1.1 with keep-alive, or HTTP/2 — by prior knowledge in cleartext, by
//! ALPN over TLS — chosen by hyper-util's auto builder), and the graceful drain at shutdown.

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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::body::Body;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

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
    /// Time allowed for a request head to arrive.
    pub header_read_timeout: Duration,
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
            shutdown_timeout: config.shutdown_timeout,
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // A complete head within this time, or the connection closes: stops slowloris.
            .header_read_timeout(self.header_read_timeout)
            // Heads larger than the buffer, or with too many headers, get 431 from hyper.
            .max_buf_size(self.max_header_bytes)
            .max_headers(self.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.max_header_bytes.try_into().unwrap_or(u32::MAX));
        builder
    }
}

/// Serves connections from `listener` with `handler` until `shutdown` is cancelled, then stops
/// accepting and lets open requests finish for up to `shutdown_timeout`. With `tls`, each
/// connection completes a TLS handshake (within `header_read_timeout`) first.
///
/// Errors of one connection are logged in its task and never stop the accept loop.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    metrics: Option<Arc<Metrics>>,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(limits.builder());
    let graceful = GracefulShutdown::new();
    // Permits for open connections; one moves into each connection task and drops with it.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: the listener
                // itself is fine, so wait a little and go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses are written whole; Nagle's algorithm would only delay them.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let response = handler(req, client);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        let (tls, handshake_timeout) = (tls.clone(), limits.header_read_timeout);
        tokio::spawn(async move {
            if let Some(m) = &metrics {
                m.connections.inc();
            }
            let io = match tls {
                None => Ok(Either::Left(stream)),
                Some(tls) => tokio::time::timeout(handshake_timeout, tls.accept(stream))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    .map(Either::Right),
            };
            let result = match io {
                Ok(io) => {
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    watcher.watch(conn).await
                }
                Err(e) => Err(format!("TLS handshake: {e}").into()),
            };
            if let Err(e) = result {
                // Client resets, timeouts and protocol errors: the client's business.
                tracing::debug!(%client, error = %e, "connection ended with an error");
            }
            if let Some(m) = &metrics {
                m.connections.dec();
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(timeout = ?limits.shutdown_timeout, "requests still open at the end of the shutdown timeout were cut off");
        }
    }
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

/// Serves the public listener through `pipeline` and, when given, the redirect and admin
/// listeners, until `shutdown` is cancelled and all have drained.
pub async fn run(
    config: &Config,
    listeners: Listeners,
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
            serve(listener, None, limits, None, handler, shutdown.clone()).await;
        }
    };
    let redirect = async {
        if let Some(listener) = redirect {
            let handler = move |req: Request<Incoming>, _| {
                std::future::ready(crate::tls::redirect(&req, https_port))
            };
            let limits = ConnLimits::from_config(config);
            serve(listener, None, limits, None, handler, shutdown.clone()).await;
        }
    };
    tokio::join!(public, admin, redirect);
}

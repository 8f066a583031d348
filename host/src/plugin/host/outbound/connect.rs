//! Where a plugin's direct requests connect: the TLS client and, under it, the connector that
//! resolves a name, checks every address against the address policy and connects only to one
//! the policy permits; and how that client's failures read to the guest.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::plugin::host::budget::error_text;

/// The client every plugin's direct requests go through.
pub(super) type HttpClient = Client<HttpsConnector<Guarded>, WasiBody>;

/// A client trusting `roots` whose connections `policy` checks, each made within `connect`.
pub(super) fn http_client(
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

/// The interface's error for a failed request of hyper-util's client.
pub(super) fn classify(e: &hyper_util::client::legacy::Error) -> Error {
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
pub(super) struct AddressPolicy {
    /// plughost's own listeners.
    pub(super) own: Vec<SocketAddr>,
    /// `[outbound] allow_networks`.
    pub(super) allow: Vec<ipnet::IpNet>,
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
pub(super) struct Guarded {
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

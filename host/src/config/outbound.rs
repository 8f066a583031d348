//! Outbound HTTP from plugins: the server-wide `[outbound]` table (timeouts, extra CA roots,
//! networks named destinations may resolve into) and the destinations a `[[plugins]]` entry
//! may call (`allowed_outbound`).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::{
    DEFAULT_OUTBOUND_BETWEEN_BYTES_TIMEOUT, DEFAULT_OUTBOUND_CONNECT_TIMEOUT,
    DEFAULT_OUTBOUND_FIRST_BYTE_TIMEOUT,
};

/// The `[outbound]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Time to connect (name lookup included) [default: 1s].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time from sending a request to its response head [default: 5s].
    #[serde(default = "default_first_byte_timeout", with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest pause between two chunks of a response body [default: 5s].
    #[serde(default = "default_between_bytes_timeout", with = "humantime_serde")]
    pub between_bytes_timeout: Duration,
    /// PEM file of CA certificates trusted for `https` destinations besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Networks a destination given by *name* may resolve into although they are private,
    /// loopback or link-local (e.g. `["10.0.0.0/8"]`). Destinations given by address need
    /// no entry: listing the address is explicit.
    #[serde(default)]
    pub allow_networks: Vec<ProxyNet>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_OUTBOUND_CONNECT_TIMEOUT,
            first_byte_timeout: DEFAULT_OUTBOUND_FIRST_BYTE_TIMEOUT,
            between_bytes_timeout: DEFAULT_OUTBOUND_BETWEEN_BYTES_TIMEOUT,
            ca_file: None,
            allow_networks: Vec::new(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    DEFAULT_OUTBOUND_CONNECT_TIMEOUT
}
fn default_first_byte_timeout() -> Duration {
    DEFAULT_OUTBOUND_FIRST_BYTE_TIMEOUT
}
fn default_between_bytes_timeout() -> Duration {
    DEFAULT_OUTBOUND_BETWEEN_BYTES_TIMEOUT
}

/// The host under which a plugin addresses an `[upstreams.NAME]` pool:
/// `http://NAME.upstream.internal/path` (`.internal` is reserved for private use, so it never
/// names a public host).
pub const UPSTREAM_HOST_SUFFIX: &str = ".upstream.internal";

/// One entry of `allowed_outbound`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`: that scheme, host and port only.
    Origin {
        /// Whether it is `https`.
        tls: bool,
        /// Lower-case name, or an IP address (IPv6 without brackets).
        host: String,
        /// The port, the scheme's default when not written.
        port: u16,
    },
    /// `upstream:NAME`: the reverse proxy's pool `NAME`, with its round robin, health and
    /// retries.
    Upstream(String),
}

impl Destination {
    /// Whether the host is an IP address (listed explicitly, so any address is allowed).
    pub fn is_address(&self) -> bool {
        matches!(self, Self::Origin { host, .. } if host.parse::<std::net::IpAddr>().is_ok())
    }
}

impl TryFrom<String> for Destination {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("upstream:") {
            if name.is_empty() {
                return Err("`upstream:` needs a pool name, like upstream:api".into());
            }
            return Ok(Self::Upstream(name.to_owned()));
        }
        let bad = || {
            format!(
                "`{s}` is not an allowed destination: write http://HOST[:PORT], \
                 https://HOST[:PORT] or upstream:NAME"
            )
        };
        let uri: http::Uri = s.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let path_ok = uri.path() == "/" && uri.query().is_none();
        let (Some(authority), true) = (uri.authority(), path_ok) else {
            return Err(bad());
        };
        if authority.as_str().contains('@') {
            return Err(bad());
        }
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self::Origin { tls, host, port })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upstream(name) => write!(f, "upstream:{name}"),
            Self::Origin { tls, host, port } => {
                let scheme = if *tls { "https" } else { "http" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}")
                } else {
                    write!(f, "{scheme}://{host}:{port}")
                }
            }
        }
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> Self {
        d.to_string()
    }
}

/// An address or a network (trusted proxies, outbound allow-lists): (`10.0.0.7`) or a network (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProxyNet(pub ipnet::IpNet);

impl TryFrom<String> for ProxyNet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| format!("`{s}` is neither an address nor a network like 10.0.0.0/8"))
    }
}

impl From<ProxyNet> for String {
    fn from(n: ProxyNet) -> Self {
        n.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Destination, String> {
        Destination::try_from(s.to_owned())
    }

    #[test]
    fn destinations_parse_with_default_ports() {
        assert_eq!(
            parse("https://Auth.Example.com").unwrap().to_string(),
            "https://auth.example.com:443"
        );
        assert_eq!(
            parse("http://127.0.0.1:8081/").unwrap().to_string(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            parse("http://[::1]:9").unwrap(),
            Destination::Origin {
                tls: false,
                host: "::1".into(),
                port: 9
            }
        );
        assert!(parse("http://[::1]:9").unwrap().is_address());
        assert!(!parse("http://localhost:9").unwrap().is_address());
        assert_eq!(
            parse("upstream:api").unwrap(),
            Destination::Upstream("api".into())
        );
    }

    #[test]
    fn paths_credentials_and_other_schemes_are_refused() {
        for bad in [
            "http://a.example/path",
            "http://a.example/?q",
            "ftp://a.example",
            "a.example:80",
            "http://user@a.example",
            "upstream:",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}

//! The client of a connection, as the request path hands it on.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::http1::Interim;

/// A connection's client: its address, and that address as text. The text is written once
/// per connection, when it is accepted, rather than for each request that logs it, hands it
/// to a plugin (`client`) or forwards it (`X-Forwarded-For`): written for each use, even by
/// a formatter of plughost's own, it cost ~310 instructions a use, one to three uses a
/// request (callgrind 2026-11, `bench/profile.py`). Cloned per request: the text is shared.
#[derive(Clone, Debug)]
pub struct Client {
    addr: SocketAddr,
    text: Arc<str>,
    /// Where interim responses to it go, when its connection can carry them (HTTP/1.1).
    interim: Option<Interim>,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            text: addr.to_string().into(),
            interim: None,
        }
    }

    /// The same client, whose interim responses go to `interim`.
    pub fn with_interim(&self, interim: Interim) -> Self {
        Self {
            interim: Some(interim),
            ..self.clone()
        }
    }

    /// Where interim responses to it go, if anywhere.
    pub fn interim(&self) -> Option<&Interim> {
        self.interim.as_ref()
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ip:port` (`[ip]:port` for IPv6), as `SocketAddr`'s `Display` writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The IP alone, as `IpAddr`'s `Display` writes it.
    pub fn ip_str(&self) -> &str {
        let host = self
            .text
            .rsplit_once(':')
            .map_or(&*self.text, |(host, _)| host);
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        // An IPv6 scope (`%2`) belongs to the socket address, not the IP.
        ip.split_once('%').map_or(ip, |(ip, _)| ip)
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_what_display_writes() {
        for addr in [
            "127.0.0.1:9090",
            "0.0.0.0:0",
            "[::1]:80",
            "[2001:db8::7]:65535",
            "[fe80::1%2]:8080",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let client = Client::new(addr);
            assert_eq!(client.as_str(), addr.to_string());
            assert_eq!(client.ip_str(), addr.ip().to_string());
            assert_eq!(client.addr(), addr);
        }
    }
}

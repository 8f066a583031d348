//! HTTPS: the rustls server config built from the `[tls]` PEM files (ALPN h2 and http/1.1),
//! with errors that say which file is wrong and how to fix it, and the cleartext handler that
//! redirects to HTTPS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::{HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::body::{self, Body};
use crate::config::TlsConfig;

/// A `[tls]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the right kind.
    #[error("tls.{key}: cannot use {path}: {reason}; give a PEM file ({want})")]
    File {
        /// `cert` or `key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
        /// What the file should hold.
        want: &'static str,
    },
    /// The key does not belong to the certificate.
    #[error(
        "tls.key: {key} is not the private key of the certificate in {cert}; give the key the certificate was issued for"
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the pair (an unsupported key type, say).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads the certificate chain and key and builds the acceptor of the public listener.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(&config.cert)?;
    let key = read_key(&config.key)?;
    let provider = Arc::new(ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::File {
            key: "key",
            path: config.key.clone(),
            reason: e.to_string(),
            want: WANT_KEY,
        })?;
    if CertifiedKey::new(certs.clone(), signing_key)
        .keys_match()
        .is_err()
    {
        return Err(TlsError::Mismatch {
            cert: config.cert.clone(),
            key: config.key.clone(),
        });
    }
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

const WANT_CERT: &str = "-----BEGIN CERTIFICATE-----, leaf first";
const WANT_KEY: &str = "-----BEGIN PRIVATE KEY-----, RSA or EC";

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_certs(path).map_err(|reason| TlsError::File {
        key: "cert",
        path: path.to_path_buf(),
        reason,
        want: WANT_CERT,
    })
}

/// The certificates of a PEM file (at least one); `Err` says what is wrong, for the caller's
/// error naming its config key.
pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key: "key",
        path: path.to_path_buf(),
        reason: e.to_string(),
        want: WANT_KEY,
    })
}

/// The answer of the cleartext redirect listener: 308 to the same host and path on the
/// HTTPS port (308 keeps the method and body, unlike 301).
pub fn redirect<B>(req: &Request<B>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("localhost");
    // Drop a port from the Host header; keep an IPv6 literal's brackets.
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{name}{pq}")
    } else {
        format!("https://{name}:{https_port}{pq}")
    };
    let mut resp = Response::new(body::full(""));
    match HeaderValue::try_from(location) {
        Ok(v) => {
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_host_and_path_and_swaps_the_port() {
        let req = Request::get("/a/b?c=1")
            .header(HOST, "example.test:8080")
            .body(())
            .unwrap();
        let resp = redirect(&req, 8443);
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            resp.headers()[LOCATION],
            "https://example.test:8443/a/b?c=1"
        );
        let v6 = Request::get("/").header(HOST, "[::1]").body(()).unwrap();
        assert_eq!(redirect(&v6, 443).headers()[LOCATION], "https://[::1]/");
    }

    #[test]
    fn missing_files_name_the_key_and_the_fix() {
        let Err(e) = acceptor(&TlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            redirect_port: None,
        }) else {
            panic!("missing files accepted");
        };
        let e = e.to_string();
        assert!(
            e.starts_with("tls.cert: cannot use /nonexistent/cert.pem: "),
            "{e}"
        );
        assert!(e.contains("give a PEM file"), "{e}");
    }
}

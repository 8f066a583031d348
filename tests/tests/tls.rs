//! HTTPS on the public listener: certificates made in the test with rcgen, ALPN h2 and
//! http/1.1, the cleartext redirect, and the errors for a missing or mismatched key.

use std::path::Path;

use plughost_e2e::{Plughost, run};

/// A self-signed certificate for `localhost` and its key, written as PEM files into `dir`.
fn certificate(dir: &Path, stem: &str) -> String {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = made.cert.pem();
    std::fs::write(dir.join(format!("{stem}.crt")), &cert).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        made.signing_key.serialize_pem(),
    )
    .unwrap();
    cert
}

fn client(server: &Plughost, cert: &str, http1: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .resolve("localhost", server.addr)
        .redirect(reqwest::redirect::Policy::none());
    if http1 {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

const TLS: &str = "[tls]\ncert = \"site.crt\"\nkey = \"site.key\"\nredirect_port = 0\n";

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_h2_and_http1_by_alpn_and_cleartext_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path(), "site");
    let server = Plughost::start_in(dir, TLS);
    assert_eq!(server.scheme, "https");
    let url = format!("https://localhost:{}/", server.addr.port());
    let h2 = client(&server, &cert, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert!(h2.text().await.unwrap().starts_with("plughost "));
    let h1 = client(&server, &cert, true).get(&url).send().await.unwrap();
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);

    // Cleartext on the TLS port is refused; the redirect port sends clients to HTTPS.
    assert!(
        reqwest::get(format!("http://{}/", server.addr))
            .await
            .is_err()
    );
    let redirect = server.redirect.expect("redirect listener");
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://localhost:{}/a/b?c=1", redirect.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://localhost:{}/a/b?c=1", server.addr.port()).as_str()
    );
    // A client that does not trust the certificate is refused, and the server goes on.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    assert!(untrusting.get(&url).send().await.is_err());
    let again = client(&server, &cert, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[test]
fn a_missing_or_mismatched_key_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "site");
    certificate(dir.path(), "other");
    let start = |tls: &str| {
        let config = format!("port = 0\nadmin = \"off\"\nlog_stderr = false\n[tls]\n{tls}");
        std::fs::write(dir.path().join("plughost.toml"), config).unwrap();
        let out = run(dir.path(), &["--config", "plughost.toml"]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let missing = start("cert = \"site.crt\"\nkey = \"nope.key\"\n");
    assert!(
        missing.starts_with("plughost: tls.key: cannot use nope.key: "),
        "{missing}"
    );
    assert_eq!(missing.lines().count(), 1, "{missing}");
    let mismatched = start("cert = \"site.crt\"\nkey = \"other.key\"\n");
    assert_eq!(
        mismatched,
        "plughost: tls.key: other.key is not the private key of the certificate in site.crt; give the key the certificate was issued for"
    );
}

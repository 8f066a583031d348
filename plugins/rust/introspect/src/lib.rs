//! `introspect`: a filter that lets a request through only with a bearer token its
//! authorization server says is active (OAuth 2.0 token introspection, RFC 7662): it POSTs
//! `token=...` to `endpoint` and reads `{"active": true, "sub": "..."}`. Active tokens are
//! remembered in the key-value bucket `cache_bucket` (when set; the bucket's `ttl` says for
//! how long), so a token costs one introspection per ttl, not one per request.
//!
//! Answers: no or malformed token 401; an inactive token 401; the endpoint unreachable, slow
//! or answering anything but 200 with JSON: 503 (the request is not let through on doubt).
//! A let-through request carries `x-auth-subject` with the token's `sub`.
//!
//! Config: `endpoint` (an `allowed_outbound` destination of this plugin), `cache_bucket`
//! (optional, granted in `keyvalue`), and, when the endpoint wants this plugin to say who it
//! is (HTTP Basic, RFC 7662 section 2.1), `client_id` and `client_secret`: the name of a
//! secret granted to the plugin (`secrets = ["NAME"]`), read through wasi:config on every
//! introspection, so a secret rotated on disk is used from the next reload on.
use base64::Engine;
use plughost_plugin_sdk::kv::Bucket;
use plughost_plugin_sdk::{Action, Edits, Plugin, Request, Response, config, export_plugin, http};
use plughost_plugin_sdk::serde_json;
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Config {
    endpoint: String,
    #[serde(default)]
    cache_bucket: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

/// `Basic` credentials of `client_id` and the secret named `client_secret`, when both are set.
fn client_credentials(c: &Config) -> Result<Option<String>, String> {
    let (Some(id), Some(name)) = (&c.client_id, &c.client_secret) else {
        return Ok(None);
    };
    let secret = plughost_plugin_sdk::config::get(name)?
        .ok_or_else(|| format!("no secret `{name}` (grant it: secrets = [\"{name}\"])"))?;
    let pair = format!("{id}:{secret}");
    Ok(Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )))
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct Introspect;

fn unauthorized(why: &str) -> Action {
    Response::text(401, format!("{why}\n"))
        .with_header("www-authenticate", "Bearer")
        .into_action()
}

fn unavailable(why: &str) -> Action {
    plughost_plugin_sdk::log(plughost_plugin_sdk::Level::Warn, why);
    Response::text(503, "token introspection unavailable\n")
        .with_header("retry-after", "1")
        .into_action()
}

fn let_through(subject: &str) -> Action {
    Edits::default()
        .set_header("x-auth-subject", subject)
        .into_action()
}

/// A token may be any visible ASCII (RFC 6750's b64token is narrower); anything else is
/// refused before it is sent anywhere.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let ok = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= 4096
        && token.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(token)
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Plugin for Introspect {
    fn init(json: &str) -> Result<(), String> {
        let c: Config = config(json)?;
        if !c.endpoint.starts_with("http://") && !c.endpoint.starts_with("https://") {
            return Err("introspect needs `endpoint`, an http(s) URL".into());
        }
        if c.client_id.is_some() != c.client_secret.is_some() {
            return Err("introspect needs both client_id and client_secret, or neither".into());
        }
        // Fail at load, not on the first request, when the secret is not granted.
        client_credentials(&c)?;
        CONFIG.get_or_init(|| c);
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        let c = CONFIG.get().ok_or("not initialised")?;
        let Some(token) = bearer(&req) else {
            return Ok(unauthorized("a bearer token is required"));
        };
        let bucket = match &c.cache_bucket {
            Some(name) => Some(Bucket::open(name)?),
            None => None,
        };
        if let Some(b) = &bucket
            && let Ok(Some(subject)) = b.get(token)
        {
            return Ok(let_through(&String::from_utf8_lossy(&subject)));
        }
        let body = format!("token={}", form_encode(token));
        let credentials = match client_credentials(c) {
            Ok(credentials) => credentials,
            Err(e) => return Ok(unavailable(&format!("introspection credentials: {e}"))),
        };
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(credentials) = &credentials {
            headers.push(("authorization", credentials.as_str()));
        }
        let resp = match http::send("POST", &c.endpoint, &headers, body.as_bytes()) {
            Ok(r) => r,
            Err(e) => return Ok(unavailable(&format!("introspection failed: {e}"))),
        };
        if resp.status != 200 {
            return Ok(unavailable(&format!("introspection answered {}", resp.status)));
        }
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&resp.body) else {
            return Ok(unavailable("introspection answered something that is not JSON"));
        };
        if answer["active"] != serde_json::Value::Bool(true) {
            return Ok(unauthorized("the token is not active"));
        }
        let subject = answer["sub"].as_str().unwrap_or("");
        if let Some(b) = &bucket {
            // A failed write only costs another introspection next time.
            let _ = b.set(token, subject.as_bytes());
        }
        Ok(let_through(subject))
    }
}

export_plugin!(Introspect);

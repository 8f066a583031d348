//! Outbound HTTP: requests to the destinations the operator allowed this plugin
//! (`allowed_outbound = ["https://auth.example.com", "upstream:api"]` in its `[[plugins]]`
//! entry), through the standard `wasi:http/outgoing-handler` (the `wasi` crate's bindings).
//! A pool of plughost's reverse proxy is reached as `http://NAME.upstream.internal/PATH`.
//!
//! Every request counts against the plugin's own deadline: plughost cuts a call that waits
//! past its `timeout`, so keep outbound calls few and their destinations fast.
//!
//! ```ignore
//! use plughost_plugin_sdk::http;
//! let resp = http::send("POST", "http://127.0.0.1:8081/introspect",
//!     &[("content-type", "application/x-www-form-urlencoded")], b"token=abc")?;
//! if resp.status == 200 { /* resp.body */ }
//! ```

use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// Most bytes of a response body read (plughost caps it too, per plugin).
const MAX_BODY: usize = 16 << 20;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Its status code.
    pub status: u16,
    /// Its headers, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a request failed, in words for a log line or an `Err` of `process`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.0
    }
}

fn describe(code: &ErrorCode) -> Error {
    Error(match code {
        ErrorCode::HttpRequestDenied => {
            "destination not allowed (add it to the plugin's allowed_outbound)".into()
        }
        ErrorCode::DestinationIpProhibited => {
            "destination resolves to an address plugins may not reach".into()
        }
        ErrorCode::ConnectionLimitReached => {
            "too many outbound requests in flight (max_outbound_requests)".into()
        }
        ErrorCode::HttpResponseBodySize(_) => {
            "response body over the plugin's max_outbound_body_bytes".into()
        }
        other => format!("{other:?}"),
    })
}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
    send("GET", url, headers, &[])
}

/// Sends a request and waits for the whole response.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error(format!("{url}: not an absolute http(s) URL")))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(Error(format!("{url}: scheme {other} is not http or https"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&list).map_err(|e| Error(format!("bad header: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let bad = |what: &str| Error(format!("{url}: invalid {what}"));
    req.set_method(&method).map_err(|()| bad("method"))?;
    req.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|()| bad("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| bad("path"))?;
    let out = req.body().expect("the body of a new request");
    let future = outgoing_handler::handle(req, None).map_err(|e| describe(&e))?;
    {
        let stream = out.write().expect("the stream of a new body");
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error(format!("writing the request body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(out, None).map_err(|e| describe(&e))?;
    future.subscribe().block();
    let resp = match future.get() {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(code))) => return Err(describe(&code)),
        Some(Err(())) | None => return Err(Error("the response was already taken".into())),
    };
    let status = resp.status();
    let headers = resp.headers().entries();
    let incoming = resp.consume().expect("the body of a new response");
    let mut body = Vec::new();
    {
        let stream = incoming.stream().expect("the stream of a new body");
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(Error(format!("response body over {MAX_BODY} bytes")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(wasi::io::streams::StreamError::LastOperationFailed(e)) => {
                    let code = wasi::http::types::http_error_code(&e);
                    return Err(code.map_or_else(|| Error(e.to_debug_string()), |c| describe(&c)));
                }
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

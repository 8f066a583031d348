//! A `wasi:http@0.3.0` middleware: it passes every request on through its imported
//! `handler` (in plughost, the rest of the chain: later filters, the cache, the route) and
//! adds security headers to the response that comes back, whatever produced it.

wit_bindgen::generate!({
    path: "../../../wit/wasi-http-0.3",
    world: "plughost:wasi-http/middleware",
    generate_all,
});

use wasi::http::handler;
use wasi::http::types::{ErrorCode, Request, Response};

/// The headers set on every response (replacing any of the same name).
const HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'self'"),
    ("strict-transport-security", "max-age=31536000"),
];

struct SecurityHeaders;

export!(SecurityHeaders);

impl exports::wasi::http::handler::Guest for SecurityHeaders {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let inner = handler::handle(request).await?;
        // A response's headers are immutable: copy them, change the copy.
        let headers = inner.get_headers().clone();
        for (name, value) in HEADERS {
            let _ = headers.set(name, &[value.as_bytes().to_vec()]);
        }
        let status = inner.get_status_code();
        let (_done, done_rx) = wit_future::new(|| Ok(()));
        let (body, trailers) = Response::consume_body(inner, done_rx);
        // The body streams through untouched.
        let (response, _sent) = Response::new(headers, Some(body), trailers);
        let _ = response.set_status_code(status);
        Ok(response)
    }
}

//! {{name}}: a standard `wasi:http/middleware` component of WASI 0.3.0 (its WIT is in `wit/`).
//! plughost runs it with `kind = "middleware"` in the filter chain: it sees every request,
//! may answer it itself, or passes it on through the `handler` it imports (the rest of the
//! chain: later filters, the cache, the route) and sees the response coming back. This one
//! adds `x-{{name}}: 1` to every response.
wit_bindgen::generate!({
    path: "wit",
    world: "plughost:wasi-http/middleware",
    generate_all,
});

use wasi::http::handler;
use wasi::http::types::{ErrorCode, Request, Response};

struct Component;

export!(Component);

impl exports::wasi::http::handler::Guest for Component {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let inner = handler::handle(request).await?;
        // A response's headers are immutable: copy them and change the copy.
        let headers = inner.get_headers().clone();
        let _ = headers.set("x-{{name}}", &[b"1".to_vec()]);
        let status = inner.get_status_code();
        let (_done, done_rx) = wit_future::new(|| Ok(()));
        let (body, trailers) = Response::consume_body(inner, done_rx);
        // The body streams through untouched.
        let (response, _sent) = Response::new(headers, Some(body), trailers);
        let _ = response.set_status_code(status);
        Ok(response)
    }
}

//! {{name}}: a standard `wasi:http/service` component of WASI 0.3.0 (what `wasmtime serve -S p3`
//! and Spin 4 run too). plughost runs it with `kind = "wasi-http"` on its routes, several
//! requests per instance at once; it answers every request with a greeting. Built with the
//! `wasip3` crate's bindings.
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Component);

struct Component;

impl wasip3::exports::http::handler::Guest for Component {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let uri = request.get_path_with_query().unwrap_or_default();
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let (mut body, reader) = wit_stream::new();
        let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(reader), trailers_rx);
        drop(trailers);
        wit_bindgen::spawn_local(async move {
            // A client that went away leaves bytes unwritten: drop them, never panic (a trap
            // fails every request the instance is serving).
            let text = format!("Hello from {{name}}! You asked for {uri}\n");
            let _ = body.write_all(text.into_bytes()).await;
        });
        Ok(response)
    }
}

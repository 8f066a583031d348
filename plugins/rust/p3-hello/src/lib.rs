//! Hello as a `wasi:http@0.3.0` service: any host that runs the standard `service` world
//! (plughost, `wasmtime serve -S p3`, Spin 4) runs it unchanged.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let (mut body, reader) = wit_stream::new();
        let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(reader), trailers_rx);
        drop(trailers);
        wit_bindgen::spawn_local(async move {
            // What the client does not take comes back unwritten: dropped, never a panic,
            // which would trap the instance and every request it is serving.
            let _ = body
                .write_all(format!("hello from WASI 0.3 ({path})\n").into_bytes())
                .await;
        });
        Ok(response)
    }
}

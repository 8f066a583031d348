//! A `wasi:http@0.3.0` service, the world a component written today against the current WASI
//! targets: it answers every request with a short text body.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let (mut body, reader) = wit_stream::new();
        let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_rx);
        drop(trailers);
        wit_bindgen::spawn_local(async move {
            // What the client does not take is dropped: no panic, which would trap the instance.
            let _ = body.write_all(b"hello from a wasi:http 0.3 service\n".to_vec()).await;
        });
        Ok(response)
    }
}

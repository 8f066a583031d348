//! {{name}}: a standard wasi:http component (the `wasi:http/proxy` world, what `wasmtime
//! serve` and Spin run too). plughost runs it with `kind = "wasi-http"` on its routes; it
//! answers every request with a greeting. Built with the `wasi` crate's bindings.
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Component;

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let uri = request.path_with_query().unwrap_or_default();
        let headers = Fields::from_list(&[(
            "content-type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let text = format!("Hello from {{name}}! You asked for {uri}\n");
        // A client that went away closes the stream: nothing to do then, and no reason to
        // trap (a trap costs the instance).
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(Component);

//! A `wasi:http@0.3.0` middleware for the tests. It marks what passes through it (the request
//! gets `x-mw-seen: 1`, the response `x-mw: NAME` where NAME is its `MW_NAME` environment
//! variable), and under `/mw/` it misbehaves: answers itself (`/mw/answer`), calls its
//! handler a thousand times (`/mw/loop`), calls it after its response (`/mw/after`), traps
//! (`/mw/trap`), does not answer for an hour (`/mw/hang`).

wit_bindgen::generate!({
    path: "../../../wit/wasi-http-0.3",
    world: "plughost:wasi-http/middleware",
    generate_all,
});

use wasi::http::handler;
use wasi::http::types::{ErrorCode, Fields, Request, Response};

struct Middleware;

export!(Middleware);

impl exports::wasi::http::handler::Guest for Middleware {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        match path.as_str() {
            "/mw/answer" => return Ok(text(200, "answered by the middleware\n".into())),
            "/mw/loop" => {
                let (mut ok, mut refused) = (0, 0);
                for _ in 0..1000 {
                    match handler::handle(copy(&request, "/")).await {
                        Ok(_) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                return Ok(text(200, format!("ok {ok} refused {refused}\n")));
            }
            "/mw/after" => {
                let copy = copy(&request, "/");
                wit_bindgen::spawn_local(async move {
                    let _ = handler::handle(copy).await;
                });
                return Ok(text(200, "answered, and calling on afterwards\n".into()));
            }
            "/mw/trap" => panic!("middleware query of death"),
            "/mw/hang" => {
                wasi::clocks::monotonic_clock::wait_for(3_600_000_000_000).await;
                return Ok(text(200, "an hour later\n".into()));
            }
            _ => {}
        }
        let headers = request.get_headers().clone();
        let _ = headers.set("x-mw-seen", &[b"1".to_vec()]);
        let method = request.get_method();
        let (_done, done_rx) = wit_future::new(|| Ok(()));
        let (body, trailers) = Request::consume_body(request, done_rx);
        let (on, _sent) = Request::new(headers, Some(body), trailers, None);
        let _ = on.set_method(&method);
        let _ = on.set_path_with_query(Some(&path));
        let inner = handler::handle(on).await?;
        let headers = inner.get_headers().clone();
        let name = wasi::cli::environment::get_environment()
            .into_iter()
            .find_map(|(k, v)| (k == "MW_NAME").then_some(v))
            .unwrap_or_else(|| "mw".into());
        let _ = headers.append("x-mw", name.as_bytes());
        let status = inner.get_status_code();
        let (_done, done_rx) = wit_future::new(|| Ok(()));
        let (body, trailers) = Response::consume_body(inner, done_rx);
        let (response, _sent) = Response::new(headers, Some(body), trailers);
        let _ = response.set_status_code(status);
        Ok(response)
    }
}

/// A bodiless GET of `path` with `request`'s headers.
fn copy(request: &Request, path: &str) -> Request {
    let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
    // Dropped now: the request (or response) ends when its body and trailers have.
    drop(trailers);
    let (req, _sent) = Request::new(request.get_headers().clone(), None, trailers_rx, None);
    let _ = req.set_path_with_query(Some(path));
    req
}

fn text(status: u16, body: String) -> Response {
    let (mut tx, rx) = wit_stream::new();
    let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
    // Dropped now: the request (or response) ends when its body and trailers have.
    drop(trailers);
    let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers_rx);
    let _ = response.set_status_code(status);
    wit_bindgen::spawn_local(async move {
        let _ = tx.write_all(body.into_bytes()).await;
    });
    response
}

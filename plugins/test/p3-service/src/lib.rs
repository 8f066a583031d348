//! A `wasi:http@0.3.0` service (the `wasip3` crate) for the tests, with a behaviour per path:
//! the ordinary ones (a greeting, an echo that streams the request body and its trailers
//! back, a slow answer, an outbound call, which instance answered) and the hostile ones the
//! sandbox must bound (a `handle` that never resolves, a body never closed, an endless body,
//! an answer after the deadline, a trap before or after the head, a memory grab).

use std::cell::Cell;

use wasip3::clocks::monotonic_clock::wait_for;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Service);

struct Service;

thread_local! {
    /// Requests this instance has served: the same instance answering many shows reuse.
    static SERVED: Cell<u64> = const { Cell::new(0) };
    /// This instance's id, from the time it was made.
    static ID: Cell<u64> = const { Cell::new(0) };
}

impl wasip3::exports::http::handler::Guest for Service {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let served = SERVED.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        // The behaviour is the last segment: the route's prefix comes before it.
        let path = path.rsplit('/').next().unwrap_or_default();
        let number = |key: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match path {
            "echo" => {
                // The trailers it declares, declared back (HTTP/1.1 sends only those).
                let headers = Fields::new();
                let declared = request.get_headers().get("trailer");
                if !declared.is_empty() {
                    let _ = headers.set("trailer", &declared);
                }
                let (_done, done_rx) = wit_future::new(|| Ok(()));
                let (body, trailers) = Request::consume_body(request, done_rx);
                let (response, _sent) = Response::new(headers, Some(body), trailers);
                Ok(response)
            }
            "slow" => {
                wait_for(number("ms") * 1_000_000).await;
                Ok(text(200, format!("slept {} ms\n", number("ms"))))
            }
            "instance" => {
                let id = ID.with(|id| {
                    if id.get() == 0 {
                        id.set(wasip3::random::random::get_random_u64() | 1);
                    }
                    id.get()
                });
                wait_for(number("ms") * 1_000_000).await;
                Ok(text(200, format!("instance {id:x} served {served}\n")))
            }
            "outbound" => {
                let url = query.strip_prefix("url=").unwrap_or_default();
                let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
                let (authority, pq) = rest.split_once('/').unwrap_or((rest, ""));
                let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
                // Dropped now: the request (or response) ends when its body and trailers have.
                drop(trailers);
                // With a trace context of its own making, which plughost must not send.
                let forged = [(
                    "traceparent".to_owned(),
                    b"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01".to_vec(),
                )];
                let headers = Fields::from_list(&forged).expect("a valid field");
                let (out, _sent) = Request::new(headers, None, trailers_rx, None);
                let _ = out.set_method(&Method::Get);
                let _ = out.set_scheme(Some(&if scheme == "https" {
                    Scheme::Https
                } else {
                    Scheme::Http
                }));
                let _ = out.set_authority(Some(authority));
                let _ = out.set_path_with_query(Some(&format!("/{pq}")));
                match wasip3::http::client::send(out).await {
                    Ok(resp) => {
                        let status = resp.get_status_code();
                        let (_done, done_rx) = wit_future::new(|| Ok(()));
                        let (body, _trailers) = Response::consume_body(resp, done_rx);
                        let bytes = body.collect().await;
                        Ok(text(
                            200,
                            format!("outbound {status}: {}", String::from_utf8_lossy(&bytes)),
                        ))
                    }
                    Err(e) => Ok(text(502, format!("outbound failed: {e:?}\n"))),
                }
            }
            // Never resolves (waits on the clock for an hour).
            "hang" => {
                wait_for(3_600_000_000_000).await;
                Ok(text(200, "an hour later\n".into()))
            }
            // A head, then a body stream kept open and never written.
            "open" => {
                let (body, reader) = wit_stream::new::<u8>();
                let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
                let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_rx);
                wit_bindgen::spawn_local(async move {
                    let _keep = (body, trailers);
                    wait_for(3_600_000_000_000).await;
                });
                Ok(response)
            }
            // A head and part of the body, then a trap.
            "trap-after-head" => {
                let (mut body, reader) = wit_stream::new();
                let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
                let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_rx);
                wit_bindgen::spawn_local(async move {
                    let _keep = trailers;
                    let _ = body.write_all(b"the start of a body".to_vec()).await;
                    panic!("trap after the head");
                });
                Ok(response)
            }
            // A body that never ends.
            "endless" => {
                let (mut body, reader) = wit_stream::new();
                let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
                let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_rx);
                wit_bindgen::spawn_local(async move {
                    let _keep = trailers;
                    while body.write_all(vec![b'x'; 64 * 1024]).await.is_empty() {}
                });
                Ok(response)
            }
            // An answer after the deadline.
            "late" => {
                wait_for(number("ms") * 1_000_000).await;
                Ok(text(200, "too late\n".into()))
            }
            "trap" => panic!("query of death"),
            "memory" => {
                let grab: Vec<u8> = vec![1; 512 << 20];
                Ok(text(
                    200,
                    format!("{}\n", grab.iter().map(|b| *b as u64).sum::<u64>()),
                ))
            }
            _ => Ok(text(200, "hello from a wasi:http 0.3 service\n".into())),
        }
    }
}

/// A response with a text body, written on a task of its own; what the client does not take
/// is dropped, never a panic (which would trap every request in the instance).
fn text(status: u16, body: String) -> Response {
    let (mut tx, reader) = wit_stream::new();
    let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_rx);
    let _ = response.set_status_code(status);
    drop(trailers);
    wit_bindgen::spawn_local(async move {
        let _ = tx.write_all(body.into_bytes()).await;
    });
    response
}

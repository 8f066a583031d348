//! `http-hostile`: a standard wasi:http/proxy component that misbehaves on purpose, for the
//! tests of plughost's `kind = "wasi-http"` sandbox. The last segment of the request path
//! (the component sees the whole path, its route's prefix included) picks the behaviour:
//!
//! - `/count`: answers how many requests this instance has served (pooling shows);
//! - `/trap`: traps before answering; `/trap-after-head`: sends a head, then traps;
//! - `/sleep?ms=N`: sleeps N ms (a host wait) before answering;
//! - `/no-response`: returns without setting a response;
//! - `/leak`: answers, but forgets a resource, so it stays in the instance's table;
//! - `/status?code=N&length=L`: answers `status\n` with status N and `content-length: L`;
//! - `/fetch?url=U`: GETs U (outbound, under the plugin's allow-list) and says how it went;
//! - `/fetch-forged?url=U`: GETs U with a `traceparent` of its own making and answers the
//!   response's body (the host is to replace that header);
//! - `/fetch-after-head?url=U`: the same, once its response head is sent and it has waited;
//! - anything else: `hello`.
use std::sync::atomic::{AtomicU64, Ordering};

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

static SERVED: AtomicU64 = AtomicU64::new(0);

struct Hostile;

fn query<'a>(pq: &'a str, name: &str) -> Option<&'a str> {
    pq.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], text: &str) {
    // Never stored by plughost's cache: every request reaches the component.
    let list: Vec<(String, Vec<u8>)> = [("cache-control", "no-store")]
        .iter()
        .chain(headers)
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let response = OutgoingResponse::new(Fields::from_list(&list).expect("valid headers"));
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("stream taken once");
    let _ = stream.blocking_write_and_flush(text.as_bytes());
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

fn fetch(url: &str) -> String {
    send(url, &[]).0
}

/// GETs `url` with `headers`: how it went, and the start of the response body.
fn send(url: &str, headers: &[(String, Vec<u8>)]) -> (String, String) {
    let Some((_, rest)) = url.split_once("://") else {
        return ("error: bad url".into(), String::new());
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let req = OutgoingRequest::new(Fields::from_list(headers).expect("valid headers"));
    let _ = req.set_scheme(Some(&Scheme::Http));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let future = match wasi::http::outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(e) => return (format!("error: {e:?}"), String::new()),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(resp))) => (format!("status={}", resp.status()), start_of(resp)),
        Some(Ok(Err(e))) => (format!("error: {e:?}"), String::new()),
        _ => ("error: gone".into(), String::new()),
    }
}

/// The first 4 KiB of a response's body, or what of it came.
fn start_of(resp: wasi::http::types::IncomingResponse) -> String {
    let Ok(body) = resp.consume() else {
        return String::new();
    };
    let Ok(stream) = body.stream() else {
        return String::new();
    };
    let mut text = Vec::new();
    while text.len() < 4096 {
        match stream.blocking_read(4096) {
            Ok(chunk) if !chunk.is_empty() => text.extend(chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

impl wasi::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let pq = request.path_with_query().unwrap_or_default();
        let path = pq.split('?').next().unwrap_or("/");
        match path.rsplit('/').next().unwrap_or_default() {
            "count" => respond(out, 200, &[], &format!("{served}\n")),
            "trap" => panic!("http-hostile traps on purpose"),
            "trap-after-head" => {
                let no_store = [("cache-control".to_owned(), b"no-store".to_vec())];
                let response = OutgoingResponse::new(Fields::from_list(&no_store).unwrap());
                let body = response.body().expect("body taken once");
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().expect("stream taken once");
                let _ = stream.blocking_write_and_flush(b"partial ");
                panic!("http-hostile traps after the head on purpose");
            }
            "sleep" => {
                let ms = query(&pq, "ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, 200, &[], "slept\n");
            }
            "no-response" => drop(out),
            "leak" => {
                std::mem::forget(Fields::new());
                respond(out, 200, &[], "leaked\n");
            }
            "status" => {
                let code = query(&pq, "code").and_then(|v| v.parse().ok()).unwrap_or(200);
                let length = query(&pq, "length").unwrap_or("7");
                let headers = [("content-length", length), ("x-status", "set")];
                respond(out, code, &headers, "status\n");
            }
            "fetch-after-head" => {
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("body taken once");
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().expect("stream taken once");
                let _ = stream.blocking_write_and_flush(b"fetching\n");
                // A host wait: the request is answered before the call goes on.
                std::thread::sleep(std::time::Duration::from_millis(50));
                let text = fetch(query(&pq, "url").unwrap_or_default());
                let _ = stream.blocking_write_and_flush(format!("{text}\n").as_bytes());
                drop(stream);
                let _ = OutgoingBody::finish(body, None);
            }
            "fetch-forged" => {
                let forged = [(
                    "traceparent".to_owned(),
                    b"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01".to_vec(),
                )];
                let (_, body) = send(query(&pq, "url").unwrap_or_default(), &forged);
                respond(out, 200, &[], &body);
            }
            "fetch" => {
                let text = fetch(query(&pq, "url").unwrap_or_default());
                respond(out, 200, &[], &format!("{text}\n"));
            }
            _ => respond(out, 200, &[], "hello\n"),
        }
    }
}

wasi::http::proxy::export!(Hostile);

//! A `wasi:http@0.3.0` middleware: a request without `Authorization: Bearer TOKEN` is
//! answered 401; otherwise the token is posted to an OAuth 2.0 introspection endpoint
//! (RFC 7662) through the imported `client`, and the request goes on through `handler` only
//! when the answer says `"active": true`. The endpoint is the environment variable
//! `INTROSPECT_URL` (`http://host:port/path`); in plughost, a string in the plugin's
//! `[plugins.config]`, and the plugin needs that host in its `allowed_outbound`.

wit_bindgen::generate!({
    path: "../../../wit/wasi-http-0.3",
    world: "plughost:wasi-http/middleware",
    generate_all,
});

use wasi::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasi::http::{client, handler};

struct Bearer;

export!(Bearer);

impl exports::wasi::http::handler::Guest for Bearer {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let token = request
            .get_headers()
            .get("authorization")
            .into_iter()
            .find_map(|v| {
                String::from_utf8(v)
                    .ok()?
                    .strip_prefix("Bearer ")
                    .map(str::to_owned)
            });
        let Some(token) = token else {
            return Ok(refuse(401, "a bearer token is required\n"));
        };
        match active(&token).await {
            Ok(true) => handler::handle(request).await,
            Ok(false) => Ok(refuse(401, "the token is not active\n")),
            Err(why) => Ok(refuse(503, &format!("cannot check the token: {why}\n"))),
        }
    }
}

/// Whether the introspection endpoint says `token` is active.
async fn active(token: &str) -> Result<bool, String> {
    let url = wasi::cli::environment::get_environment()
        .into_iter()
        .find_map(|(k, v)| (k == "INTROSPECT_URL").then_some(v))
        .ok_or("INTROSPECT_URL is not set")?;
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("INTROSPECT_URL needs a scheme")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let headers = Fields::new();
    let _ = headers.set(
        "content-type",
        &[b"application/x-www-form-urlencoded".to_vec()],
    );
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
    // Dropped now: the request (or response) ends when its body and trailers have.
    drop(trailers);
    let (req, _sent) = Request::new(headers, Some(body_rx), trailers_rx, None);
    let _ = req.set_method(&Method::Post);
    let _ = req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let form = format!("token={token}").into_bytes();
    wit_bindgen::spawn_local(async move {
        let _ = body_tx.write_all(form).await;
    });
    let resp = client::send(req).await.map_err(|e| format!("{e:?}"))?;
    if resp.get_status_code() != 200 {
        return Err(format!("the endpoint answered {}", resp.get_status_code()));
    }
    let (_done, done_rx) = wit_future::new(|| Ok(()));
    let (body, _trailers) = Response::consume_body(resp, done_rx);
    let answer = String::from_utf8_lossy(&body.collect().await).replace(' ', "");
    Ok(answer.contains("\"active\":true"))
}

fn refuse(status: u16, why: &str) -> Response {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let _ = headers.set("www-authenticate", &[b"Bearer".to_vec()]);
    let (mut tx, rx) = wit_stream::new();
    let (trailers, trailers_rx) = wit_future::new(|| Ok(None));
    // Dropped now: the request (or response) ends when its body and trailers have.
    drop(trailers);
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    let _ = response.set_status_code(status);
    let why = why.as_bytes().to_vec();
    wit_bindgen::spawn_local(async move {
        let _ = tx.write_all(why).await;
    });
    response
}

//! Routing: which handler produces the response for a request that passed the filters and
//! missed the cache: a `[[routes]]` prefix (a responder plugin or an upstream pool), the
//! default page, or the `/_debug/*` routes the tests drive when `debug_routes = true` (off by
//! default: they sleep, flood the log and panic on request).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::client::Client;
use crate::config::{Config, PluginKind};
use crate::error::{ClientError, RequestError, Unavailable};
use crate::plugin::{Decision, LoadedPlugin, Plugins};
use crate::proxy;
use crate::upstream::{Pool, Pools};

/// Most bytes `/_debug/respond` generates, so a test cannot make the server allocate without bound.
const DEBUG_MAX_SIZE: usize = 64 * 1024 * 1024;

/// The methods of RFC 9110 and RFC 5789 (PATCH), but CONNECT. Others get 501 unless a plugin
/// or upstream route takes them.
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];
const STANDARD_METHODS_LIST: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

/// What a `[[routes]]` prefix leads to.
enum Target {
    /// A responder plugin.
    Plugin(Arc<LoadedPlugin>),
    /// A responder that is not running: 503, still loading (`starting`) or not loaded.
    Unloaded { plugin: String, starting: bool },
    /// An upstream pool, with or without the prefix in the forwarded path.
    Upstream { pool: Arc<Pool>, strip_prefix: bool },
}

/// Maps a request to the handler that answers it.
pub struct Router {
    debug_routes: bool,
    max_body_bytes: usize,
    /// `[[routes]]`, longest prefix first.
    routes: Vec<(String, Target)>,
    /// What upstreams are told of the client.
    forwarding: proxy::Forwarding,
    /// The default page, rendered once: it only changes when plugins do.
    index: Bytes,
}

impl Router {
    /// The router of `config`'s `[[routes]]` over the loaded plugins and pools. A route to a
    /// plugin that is not loaded answers 503: it is still loading while `starting`, or it did
    /// not load.
    pub fn new(config: &Config, plugins: &Plugins, pools: &Pools, starting: bool) -> Self {
        let mut routes: Vec<(String, Target)> = config
            .routes
            .iter()
            .filter_map(|r| {
                let target = match (&r.plugin, &r.upstream) {
                    (Some(name), _) => match plugins.get(name) {
                        Some(plugin) => Target::Plugin(plugin),
                        None => Target::Unloaded {
                            plugin: name.clone(),
                            starting,
                        },
                    },
                    (None, Some(pool)) => Target::Upstream {
                        pool: pools.get(pool)?,
                        strip_prefix: r.strip_prefix,
                    },
                    (None, None) => return None,
                };
                Some((r.prefix.clone(), target))
            })
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let names = plugins.names();
        let index = format!(
            "plughost {}\nAn HTTP server that hosts native and WebAssembly plugins.\n\nplugins loaded: {}\n",
            env!("CARGO_PKG_VERSION"),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
        );
        Self {
            debug_routes: config.debug_routes,
            max_body_bytes: config.max_body_bytes,
            routes,
            forwarding: proxy::Forwarding {
                trusted: config.trusted_proxies.iter().map(|n| n.0).collect(),
                forwarded: config.forwarded_header,
                body_limit: config.max_body_bytes,
            },
            index: Bytes::from(index),
        }
    }

    /// Produces the response for `req`.
    ///
    /// The plugin, proxy and debug answers are boxed: inline, their futures (a responder's
    /// call 4 KB, a proxied exchange 2.5 KB) made this one 4.6 KB for every request, the
    /// static page's included, and each layer above moved that by memcpy. Boxed, the default
    /// route fell from ~17,090 to ~16,610 instructions (callgrind 2026-11, `bench/profile.py`, two
    /// runs each).
    pub async fn route(
        &self,
        req: Request<Body>,
        client: &Client,
    ) -> Result<Response<Body>, RequestError> {
        let path = req.uri().path();
        if let Some((prefix, target)) = self.matching(path) {
            return match target {
                Target::Plugin(plugin) => Box::pin(self.respond_with(plugin, req, client)).await,
                Target::Unloaded { plugin, starting } => {
                    // Drained (within max_body_bytes), so the connection stays open.
                    if !http_body::Body::is_end_stream(req.body()) {
                        let _ = Box::pin(body::discard_body(req.into_body(), self.max_body_bytes))
                            .await;
                    }
                    Err(match starting {
                        true => Unavailable::Starting(plugin.clone()),
                        false => Unavailable::NotLoaded(plugin.clone()),
                    }
                    .into())
                }
                Target::Upstream { pool, strip_prefix } => {
                    let (parts, body) = req.into_parts();
                    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                    let forwarded = match (strip_prefix, pq.strip_prefix(prefix.as_str())) {
                        (true, Some(rest)) if rest.starts_with('/') => rest.to_owned(),
                        (true, Some(rest)) => format!("/{rest}"),
                        _ => pq.to_owned(),
                    };
                    let fwd = &self.forwarding;
                    Box::pin(proxy::forward(pool, (parts, body), client, fwd, &forwarded)).await
                }
            };
        }
        if self.debug_routes && path.starts_with("/_debug/") {
            return Box::pin(self.debug(req)).await;
        }
        let method = req.method();
        let answer = match path {
            _ if !STANDARD_METHODS.contains(&method.as_str()) => {
                Err(ClientError::NotImplemented.into())
            }
            "/" if method == Method::GET || method == Method::HEAD => {
                Ok(text(StatusCode::OK, self.index.clone()))
            }
            "/" => Err(ClientError::MethodNotAllowed.into()),
            // `OPTIONS *`: what the server as a whole supports.
            "*" => {
                let mut resp = Response::new(body::full(""));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(STANDARD_METHODS_LIST));
                Ok(resp)
            }
            _ => Err(ClientError::NotFound(path.to_owned()).into()),
        };
        // None of these reads a body: one sent to an error is dropped before the answer, so
        // the connection stays open for the next request (hyper closes one whose body was
        // left unread). One past `max_body_bytes` is left: the answer stays the one above,
        // and the connection closes after it. Boxed, so the default page's future stays small.
        if answer.is_err() && !http_body::Body::is_end_stream(req.body()) {
            let _ = Box::pin(body::discard_body(req.into_body(), self.max_body_bytes)).await;
        }
        answer
    }
}

impl Router {
    /// The route whose prefix matches `path` (`/a` matches `/a` and `/a/...`, not `/ab`).
    fn matching(&self, path: &str) -> Option<&(String, Target)> {
        self.routes.iter().find(|(prefix, _)| {
            path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            })
        })
    }

    /// Lets a responder plugin answer. `continue` from a responder means "not mine": 404.
    /// A wasi:http component gets the request as it is, its body streaming.
    async fn respond_with(
        &self,
        plugin: &Arc<LoadedPlugin>,
        req: Request<Body>,
        client: &Client,
    ) -> Result<Response<Body>, RequestError> {
        if plugin.kind == PluginKind::WasiHttp {
            let path = req.uri().path().to_owned();
            let https = req.extensions().get::<proxy::Https>().is_some();
            // Boxed: its future (3.3 KB) would double this one's, which every responder
            // request boxes and copies (`route`).
            return Box::pin(plugin.respond_http(req, https, client))
                .await?
                .ok_or_else(|| ClientError::NotFound(path).into());
        }
        let (parts, body) = req.into_parts();
        let body = if plugin.sees_body() {
            body::read_body(body, self.max_body_bytes).await?
        } else {
            body::discard_body(body, self.max_body_bytes).await?;
            Bytes::new()
        };
        match plugin
            .run(&plugin.given(&parts, &body, client), client)
            .await?
        {
            Some(Decision::Respond(resp)) => Ok(resp),
            Some(Decision::Continue(_)) | None => {
                Err(ClientError::NotFound(parts.uri.path().to_owned()).into())
            }
        }
    }
}

fn text(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Value of query parameter `name`, if present.
fn query<'a>(req: &'a Request<Body>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn number(req: &Request<Body>, name: &str) -> Result<u64, RequestError> {
    query(req, name)
        .unwrap_or("0")
        .parse()
        .map_err(|_| ClientError::BadRequest("query parameter is not a number").into())
}

impl Router {
    async fn debug(&self, req: Request<Body>) -> Result<Response<Body>, RequestError> {
        let name = req.uri().path()["/_debug/".len()..].to_owned();
        let no_store = |mut r: Response<Body>| {
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        };
        match name.as_str() {
            // Holds a processing slot for `ms` milliseconds.
            "sleep" => {
                let ms = number(&req, "ms")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(no_store(text(
                    StatusCode::OK,
                    format!("slept {ms} ms\n").into(),
                )))
            }
            // Emits `lines` log lines as fast as it can.
            "log" => {
                let lines = number(&req, "lines")?;
                for i in 0..lines {
                    tracing::info!(target: "plughost::flood", i, "flood line");
                }
                Ok(no_store(text(
                    StatusCode::OK,
                    format!("logged {lines} lines\n").into(),
                )))
            }
            "panic" => panic!("panic requested through /_debug/panic"),
            // Echoes the request headers, one `name: value` a line, so tests see filter edits.
            "headers" => {
                let lines: String = req
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                Ok(no_store(text(StatusCode::OK, lines.into())))
            }
            // Reads the request body and answers with its length.
            "body" => {
                let body = body::read_body(req.into_body(), self.max_body_bytes).await?;
                Ok(no_store(text(
                    StatusCode::OK,
                    format!("{} bytes\n", body.len()).into(),
                )))
            }
            // A response shaped by the query: `size` bytes, `cache-control` as given, a counter
            // so tests can tell a fresh response from a cached one.
            "respond" => {
                let size = number(&req, "size")? as usize;
                if size > DEBUG_MAX_SIZE {
                    return Err(ClientError::BadRequest("size too large").into());
                }
                let mut resp = text(StatusCode::OK, Bytes::from(vec![b'x'; size]));
                if let Some(cc) = query(&req, "cache-control") {
                    let cc = cc.replace("%20", " ").replace("%2C", ",");
                    let v = HeaderValue::try_from(cc)
                        .map_err(|_| ClientError::BadRequest("bad cache-control"))?;
                    resp.headers_mut().insert(CACHE_CONTROL, v);
                }
                let n = RESPONDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                resp.headers_mut()
                    .insert("x-response-number", HeaderValue::from(n));
                Ok(resp)
            }
            _ => Err(ClientError::NotFound(req.uri().path().to_owned()).into()),
        }
    }
}

/// Responses made by `/_debug/respond`, so a test sees whether the origin was reached.
static RESPONDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

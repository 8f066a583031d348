//! `plughost plugin check` and `plughost plugin run`: try a WebAssembly plugin without a
//! server, with the production engine and exactly the sandbox the server uses.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::BodyExt;

use super::bindings::{Action, HeaderParam, Request};
use super::host::Backends;
use super::host::handler::Rest;
use super::output::{self, Dropped, OutputLimits};
use super::wasm::{Runtime, WasmPlugin, World};
use crate::body;
use crate::config::{
    Config, Destination, Grant, KeyValueConfig, KvBackend, PluginConfig, PluginKind, Reuse,
};

/// What `plugin check` found; `Err` from [`check`] is the one-line reason it would not load.
pub struct CheckReport {
    /// File size in bytes.
    pub size: u64,
    /// Time to compile it with the production engine.
    pub compile: Duration,
    /// Its exports.
    pub exports: Vec<String>,
    /// Its imports (all provided by plughost when the check passes).
    pub imports: Vec<String>,
    /// The world it implements, as wasi:http names it (`wasi:http/service@0.3.0`, say).
    pub world: World,
    /// The kind it loads as: `responder` (or `filter`) for a plughost:plugin component,
    /// `wasi-http` for a standard wasi:http/proxy one.
    pub kind: PluginKind,
    /// It runs on the engine with the component model's concurrency (WASI 0.3 needs it),
    /// where each call costs more.
    pub concurrent: bool,
}

/// Compiles and links `file` as the server would, without running it, with the server's
/// compiled cache (`cache`, the config's `wasm_cache_dir`) so a large component is compiled
/// once, not at every check.
pub fn check(file: &Path, cache: Option<PathBuf>) -> anyhow::Result<CheckReport> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let runtime = Runtime::new(cache, 1)?;
    let started = Instant::now();
    let (component, _) = runtime.compile(file)?;
    let compile = started.elapsed();
    let ty = component.component_type();
    let names = |it: &mut dyn Iterator<Item = &str>| it.map(str::to_owned).collect::<Vec<_>>();
    let exports = names(&mut ty.exports(component.engine()).map(|(n, _)| n));
    let imports = names(&mut ty.imports(component.engine()).map(|(n, _)| n));
    let world = runtime.world(&component);
    let kind = runtime
        .prepare(&component, kind_of(world), true)?
        .kind(PluginKind::Responder);
    Ok(CheckReport {
        size,
        compile,
        exports,
        imports,
        world,
        kind,
        concurrent: component.engine().get_concurrency_support(),
    })
}

/// The kind a component of `world` is tried as: a middleware is one, anything else a
/// responder (which a wasi:http service also runs as).
fn kind_of(world: World) -> PluginKind {
    match world {
        World::Middleware => PluginKind::Middleware,
        _ => PluginKind::Responder,
    }
}

/// The request and sandbox of `plugin run`.
pub struct RunOptions {
    /// The plugin's config, as JSON (an object).
    pub config: String,
    /// Request method.
    pub method: String,
    /// Request path and query.
    pub uri: String,
    /// Request headers, `name: value`.
    pub headers: Vec<String>,
    /// Request body.
    pub body: Vec<u8>,
    /// Calls to make.
    pub repeat: usize,
    /// Wall-clock time per call.
    pub timeout: Duration,
    /// Linear memory per instance.
    pub max_memory_bytes: usize,
    /// Directory grants, `HOST:GUEST[:rw]`.
    pub grants: Vec<String>,
    /// Key-value buckets the plugin may open (memory ones, empty at start).
    pub keyvalue: Vec<String>,
    /// Keep those buckets in this Redis server instead.
    pub kv_url: Option<String>,
    /// Destinations the plugin may send HTTP requests to (`allowed_outbound` entries).
    pub allow_outbound: Vec<String>,
    /// The server's compiled cache (`wasm_cache_dir`), if any.
    pub cache: Option<PathBuf>,
}

fn parse_grant(spec: &str) -> anyhow::Result<Grant> {
    let mut parts = spec.splitn(3, ':');
    let (Some(host), Some(guest)) = (parts.next(), parts.next()) else {
        bail!("--grant {spec}: expected HOST_DIR:GUEST_DIR[:rw]");
    };
    let read_only = match parts.next() {
        None | Some("ro") => true,
        Some("rw") => false,
        Some(other) => bail!("--grant {spec}: `{other}` is neither ro nor rw"),
    };
    Ok(Grant {
        host: PathBuf::from(host),
        guest: guest.to_owned(),
        read_only,
    })
}

/// Runs `plugin-init`, then `plugin-process` `repeat` times; returns the printable report.
pub async fn run(file: &Path, o: RunOptions) -> anyhow::Result<String> {
    let plugin = entry(file, &o)?;
    let headers = o
        .headers
        .iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("--header {h}: expected NAME:VALUE"))?;
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = Runtime::new(o.cache.clone(), 1)?;
    let (component, _) = runtime.compile(file)?;
    let pre = runtime.prepare(&component, kind_of(runtime.world(&component)), true)?;
    let caps = Backends::new(&server(&o)?, &[], &mut Default::default())
        .and_then(|b| b.capabilities(&plugin))
        .map_err(|e| anyhow::anyhow!(e))?;
    let checks = Checks {
        limits: OutputLimits::of(&plugin),
        name: plugin.name.clone(),
        dropped: Dropped::default(),
    };
    let wasm = WasmPlugin::load(pre, plugin, 1, caps).await?;
    let repeat = o.repeat.max(1);
    let (mut out, mut times) =
        if matches!(wasm.kind(), PluginKind::WasiHttp | PluginKind::Middleware) {
            run_wasi_http(wasm, &o, &headers, &checks, repeat).await?
        } else {
            run_plugin(wasm, &o, &headers, &checks, repeat).await?
        };
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if times.len() == 1 {
        out.push_str(&format!("call: {:.1} µs\n", us(times[0])));
    } else {
        let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
        out.push_str(&format!(
            "calls: {}, median {:.1} µs, p99 {:.1} µs\n",
            times.len(),
            us(times[times.len() / 2]),
            us(p99)
        ));
    }
    Ok(out)
}

/// The `[[plugins]]` entry `plugin run` loads `file` with.
fn entry(file: &Path, o: &RunOptions) -> anyhow::Result<PluginConfig> {
    let config: toml::Table = serde_json::from_str(&o.config)
        .context("--config must be a JSON object (no nulls), e.g. '{\"greeting\": \"Hi\"}'")?;
    let mut plugin = PluginConfig::filter(
        file.file_stem()
            .map_or("plugin".into(), |s| s.to_string_lossy().into_owned()),
        file.to_path_buf(),
    );
    plugin.config = config;
    plugin.reuse = Reuse::Pooled;
    plugin.timeout = o.timeout;
    plugin.max_memory_bytes = o.max_memory_bytes;
    plugin.keyvalue = o.keyvalue.clone();
    plugin.grants = o
        .grants
        .iter()
        .map(|g| parse_grant(g))
        .collect::<Result<_, _>>()?;
    plugin.allowed_outbound = o
        .allow_outbound
        .iter()
        .map(|d| {
            Destination::try_from(d.clone()).map_err(|e| anyhow::anyhow!("--allow-outbound {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(plugin)
}

/// The server configuration whose capabilities `plugin run` offers: the buckets it names,
/// in memory or in `--kv-url`'s Redis.
fn server(o: &RunOptions) -> anyhow::Result<Config> {
    let mut server = Config::default();
    for bucket in &o.keyvalue {
        let mut c = KeyValueConfig::memory();
        if let Some(url) = &o.kv_url {
            redis::Client::open(url.as_str()).with_context(|| {
                format!("--kv-url {url}: not a Redis URL like redis://127.0.0.1:6379/0")
            })?;
            c.backend = KvBackend::Redis;
            c.url = Some(url.clone());
        }
        server.keyvalue.insert(bucket.clone(), c);
    }
    Ok(server)
}

/// The server's checks of an answer, which `plugin run` applies too: what it would refuse,
/// `plugin run` refuses.
struct Checks {
    limits: OutputLimits,
    name: String,
    dropped: Dropped,
}

/// What a middleware's next hop is under `plugin run`: a `200` naming itself, so the output
/// shows what the middleware did to the request (its method, target and headers, echoed
/// in the body) and to the response.
fn next_hop() -> Rest {
    let serve = std::sync::Arc::new(|req: http::Request<body::Body>| {
        let mut echo = format!(
            "the rest of the chain got: {} {}\n",
            req.method(),
            req.uri()
        );
        for (name, value) in req.headers() {
            echo.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let mut resp = http::Response::new(body::full(echo));
        resp.headers_mut()
            .insert("content-type", http::HeaderValue::from_static("text/plain"));
        Box::pin(std::future::ready(resp)) as futures_util::future::BoxFuture<'static, _>
    });
    Rest {
        authority: http::uri::Authority::from_static("localhost"),
        serve,
    }
}

/// Calls a wasi:http component (a middleware with [`next_hop`]) `repeat` times; its last
/// answer as text, and each call's time.
async fn run_wasi_http(
    wasm: WasmPlugin,
    o: &RunOptions,
    headers: &[(String, String)],
    checks: &Checks,
    repeat: usize,
) -> anyhow::Result<(String, Vec<Duration>)> {
    let wasm = std::sync::Arc::new(wasm);
    let (mut out, mut times) = (String::new(), Vec::with_capacity(repeat));
    for _ in 0..repeat {
        let mut req = http::Request::builder()
            .method(o.method.as_str())
            .uri(o.uri.as_str());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if !headers.iter().any(|(name, _)| name == "host") {
            req = req.header("host", "localhost");
        }
        let req = req
            .body(body::full(o.body.clone()))
            .context("--method, --uri and --header must make a valid HTTP request")?;
        let started = Instant::now();
        let rest = (wasm.kind() == PluginKind::Middleware).then(next_hop);
        let call = wasm.handle(req, false, Box::new(|_| {}), rest).await;
        let resp = call
            .head
            .map_err(|e| anyhow::anyhow!("its handler failed: {e}"))?;
        let (mut head, stream) = resp.into_parts();
        if let Err(why) =
            output::check_head(&mut head, checks.limits, &checks.name, &checks.dropped)
        {
            bail!("the component answered something plughost refuses: {why}");
        }
        let bytes = http_body_util::Limited::new(stream, checks.limits.body_bytes)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("the response body failed: {e}"))?
            .to_bytes();
        times.push(started.elapsed());
        out = describe_http(&head, &bytes);
    }
    Ok((out, times))
}

/// Calls a plughost plugin's `plugin-process` `repeat` times; its last answer as text, and
/// each call's time.
async fn run_plugin(
    wasm: WasmPlugin,
    o: &RunOptions,
    headers: &[(String, String)],
    checks: &Checks,
    repeat: usize,
) -> anyhow::Result<(String, Vec<Duration>)> {
    let headers: Vec<_> = headers
        .iter()
        .map(|(name, value)| HeaderParam { name, value })
        .collect();
    let req = Request {
        method: &o.method,
        uri: &o.uri,
        headers: &headers,
        body: &o.body,
        client: "127.0.0.1:0",
    };
    let (mut out, mut times) = (String::new(), Vec::with_capacity(repeat));
    for _ in 0..repeat {
        let started = Instant::now();
        let outcome = wasm.process(req.clone()).await;
        times.push(started.elapsed());
        match outcome.result {
            Ok(action) => {
                let checked =
                    output::check(action.clone(), checks.limits, &checks.name, &checks.dropped);
                if let Err(why) = checked {
                    bail!("plugin-process answered something plughost refuses: {why}");
                }
                out = describe(&action);
            }
            Err(e) => {
                let trace = outcome
                    .backtrace
                    .map(|bt| format!("\nguest backtrace:\n{bt}"))
                    .unwrap_or_default();
                bail!("plugin-process failed: {e}{trace}");
            }
        }
    }
    Ok((out, times))
}

/// A wasi:http component's response as text, as a plugin's `respond` action is shown.
fn describe_http(head: &http::response::Parts, body: &[u8]) -> String {
    let headers = head
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())));
    describe_response(head.status.as_u16(), headers, body)
}

/// A response as text: `respond STATUS`, its headers, a blank line and its body.
fn describe_response<'a>(
    status: u16,
    headers: impl Iterator<Item = (&'a str, std::borrow::Cow<'a, str>)>,
    body: &[u8],
) -> String {
    let mut out = format!("respond {status}\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    out.push('\n');
    out.push_str(&String::from_utf8_lossy(body));
    if !body.ends_with(b"\n") {
        out.push('\n');
    }
    out
}

/// The action as text: what the server would do.
fn describe(action: &Action) -> String {
    let mut out = String::new();
    match action {
        Action::Continue(e) => {
            out.push_str("continue\n");
            for h in &e.set_headers {
                out.push_str(&format!("  set request header {}: {}\n", h.name, h.value));
            }
            for n in &e.remove_headers {
                out.push_str(&format!("  remove request header {n}\n"));
            }
            for h in &e.response_headers {
                out.push_str(&format!("  add response header {}: {}\n", h.name, h.value));
            }
        }
        Action::Respond(r) => {
            let headers = r
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str().into()));
            out = describe_response(r.status, headers, &r.body);
        }
    }
    out
}

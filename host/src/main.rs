//! The `plughost` command: parse the command line, load the config, start logging, bind the
//! listeners and run the server until a signal stops it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plughost::admin::{Admin, ServerParts};
use plughost::config::{Config, Overrides, PluginKind};
use plughost::metrics::Metrics;
use plughost::pipeline::Pipeline;
use plughost::plugin::authoring;
use plughost::plugin::host::Backends;
use plughost::plugin::loader::LoadReport;
use plughost::plugin::scaffold::{self, Lang, Services};
use plughost::reload::{NotLoaded, Reloader};
use plughost::status::Status;
use plughost::telemetry::Telemetry;
use plughost::{logging, server, shutdown, tls, workers};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// jemalloc rather than glibc's malloc: a request allocates ~10 times, and jemalloc's
/// thread caches made the cache hit ~1,000 instructions cheaper (callgrind 2026-11, 20,100 -> 19,000)
/// and 9% faster under wrk; it also gives memory back, where glibc's 16 arenas kept it: under
/// 10,000 connections RSS peaked at 245 MiB and settled at 187, against 291 and 280 (BENCHMARKS.md,
/// "Request cost, fourth session"). It costs ~1 MiB of idle RSS. mimalloc, tried before, was
/// as fast but peaked at 395 MiB there.
#[cfg(unix)]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An HTTP server that hosts native and WebAssembly plugins.
#[derive(Parser)]
#[command(name = "plughost", version, about)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration (file, environment and flags merged) as TOML.
    Config,
    /// Write (`new`), check and run WebAssembly plugins without a server.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin project (source, WIT, Makefile, plughost.toml, README) into ./NAME.
    New {
        /// The plugin's name: lower-case letters, digits and `-`.
        name: String,
        /// Its language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// `filter` (every request), `responder` (its route), or a standard wasi:http component
        /// in Rust: `wasi-http` (0.2, on its route), `service` (WASI 0.3, on its route) or
        /// `middleware` (WASI 0.3, in the filter chain).
        #[arg(long, value_enum, default_value = "responder")]
        kind: scaffold::Kind,
        /// Where to write it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use a key-value bucket of this name: declared in its plughost.toml, granted to it,
        /// and counted in by the example (Rust responders).
        #[arg(long, value_name = "BUCKET")]
        kv: Option<String>,
        /// GET this URL from the example, its origin in `allowed_outbound` (Rust responders).
        #[arg(long, value_name = "URL")]
        outbound: Option<String>,
        /// Read a secret of this name through wasi:config: declared in its plughost.toml (from
        /// the environment variable of the name in capitals) and granted to it (Rust
        /// responders).
        #[arg(long, value_name = "NAME")]
        secret: Option<String>,
    },
    /// Write the WIT of a world plughost runs, as this binary implements it, into DIR: what
    /// a guest toolchain builds against.
    Wit {
        /// Where to write it.
        dir: PathBuf,
        /// `plugin` (filters and responders, with key-value) or `wasi-http` (wasi:http/proxy).
        #[arg(long, value_enum, default_value = "plugin")]
        world: plughost::plugin::scaffold::World,
    },
    /// Compile and link a component as the server would; exit 0 if plughost would load it.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Run plugin-init then plugin-process in the server's sandbox and print the action.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// The plugin's config, as a JSON object.
        #[arg(long = "config", default_value = "{}", value_name = "JSON")]
        plugin_config: String,
        /// Request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Request path and query.
        #[arg(long, default_value = "/")]
        uri: String,
        /// A request header, NAME:VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// Request body.
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// Request body from a file.
        #[arg(long, value_name = "PATH")]
        body_file: Option<PathBuf>,
        /// Calls to make; with more than one, the median and p99 call time are printed.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Wall-clock time per call (guest code and the host calls it waits in).
        #[arg(long, default_value = "100ms", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Linear memory per instance, in bytes.
        #[arg(long, default_value_t = plughost::config::DEFAULT_PLUGIN_MEMORY_BYTES)]
        max_memory_bytes: usize,
        /// A directory grant, HOST_DIR:GUEST_DIR[:rw] (read-only unless :rw; repeatable).
        #[arg(long = "grant", value_name = "HOST:GUEST[:rw]")]
        grants: Vec<String>,
        /// A key-value bucket the plugin may open, kept in memory for this run (repeatable).
        #[arg(long = "kv", value_name = "BUCKET")]
        keyvalue: Vec<String>,
        /// Keep the --kv buckets in this Redis server instead, e.g. redis://127.0.0.1:6379/0.
        #[arg(long = "kv-url", value_name = "URL")]
        kv_url: Option<String>,
        /// A destination the plugin may send HTTP requests to, http(s)://HOST[:PORT]
        /// (repeatable).
        #[arg(long = "allow-outbound", value_name = "URL")]
        allow_outbound: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("plughost: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Config) => {
            print!("{}", config.to_toml());
            return ExitCode::SUCCESS;
        }
        Some(Command::Plugin(cmd)) => {
            let cache = (!config.wasm_cache_dir.as_os_str().is_empty())
                .then(|| config.wasm_cache_dir.clone());
            return match plugin_command(cmd, cache) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("plughost: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve) | None => {}
    }
    match serve(config, cli.overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plughost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, overrides: Overrides) -> anyhow::Result<()> {
    let log = logging::init(&config)?;
    raise_open_file_limit();
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    // This runtime accepts connections and runs the admin API, reloads and health checks;
    // the public listener's connections run on the workers (`plughost::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let workers =
        workers::Workers::start(config.worker_threads()).context("starting the worker threads")?;
    let result = runtime.block_on(async {
        let (public, redirect, admin_listener) = bind_all(&config)?;
        let mut metrics = Metrics::new();
        // Plugins may not call plughost itself by name: its listeners are refused.
        let own: Vec<SocketAddr> = [Some(&public), redirect.as_ref(), admin_listener.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let backends =
            Backends::new(&config, &own, metrics.registry_mut()).map_err(|e| anyhow::anyhow!(e))?;
        workers.register(metrics.registry_mut());
        let telemetry = Telemetry::start(config.tracing.as_ref(), metrics.registry_mut())?;
        let metrics = Arc::new(metrics);
        let pipeline = Arc::new(Pipeline::new(&config, metrics.clone()));
        backends.outbound.set_pools(pipeline.live().pools.clone());
        let stop = CancellationToken::new();
        // Signals are handled from here on: a SIGTERM while plugins compile ends cleanly.
        tokio::spawn(shutdown::on_signal(stop.clone()));
        let reloader = Reloader::new(
            config.clone(),
            overrides,
            pipeline.clone(),
            backends,
            stop.clone(),
        );
        // The plugins load while the server listens; what needs them answers 503 until then.
        let started = reloader.start();
        reloader.spawn_triggers(&config);
        announce(
            &public,
            config.worker_threads(),
            tls.is_some(),
            redirect.as_ref(),
            admin_listener.as_ref(),
        )?;
        let token = config.admin_token.clone();
        let admin = admin_listener.map(|l| {
            let parts = ServerParts {
                log_dropped: log.drops(),
                status: Status::start(metrics, stop.clone()),
                reloader,
            };
            let api = Admin::new(pipeline.clone(), token.as_deref(), Some(parts));
            (l, Arc::new(api))
        });
        let listeners = server::Listeners {
            public,
            tls,
            redirect,
            admin,
        };
        let failure = Arc::new(std::sync::OnceLock::new());
        let ready = tokio::spawn(ready_or_stop(started, stop.clone(), failure.clone()));
        server::run(&config, listeners, &workers, pipeline, stop).await;
        if !ready.is_finished() && failure.get().is_none() {
            ready.abort();
            tracing::info!("stopped before the plugins finished loading");
        }
        telemetry.shutdown();
        tracing::info!(log_dropped = log.drops().total(), "plughost stopped");
        match failure.get() {
            Some(e) => Err(anyhow::Error::new(e.clone())),
            None => Ok(()),
        }
    });
    // Stop the runtime first so every task's last log line is in the buffer, then flush it.
    // A compile still running on a blocking thread (plughost stopped while plugins loaded) is
    // not waited for: its result is no longer wanted.
    workers.stop();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(log);
    result
}

/// The public listener, the HTTPS redirect's (with `tls.redirect_port`) and the admin API's
/// (unless `admin = "off"`), each bound or refused with an error that says what to do.
fn bind_all(
    config: &Config,
) -> Result<(TcpListener, Option<TcpListener>, Option<TcpListener>), server::BindError> {
    let public = server::bind(config.listen_addr())?;
    let redirect = match config.tls.as_ref().and_then(|t| t.redirect_port) {
        Some(port) => Some(server::bind(SocketAddr::new(config.bind, port))?),
        None => None,
    };
    let admin = match config.admin.0 {
        Some(addr) => Some(server::bind(addr)?),
        None => None,
    };
    Ok((public, redirect, admin))
}

/// The start-up lines, the CLI's contract: scripts and tests read the bound addresses from
/// them (port 0 picks a free port).
fn announce(
    public: &TcpListener,
    workers: usize,
    https: bool,
    redirect: Option<&TcpListener>,
    admin: Option<&TcpListener>,
) -> std::io::Result<()> {
    let addr = public.local_addr()?;
    let scheme = if https { "https" } else { "http" };
    tracing::info!(%addr, scheme, workers, "plughost listening");
    println!("plughost listening on {scheme}://{addr}");
    if let Some(l) = redirect {
        let addr = l.local_addr()?;
        tracing::info!(%addr, "redirecting to HTTPS");
        println!("plughost redirect listening on http://{addr}");
    }
    if let Some(l) = admin {
        let addr = l.local_addr()?;
        tracing::info!(%addr, "admin API listening");
        println!("plughost admin listening on http://{addr}");
    }
    Ok(())
}

/// Waits for the start-up load of the plugins: says `plughost ready` (a line scripts and
/// tests wait for) when they loaded, or, when one plughost may not serve without did not,
/// puts why in `failure` and then stops the server.
async fn ready_or_stop(
    started: tokio::task::JoinHandle<Result<LoadReport, NotLoaded>>,
    stop: CancellationToken,
    failure: Arc<std::sync::OnceLock<NotLoaded>>,
) {
    match started.await.expect("the start-up load does not panic") {
        Ok(report) => {
            tracing::info!(
                loaded = report.loaded.len(),
                optional_not_loaded = report.refused.len(),
                "plughost ready: plugins loaded"
            );
            println!("plughost ready");
        }
        Err(e) => {
            tracing::error!(error = %e, "plughost stops: a plugin it may not serve without did not load");
            let _ = failure.set(e);
            stop.cancel();
        }
    }
}

/// `plughost plugin new|check|run`: CLI output on stdout, the reason of a failure as the error.
fn plugin_command(cmd: PluginCommand, cache: Option<PathBuf>) -> anyhow::Result<()> {
    // The plugin's log lines and its stdout/stderr, on this terminal.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,plugin=trace"))
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cmd {
        PluginCommand::New {
            name,
            lang,
            kind,
            dir,
            kv,
            outbound,
            secret,
        } => {
            let services = Services {
                kv,
                outbound,
                secret,
            };
            new_project(&name, lang, kind, dir, &services)
        }
        PluginCommand::Wit { dir, world } => {
            let written = scaffold::write_wit(&dir, world)?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
        PluginCommand::Check { file } => {
            let report = authoring::check(&file, cache)
                .with_context(|| format!("{} would not load", file.display()))?;
            print_check(&file, &report);
            Ok(())
        }
        PluginCommand::Run {
            file,
            plugin_config,
            method,
            uri,
            headers,
            body,
            body_file,
            repeat,
            timeout,
            max_memory_bytes,
            grants,
            keyvalue,
            kv_url,
            allow_outbound,
        } => {
            let body = match (body, body_file) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(path)) => std::fs::read(&path)
                    .with_context(|| format!("cannot read --body-file {}", path.display()))?,
                (None, None) => Vec::new(),
            };
            let options = authoring::RunOptions {
                config: plugin_config,
                method,
                uri,
                headers,
                body,
                repeat,
                timeout,
                max_memory_bytes,
                grants,
                keyvalue,
                kv_url,
                allow_outbound,
                cache,
            };
            run_plugin(&file, options)
        }
    }
}

/// `plughost plugin run`: one plugin's calls on a runtime of their own, the report printed.
fn run_plugin(file: &std::path::Path, options: authoring::RunOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    print!("{}", runtime.block_on(authoring::run(file, options))?);
    Ok(())
}

/// `plughost plugin new`: writes the project and says what to run next.
fn new_project(
    name: &str,
    lang: Lang,
    kind: scaffold::Kind,
    dir: Option<PathBuf>,
    services: &Services,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = scaffold::new_project(&dir, name, lang, kind, services)?;
    println!("wrote {} files into {}", files.len(), dir.display());
    let try_it = services.run_command(name)?;
    println!("next: cd {} && make && {try_it}", dir.display());
    Ok(())
}

/// What `plughost plugin check` prints of a plugin that would load.
fn print_check(file: &std::path::Path, r: &authoring::CheckReport) {
    println!(
        "file: {} ({:.1} KiB)",
        file.display(),
        r.size as f64 / 1024.0
    );
    println!("compile: {} ms", r.compile.as_millis());
    // What plughost calls, then what it does not (componentize-py adds an instance named
    // `exports`, say), so no one reads those as part of the plugin's contract.
    let (called, other): (Vec<&String>, Vec<&String>) = r.exports.iter().partition(|e| {
        e.as_str() == "plugin-init"
            || e.as_str() == "plugin-process"
            || e.starts_with("wasi:http/incoming-handler@")
            || e.starts_with("wasi:http/handler@")
    });
    let list = |names: &[&String]| {
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("exports: {}", list(&called));
    if !other.is_empty() {
        println!(
            "other exports (plughost does not call them): {}",
            list(&other)
        );
    }
    println!("imports ({}, all provided by plughost):", r.imports.len());
    for i in &r.imports {
        println!("  {i}");
    }
    println!("world: {}", r.world.name());
    println!(
        "calls: {}",
        if r.concurrent {
            "through wasmtime's task machinery (the component model's concurrency, which WASI 0.3 needs; each call costs more)"
        } else {
            "straight into the instance (no component-model concurrency)"
        }
    );
    match r.kind {
        PluginKind::WasiHttp => {
            println!("kind: wasi-http (a wasi:http service: route it with [[routes]])")
        }
        PluginKind::Middleware => println!(
            "kind: middleware (a wasi:http@0.3 middleware: in the filter chain, before the cache and the routes; its imported handler is the rest of the chain)"
        ),
        _ => println!(
            "kind: filter or responder (a plughost:plugin component is either: its [[plugins]] entry's kind says which, filter by default)"
        ),
    }
    println!("ok: plughost would load it");
}

/// 10,000 keep-alive connections need more descriptors than the usual soft limit of 1024.
fn raise_open_file_limit() {
    #[cfg(unix)]
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

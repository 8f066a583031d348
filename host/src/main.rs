//! The `plughost` command: parse the command line, load the config, start logging, bind the
//! listeners and run the server until a signal stops it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plughost::admin::Admin;
use plughost::config::{Config, Overrides};
use plughost::metrics::Metrics;
use plughost::pipeline::Pipeline;
use plughost::{logging, plugin, server, shutdown};
use tokio_util::sync::CancellationToken;

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
    if let Some(Command::Config) = cli.command {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plughost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let log = logging::init(&config)?;
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("plughost-worker")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let public = server::bind(config.listen_addr())?;
        let admin_listener = match config.admin.0 {
            Some(addr) => Some(server::bind(addr)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let plugins = Arc::new(plugin::loader::load(&config, metrics.clone()).await?);
        let pipeline = Arc::new(Pipeline::new(&config, metrics, plugins));
        // The start-up lines are the CLI's contract: scripts and tests read the bound
        // addresses from them (port 0 picks a free port).
        let addr = public.local_addr()?;
        tracing::info!(%addr, "plughost listening");
        println!("plughost listening on http://{addr}");
        if let Some(l) = &admin_listener {
            let addr = l.local_addr()?;
            tracing::info!(%addr, "admin API listening");
            println!("plughost admin listening on http://{addr}");
        }
        let admin = admin_listener.map(|l| {
            (
                l,
                Arc::new(Admin::new(pipeline.clone(), Some(log.error_counter()))),
            )
        });
        let stop = CancellationToken::new();
        pipeline.pools.spawn_health_checks(&stop);
        tokio::spawn(shutdown::on_signal(stop.clone()));
        server::run(&config, public, admin, pipeline, stop).await;
        tracing::info!("plughost stopped");
        anyhow::Ok(())
    });
    // Stop the runtime first so every task's last log line is in the buffer, then flush it.
    drop(runtime);
    drop(log);
    result
}

/// 10,000 keep-alive connections need more descriptors than the usual soft limit of 1024.
fn raise_open_file_limit() {
    #[cfg(unix)]
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

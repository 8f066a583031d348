//! plughost: an HTTP server that hosts plugins.
//!
//! The library holds everything but the command line, so tests and benchmarks can drive the
//! same code the binary runs. A request's path: [`server`] accepts it and hands its connection
//! to one of the [`workers`], [`pipeline`] runs it
//! through the [`limiter`], the [`cache`] and the [`routes`], and [`logging`] writes its
//! access-log line; [`admin`] serves health, metrics, cache control and the [`status`] page
//! on its own listener; [`reload`] swaps plugins and routes in while requests run.
#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod body;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod http1;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workers;

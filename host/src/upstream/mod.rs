//! The upstream side, shared by the reverse proxy route and plugins' outbound HTTP: named
//! pools of servers with their health ([`balance`]), kept-alive connections to each server
//! ([`pool`]) spoken over plughost's own HTTP/1.1 client ([`h1`]), the one request exchange
//! both users go through ([`exchange`]), and the backends' series ([`metrics`]).

pub mod balance;
pub mod exchange;
pub mod h1;
pub mod metrics;
pub mod pool;

pub use balance::{Backend, BackendInfo, Pool, Pools};
pub use exchange::{UpstreamError, exchange};

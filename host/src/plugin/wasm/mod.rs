//! WebAssembly plugins: one wasmtime `Engine` for all of them, components compiled once (and
//! cached on disk), `InstancePre` so a new instance costs microseconds, one `Store` per
//! instance (a trap poisons its store, so a failed instance is dropped with its store), and the
//! reuse policy: a pool of live instances, or a fresh one per request.
//!
//! Calls are async: an epoch ticker thread advances the engine's epoch every [`TICK`], and at
//! each tick a running call yields to tokio, so a busy plugin never holds a worker thread.
//! Deadlines are wall-clock and enforced from outside the guest: each call (and each
//! instantiation with its `plugin-init`) is raced against a timer, so a guest waiting in a host
//! call (a WASI sleep or poll) is stopped as surely as one spinning in its own code. An instance
//! whose call was cut off is dropped with its store, never reused.
//!
//! [`engine`] holds the engine and compilation, [`instance`] a plugin's instances and calls,
//! [`service`] the workers of a WASI 0.3 component, each serving several requests at once,
//! [`store`] what instances of every world are made with.

pub mod engine;
pub mod instance;
pub mod service;
pub mod store;

pub use engine::{Prepared, Runtime, TICK, World};
pub use instance::{CallOutcome, HttpCall, InstanceStats, OnFailure, WasmPlugin};

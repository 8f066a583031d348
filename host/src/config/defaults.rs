//! Every default of `plughost.toml`, as named constants: the C server's constants where it had
//! one (10 requests at once, a 100-entry cache, a 1000-line log ring, port 9090, 10 plugins),
//! kept here only so the README, `plughost config` and the code cannot disagree.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Requests one WASI 0.3 instance serves at once (`handle` is async); `wasmtime serve`'s
/// default.
pub const DEFAULT_PLUGIN_CONCURRENT_REQUESTS: usize = 16;
/// Times a 0.3 middleware may call its imported `handler` (the rest of the chain) for one
/// request: once passes it on; more is a loop the host refuses.
pub const DEFAULT_PLUGIN_HANDLER_CALLS: u32 = 1;
/// Port of the public listener (C server: `SERVER_PORT`).
pub const DEFAULT_PORT: u16 = 9090;
/// Requests processed at once (C server: `MAX_THREADS`).
pub const DEFAULT_MAX_CONCURRENCY: usize = 10;
/// How long a request may wait for a processing slot before it gets 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections held at once; more wait in the kernel's accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Worker threads: 0 is one per core, as nginx's `worker_processes auto`.
pub const DEFAULT_WORKERS: usize = 0;
/// Most worker threads: each has its own event loop and idle upstream connections, so more
/// threads than cores only adds those.
pub const MAX_WORKERS: usize = 1024;
/// LRU cache entries (C server: `CACHE_CAPACITY`).
pub const DEFAULT_CACHE_CAPACITY: usize = 100;
/// Freshness of plughost's own responses (default page, responder plugins) that state none.
pub const DEFAULT_OWN_RESPONSE_TTL: Duration = Duration::from_secs(60);
/// Bytes the cache may hold, bodies and headers together.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Longest heuristic freshness (10% of the time since `Last-Modified`).
pub const DEFAULT_CACHE_HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);
/// Keys a memory key-value bucket holds.
pub const DEFAULT_KV_MAX_KEYS: usize = 100_000;
/// Bytes of keys and values a memory key-value bucket holds.
pub const DEFAULT_KV_MAX_BYTES: usize = 64 * 1024 * 1024;
/// What a Redis bucket's keys start with.
pub const DEFAULT_KV_PREFIX: &str = "plughost";
/// Bytes one host call (a key-value answer, a page of keys) may hand a plugin.
pub const DEFAULT_PLUGIN_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Time to connect to a Redis key-value backend.
pub const DEFAULT_KV_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for one Redis command's answer.
pub const DEFAULT_KV_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// `[outbound] connect_timeout`.
pub const DEFAULT_OUTBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `[outbound] first_byte_timeout`.
pub const DEFAULT_OUTBOUND_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// `[outbound] between_bytes_timeout`.
pub const DEFAULT_OUTBOUND_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound requests one plugin may have in flight at once.
pub const DEFAULT_PLUGIN_OUTBOUND_REQUESTS: usize = 16;
/// Largest outbound response body (and request body to a pool) of one plugin's call.
pub const DEFAULT_PLUGIN_OUTBOUND_BODY_BYTES: usize = 1024 * 1024;
/// Longest wait of a request for another one fetching the same response.
pub const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body the cache keeps.
pub const DEFAULT_CACHE_MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Log lines buffered between request tasks and the log thread (C server: its 1000-line ring).
pub const DEFAULT_LOG_BUFFER: usize = 1000;
/// Most plugins loaded, native and wasm together (C server: `MAX_PLUGINS`).
pub const DEFAULT_MAX_PLUGINS: usize = 10;
/// The admin listener: loopback only, so metrics and cache purges are not public by default.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9091);
/// How long in-flight requests may run on after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers); larger gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most request headers; more gets 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Largest request body; larger gets 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Time a client has to send a complete request head, the first one counted from accept
/// (stops slowloris and silent sockets).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a keep-alive connection may stay open without a request.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Wall-clock time one wasm plugin call may take (guest code and host calls it waits in).
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Wall-clock time to create a wasm instance and run its `plugin-init`.
pub const DEFAULT_PLUGIN_INIT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most headers a plugin may return (response, or a filter's edits).
pub const DEFAULT_PLUGIN_RESPONSE_HEADERS: usize = 100;
/// Most bytes of header names and values a plugin may return.
pub const DEFAULT_PLUGIN_RESPONSE_HEADER_BYTES: usize = 64 * 1024;
/// Largest response body a plugin may return (as `max_body_bytes` for requests).
pub const DEFAULT_PLUGIN_RESPONSE_BODY_BYTES: usize = DEFAULT_MAX_BODY_BYTES;
/// Bytes of log lines a plugin may write per second before lines are dropped.
pub const DEFAULT_PLUGIN_LOG_BYTES_PER_SEC: usize = 256 * 1024;
/// Longest log line a plugin may write; longer lines are cut with a marker.
pub const PLUGIN_LOG_LINE_MAX: usize = 8 * 1024;
/// Linear memory one wasm plugin instance may grow to.
pub const DEFAULT_PLUGIN_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Failures within `failure_window` that put a plugin in backoff.
pub const DEFAULT_PLUGIN_FAILURE_THRESHOLD: u32 = 5;
/// Window in which plugin failures are counted.
pub const DEFAULT_PLUGIN_FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Bytes of the request body shown to native plugins.
pub const DEFAULT_NATIVE_BODY_CAP: usize = 64 * 1024;
/// Bytes of rendered requests one native plugin may fall behind by before requests are
/// skipped for it.
pub const DEFAULT_NATIVE_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// A native plugin call slower than this is logged.
pub const DEFAULT_NATIVE_BUDGET: Duration = Duration::from_millis(10);
/// Servers in one upstream pool (C server: its balancer's 5).
pub const DEFAULT_MAX_BACKENDS: usize = 5;
/// Time between active health checks of a backend.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Time to connect to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for a backend's response head.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failing plugin is skipped before it is called again.
pub const DEFAULT_PLUGIN_BACKOFF: Duration = Duration::from_secs(5);

/// Ended spans waiting for export at most.
pub const DEFAULT_TRACE_QUEUE: usize = 2048;

/// Time one span export may take.
pub const DEFAULT_TRACE_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

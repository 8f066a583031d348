//! The async logger: access-log lines and the server's own `tracing` events go through one
//! bounded buffer of `log_buffer` lines, drained by one dedicated thread to `log_file` (and
//! stderr when `log_stderr` is on).
//!
//! tracing-appender's non-blocking writer does exactly what the C server's 1000-line ring did,
//! and a little more: `buffered_lines_limit` bounds the buffer, lossy mode drops (and counts)
//! lines instead of blocking a request when the buffer is full, and dropping its guard at
//! shutdown writes every line still buffered.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode, Version};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// `tracing` target of access-log lines.
pub const ACCESS_TARGET: &str = "access";

/// Keeps the log thread alive; dropping it flushes every buffered line.
pub struct LogHandle {
    _guard: WorkerGuard,
    dropped: ErrorCounter,
}

impl LogHandle {
    /// The writer's count of lines dropped because the buffer was full.
    pub fn error_counter(&self) -> ErrorCounter {
        self.dropped.clone()
    }
}

/// Bytes the log thread gathers before a write(2). The worker flushes whenever the buffer of
/// lines runs empty, so under load lines go out in large writes (as nginx's `buffer=64k`) and
/// when idle they reach the file at once.
const WRITE_BUFFER: usize = 64 * 1024;

/// The log thread's sink: the log file, and stderr when asked for.
struct Sink {
    file: BufWriter<File>,
    stderr: Option<BufWriter<io::Stderr>>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        if let Some(stderr) = &mut self.stderr {
            // A closed or full stderr must not stop the file log.
            let _ = stderr.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(stderr) = &mut self.stderr {
            let _ = stderr.flush();
        }
        self.file.flush()
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source} (set log_file or --log-file to a writable path)")]
pub struct LogFileError {
    path: String,
    source: io::Error,
}

/// Starts the log thread and installs the global `tracing` subscriber.
pub fn init(config: &Config) -> Result<LogHandle, LogFileError> {
    let file = open(&config.log_file)?;
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(config.log_buffer)
        .lossy(true)
        .thread_name("plughost-log")
        .finish(Sink {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            stderr: config
                .log_stderr
                .then(|| BufWriter::with_capacity(WRITE_BUFFER, io::stderr())),
        });
    let dropped = writer.error_counter();
    // RUST_LOG, when set, wins over the config's filter.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match config.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    Ok(LogHandle {
        _guard: guard,
        dropped,
    })
}

fn open(path: &Path) -> Result<File, LogFileError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogFileError {
            path: path.display().to_string(),
            source,
        })
}

/// One access-log line's fields.
pub struct Access<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// Request method.
    pub method: &'a Method,
    /// Request target as received.
    pub target: &'a str,
    /// HTTP version.
    pub version: Version,
    /// Response status.
    pub status: StatusCode,
    /// Response body bytes, when known up front.
    pub bytes: u64,
    /// Time to the response head.
    pub duration: Duration,
    /// `hit`, `miss` or `-` when the cache was not consulted.
    pub cache: &'static str,
}

/// Writes one access-log line (timestamp added by the subscriber, RFC 3339).
pub fn access(a: &Access<'_>) {
    tracing::info!(
        target: ACCESS_TARGET,
        client = %a.client,
        method = %a.method,
        target = a.target,
        version = ?a.version,
        status = a.status.as_u16(),
        bytes = a.bytes,
        duration_us = a.duration.as_micros() as u64,
        cache = a.cache,
    );
}

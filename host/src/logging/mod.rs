//! The async logger: access-log lines and the server's own `tracing` events go through one
//! bounded buffer of `log_buffer` lines, drained by one dedicated thread to `log_file` (and
//! stderr when `log_stderr` is on), as the C server's 1000-line ring was: a full buffer drops
//! (and counts) lines instead of blocking a request, and at shutdown every line still
//! buffered is written. The thread and the buffer are in `writer.rs`.

mod writer;

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Version};
use tracing_subscriber::EnvFilter;
use writer::Writer;

use crate::config::{Config, LogFormat};

/// `tracing` target of access-log lines.
pub const ACCESS_TARGET: &str = "access";

/// Keeps the log thread alive; dropping it flushes every buffered line.
pub struct LogHandle {
    _guard: writer::Guard,
    drops: LogDrops,
}

impl LogHandle {
    /// The counts of lines that never reached the log file.
    pub fn drops(&self) -> LogDrops {
        self.drops.clone()
    }
}

/// Lines that never reached the log file: dropped because the buffer was full, or lost
/// because the file refused them (disk full, I/O error). Cheap to clone.
#[derive(Clone)]
pub struct LogDrops {
    buffer_full: Writer,
    write_failed: Arc<AtomicU64>,
}

impl LogDrops {
    /// Every line missing from the file.
    pub fn total(&self) -> u64 {
        self.buffer_full.dropped() + self.write_failed.load(Ordering::Relaxed)
    }
}

/// Bytes the log thread gathers before a write(2). The thread flushes whenever nothing more is
/// waiting, so under load lines go out in large writes (as nginx's `buffer=64k`) and when idle
/// they reach the file at once (access lines within [`writer::COLLECT_EVERY`]).
const WRITE_BUFFER: usize = 64 * 1024;

/// The log thread's sink: the log file, and stderr when asked for.
///
/// A file that refuses writes (disk full, I/O error) must not stop the server nor flood
/// stderr: the lines it refused are counted as lost, the failure is reported once on stderr,
/// and every later line is tried again, so logging resumes by itself once there is room.
struct Sink {
    /// Always `Some` but while a failed buffer is replaced.
    file: Option<BufWriter<File>>,
    path: String,
    stderr: Option<BufWriter<io::Stderr>>,
    lost: Arc<AtomicU64>,
    failing: bool,
}

impl Sink {
    fn file(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("the file is put back at once")
    }

    /// Counts the lines in the write buffer and in `line` as lost and empties the buffer.
    fn lose(&mut self, error: &io::Error, line: &[u8]) {
        let newlines = |b: &[u8]| b.iter().filter(|c| **c == b'\n').count() as u64;
        let pending = self.file.take().expect("the file is there");
        let lost = newlines(pending.buffer()) + newlines(line);
        let (file, _) = pending.into_parts();
        self.file = Some(BufWriter::with_capacity(WRITE_BUFFER, file));
        self.lost.fetch_add(lost, Ordering::Relaxed);
        if !self.failing {
            self.failing = true;
            // The log itself is what fails, so this goes to stderr directly, once.
            eprintln!(
                "plughost: cannot write the log file {}: {error}; log lines are dropped and counted in plughost_log_dropped_total until it can be written again (free space or fix the file)",
                self.path
            );
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            eprintln!("plughost: the log file {} is written again", self.path);
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(stderr) = &mut self.stderr {
            // A closed or full stderr must not stop the file log.
            let _ = stderr.write_all(buf);
        }
        match self.file().write_all(buf) {
            Ok(()) => {}
            Err(e) => self.lose(&e, buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(stderr) = &mut self.stderr {
            let _ = stderr.flush();
        }
        match self.file().flush() {
            Ok(()) => self.recovered(),
            Err(e) => self.lose(&e, b""),
        }
        Ok(())
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
    let lost = Arc::new(AtomicU64::new(0));
    let (writer, guard) = Writer::start(
        config.log_buffer,
        Sink {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            path: config.log_file.display().to_string(),
            stderr: config
                .log_stderr
                .then(|| BufWriter::with_capacity(WRITE_BUFFER, io::stderr())),
            lost: lost.clone(),
            failing: false,
        },
    );
    let drops = LogDrops {
        buffer_full: writer.clone(),
        write_failed: lost,
    };
    let _ = ACCESS.set(AccessWriter {
        writer: writer.clone(),
        json: config.log_format == LogFormat::Json,
    });
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
        drops,
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
    /// The client's address, as `SocketAddr`'s `Display` writes it.
    pub client: &'a str,
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
    /// The body failed or the connection closed before all of it was sent: the client did
    /// not receive what `status` says.
    pub aborted: bool,
    /// The request's trace id, when tracing is on.
    pub trace_id: Option<&'a str>,
}

/// Where access lines go: the same non-blocking writer (buffer, drop count, log thread) as
/// every other line, set by [`init`]. Unset (tests of the pipeline), access lines are skipped.
static ACCESS: OnceLock<AccessWriter> = OnceLock::new();

struct AccessWriter {
    writer: Writer,
    json: bool,
}

/// Writes one access-log line, in the layout `tracing`'s formatter gives every other line
/// (text or JSON; RFC 3339 UTC time with µs), when the log filter lets `access` INFO through.
///
/// Formatted here rather than through `tracing::info!`: the formatter cost 14,000
/// instructions per request, 42% of a whole cache hit (callgrind 2026-11, BENCHMARKS.md); this costs a
/// tenth of that. The line goes through the same bounded writer, so drops are counted alike.
pub fn access(a: &Access<'_>) {
    let Some(out) = ACCESS.get() else { return };
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        let micros = a.duration.as_micros() as u64;
        // Pushed piece by piece rather than through one `write!`: `fmt`'s machinery (padding,
        // Debug escaping char by char, the client's address, which is now written once per
        // connection) was 4,800 instructions of a 32,400-instruction cache hit (callgrind 2026-11).
        if out.json {
            line.push_str("{\"timestamp\":\"");
            timestamp(line);
            line.push_str("\",\"level\":\"INFO\",\"fields\":{\"client\":\"");
            line.push_str(a.client);
            line.push_str("\",\"method\":");
            push_json_str(line, a.method.as_str());
            line.push_str(",\"target\":");
            push_json_str(line, a.target);
            line.push_str(",\"version\":\"");
            line.push_str(version_str(a.version));
            line.push_str("\",\"status\":");
            push_int(line, a.status.as_u16());
            line.push_str(",\"bytes\":");
            push_int(line, a.bytes);
            line.push_str(",\"duration_us\":");
            push_int(line, micros);
            line.push_str(",\"cache\":\"");
            line.push_str(a.cache);
            line.push_str("\",\"aborted\":");
            line.push_str(if a.aborted { "true" } else { "false" });
            if let Some(id) = a.trace_id {
                line.push_str(",\"trace_id\":\"");
                line.push_str(id);
                line.push('"');
            }
            line.push_str("},\"target\":\"");
            line.push_str(ACCESS_TARGET);
            line.push_str("\"}\n");
        } else {
            timestamp(line);
            line.push_str("  INFO ");
            line.push_str(ACCESS_TARGET);
            line.push_str(": client=");
            line.push_str(a.client);
            line.push_str(" method=");
            line.push_str(a.method.as_str());
            line.push_str(" target=");
            push_debug_str(line, a.target);
            line.push_str(" version=");
            line.push_str(version_str(a.version));
            line.push_str(" status=");
            push_int(line, a.status.as_u16());
            line.push_str(" bytes=");
            push_int(line, a.bytes);
            line.push_str(" duration_us=");
            push_int(line, micros);
            line.push_str(" cache=");
            push_debug_str(line, a.cache);
            if a.aborted {
                line.push_str(" aborted=true");
            }
            if let Some(id) = a.trace_id {
                line.push_str(" trace_id=");
                line.push_str(id);
            }
            line.push('\n');
        }
        out.writer.push_batched(line.as_bytes());
    });
}

/// Whether `s` reads the same inside quotes in Rust's `Debug` and in JSON: printable ASCII
/// without `"` or `\`, as request targets almost always are.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `s` quoted: copied between quotes when nothing needs escaping, else as `escaped` writes it.
fn push_quoted(line: &mut String, s: &str, escaped: impl FnOnce(&str) -> String) {
    if needs_no_escape(s) {
        line.push('"');
        line.push_str(s);
        line.push('"');
    } else {
        line.push_str(&escaped(s));
    }
}

/// `s` as `{:?}` writes it.
fn push_debug_str(line: &mut String, s: &str) {
    push_quoted(line, s, |s| format!("{s:?}"));
}

/// `s` as a JSON string.
fn push_json_str(line: &mut String, s: &str) {
    push_quoted(line, s, |s| {
        serde_json::to_string(s).expect("a str always serializes")
    });
}

fn push_int(line: &mut String, n: impl itoa::Integer) {
    line.push_str(itoa::Buffer::new().format(n));
}

/// `version` as its `Debug` writes it.
fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Appends the current UTC time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. The date part is formatted
/// once a second per thread (humantime), so a line costs one clock read and a few digits.
fn timestamp(line: &mut String) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *cached = secs;
            text.clear();
            date_time(secs, text);
        }
        line.push_str(text);
    });
    // `.ffffffZ`: the microseconds zero-padded to six digits.
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(now.subsec_micros());
    line.push('.');
    line.push_str(&"000000"[micros.len()..]);
    line.push_str(micros);
    line.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (UTC).
fn date_time(secs: u64, out: &mut String) {
    let time = UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let _ = write!(out, "{}", humantime::format_rfc3339_seconds(time));
    // humantime ends it with `Z`; the caller adds the microseconds first.
    out.pop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        let mut line = String::new();
        timestamp(&mut line);
        assert_eq!(line.len(), "2026-11-27T03:03:50.911032Z".len(), "{line}");
        assert!(line.ends_with('Z') && &line[10..11] == "T", "{line}");
    }

    #[test]
    fn hand_formatted_fields_match_their_fmt_forms() {
        for s in [
            "/",
            "/a?b=1&c",
            "/q\"uote",
            "/back\\slash",
            "/caf\u{e9}",
            "/tab\t",
            "",
        ] {
            let (mut debug, mut json) = (String::new(), String::new());
            push_debug_str(&mut debug, s);
            push_json_str(&mut json, s);
            assert_eq!(debug, format!("{s:?}"));
            assert_eq!(json, serde_json::to_string(s).unwrap());
        }
        for v in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(version_str(v), format!("{v:?}"));
        }
    }

    #[test]
    fn civil_dates_of_known_times() {
        for (secs, expected) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_795_748_630, "2026-11-27T03:03:50"),
            (4_107_542_399, "2100-02-28T23:59:59"),
        ] {
            let mut text = String::new();
            date_time(secs, &mut text);
            assert_eq!(text, expected);
        }
    }
}

//! The log capability: `plughost:plugin/host.log` and the guest's stdout and stderr, all into
//! plughost's log, tagged with the plugin's name.
//!
//! A plugin's log lines are untrusted output like its responses: each line is cut to
//! [`PLUGIN_LOG_LINE_MAX`] and the plugin's lines together to `log_bytes_per_sec`, so a plugin
//! can neither fill the disk nor crowd the server's own lines out of the log buffer. One
//! [`PluginLog`] is shared by all instances of a plugin, so the caps hold for the plugin.
//!
//! - shared backend ([`Logs`]): the metrics `plughost_plugin_log_dropped_total{plugin}` and
//!   `plughost_plugin_log_truncated_total{plugin}`.
//! - per-plugin state ([`PluginLog`]): its window of bytes and its two series.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi_http::WasiHttpView;

use super::capability::{Capability, CapabilityError, Getter, HasScoped, Scoped};
use crate::config::{Config, PLUGIN_LOG_LINE_MAX, PluginConfig};
use crate::plugin::bindings::plughost::plugin::host::{self as wit, Host, Level};
use crate::plugin::output::truncated;

/// The log capability.
pub struct Log;

impl Capability for Log {
    type Backend = Logs;
    type Grants = Arc<PluginLog>;
    type Instance = Arc<PluginLog>;

    /// Adds `plughost:plugin/host` to the linker.
    fn link<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        get: Getter<T, Arc<PluginLog>>,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<T, HasScoped<Arc<PluginLog>>>(linker, get)
    }

    fn backend(
        _: &Config,
        _: &[SocketAddr],
        registry: &mut Registry,
    ) -> Result<Logs, CapabilityError> {
        Ok(Logs::new(registry))
    }

    fn grants(logs: &Logs, plugin: &PluginConfig) -> Result<Arc<PluginLog>, CapabilityError> {
        Ok(Arc::new(
            logs.plugin(&plugin.name, plugin.log_bytes_per_sec),
        ))
    }

    fn instance(log: &Arc<PluginLog>, _: &PluginConfig) -> Arc<PluginLog> {
        log.clone()
    }
}

impl Host for Scoped<'_, Arc<PluginLog>> {
    fn log(&mut self, level: Level, message: String) {
        self.instance.write(level, None, &message);
    }
}

/// The label of this capability's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

/// This capability's metrics, registered by itself.
#[derive(Clone)]
pub struct Logs {
    dropped: Family<PluginLabel, Counter>,
    truncated: Family<PluginLabel, Counter>,
}

impl Logs {
    /// The log families, counted in `registry`.
    fn new(registry: &mut Registry) -> Self {
        let logs = Self {
            dropped: Family::default(),
            truncated: Family::default(),
        };
        registry.register(
            "plughost_plugin_log_dropped",
            "Plugin log lines dropped past the plugin's log_bytes_per_sec",
            logs.dropped.clone(),
        );
        registry.register(
            "plughost_plugin_log_truncated",
            "Plugin log lines cut to the longest line plughost logs",
            logs.truncated.clone(),
        );
        logs
    }

    /// The log of `plugin`, within `bytes_per_sec`.
    fn plugin(&self, plugin: &str, bytes_per_sec: usize) -> PluginLog {
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        PluginLog::new(
            plugin,
            bytes_per_sec,
            self.dropped.get_or_create(&label).clone(),
            self.truncated.get_or_create(&label).clone(),
        )
    }
}

/// A one-second window of a plugin's log bytes.
struct LogWindow {
    started: Instant,
    bytes: usize,
    /// Whether the drops of this window were announced.
    warned: bool,
}

/// One plugin's log: shared by all its instances, so its caps hold for the plugin as a whole.
pub struct PluginLog {
    plugin: Arc<str>,
    bytes_per_sec: usize,
    window: Mutex<LogWindow>,
    dropped: Counter,
    truncated: Counter,
}

impl PluginLog {
    /// The log of `plugin`, counting dropped and cut lines in the given counters.
    fn new(plugin: &str, bytes_per_sec: usize, dropped: Counter, truncated: Counter) -> Self {
        Self {
            plugin: Arc::from(plugin),
            bytes_per_sec,
            window: Mutex::new(LogWindow {
                started: Instant::now(),
                bytes: 0,
                warned: false,
            }),
            dropped,
            truncated,
        }
    }

    /// Logs one line of the plugin's, cut to [`PLUGIN_LOG_LINE_MAX`]; dropped (and counted)
    /// when the plugin has used its bytes for this second.
    pub fn write(&self, level: Level, stream: Option<&'static str>, line: &str) {
        let line = truncated(line, PLUGIN_LOG_LINE_MAX);
        if line.len() > PLUGIN_LOG_LINE_MAX {
            self.truncated.inc();
        }
        {
            let mut w = self.window.lock();
            if w.started.elapsed().as_secs() >= 1 {
                *w = LogWindow {
                    started: Instant::now(),
                    bytes: 0,
                    warned: false,
                };
            }
            if w.bytes + line.len() > self.bytes_per_sec {
                self.dropped.inc();
                if !std::mem::replace(&mut w.warned, true) {
                    tracing::warn!(
                        plugin = &*self.plugin,
                        bytes_per_sec = self.bytes_per_sec,
                        "plugin log over its log_bytes_per_sec; its lines are dropped for the rest of this second and counted in plughost_plugin_log_dropped_total"
                    );
                }
                return;
            }
            w.bytes += line.len();
        }
        let plugin = &*self.plugin;
        let stream = stream.unwrap_or("log");
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, stream, "{line}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, stream, "{line}"),
            Level::Info => tracing::info!(target: "plugin", plugin, stream, "{line}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, stream, "{line}"),
            Level::Error => tracing::error!(target: "plugin", plugin, stream, "{line}"),
        }
    }
}

/// The last lines an instance wrote to stderr, so that a trap can say what the guest said
/// just before it: a Rust guest prints its panic message there, then traps with a bare
/// `unreachable`.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

/// Lines a [`StderrTail`] keeps, and the bytes of each.
const TAIL_LINES: usize = 4;
const TAIL_LINE_MAX: usize = 256;

impl StderrTail {
    fn push(&self, line: &str) {
        let mut tail = self.0.lock();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(truncated(line, TAIL_LINE_MAX).into_owned());
    }

    /// What was written since the last take, on one line; `None` when nothing was.
    pub fn take(&self) -> Option<String> {
        let mut tail = self.0.lock();
        (!tail.is_empty()).then(|| tail.drain(..).collect::<Vec<_>>().join(" | "))
    }
}

/// Guest stdout/stderr: each line becomes a log line tagged with the plugin's name, so a
/// plugin that prints never reaches the server's own terminal. Writes are joined into lines
/// (CPython writes `KeyError`, `: ` and `'x'` apart), and a Python traceback becomes one entry.
#[derive(Clone)]
pub(super) struct GuestOutput(Arc<Output>);

/// One stream of one instance; shared by the clones wasmtime-wasi makes of it. What is still
/// pending when the instance goes is logged then.
struct Output {
    log: Arc<PluginLog>,
    stream: &'static str,
    pending: Mutex<Pending>,
    /// Where stderr's lines are kept too.
    tail: Option<StderrTail>,
}

#[derive(Default)]
struct Pending {
    /// The end of the last write, not yet ended by a newline.
    partial: String,
    traceback: Traceback,
}

impl GuestOutput {
    pub(super) fn stdout(log: Arc<PluginLog>) -> Self {
        Self::new(log, "stdout", None)
    }

    pub(super) fn stderr(log: Arc<PluginLog>, tail: StderrTail) -> Self {
        Self::new(log, "stderr", Some(tail))
    }

    fn new(log: Arc<PluginLog>, stream: &'static str, tail: Option<StderrTail>) -> Self {
        Self(Arc::new(Output {
            log,
            stream,
            pending: Mutex::default(),
            tail,
        }))
    }
}

impl Output {
    fn line(&self, pending: &mut Pending, line: &str) {
        if line.is_empty() {
            return;
        }
        if let Some(tail) = &self.tail {
            tail.push(line);
        }
        if let Some(entry) = pending.traceback.push(line) {
            self.log.write(Level::Info, Some(self.stream), &entry);
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        let mut pending = std::mem::take(self.pending.get_mut());
        let partial = std::mem::take(&mut pending.partial);
        self.line(&mut pending, &partial);
        let rest = std::mem::take(&mut pending.traceback.lines).join("\n");
        if !rest.is_empty() {
            self.log.write(Level::Info, Some(self.stream), &rest);
        }
    }
}

/// Lines of a Python traceback, from `Traceback (most recent call last):` to the first line
/// that is not indented (the exception itself).
#[derive(Default)]
struct Traceback {
    lines: Vec<String>,
}

/// Most lines one traceback entry gathers; the rest of it is logged line by line.
const TRACEBACK_LINES: usize = 200;

impl Traceback {
    /// Takes one output line: `Some(entry)` when a line (or a finished traceback) is to be
    /// logged now, `None` while a traceback is being gathered.
    fn push(&mut self, line: &str) -> Option<String> {
        if self.lines.is_empty() {
            if line.starts_with("Traceback (most recent call last):") {
                self.lines.push(line.to_owned());
                return None;
            }
            return Some(line.to_owned());
        }
        self.lines.push(line.to_owned());
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if indented && self.lines.len() < TRACEBACK_LINES {
            return None;
        }
        Some(std::mem::take(&mut self.lines).join("\n"))
    }
}

/// Largest single write a guest may make to stdout/stderr; longer output is split.
const GUEST_WRITE_MAX: usize = 64 * 1024;

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let out = &*self.0;
        let mut pending = out.pending.lock();
        let mut text = std::mem::take(&mut pending.partial);
        text.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<&str> = text.split('\n').collect();
        // What follows the last newline waits for the rest of its line (bounded).
        let rest = lines.pop().unwrap_or_default();
        for line in lines {
            out.line(&mut pending, line.trim_end_matches('\r'));
        }
        if rest.len() > GUEST_WRITE_MAX {
            out.line(&mut pending, rest);
        } else {
            pending.partial = rest.to_owned();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(GUEST_WRITE_MAX)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_traceback_is_one_entry_other_lines_are_their_own() {
        let mut t = Traceback::default();
        assert_eq!(t.push("hello").as_deref(), Some("hello"));
        let lines = [
            "Traceback (most recent call last):",
            "  File \"app.py\", line 3, in plugin_process",
            "    d[\"missing\"]",
            "KeyError: 'missing'",
        ];
        let entries: Vec<String> = lines.iter().filter_map(|l| t.push(l)).collect();
        assert_eq!(entries, [lines.join("\n")]);
        assert_eq!(t.push("after").as_deref(), Some("after"));
    }
}

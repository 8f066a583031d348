//! The log capability: `plughost:plugin/host.log` and the guest's stdout and stderr, all into
//! plughost's log, tagged with the plugin's name.
//!
//! A plugin's log lines are untrusted output like its responses: each line is cut to
//! [`PLUGIN_LOG_LINE_MAX`] and the plugin's lines together to `log_bytes_per_sec`, so a plugin
//! can neither fill the disk nor crowd the server's own lines out of the log buffer. One
//! [`PluginLog`] is shared by all instances of a plugin, so the caps hold for the plugin.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::State;
use crate::config::PLUGIN_LOG_LINE_MAX;
use crate::plugin::output::truncated;
use crate::plugin::wasm::bindings::plughost::plugin::host::{self as wit, Host, Level};

/// Adds `plughost:plugin/host` to the linker.
pub fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    wit::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

impl Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, None, &message);
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
    pub fn new(plugin: &str, bytes_per_sec: usize, dropped: Counter, truncated: Counter) -> Self {
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

/// Guest stdout/stderr: each write becomes log lines tagged with the plugin's name, so a
/// plugin that prints never reaches the server's own terminal.
#[derive(Clone)]
pub(super) struct GuestOutput {
    log: Arc<PluginLog>,
    stream: &'static str,
}

impl GuestOutput {
    pub(super) fn new(log: Arc<PluginLog>, stream: &'static str) -> Self {
        Self { log, stream }
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
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.log.write(Level::Info, Some(self.stream), line);
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

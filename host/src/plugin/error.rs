//! How loading or calling a plugin goes wrong: the error every plugin path returns, the reason
//! it is counted under, and the failure of one request's plugin that the request's error wraps.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::Serialize;

/// Why a plugin call failed (the `reason` label of `plughost_plugin_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureReason {
    /// The guest trapped (panic, unreachable, stack overflow, bad memory access).
    Trap,
    /// The call ran past its wall-clock deadline (in guest code or waiting in a host call).
    Timeout,
    /// The guest asked for more memory than its cap.
    Memory,
    /// `plugin-process` returned `err`, or its answer broke a rule or a cap (status, header
    /// count or size, body size, the output budget).
    Error,
    /// The plugin is in backoff and was not called.
    Backoff,
    /// A WASI 0.3 instance trapped while serving this request and others: which one caused
    /// it is not known, so no client's backoff counts it.
    Shared,
}

impl FailureReason {
    /// As metrics, logs and spans name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Error => "error",
            Self::Backoff => "backoff",
            Self::Shared => "shared",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for FailureReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        write!(encoder, "{self}")
    }
}

/// How loading or calling a plugin went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be compiled or linked.
    #[error("{0}")]
    Load(String),
    /// `plugin-init` returned an error.
    #[error("plugin-init failed: {0}")]
    Init(String),
    /// A call failed.
    #[error("{0}: {1}")]
    Failed(FailureReason, String),
}

impl PluginError {
    /// The metrics label for this failure.
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::Failed(r, _) => *r,
            Self::Load(_) | Self::Init(_) => FailureReason::Error,
        }
    }
}

/// A plugin failed on a request and its `on_error` does not let the request go on without it.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin} failed: {source}")]
pub struct Failed {
    /// The plugin's name.
    pub plugin: String,
    /// What happened; logged, never sent to the client.
    pub source: PluginError,
}

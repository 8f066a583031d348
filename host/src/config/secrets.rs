//! The `[secrets.NAME]` tables: values a plugin reads through `wasi:config` when its
//! `[[plugins]]` entry grants them (`secrets = ["NAME"]`), kept out of `plughost.toml`. The
//! table says where the value is (an environment variable or a file), never the value, so
//! `plughost config` and every listing can show it whole.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Where one secret's value is read from: exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// An environment variable of plughost's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file owned by plughost's user (or root), readable by nobody else, holding the value
    /// (one trailing newline is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl SecretConfig {
    /// Rejects a table naming no source or both, and a name a plugin could not ask for.
    pub(super) fn check(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| {
            Err(ConfigError::Invalid {
                key: "secrets",
                reason,
            })
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return invalid(format!(
                "secret `{name}`: a name is letters, digits, `_`, `-` and `.`"
            ));
        }
        if self.env.is_some() == self.file.is_some() {
            return invalid(format!(
                "secret `{name}`: give exactly one of env = \"VARIABLE\" and file = \"PATH\""
            ));
        }
        Ok(())
    }
}

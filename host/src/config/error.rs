//! Why a configuration cannot be used, in one line that names the key, its file and line
//! where known, and the fix.

use std::path::{Path, PathBuf};

/// A configuration that cannot be used; `main` exits with code 2 on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{path}:{line}: {}{message}", key_prefix(.key))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// The key on that line.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value parsed but is not usable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl ConfigError {
    /// A validation error with the file and line of the value it names, when the file has
    /// one line setting its key to that value (validation works on the parsed tables, which
    /// keep no positions).
    pub(super) fn located(self, path: &Path, text: &str) -> Self {
        let ConfigError::Invalid { key, reason } = &self else {
            return self;
        };
        let field = key.rsplit('.').next().unwrap_or(key);
        // The reason quotes the value (and maybe the plugin or bucket it belongs to): the
        // line is the one setting the key to one of them.
        let quoted: Vec<&str> = reason.split('`').skip(1).step_by(2).collect();
        let found = text.lines().position(|l| {
            let l = l.trim_start();
            l.strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                && (quoted.is_empty() || quoted.iter().any(|v| l.contains(v)))
        });
        match found {
            Some(i) => ConfigError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                key: key.to_string(),
                message: reason.clone(),
            },
            None => self,
        }
    }
}

/// A TOML error as a user can act on it. serde's "unknown field `prot`, expected one of ..."
/// lists every key of the table (42 at the top level): the nearest one is suggested instead.
/// A duration it could not read gets the form it takes.
pub(super) fn explained(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((unknown, expected)) = rest.split_once("`, expected ")
    {
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let nearest = known
            .iter()
            .map(|k| (strsim::damerau_levenshtein(unknown, k), *k))
            .filter(|(d, k)| {
                *d <= 2.max(k.len() / 3) || k.starts_with(unknown) || unknown.starts_with(k)
            })
            .min();
        return match nearest {
            Some((_, k)) => format!("unknown key `{unknown}`; did you mean `{k}`?"),
            None => format!(
                "unknown key `{unknown}`; `plughost config` prints every key with its value"
            ),
        };
    }
    if message.contains("expected a duration") {
        return format!("{message}: write a number and a unit, like `250ms`, `2s` or `1m`");
    }
    message.to_owned()
}

/// `key: `, or nothing when the error is not on a key (an unterminated string at the end of
/// the file, say).
fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

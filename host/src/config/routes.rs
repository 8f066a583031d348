//! The `[[routes]]` entries: path prefixes answered by a responder plugin or proxied to an
//! upstream pool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::plugins::PluginConfig;
use super::upstreams::UpstreamConfig;

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, e.g. `/hello`; matches `/hello` and `/hello/...`.
    pub prefix: String,
    /// The responder plugin answering it (this or `upstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The `[upstreams.NAME]` pool its requests are proxied to (this or `plugin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// With `upstream`: remove the prefix from the path sent to the backend.
    #[serde(default)]
    pub strip_prefix: bool,
}

impl RouteConfig {
    /// Rejects a route whose prefix is not a path or whose target is not declared: one of
    /// `plugins` that answers routes, or one of `pools`.
    pub(super) fn check(
        &self,
        plugins: &[PluginConfig],
        pools: &BTreeMap<String, UpstreamConfig>,
    ) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if !self.prefix.starts_with('/') {
            return invalid(
                "routes.prefix",
                format!("`{}` must start with /", self.prefix),
            );
        }
        match (&self.plugin, &self.upstream) {
            (Some(plugin), None) => match plugins.iter().find(|p| &p.name == plugin) {
                Some(p) if p.kind.answers_routes() => {}
                Some(_) => {
                    return invalid(
                        "routes.plugin",
                        format!(
                            "`{plugin}` is a filter; routes need kind = \"responder\" or \"wasi-http\""
                        ),
                    );
                }
                None => return invalid("routes.plugin", format!("no plugin named `{plugin}`")),
            },
            (None, Some(pool)) => {
                if !pools.contains_key(pool) {
                    return invalid(
                        "routes.upstream",
                        format!("no upstream pool named `{pool}`"),
                    );
                }
            }
            _ => {
                return invalid(
                    "routes",
                    format!(
                        "route `{}` needs exactly one of plugin or upstream",
                        self.prefix
                    ),
                );
            }
        }
        Ok(())
    }
}

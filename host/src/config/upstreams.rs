//! The `[upstreams.NAME]` pools of backends the reverse proxy and plugins' outbound HTTP use,
//! and their checks.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_INTERVAL, DEFAULT_RESPONSE_TIMEOUT};
use super::error::ConfigError;

/// One `[upstreams.NAME]` pool of backends, balanced round robin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Backend addresses, `ip:port`; at most `max_backends`.
    pub servers: Vec<SocketAddr>,
    /// Path of the active health check (GET; 2xx or 3xx is healthy) [default: "/"].
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Time between health checks [default: 2s].
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub health_interval: Duration,
    /// Consecutive failed checks that mark a server down [default: 2].
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Consecutive good checks that mark it up again [default: 1].
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that say a server is unhealthy (a failed connect, a response
    /// timeout, or 502/503/504 from it) before it is ejected [default: 5]. Other statuses
    /// (404, 500, 501 ...) are the application's answer and never count: clients cannot
    /// switch a server off. (`max_5xx` is read as an older name of this key.)
    #[serde(default = "default_max_fails", alias = "max_5xx")]
    pub max_fails: u32,
    /// How long a server is ejected the first time; each further ejection in a row doubles
    /// it, up to `max_eject_time` [default: 10s].
    #[serde(default = "default_eject_time", with = "humantime_serde")]
    pub eject_time: Duration,
    /// Longest ejection [default: 5m].
    #[serde(default = "default_max_eject_time", with = "humantime_serde")]
    pub max_eject_time: Duration,
    /// Most servers of the pool ejected at once, in percent (rounded down); past it failures
    /// are counted but nobody more is ejected, so a pool never ejects itself empty
    /// [default: 50].
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
    /// Time to connect to a backend [default: 1s].
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for a backend's response head [default: 30s]; past it the client gets 504.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
}

impl UpstreamConfig {
    /// Checks the pool `name`, which may have at most `max_backends` servers.
    pub(super) fn check(&self, name: &str, max_backends: usize) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.servers.is_empty() {
            return invalid("upstreams.servers", format!("pool `{name}` has no servers"));
        }
        if self.servers.len() > max_backends {
            return invalid(
                "upstreams.servers",
                format!(
                    "pool `{name}` has {} servers; max_backends is {max_backends}",
                    self.servers.len(),
                ),
            );
        }
        if self.fall == 0 || self.rise == 0 || self.max_fails == 0 || self.health_interval.is_zero()
        {
            return invalid(
                "upstreams",
                format!("pool `{name}`: fall, rise, max_fails and health_interval must be above 0"),
            );
        }
        if self.max_ejected_percent > 100 {
            return invalid(
                "upstreams.max_ejected_percent",
                format!("pool `{name}`: must be at most 100"),
            );
        }
        if !crate::target::valid_target(&self.health_path) {
            return invalid(
                "upstreams.health_path",
                format!(
                    "pool `{name}`: must start with / and hold only visible ASCII (percent-encode the rest)"
                ),
            );
        }
        Ok(())
    }
}

fn default_health_path() -> String {
    "/".into()
}
fn default_health_interval() -> Duration {
    DEFAULT_HEALTH_INTERVAL
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    1
}
fn default_max_fails() -> u32 {
    5
}
fn default_eject_time() -> Duration {
    Duration::from_secs(10)
}
fn default_max_eject_time() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejected_percent() -> u32 {
    50
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_response_timeout() -> Duration {
    DEFAULT_RESPONSE_TIMEOUT
}

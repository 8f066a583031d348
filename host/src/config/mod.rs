//! Configuration: the typed `plughost.toml`, its defaults, CLI/environment overrides and validation.
//!
//! Defaults are the constants of the C server plughost replaces and live in [`defaults`]
//! only. Each section's file parses and validates that section; this one the top-level keys,
//! loading, overrides and printing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod defaults;
mod error;
mod keyvalue;
mod outbound;
mod plugins;
mod routes;
mod secrets;
mod traces;
mod upstreams;

pub use defaults::*;
pub use error::ConfigError;
use error::explained;
pub use keyvalue::{KeyValueConfig, KvBackend};
pub use outbound::{Destination, OutboundConfig, ProxyNet, UPSTREAM_HOST_SUFFIX};
pub use plugins::{Grant, OnError, PluginConfig, PluginKind, Reuse};
pub use routes::RouteConfig;
pub use secrets::SecretConfig;
pub use traces::TracingConfig;
pub use upstreams::UpstreamConfig;

/// The whole configuration, as read from `plughost.toml`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Port of the public HTTP listener. 0 picks a free one (tests use this).
    pub port: u16,
    /// Address of the public HTTP listener.
    pub bind: IpAddr,
    /// Requests processed at once; the rest queue.
    pub max_concurrency: usize,
    /// Longest wait in the queue before 503 with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Connections held open at once (idle keep-alive ones included).
    pub max_connections: usize,
    /// Threads serving the public listener's connections, each with its own event loop; 0 is
    /// one per core.
    pub workers: usize,
    /// Entries in the response cache; 0 turns the cache off.
    pub cache_capacity: usize,
    /// Freshness of plughost's own responses (default page, responder plugins) that state
    /// none; upstream responses follow RFC 9111 only. (`cache_ttl` is read as an older name.)
    #[serde(with = "humantime_serde", alias = "cache_ttl")]
    pub own_response_ttl: Duration,
    /// Bytes the cache may hold (bodies and headers); least recently used entries go first.
    pub cache_max_bytes: usize,
    /// Longest heuristic freshness given to a response with `Last-Modified` only.
    #[serde(with = "humantime_serde")]
    pub cache_heuristic_max: Duration,
    /// Longest a request waits for another one already fetching the same response.
    #[serde(with = "humantime_serde")]
    pub cache_lock_timeout: Duration,
    /// Responses with larger bodies are not cached.
    pub cache_max_entry_bytes: usize,
    /// File the access log and the server log are appended to.
    pub log_file: PathBuf,
    /// Lines buffered for the log thread; past it lines are dropped and counted.
    pub log_buffer: usize,
    /// Also write every log line to stderr.
    pub log_stderr: bool,
    /// Log filter (`tracing` directives such as `info` or `plughost=debug`); `RUST_LOG` wins.
    pub log_level: String,
    /// `text` (readable lines) or `json` (one JSON object a line, for log shippers).
    pub log_format: LogFormat,
    /// Folder scanned for plugins.
    pub plugins_dir: PathBuf,
    /// Most plugins loaded, native and wasm together.
    pub max_plugins: usize,
    /// Admin listener (health, metrics, cache), or `off`.
    pub admin: AdminAddr,
    /// Bearer token the admin API requires; mandatory when `admin` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Grace period for in-flight requests at shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Time allowed to receive a request head; for the first request of a connection,
    /// counted from accept (TLS handshake included).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request for this long after its last response is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Enables `/_debug/*` routes (sleep, log flood, panic) used by the tests. Never in production.
    pub debug_routes: bool,
    /// Bytes of the request body native plugins see in `data`.
    pub native_body_cap: usize,
    /// Bytes of requests a native plugin may fall behind by; past it requests are skipped
    /// for it and counted.
    pub native_queue_bytes: usize,
    /// A native plugin call slower than this is logged with the plugin's name.
    #[serde(with = "humantime_serde")]
    pub native_budget: Duration,
    /// Where compiled wasm plugins are cached between runs, or `""` for no cache. The
    /// directory and each file in it must be owned by plughost's user (or root) and writable
    /// by nobody else, or the cache is not used: what is in it runs as native code.
    /// [default: `$CACHE_DIRECTORY` (systemd's `CacheDirectory=`), else
    /// `$XDG_CACHE_HOME/plughost`, else `$HOME/.cache/plughost`, else none]
    pub wasm_cache_dir: PathBuf,
    /// Whether WASI 0.3 components (`wasi:http@0.3` services and middleware) may load.
    /// wasmtime marks its 0.3 support experimental (outside semver, no security backports);
    /// `false` refuses them at load with a message naming this key.
    pub wasi_p3: bool,
    /// Plugins to load, in chain order (wasm components, and native libraries by their
    /// extension). Empty: every `*.wasm` (as a filter) and native library in `plugins_dir`.
    pub plugins: Vec<PluginConfig>,
    /// Most servers in one upstream pool.
    pub max_backends: usize,
    /// Backend pools for the reverse proxy, by name.
    pub upstreams: std::collections::BTreeMap<String, UpstreamConfig>,
    /// Path prefixes answered by responder plugins or proxied to upstreams; longest wins.
    pub routes: Vec<RouteConfig>,
    /// Peers (addresses or CIDRs) whose `X-Forwarded-For` and `Forwarded` are extended;
    /// from any other peer they are replaced, so clients cannot forge their address.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Also send RFC 7239 `Forwarded` (for, host, proto) to upstreams.
    pub forwarded_header: bool,
    /// Reload plugins when files in `plugins_dir` change (SIGHUP and `POST /plugins/reload`
    /// reload whatever this says).
    pub watch_plugins: bool,
    /// Key-value buckets plugins may be granted, by name.
    pub keyvalue: std::collections::BTreeMap<String, KeyValueConfig>,
    /// Secrets plugins may be granted (read through `wasi:config`), by name: where each
    /// value is read from, never the value.
    pub secrets: std::collections::BTreeMap<String, SecretConfig>,
    /// Outbound HTTP from plugins (who may call what is each plugin's `allowed_outbound`).
    pub outbound: OutboundConfig,
    /// HTTPS on the public listener; absent: cleartext HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// OpenTelemetry traces exported over OTLP; absent: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

/// The `[tls]` table: the public listener speaks HTTPS (ALPN h2 and http/1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A cleartext port that answers every request with a redirect to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port: Option<u16>,
}

/// What `plughost config` prints in place of a secret.
pub const REDACTED: &str = "(redacted)";

/// Keys a reload applies to the running server; a change to any other key needs a restart.
pub const LIVE_KEYS: &[&str] = &[
    "plugins",
    "routes",
    "upstreams",
    "own_response_ttl",
    "secrets",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            workers: DEFAULT_WORKERS,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            own_response_ttl: DEFAULT_OWN_RESPONSE_TTL,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            cache_heuristic_max: DEFAULT_CACHE_HEURISTIC_MAX,
            cache_lock_timeout: DEFAULT_CACHE_LOCK_TIMEOUT,
            cache_max_entry_bytes: DEFAULT_CACHE_MAX_ENTRY_BYTES,
            log_file: PathBuf::from("plughost.log"),
            log_buffer: DEFAULT_LOG_BUFFER,
            log_stderr: true,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            plugins_dir: PathBuf::from("plugins"),
            max_plugins: DEFAULT_MAX_PLUGINS,
            admin: AdminAddr(Some(DEFAULT_ADMIN)),
            admin_token: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            debug_routes: false,
            native_body_cap: DEFAULT_NATIVE_BODY_CAP,
            native_queue_bytes: DEFAULT_NATIVE_QUEUE_BYTES,
            native_budget: DEFAULT_NATIVE_BUDGET,
            wasm_cache_dir: default_wasm_cache_dir(),
            wasi_p3: true,
            plugins: Vec::new(),
            max_backends: DEFAULT_MAX_BACKENDS,
            upstreams: Default::default(),
            routes: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: false,
            watch_plugins: true,
            keyvalue: Default::default(),
            secrets: Default::default(),
            outbound: OutboundConfig::default(),
            tls: None,
            tracing: None,
        }
    }
}

/// The per-user cache location of the platform's conventions, never the working directory
/// (a service's working directory is often shared or writable by others).
fn default_wasm_cache_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // systemd's CacheDirectory= may list several, separated by ':'; the first is ours.
    if let Some(dirs) = var("CACHE_DIRECTORY")
        && let Some(first) = dirs.to_string_lossy().split(':').next()
    {
        return PathBuf::from(first);
    }
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("plughost"))
        .unwrap_or_default()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object a line, fields included.
    Json,
}

/// The admin listener's address; `off` disables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdminAddr(pub Option<SocketAddr>);

impl FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:9091 (or `off`)"))
    }
}

impl TryFrom<String> for AdminAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AdminAddr> for String {
    fn from(a: AdminAddr) -> Self {
        a.to_string()
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

/// Values given on the command line or through `PLUGHOST_*` variables; they win over the file.
/// They come before any subcommand (`plughost --port 8080 config`), so `plugin run` can
/// have a `--config` of its own.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Config file [default: ./plughost.toml when present, else built-in defaults]
    #[arg(long, env = "PLUGHOST_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Port of the public listener [default: 9090]
    #[arg(long, env = "PLUGHOST_PORT")]
    pub port: Option<u16>,
    /// Address of the public listener [default: 0.0.0.0]
    #[arg(long, env = "PLUGHOST_BIND")]
    pub bind: Option<IpAddr>,
    /// Admin listener address, or `off` [default: 127.0.0.1:9091]
    #[arg(long, env = "PLUGHOST_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// Folder scanned for plugins [default: ./plugins]
    #[arg(long, env = "PLUGHOST_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Log file [default: ./plughost.log]
    #[arg(long, env = "PLUGHOST_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Threads serving connections, 0 for one per core [default: 0]
    #[arg(long, env = "PLUGHOST_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
}

impl Config {
    /// Reads the configuration: the file (explicit, else `./plughost.toml` if present, else
    /// none), then the overrides, then validation.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let implicit = Path::new("plughost.toml");
        let path = overrides
            .config
            .clone()
            .or_else(|| implicit.exists().then(|| implicit.to_path_buf()));
        let mut text = None;
        let mut config = match &path {
            Some(path) => {
                let read = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::parse(text.insert(read), path)?
            }
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate().map_err(|e| match (&path, &text) {
            (Some(path), Some(text)) => e.located(path, text),
            _ => e,
        })?;
        Ok(config)
    }

    /// Parses TOML text; errors name the file, line and key in one line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line = text[..offset.min(text.len())].matches('\n').count() + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or_default();
            let key = line_text
                .split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches(|c| c == '[' || c == ']');
            // Only a plain (possibly dotted) key is named; a line that is not `key = value`
            // gives no key rather than a misleading one.
            let plain = key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            let key = if plain { key.to_owned() } else { String::new() };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                key,
                message: explained(e.message().trim()),
            }
        })
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(port) = o.port {
            self.port = port;
        }
        if let Some(bind) = o.bind {
            self.bind = bind;
        }
        if let Some(admin) = o.admin {
            self.admin = admin;
        }
        if let Some(dir) = &o.plugins_dir {
            self.plugins_dir = dir.clone();
        }
        if let Some(file) = &o.log_file {
            self.log_file = file.clone();
        }
        if let Some(n) = o.workers {
            self.workers = n;
        }
    }

    /// The worker threads to start: `workers`, or one per core when it is 0.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// Rejects values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least(key: &'static str, value: usize, min: usize) -> Result<(), ConfigError> {
            if value < min {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be at least {min}, got {value}"),
                });
            }
            Ok(())
        }
        at_least("max_concurrency", self.max_concurrency, 1)?;
        at_least("max_connections", self.max_connections, 1)?;
        at_least("log_buffer", self.log_buffer, 1)?;
        at_least("max_headers", self.max_headers, 1)?;
        // Browsers' heads with their cookies reach several KiB; nginx's smallest large buffer
        // is 8 KiB too.
        at_least("max_header_bytes", self.max_header_bytes, 8192)?;
        if self.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::Invalid {
                key: "max_concurrency",
                reason: "is larger than the limiter supports".into(),
            });
        }
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::Invalid {
                key: "workers",
                reason: format!(
                    "must be at most {MAX_WORKERS} (0 is one per core), got {}",
                    self.workers
                ),
            });
        }
        if self.max_plugins > 1000 {
            return Err(ConfigError::Invalid {
                key: "max_plugins",
                reason: format!("must be at most 1000, got {}", self.max_plugins),
            });
        }
        for (key, d) in [
            ("queue_timeout", self.queue_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be longer than 0s".into(),
                });
            }
        }
        if self.log_file.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "log_file",
                reason: "must name a file".into(),
            });
        }
        if let Some(addr) = self.admin.0
            && !addr.ip().is_loopback()
            && self.admin_token.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::Invalid {
                key: "admin_token",
                reason: format!(
                    "the admin API on {addr} is reachable from other hosts; set admin_token (or bind admin to 127.0.0.1)"
                ),
            });
        }
        self.validate_sections()?;
        if let Err(e) = self.log_level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(ConfigError::Invalid {
                key: "log_level",
                reason: format!("`{}` is not a log filter: {e}", self.log_level),
            });
        }
        Ok(())
    }

    /// Each section's own checks, and the plugins' names unique.
    fn validate_sections(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "plugins.name",
                    reason: format!("`{}` is empty or used twice", p.name),
                });
            }
            p.check(&self.keyvalue, &self.secrets, &self.upstreams)?;
        }
        for (name, kv) in &self.keyvalue {
            kv.check(name)?;
        }
        for (name, secret) in &self.secrets {
            secret.check(name)?;
        }
        if let Some(tracing) = &self.tracing {
            tracing.check()?;
        }
        for (name, u) in &self.upstreams {
            u.check(name, self.max_backends)?;
        }
        for r in &self.routes {
            r.check(&self.plugins, &self.upstreams)?;
        }
        Ok(())
    }

    /// The public listener's address.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The effective configuration as TOML, for `plughost config`. `admin_token` is shown
    /// only as set or not: the output goes to terminals, tickets and CI logs.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(token) = &mut shown.admin_token {
            *token = REDACTED.to_owned();
        }
        if let Some(tracing) = &mut shown.tracing {
            // Export headers carry credentials.
            tracing
                .headers
                .values_mut()
                .for_each(|v| *v = REDACTED.to_owned());
        }
        toml::to_string(&shown).expect("Config always serializes")
    }

    /// The keys that differ between `self` and `new` and that a reload cannot apply.
    pub fn restart_needed(&self, new: &Config) -> Vec<String> {
        let table = |c: &Config| toml::Table::try_from(c).expect("Config always serializes");
        let (old, new) = (table(self), table(new));
        let mut keys: Vec<String> = old
            .keys()
            .chain(new.keys())
            .filter(|k| !LIVE_KEYS.contains(&k.as_str()) && old.get(*k) != new.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::parse(text, Path::new("plughost.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn empty_file_gives_the_c_servers_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.port, 9090);
        assert_eq!(c.max_concurrency, 10);
        assert_eq!(c.cache_capacity, 100);
        assert_eq!(c.log_buffer, 1000);
        assert_eq!(c.max_plugins, 10);
    }

    #[test]
    fn durations_read_as_human_text() {
        let c = parse("queue_timeout = \"250ms\"\ncache_ttl = \"2m\"").unwrap();
        assert_eq!(c.queue_timeout, Duration::from_millis(250));
        assert_eq!(c.own_response_ttl, Duration::from_secs(120));
    }

    #[test]
    fn unknown_key_is_named_with_its_line_and_the_nearest_key() {
        let e = parse("port = 8080\nprot = 1\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "plughost.toml:2: prot: unknown key `prot`; did you mean `port`?"
        );
        let e = parse("[[plugin]]\nname = \"a\"\nfile = \"a.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("unknown key `plugin`; did you mean `plugins`?"),
            "{e}"
        );
        let e = parse("[[plugins]]\nname = \"a\"\nfile = \"a.wasm\"\ntimout = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("did you mean `timeout`?"), "{e}");
        let e = parse("zzzzzz = 1\n").unwrap_err().to_string();
        assert!(e.contains("`plughost config` prints every key"), "{e}");
    }

    #[test]
    fn a_bad_duration_says_what_a_duration_looks_like() {
        let e = parse("queue_timeout = \"fast\"\n").unwrap_err().to_string();
        assert!(e.ends_with("like `250ms`, `2s` or `1m`"), "{e}");
    }

    #[test]
    fn a_grant_of_an_undeclared_bucket_is_located() {
        let text = "[[plugins]]\nname = \"rfilter\"\nfile = \"r.wasm\"\nkeyvalue = [\"hits\"]\n";
        let path = Path::new("plughost.toml");
        let e = Config::parse(text, path)
            .unwrap()
            .validate()
            .unwrap_err()
            .located(path, text)
            .to_string();
        assert!(e.starts_with("plughost.toml:4: plugins.keyvalue: "), "{e}");
    }

    #[test]
    fn port_out_of_range_is_named() {
        let e = parse("\nport = 70000").unwrap_err().to_string();
        assert!(e.starts_with("plughost.toml:2: port: "), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = parse("cache_capacity = \"many\"").unwrap_err().to_string();
        assert!(e.starts_with("plughost.toml:1: cache_capacity: "), "{e}");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let e = parse("max_concurrency = 0").unwrap_err().to_string();
        assert_eq!(e, "max_concurrency: must be at least 1, got 0");
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let e = parse("admin = \"0.0.0.0:9091\"").unwrap_err().to_string();
        assert!(
            e.starts_with("admin_token: the admin API on 0.0.0.0:9091"),
            "{e}"
        );
        assert!(parse("admin = \"0.0.0.0:9091\"\nadmin_token = \"t\"").is_ok());
        assert!(parse("admin = \"[::1]:9091\"").is_ok());
    }

    #[test]
    fn admin_can_be_turned_off() {
        assert_eq!(parse("admin = \"off\"").unwrap().admin, AdminAddr(None));
        let e = parse("admin = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("admin: "), "{e}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut c = parse("port = 1000").unwrap();
        c.apply(&Overrides {
            port: Some(2000),
            ..Default::default()
        });
        assert_eq!(c.port, 2000);
    }

    const PLUGINS: &str = r#"
[[plugins]]
name = "hello"
file = "hello.wasm"
kind = "responder"
config = { greeting = "Hi", nested = { a = 1 } }
reuse = "pooled"
max_requests = 100
timeout = "20ms"

[[routes]]
prefix = "/hello"
plugin = "hello"
"#;

    #[test]
    fn plugins_and_routes_parse_with_defaults() {
        let c = parse(PLUGINS).unwrap();
        let p = &c.plugins[0];
        assert_eq!(p.kind, PluginKind::Responder);
        assert_eq!(p.timeout, Duration::from_millis(20));
        assert_eq!(p.max_memory_bytes, DEFAULT_PLUGIN_MEMORY_BYTES);
        assert_eq!(p.on_error, OnError::Fail);
        assert_eq!(c.routes[0].plugin.as_deref(), Some("hello"));
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn routes_must_name_a_responder() {
        let unknown = PLUGINS.replace("plugin = \"hello\"", "plugin = \"nobody\"");
        let e = parse(&unknown).unwrap_err().to_string();
        assert_eq!(e, "routes.plugin: no plugin named `nobody`");
        let filter = PLUGINS.replace("kind = \"responder\"", "kind = \"filter\"");
        let e = parse(&filter).unwrap_err().to_string();
        assert!(e.starts_with("routes.plugin: `hello` is a filter"), "{e}");
    }

    #[test]
    fn upstream_pools_are_checked() {
        let ok = "[upstreams.api]\nservers = [\"127.0.0.1:8081\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"api\"\n";
        let c = parse(ok).unwrap();
        assert_eq!(c.upstreams["api"].rise, 1);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        let empty = ok.replace("[\"127.0.0.1:8081\"]", "[]");
        assert_eq!(
            parse(&empty).unwrap_err().to_string(),
            "upstreams.servers: pool `api` has no servers"
        );
        let six: Vec<String> = (1..=6).map(|i| format!("\"127.0.0.1:{i}\"")).collect();
        let many = ok.replace("[\"127.0.0.1:8081\"]", &format!("[{}]", six.join(", ")));
        assert!(
            parse(&many)
                .unwrap_err()
                .to_string()
                .contains("max_backends is 5")
        );
        let bad = ok.replace("127.0.0.1:8081", "not-an-address");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("plughost.toml:2: servers: "), "{e}");
        let unknown = ok.replace("upstream = \"api\"", "upstream = \"web\"");
        assert_eq!(
            parse(&unknown).unwrap_err().to_string(),
            "routes.upstream: no upstream pool named `web`"
        );
    }

    /// Found by `make fuzz` (target `config`): errors past the last line, or on a line that is
    /// not `key = value`, named an empty or garbled key.
    #[test]
    fn an_error_at_the_end_of_the_file_names_no_empty_key() {
        for text in ["'''\n", ": '"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("plughost.toml:"), "{e}");
            assert!(!e.contains(": : "), "{e}");
        }
    }

    #[test]
    fn only_live_keys_reload_without_restart() {
        let old = parse("").unwrap();
        let new = parse("port = 8080\ncache_ttl = \"5s\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[[routes]]\nprefix = \"/a\"\nupstream = \"a\"\n[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n").unwrap();
        assert_eq!(old.restart_needed(&new), ["port", "tls"]);
        assert!(old.restart_needed(&old).is_empty());
    }

    #[test]
    fn fresh_instances_take_no_max_requests() {
        let text = PLUGINS.replace("reuse = \"pooled\"", "reuse = \"fresh\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("plugins.max_requests:"), "{e}");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn tracing_is_checked_and_its_headers_are_not_printed() {
        let ok = "[tracing]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\nheaders = { authorization = \"Bearer t0p\" }\n";
        let c = parse(ok).unwrap();
        let t = c.tracing.as_ref().unwrap();
        assert_eq!((t.sample_ratio, t.queue_size), (1.0, DEFAULT_TRACE_QUEUE));
        let printed = c.to_toml();
        assert!(
            !printed.contains("t0p") && printed.contains(REDACTED),
            "{printed}"
        );
        for (text, words) in [
            (
                "[tracing]\nendpoint = \"collector:4318\"\n",
                "tracing.endpoint",
            ),
            (
                "[tracing]\nendpoint = \"http://c/v1/traces\"\nsample_ratio = 1.5\n",
                "tracing.sample_ratio: must be from 0 to 1",
            ),
            (
                "[tracing]\nendpoint = \"http://c/v1/traces\"\nqueue_size = 0\n",
                "tracing.queue_size",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn secrets_name_one_source_and_grants_name_declared_secrets() {
        let ok = "[secrets.idp]\nenv = \"IDP_SECRET\"\n[[plugins]]\nname = \"p\"\nfile = \"p.wasm\"\nsecrets = [\"idp\"]\n";
        let c = parse(ok).unwrap();
        assert_eq!(c.plugins[0].secrets, ["idp"]);
        // Printed whole: the table holds where the value is, never the value.
        assert!(c.to_toml().contains("env = \"IDP_SECRET\""));
        for (text, words) in [
            ("[secrets.s]\n", "give exactly one of env"),
            (
                "[secrets.s]\nenv = \"A\"\nfile = \"/f\"\n",
                "give exactly one of env",
            ),
            ("[secrets.\"a b\"]\nenv = \"A\"\n", "a name is letters"),
            (
                "[[plugins]]\nname = \"p\"\nfile = \"p.wasm\"\nsecrets = [\"nope\"]\n",
                "no secret named `nope`",
            ),
            (
                "[secrets.k]\nenv = \"K\"\n[[plugins]]\nname = \"p\"\nfile = \"p.wasm\"\nsecrets = [\"k\"]\nconfig = { k = 1 }\n",
                "is both a config key and a granted secret",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn keyvalue_buckets_are_checked() {
        let ok = "[keyvalue.limits]\nttl = \"1m\"\n";
        assert_eq!(
            parse(ok).unwrap().keyvalue["limits"].ttl,
            Some(Duration::from_secs(60))
        );
        let e = parse("[keyvalue.l]\nbackend = \"redis\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("keyvalue.url: bucket `l`: backend = \"redis\" needs url"),
            "{e}"
        );
        let e = parse("[keyvalue.l]\nbackend = \"redis\"\nurl = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a Redis URL"), "{e}");
        let grant = "[[plugins]]\nname = \"p\"\nfile = \"p.wasm\"\nkeyvalue = [\"nope\"]\n";
        let e = parse(grant).unwrap_err().to_string();
        assert!(e.contains("no bucket named `nope`"), "{e}");
    }

    #[test]
    fn what_a_plugin_is_given_is_checked() {
        let plugin = |rest: &str| {
            parse(&format!(
                "[[plugins]]\nname = \"p\"\nfile = \"p.wasm\"\n{rest}\n"
            ))
        };
        let p = &plugin("").unwrap().plugins[0];
        assert_eq!((p.request_headers.as_ref(), p.request_body), (None, true));
        let p = &plugin("request_headers = [\"Authorization\"]\nrequest_body = false")
            .unwrap()
            .plugins[0];
        assert_eq!(p.request_headers, Some(vec!["Authorization".to_owned()]));
        assert!(!p.request_body);
        let e = plugin("request_headers = [\"bad name\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bad name` is not a header name"), "{e}");
        let e = plugin("kind = \"wasi-http\"\nrequest_body = false")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apply to filters and responders"), "{e}");
    }
}

//! The configuration capability: `wasi:config/store` (`get`, `get-all`), how Spin and
//! wasmCloud hand a component its settings, in the three versions components import:
//! `0.2.0-draft` (wasmCloud), `0.2.0-draft-2024-09-27` (Spin) and `0.2.0-rc.1` (wasmtime's
//! `wasi-config`). A plugin reads its `config` table (each value as a string: strings as
//! they are, numbers and booleans as written, arrays and tables as JSON) and the secrets its
//! entry grants (`secrets = ["NAME"]`).
//!
//! - [`WasiConfig`], the capability; `link`: the three versions, once per engine.
//! - shared backend ([`Secrets`]): every `[secrets.NAME]` value, read at start-up from its
//!   environment variable or file (a file must be owned by plughost's user or root and
//!   readable by nobody else); a secret that cannot be read stops start-up, naming it. A
//!   reload reads them all again and swaps them in only if every one could be read, so the
//!   next call sees the new value without the plugin reloading.
//! - per-instance state ([`Settings`]): the plugin's values, its granted secret names and
//!   its answer budget. A secret it was not granted reads as an error naming the grant to
//!   add; an undeclared key as none.
//! - metrics: `plughost_config_reads_total{op,outcome}` (outcome: ok, absent, denied,
//!   too_large).
//! - budgets: what `get` or `get-all` hands back is counted against `max_answer_bytes`.
//!
//! Secret values never leave this file except to the guest that was granted them: they are
//! not in the config, not in `/plugins`, not in a log line, and [`Secret`]'s `Debug` hides
//! them. wasmtime's own `wasmtime-wasi-config` serves one version from a map kept in each
//! store, with no budget, grant or count, hence this file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

use super::budget::{Answer, TooLarge};
use super::capability::{Capability, CapabilityError, Getter, HasScoped};
use crate::config::{Config, PluginConfig, SecretConfig};

/// Largest secret file read, in bytes: a secret is a key or a token, not a document.
const SECRET_FILE_MAX: u64 = 64 * 1024;

/// The configuration capability.
pub struct WasiConfig;

impl Capability for WasiConfig {
    type Backend = Secrets;
    type Grants = Settings;
    type Instance = Settings;

    /// Adds `wasi:config/store` in each version to the linker.
    fn link<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        get: Getter<T, Settings>,
    ) -> wasmtime::Result<()> {
        draft::wasi::config::store::add_to_linker::<T, HasScoped<Settings>>(linker, get)?;
        spin::wasi::config::store::add_to_linker::<T, HasScoped<Settings>>(linker, get)?;
        rc1::wasi::config::store::add_to_linker::<T, HasScoped<Settings>>(linker, get)
    }

    fn backend(
        config: &Config,
        _: &[SocketAddr],
        registry: &mut Registry,
    ) -> Result<Secrets, CapabilityError> {
        let reads = Family::default();
        registry.register(
            "plughost_config_reads",
            "wasi:config reads by operation and outcome (ok, absent, denied: a secret not granted, too_large: past max_answer_bytes)",
            reads.clone(),
        );
        Ok(Secrets {
            values: Arc::new(ArcSwap::from_pointee(read_all(&config.secrets)?)),
            reads,
        })
    }

    fn reload(secrets: &Secrets, config: &Config) -> Result<(), CapabilityError> {
        secrets.values.store(Arc::new(read_all(&config.secrets)?));
        Ok(())
    }

    fn grants(secrets: &Secrets, plugin: &PluginConfig) -> Result<Settings, CapabilityError> {
        let values = plugin
            .config
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        serde_json::to_string(v).unwrap_or_default()
                    }
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        Ok(Settings {
            values: Arc::new(values),
            granted: plugin.secrets.clone().into(),
            secrets: secrets.clone(),
            answer_bytes: plugin.max_answer_bytes,
        })
    }

    fn instance(settings: &Settings, _: &PluginConfig) -> Settings {
        settings.clone()
    }
}

/// A secret's value; its `Debug` shows none of it.
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::config::REDACTED)
    }
}

/// Every declared secret's value, shared by the whole server and swapped whole on reload.
#[derive(Clone)]
pub struct Secrets {
    values: Arc<ArcSwap<BTreeMap<String, Secret>>>,
    reads: Family<ReadLabel, Counter>,
}

/// Reads every secret, or names the first that cannot be read and the fix.
fn read_all(
    secrets: &BTreeMap<String, SecretConfig>,
) -> Result<BTreeMap<String, Secret>, CapabilityError> {
    secrets
        .iter()
        .map(|(name, s)| {
            let value = match (&s.env, &s.file) {
                (Some(var), _) => std::env::var(var).map_err(|_| {
                    format!("secret `{name}`: environment variable {var} is not set (or not UTF-8); set it, or change [secrets.{name}]")
                })?,
                (None, Some(file)) => read_file(file).map_err(|why| {
                    format!("secret `{name}`: {why}; fix it, or change [secrets.{name}]")
                })?,
                (None, None) => unreachable!("Config::validate requires env or file"),
            };
            Ok((name.clone(), Secret(value)))
        })
        .collect()
}

/// A secret file's text without one trailing newline, if it is plughost's (or root's),
/// readable by nobody else, at most [`SECRET_FILE_MAX`] bytes and UTF-8.
fn read_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    crate::plugin::native::trusted(path, 0o027)?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(SECRET_FILE_MAX + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > SECRET_FILE_MAX {
        return Err(format!(
            "{} is over {SECRET_FILE_MAX} bytes",
            path.display()
        ));
    }
    let value = text.strip_suffix('\n').unwrap_or(&text);
    Ok(value.strip_suffix('\r').unwrap_or(value).to_owned())
}

/// What one plugin may read.
#[derive(Clone)]
pub struct Settings {
    values: Arc<BTreeMap<String, String>>,
    granted: Arc<[String]>,
    secrets: Secrets,
    answer_bytes: usize,
}

/// The labels of this capability's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabel {
    op: &'static str,
    outcome: &'static str,
}

/// Why a read handed nothing back, in either version's words.
enum Refused {
    /// A declared secret not granted to this plugin.
    Denied(String),
    TooLarge(TooLarge),
}

impl Settings {
    fn count(&self, op: &'static str, outcome: &'static str) {
        self.secrets
            .reads
            .get_or_create(&ReadLabel { op, outcome })
            .inc();
    }

    fn get(&self, key: &str) -> Result<Option<String>, Refused> {
        let found = match self.values.get(key) {
            Some(v) => Some(v.clone()),
            None => {
                let secrets = self.secrets.values.load();
                match secrets.get(key) {
                    Some(s) if self.granted.iter().any(|g| g == key) => Some(s.0.clone()),
                    Some(_) => {
                        self.count("get", "denied");
                        return Err(Refused::Denied(format!(
                            "secret `{key}` is not granted to this plugin; add it to its secrets = [...]"
                        )));
                    }
                    None => None,
                }
            }
        };
        if let Some(v) = &found {
            self.budget("get", v.len())?;
        }
        self.count("get", if found.is_some() { "ok" } else { "absent" });
        Ok(found)
    }

    fn get_all(&self) -> Result<Vec<(String, String)>, Refused> {
        let secrets = self.secrets.values.load();
        let granted = self
            .granted
            .iter()
            .filter_map(|g| secrets.get(g).map(|s| (g, &s.0)));
        let mut answer = Answer::new(self.answer_bytes);
        let mut all = Vec::new();
        for (k, v) in self.values.iter().chain(granted) {
            if let Err(e) = answer.take(k.len() + v.len()) {
                self.count("get-all", "too_large");
                return Err(Refused::TooLarge(e));
            }
            all.push((k.clone(), v.clone()));
        }
        self.count("get-all", "ok");
        Ok(all)
    }

    fn budget(&self, op: &'static str, n: usize) -> Result<(), Refused> {
        Answer::new(self.answer_bytes).take(n).map_err(|e| {
            self.count(op, "too_large");
            Refused::TooLarge(e)
        })
    }
}

/// The host functions of one version of `wasi:config/store`, whose error type is `$error`.
macro_rules! store_version {
    ($version:ident, $path:literal, $world:literal, $error:ident) => {
        #[allow(missing_docs)]
        pub mod $version {
            wasmtime::component::bindgen!({
                path: $path,
                world: $world,
                imports: { default: trappable },
            });

            use crate::plugin::host::capability::Scoped;
            use crate::plugin::host::wasi_config::{Refused, Settings};
            use wasi::config::store::{$error, Host};

            impl From<Refused> for $error {
                fn from(r: Refused) -> Self {
                    match r {
                        Refused::Denied(why) => $error::Upstream(why),
                        Refused::TooLarge(e) => $error::Upstream(e.to_string()),
                    }
                }
            }

            impl Host for Scoped<'_, Settings> {
                fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, $error>> {
                    Ok(self.instance.get(&key).map_err(Into::into))
                }

                fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, $error>> {
                    Ok(self.instance.get_all().map_err(Into::into))
                }
            }
        }
    };
}

store_version!(
    draft,
    "../wit/deps/config-draft",
    "wasi:config/imports",
    ConfigError
);
store_version!(
    spin,
    "../wit/deps/config-draft-2024-09-27",
    "wasi:config/imports",
    Error
);
store_version!(rc1, "../wit/deps/config-rc1", "wasi:config/imports", Error);

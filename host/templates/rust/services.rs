//! {{name}}: a plughost responder using the host's services its plughost.toml grants: it
//! counts the visits of each path in a key-value bucket (`config.bucket`), says what a GET
//! of `config.fetch` answered (the URL must be in its `allowed_outbound`) and whether the
//! secret `config.secret` is set (read through wasi:config when needed: a reload may change
//! it; never shown).
use std::sync::OnceLock;

use plughost_plugin_sdk::kv::Bucket;
use plughost_plugin_sdk::{Action, Level, Plugin, Request, Response, config, export_plugin, http, log};

/// The bucket, the URL and the secret's name, from the plugin's config.
static SERVICES: OnceLock<(Option<String>, Option<String>, Option<String>)> = OnceLock::new();

struct Services;

impl Plugin for Services {
    /// Once per instance, with the plugin's config as JSON; an `Err` keeps it from loading.
    fn init(json: &str) -> Result<(), String> {
        let config: plughost_plugin_sdk::serde_json::Value = config(json)?;
        let text = |key: &str| config[key].as_str().map(str::to_owned);
        SERVICES.get_or_init(|| (text("bucket"), text("fetch"), text("secret")));
        log(Level::Info, "{{name}} ready");
        Ok(())
    }

    /// Every request on the plugin's routes.
    fn process(req: Request) -> Result<Action, String> {
        let (bucket, fetch, secret) = SERVICES.get().ok_or("not initialised")?;
        let mut body = format!("{{name}}: {}\n", req.path());
        if let Some(bucket) = bucket {
            // Atomic: exact however many instances (or plughost processes, on Redis) count.
            let visits = Bucket::open(bucket)?.increment(req.path(), 1)?;
            body += &format!("visits: {visits}\n");
        }
        if let Some(url) = fetch {
            match http::get(url, &[]) {
                Ok(resp) => body += &format!("{url}: status {}\n", resp.status),
                Err(e) => body += &format!("{url}: {e}\n"),
            }
        }
        if let Some(name) = secret {
            match plughost_plugin_sdk::config::get(name)? {
                Some(value) => body += &format!("secret {name}: set, {} bytes\n", value.len()),
                None => body += &format!("secret {name}: not set\n"),
            }
        }
        // Counted per request: plughost's cache must not answer for it.
        Ok(Response::text(200, body)
            .with_header("cache-control", "no-store")
            .into_action())
    }
}

export_plugin!(Services);

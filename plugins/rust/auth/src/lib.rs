//! `auth`: a filter that lets a request through only with a known API key.
//! Config: `header` (default "x-api-key"), `keys` (list of accepted keys; must not be empty).
use plughost_plugin_sdk::{Action, Plugin, Request, Response, config, export_plugin, next};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    keys: Vec<String>,
}

fn default_header() -> String {
    "x-api-key".into()
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct Auth;

impl Plugin for Auth {
    fn init(json: &str) -> Result<(), String> {
        let c: Config = config(json)?;
        if c.keys.is_empty() {
            return Err("auth needs at least one key in `keys`".into());
        }
        CONFIG.get_or_init(|| c);
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        let c = CONFIG.get().ok_or("not initialised")?;
        match req.header(&c.header) {
            Some(k) if c.keys.iter().any(|key| key == k) => Ok(next()),
            _ => Ok(Response::text(401, "missing or unknown API key\n")
                .with_header("www-authenticate", &format!("ApiKey header=\"{}\"", c.header))
                .into_action()),
        }
    }
}

export_plugin!(Auth);

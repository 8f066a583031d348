//! {{name}}: a plughost responder. It answers every request on its route with a greeting;
//! its `config` table (in plughost.toml) may set `greeting`.
use std::sync::OnceLock;

use plughost_plugin_sdk::{Action, Level, Plugin, Request, Response, config, export_plugin, log};

static GREETING: OnceLock<String> = OnceLock::new();

struct Greeter;

impl Plugin for Greeter {
    /// Once per instance, with the plugin's config as JSON; an `Err` keeps it from loading.
    fn init(json: &str) -> Result<(), String> {
        let config: plughost_plugin_sdk::serde_json::Value = config(json)?;
        let greeting = config["greeting"].as_str().unwrap_or("Hello");
        GREETING.get_or_init(|| greeting.to_owned());
        log(Level::Info, "{{name}} ready");
        Ok(())
    }

    /// Every request on the plugin's routes.
    fn process(req: Request) -> Result<Action, String> {
        let greeting = GREETING.get().map_or("Hello", String::as_str);
        let body = format!("{greeting} from {{name}}! You asked for {}\n", req.uri);
        Ok(Response::text(200, body).into_action())
    }
}

export_plugin!(Greeter);

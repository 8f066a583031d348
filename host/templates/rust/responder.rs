//! {{name}}: a plughost responder. It answers every request on its route with a greeting;
//! its `config` table (in plughost.toml) may set `greeting`.
wit_bindgen::generate!({ path: "wit", world: "plugin" });

use std::sync::OnceLock;

use plughost::plugin::host::{Level, log};
use plughost::plugin::types::{Header, Response};

static GREETING: OnceLock<String> = OnceLock::new();

struct Plugin;

impl Guest for Plugin {
    /// Once per instance, with the plugin's config as JSON; an `Err` keeps it from loading.
    fn plugin_init(config: String) -> Result<(), String> {
        // A real plugin would parse the JSON (serde_json); this one looks for one string.
        let greeting = config
            .split("\"greeting\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("Hello");
        GREETING.get_or_init(|| greeting.to_owned());
        log(Level::Info, "{{name}} ready");
        Ok(())
    }

    /// Every request on the plugin's routes.
    fn plugin_process(req: Request) -> Result<Action, String> {
        let greeting = GREETING.get().map_or("Hello", String::as_str);
        let body = format!("{greeting} from {{name}}! You asked for {}\n", req.uri);
        Ok(Action::Respond(Response {
            status: 200,
            headers: vec![Header {
                name: "content-type".into(),
                value: "text/plain; charset=utf-8".into(),
            }],
            body: body.into_bytes(),
        }))
    }
}

export!(Plugin);

//! `hello`: a responder that greets and echoes the request's uri.
//! Config: `greeting` (default "Hello").
use plughost_plugin_sdk::{Action, Level, Plugin, Request, Response, config, export_plugin, log};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "Hello".into()
}

static GREETING: OnceLock<String> = OnceLock::new();

struct Hello;

impl Plugin for Hello {
    fn init(json: &str) -> Result<(), String> {
        let c: Config = config(json)?;
        log(Level::Info, &format!("hello ready, greeting {:?}", c.greeting));
        GREETING.get_or_init(|| c.greeting);
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        let greeting = GREETING.get().map_or("Hello", String::as_str);
        Ok(Response::text(200, format!("{greeting} from plughost! You asked for {}\n", req.uri)).into_action())
    }
}

export_plugin!(Hello);

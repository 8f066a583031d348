//! `headers`: a filter that adds a request header and a response header from its config.
//! Config: `request = { name = "...", value = "..." }`, `response = { name = "...", value = "..." }`.
use plughost_plugin_sdk::{Action, Edits, Plugin, Request, config, export_plugin};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Pair {
    name: String,
    value: String,
}

#[derive(serde::Deserialize)]
struct Config {
    request: Option<Pair>,
    response: Option<Pair>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct Headers;

impl Plugin for Headers {
    fn init(json: &str) -> Result<(), String> {
        CONFIG.get_or_init(|| config(json).unwrap_or(Config { request: None, response: None }));
        config::<Config>(json).map(|_| ())
    }

    fn process(_req: Request) -> Result<Action, String> {
        let c = CONFIG.get().ok_or("not initialised")?;
        let mut edits = Edits::default();
        if let Some(p) = &c.request {
            edits = edits.set_header(&p.name, &p.value);
        }
        if let Some(p) = &c.response {
            edits = edits.response_header(&p.name, &p.value);
        }
        Ok(edits.into_action())
    }
}

export_plugin!(Headers);

//! {{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
//! header (400) and lets the others through, marking their response with `x-{{name}}`.
wit_bindgen::generate!({ path: "wit", world: "plugin" });

use plughost::plugin::host::{Level, log};
use plughost::plugin::types::{Edits, Header, Response};

struct Plugin;

impl Guest for Plugin {
    /// Once per instance, with the plugin's config as JSON; an `Err` keeps it from loading.
    fn plugin_init(_config: String) -> Result<(), String> {
        log(Level::Info, "{{name}} ready");
        Ok(())
    }

    /// Every request, in filter-chain order.
    fn plugin_process(req: Request) -> Result<Action, String> {
        if !req.headers.iter().any(|h| h.name == "host") {
            return Ok(Action::Respond(Response {
                status: 400,
                headers: Vec::new(),
                body: b"a host header is required\n".to_vec(),
            }));
        }
        Ok(Action::Continue(Edits {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            response_headers: vec![Header {
                name: "x-{{name}}".into(),
                value: "seen".into(),
            }],
        }))
    }
}

export!(Plugin);

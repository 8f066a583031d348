//! {{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
//! header (400) and lets the others through, marking their response with `x-{{name}}`.
use plughost_plugin_sdk::{Action, Edits, Level, Plugin, Request, Response, export_plugin, log};

struct Marker;

impl Plugin for Marker {
    /// Once per instance, with the plugin's config as JSON; an `Err` keeps it from loading.
    fn init(_config: &str) -> Result<(), String> {
        log(Level::Info, "{{name}} ready");
        Ok(())
    }

    /// Every request, in filter-chain order.
    fn process(req: Request) -> Result<Action, String> {
        if req.header("host").is_none() {
            return Ok(Response::text(400, "a host header is required\n").into_action());
        }
        Ok(Edits::default()
            .response_header("x-{{name}}", "seen")
            .into_action())
    }
}

export_plugin!(Marker);

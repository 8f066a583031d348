//! A complete responder: build a plugin crate with this as its `src/lib.rs` (crate-type
//! `cdylib`, `cargo build --release --target wasm32-wasip2`). As an example of this crate it
//! is only compiled, which keeps it in step with the API.
use plughost_plugin_sdk::{Action, Plugin, Request, Response, export_plugin};

struct Teapot;

impl Plugin for Teapot {
    fn process(req: Request) -> Result<Action, String> {
        let text = format!("I am a teapot; you asked for {}\n", req.path());
        Ok(Response::text(418, text).into_action())
    }
}

export_plugin!(Teapot);

fn main() {}

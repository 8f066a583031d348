//! Write plughost plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`], built with
//! `cargo build --release --target wasm32-wasip2` into a WebAssembly component that plughost
//! loads from its `plugins_dir`. The bindings are generated from plughost's `wit/` folder; they
//! are reachable under [`wit`] but you should not need them.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin-sdk",
        pub_export_macro: true,
        export_macro_name: "__export_plughost_world",
        generate_all,
    });
}

pub mod config;
pub mod http;
pub mod kv;

pub use serde_json;
pub use wit::plughost::plugin::host::Level;
pub use wit::plughost::plugin::types::{Action, Edits, Header, Request, Response};

/// A plughost plugin. Both functions are called on the same instance; with the default
/// `reuse = "pooled"` an instance (and its statics) lives across many requests.
pub trait Plugin {
    /// Called once per instance before any request, with the plugin's `config` table from
    /// `plughost.toml` as JSON (`{}` when there is none). Returning `Err` keeps the plugin from
    /// loading, and plughost logs the message.
    fn init(config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Called for every request the plugin sees. Return [`Action::Continue`] (see [`next`]) to
    /// let it go on, or [`Action::Respond`] to answer it. `Err` answers 500, or skips the
    /// plugin when it is configured with `on_error = "continue"`.
    fn process(req: Request) -> Result<Action, String>;
}

/// Exports a [`Plugin`] as the component's `plugin-init` and `plugin-process`.
///
/// ```ignore
/// struct Hello;
/// impl plughost_plugin_sdk::Plugin for Hello { /* ... */ }
/// plughost_plugin_sdk::export_plugin!(Hello);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __PlughostExport;
        impl $crate::wit::Guest for __PlughostExport {
            fn plugin_init(config: String) -> Result<(), String> {
                <$plugin as $crate::Plugin>::init(&config)
            }
            fn plugin_process(req: $crate::Request) -> Result<$crate::Action, String> {
                <$plugin as $crate::Plugin>::process(req)
            }
        }
        $crate::wit::__export_plughost_world!(__PlughostExport with_types_in $crate::wit);
    };
}

/// Parses the config JSON passed to [`Plugin::init`] into your own type.
pub fn config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("bad plugin config: {e}"))
}

/// Lets the request go on unchanged.
pub fn next() -> Action {
    Action::Continue(Edits::default())
}

/// Writes a line into plughost's log, tagged with this plugin's name.
pub fn log(level: Level, message: &str) {
    wit::plughost::plugin::host::log(level, message);
}

impl Default for Edits {
    fn default() -> Self {
        Self {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }
}

impl Edits {
    /// Sets a request header before the next step.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.set_headers.push(header(name, value));
        self
    }

    /// Removes a request header.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove_headers.push(name.to_owned());
        self
    }

    /// Adds a header to the response finally sent.
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers.push(header(name, value));
        self
    }

    /// The edits as an action.
    pub fn into_action(self) -> Action {
        Action::Continue(self)
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_ascii_lowercase(),
        value: value.to_owned(),
    }
}

impl Request {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("/")
    }

    /// The client's IP address (without the port).
    pub fn client_ip(&self) -> &str {
        self.client
            .rsplit_once(':')
            .map_or(self.client.as_str(), |(ip, _)| ip)
    }
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![header("content-type", "text/plain; charset=utf-8")],
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![header("content-type", "application/json")],
            body: value.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(header(name, value));
        self
    }

    /// The response as an action.
    pub fn into_action(self) -> Action {
        Action::Respond(self)
    }
}

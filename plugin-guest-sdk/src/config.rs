//! The plugin's settings through `wasi:config/store` (the version Spin's components import):
//! each key of its `config` table (as a string: numbers and booleans as written, arrays and
//! tables as JSON) and each secret granted to it (`secrets = ["NAME"]` in its `[[plugins]]`
//! entry, read by plughost from an environment variable or a file, never from
//! `plughost.toml`). Read a secret here, when it is needed, rather than keeping it from
//! `init`: plughost re-reads secrets on reload, and the next call sees the new value.
//!
//! ```ignore
//! let secret = plughost_plugin_sdk::config::get("idp_client_secret")?
//!     .ok_or("the idp_client_secret secret is not granted")?;
//! ```

use crate::wit::wasi::config0_2_0_draft_2024_09_27::store;

fn describe(e: store::Error) -> String {
    match e {
        store::Error::Upstream(why) | store::Error::Io(why) => why,
    }
}

/// The value of `key`: a `config` key or a granted secret; `None` when there is neither.
pub fn get(key: &str) -> Result<Option<String>, String> {
    store::get(key).map_err(describe)
}

/// Every `config` key and granted secret with its value.
pub fn get_all() -> Result<Vec<(String, String)>, String> {
    store::get_all().map_err(describe)
}

//! Bindings generated from `wit/plugin.wit` (documented there): the `plugin` world's types,
//! its exports and the `plughost:plugin/host` import. A leaf, so that the engine, the output
//! checks and the log capability can all use them without using each other.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use self::plughost::plugin::types::{Edits, HeaderParam, HeaderResult, Response};

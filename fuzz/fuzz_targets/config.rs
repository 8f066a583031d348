//! Any text as `plughost.toml`: parsing and validation never panic, errors name a line inside
//! the text, and a config that validates survives `plughost config` (to TOML and back).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plughost::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            if config.validate().is_ok() {
                let again = Config::parse(&config.to_toml(), Path::new("again.toml"))
                    .expect("the printed config parses");
                assert_eq!(again, config, "the printed config reads back the same");
            }
        }
        Err(e @ ConfigError::Parse { line, .. }) => {
            assert!(!e.to_string().contains(": : "), "an empty key in {e}");
            let lines = text.matches('\n').count() + 1;
            assert!(line >= 1 && line <= lines, "line {line} outside the text");
        }
        Err(_) => {}
    }
});

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
        Err(ConfigError::Parse { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1), "line {line} outside the text");
        }
        Err(_) => {}
    }
});

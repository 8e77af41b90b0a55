//! A configuration file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sav::config::Config::from_toml(text, "fuzz.toml", std::path::Path::new("/nonexistent"));
});

//! The config loader on arbitrary text: diagnostics with spans inside the
//! text, never a panic.
//!
//! Run with a nightly toolchain: `cargo +nightly fuzz run config_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        wsgate::fuzzing::config_text(text);
    }
});

//! The request path normaliser on arbitrary text: never a panic, and a
//! normalised path encodes and normalises back to itself.
//!
//! Run with a nightly toolchain: `cargo +nightly fuzz run request_path`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        wsgate::fuzzing::request_path(raw);
    }
});

//! The PROXY protocol parser on arbitrary bytes: never a panic, a header
//! inside the input, and the same answer for every prefix once it is
//! decided.
//!
//! Run with a nightly toolchain: `cargo +nightly fuzz run proxy_protocol`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsgate::fuzzing::proxy_header(data);
});

//! `Range` and `If-Range` on arbitrary bytes: a span inside the file, never
//! a panic.
//!
//! Run with a nightly toolchain: `cargo +nightly fuzz run range_headers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<8>() else { return };
    let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (range, if_range) = rest.split_at(cut);
    wsgate::fuzzing::range(range, if_range, u64::from_le_bytes(*len) % (1 << 40));
});

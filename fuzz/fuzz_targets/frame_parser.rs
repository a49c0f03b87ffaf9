//! The frame parser on arbitrary bytes: it never panics, and cutting the
//! input anywhere yields the same events at the same stream offsets.
//!
//! Run with a nightly toolchain: `cargo +nightly fuzz run frame_parser`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::websocket::frame::{stream_events, Rules};

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else { return };
    let rules = Rules {
        masked: control & 1 == 1,
        allowed_rsv: (control >> 1) & 0b111,
        max_message_size: 1 << (control >> 4),
    };
    let cut = usize::from(control) * 7 % (stream.len() + 1);
    let whole = stream_events(rules, &[stream]);
    let split = stream_events(rules, &[&stream[..cut], &stream[cut..]]);
    assert_eq!(whole, split);
});

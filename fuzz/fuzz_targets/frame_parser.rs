//! The frame parser on arbitrary bytes: it never panics, and cutting the
//! input anywhere yields the same events at the same stream offsets.
//!
//! Run with a nightly toolchain: `cargo +nightly fuzz run frame_parser`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::websocket::frame::{Event, FrameParser, Rules};

fn events(rules: Rules, chunks: &[&[u8]]) -> Vec<(usize, Event)> {
    let mut parser = FrameParser::new(rules);
    let mut seen = Vec::new();
    let mut base = 0;
    for chunk in chunks {
        let mut offset = 0;
        loop {
            let (used, event) = parser.advance(&chunk[offset..]);
            assert!(offset + used <= chunk.len());
            offset += used;
            match event {
                Some(event) => seen.push((base + offset, event)),
                None if used == 0 => break,
                None => {}
            }
        }
        base += chunk.len();
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else { return };
    let rules = Rules {
        masked: control & 1 == 1,
        allowed_rsv: (control >> 1) & 0b111,
        max_message_size: 1 << (control >> 4),
    };
    let cut = usize::from(control) * 7 % (stream.len() + 1);
    let whole = events(rules, &[stream]);
    let split = events(rules, &[&stream[..cut], &stream[cut..]]);
    assert_eq!(whole, split);
});

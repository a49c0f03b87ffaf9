//! Request IDs and W3C Trace Context, so a log line can be followed into a
//! backend's logs and traces.
//!
//! Every request gets an `X-Request-Id` (kept from a trusted proxy, made
//! here otherwise) and a `traceparent` (W3C Trace Context §3.2): a trusted
//! peer's trace is continued with a new span ID, anyone else's replaced by a
//! new trace, so an untrusted client cannot join or forge traces. Both go
//! to the backend and the access log; the ID also goes back to the client.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest request ID taken from a trusted proxy; longer ones are replaced.
const MAX_REQUEST_ID: usize = 200;

/// Makes IDs: unique within the process (a counter through a bijective
/// mixer) and unpredictable across restarts (a random seed).
#[derive(Debug)]
pub struct IdSource {
    seed: u64,
    counter: AtomicU64,
}

impl Default for IdSource {
    fn default() -> IdSource {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(std::process::id().into());
        IdSource {
            seed: hasher.finish(),
            counter: AtomicU64::new(0),
        }
    }
}

impl IdSource {
    fn next(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // An odd multiplier and splitmix64 are both bijections, so distinct
        // counters never give the same ID.
        splitmix64(
            self.seed
                .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        )
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The identifiers a request carries from here on. The trace and span IDs
/// stay on the stack: only a request that is logged copies them.
#[derive(Debug, Clone)]
pub struct Ids {
    pub request_id: HeaderValue,
    trace_id: [u8; 32],
    span_id: [u8; 16],
}

impl Ids {
    /// 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        ascii(&self.trace_id)
    }

    /// This hop's span: 16 lowercase hex digits.
    pub fn span_id(&self) -> &str {
        ascii(&self.span_id)
    }
}

/// Hex digits as text; they are ASCII by construction.
fn ascii(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or("")
}

/// Sets the request's `X-Request-Id` and `traceparent` as the backend will
/// see them. `trusted`: the peer is a trusted proxy, whose IDs are kept.
pub fn assign(headers: &mut HeaderMap, trusted: bool, source: &IdSource) -> Ids {
    let request_id = trusted
        .then(|| single(headers, &REQUEST_ID))
        .flatten()
        .filter(|id| is_usable_id(id.as_bytes()))
        .cloned()
        .unwrap_or_else(|| header_value(&hex64(source.next())));
    let parent = trusted
        .then(|| single(headers, &TRACEPARENT))
        .flatten()
        .and_then(|value| parse_traceparent(value.as_bytes()));
    let span_id = hex64(source.next());
    let (trace_id, flags) = match parent {
        Some(parent) => (parent.trace_id, parent.flags),
        None => {
            headers.remove(&TRACESTATE);
            let mut trace_id = [0; 32];
            trace_id[..16].copy_from_slice(&hex64(source.next()));
            trace_id[16..].copy_from_slice(&hex64(source.next()));
            (trace_id, *b"00")
        }
    };
    // 00-<trace-id>-<span-id>-<flags>, built in place.
    let mut traceparent = [b'-'; 55];
    traceparent[..2].copy_from_slice(b"00");
    traceparent[3..35].copy_from_slice(&trace_id);
    traceparent[36..52].copy_from_slice(&span_id);
    traceparent[53..].copy_from_slice(&flags);
    headers.insert(REQUEST_ID.clone(), request_id.clone());
    headers.insert(TRACEPARENT.clone(), header_value(&traceparent));
    Ids {
        request_id,
        trace_id,
        span_id,
    }
}

/// The header's value when it appears exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

fn is_usable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| b.is_ascii_graphic())
}

/// What a valid `traceparent` (version 00) carries forward.
#[derive(Debug, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 32],
    flags: [u8; 2],
}

/// `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, lowercase, with
/// neither ID all zeros (W3C Trace Context §3.2.2).
fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = parts.next().is_none()
        && version == "00"
        && lower_hex(trace_id, 32)
        && lower_hex(parent_id, 16)
        && lower_hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    if !valid {
        return None;
    }
    // The lengths were checked above.
    let mut parent = Parent {
        trace_id: [0; 32],
        flags: [0; 2],
    };
    parent.trace_id.copy_from_slice(trace_id.as_bytes());
    parent.flags.copy_from_slice(flags.as_bytes());
    Some(parent)
}

/// 16 lowercase hex digits, without the formatting machinery (four IDs a request).
fn hex64(value: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0; 16];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = DIGITS[((value >> ((15 - i) * 4)) & 0xF) as usize];
    }
    text
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_bytes(bytes).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_hex() {
        let source = IdSource::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = hex64(source.next());
            assert!(id.iter().all(u8::is_ascii_hexdigit));
            assert!(seen.insert(id), "an ID repeated");
        }
    }

    #[test]
    fn a_trusted_trace_is_continued_and_an_untrusted_one_replaced() {
        let source = IdSource::default();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, HeaderValue::from_static(parent));
        headers.insert(&TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        headers.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        let mut untrusted = headers.clone();

        let ids = assign(&mut headers, true, &source);
        assert_eq!(ids.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.request_id, "abc-123");
        let sent = headers[&TRACEPARENT].to_str().expect("ascii");
        assert_eq!(sent, format!("00-{}-{}-01", ids.trace_id(), ids.span_id()));
        assert_ne!(ids.span_id(), "00f067aa0ba902b7", "a new span");
        assert!(headers.contains_key(&TRACESTATE));

        let ids = assign(&mut untrusted, false, &source);
        assert_ne!(ids.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ids.request_id, "abc-123");
        assert!(!untrusted.contains_key(&TRACESTATE));
        let sent = untrusted[&TRACEPARENT].to_str().expect("ascii").to_owned();
        assert!(parse_traceparent(sent.as_bytes()).is_some(), "{sent}");
    }

    #[test]
    fn malformed_traceparents_are_not_continued() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
    }
}

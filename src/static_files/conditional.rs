//! Conditional and range requests (RFC 9110 §13 and §14), as pure functions
//! over request headers and a file's validators.

use std::ops::RangeInclusive;
use std::time::SystemTime;

use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, HeaderValue, Method};
use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};

/// What the preconditions of a request say about a representation.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: the client asked for a state the file is not in.
    Failed,
}

/// Which part of a representation a request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Span {
    Full,
    Partial(RangeInclusive<u64>),
    Unsatisfiable,
}

/// Evaluates preconditions in the order RFC 9110 §13.2.2 prescribes.
///
/// `modified` must already be truncated to whole seconds, as HTTP dates are.
pub fn preconditions(
    method: &Method,
    headers: &HeaderMap,
    etag: &str,
    modified: SystemTime,
) -> Precondition {
    let safe = method == Method::GET || method == Method::HEAD;
    if let Some(if_match) = headers.get(IF_MATCH) {
        if !etag_list_matches(if_match, etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(since) = header_date(headers.get(IF_UNMODIFIED_SINCE)) {
        if modified > since {
            return Precondition::Failed;
        }
    }
    // §13.1.2: If-None-Match takes precedence over If-Modified-Since.
    if let Some(if_none_match) = headers.get(IF_NONE_MATCH) {
        if etag_list_matches(if_none_match, etag, Comparison::Weak) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if let Some(since) = header_date(headers.get(IF_MODIFIED_SINCE)).filter(|_| safe) {
        if modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// The span a GET asks for with `Range`, honouring `If-Range` (§13.1.5, §14.2).
///
/// Multiple ranges get the full representation, which §14.2 allows; a header
/// that does not parse is ignored, as §14.2 requires.
pub fn requested_span(
    method: &Method,
    headers: &HeaderMap,
    etag: &str,
    modified: SystemTime,
    len: u64,
) -> Span {
    let Some(range) = headers.get(RANGE).filter(|_| method == Method::GET) else {
        return Span::Full;
    };
    if let Some(if_range) = headers.get(IF_RANGE) {
        if !if_range_matches(if_range, etag, modified) {
            return Span::Full;
        }
    }
    let Ok(range) = range.to_str() else {
        return Span::Full;
    };
    let parsed = match http_range_header::parse_range_header(range) {
        Ok(parsed) => parsed,
        // "bytes=-0" is well-formed but asks for nothing (§14.1.1).
        Err(RangeUnsatisfiableError::ZeroSuffix) => return Span::Unsatisfiable,
        Err(_) => return Span::Full,
    };
    let [only] = parsed.ranges.as_slice() else {
        return Span::Full;
    };
    let last_byte = match len.checked_sub(1) {
        Some(last) => last,
        None => return Span::Unsatisfiable,
    };
    match (only.start, only.end) {
        (StartPosition::Index(first), EndPosition::Index(last)) if last < first => Span::Full,
        (StartPosition::Index(first), _) if first >= len => Span::Unsatisfiable,
        (StartPosition::Index(first), EndPosition::Index(last)) => {
            Span::Partial(first..=last.min(last_byte))
        }
        (StartPosition::Index(first), EndPosition::LastByte) => Span::Partial(first..=last_byte),
        // §14.1.2: a suffix longer than the representation selects all of it.
        (StartPosition::FromLast(suffix), _) => {
            Span::Partial(len.saturating_sub(suffix)..=last_byte)
        }
    }
}

#[derive(Clone, Copy)]
enum Comparison {
    Strong,
    Weak,
}

/// Whether a list of entity tags (or `*`) contains `etag` (§8.8.3.2).
fn etag_list_matches(list: &HeaderValue, etag: &str, comparison: Comparison) -> bool {
    let Ok(list) = list.to_str() else {
        return false;
    };
    if list.trim() == "*" {
        return true;
    }
    let (ours_weak, ours) = split_weak(etag);
    entity_tags(list).any(|tag| {
        let (theirs_weak, theirs) = split_weak(tag);
        match comparison {
            Comparison::Weak => theirs == ours,
            Comparison::Strong => !ours_weak && !theirs_weak && theirs == ours,
        }
    })
}

fn if_range_matches(value: &HeaderValue, etag: &str, modified: SystemTime) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        let (theirs_weak, theirs) = split_weak(value);
        let (ours_weak, ours) = split_weak(etag);
        !theirs_weak && !ours_weak && theirs == ours
    } else {
        httpdate::parse_http_date(value).is_ok_and(|date| date == modified)
    }
}

fn split_weak(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// The entity tags of a comma-separated list; commas inside quotes are not separators.
fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let opening = if rest.starts_with("W/") { 2 } else { 0 };
        let tag_end = if rest[opening..].starts_with('"') {
            rest[opening + 1..].find('"').map(|i| opening + i + 2)
        } else {
            None
        };
        let end = tag_end.unwrap_or_else(|| rest.find(',').unwrap_or(rest.len()));
        let (tag, remainder) = rest.split_at(end);
        rest = remainder;
        Some(tag.trim())
    })
}

fn header_date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(value?.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ETAG: &str = "\"abc\"";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    fn pre(pairs: &[(&'static str, &str)]) -> Precondition {
        preconditions(&Method::GET, &headers(pairs), ETAG, at(1_000_000))
    }

    fn span(pairs: &[(&'static str, &str)], len: u64) -> Span {
        requested_span(&Method::GET, &headers(pairs), ETAG, at(1_000_000), len)
    }

    #[test]
    fn if_none_match_lists_star_and_weak_tags() {
        assert_eq!(
            pre(&[("if-none-match", "\"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            pre(&[("if-none-match", "\"x\", W/\"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            pre(&[("if-none-match", "\"a,b\", \"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(pre(&[("if-none-match", "*")]), Precondition::NotModified);
        assert_eq!(pre(&[("if-none-match", "\"x\"")]), Precondition::Proceed);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let later = httpdate::fmt_http_date(at(2_000_000));
        assert_eq!(
            pre(&[("if-none-match", "\"x\""), ("if-modified-since", &later)]),
            Precondition::Proceed
        );
        assert_eq!(
            pre(&[("if-modified-since", &later)]),
            Precondition::NotModified
        );
        let earlier = httpdate::fmt_http_date(at(10));
        assert_eq!(
            pre(&[("if-modified-since", &earlier)]),
            Precondition::Proceed
        );
    }

    #[test]
    fn unsafe_methods_fail_instead_of_304() {
        let h = headers(&[("if-none-match", "*")]);
        assert_eq!(
            preconditions(&Method::POST, &h, ETAG, at(1)),
            Precondition::Failed
        );
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert_eq!(pre(&[("if-match", "\"abc\"")]), Precondition::Proceed);
        assert_eq!(pre(&[("if-match", "W/\"abc\"")]), Precondition::Failed);
        let earlier = httpdate::fmt_http_date(at(10));
        assert_eq!(
            pre(&[("if-unmodified-since", &earlier)]),
            Precondition::Failed
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(span(&[("range", "bytes=0-9")], 100), Span::Partial(0..=9));
        assert_eq!(
            span(&[("range", "bytes=90-200")], 100),
            Span::Partial(90..=99)
        );
        assert_eq!(span(&[("range", "bytes=-10")], 100), Span::Partial(90..=99));
        assert_eq!(
            span(&[("range", "bytes=-1000")], 100),
            Span::Partial(0..=99)
        );
        assert_eq!(span(&[("range", "bytes=50-")], 100), Span::Partial(50..=99));
        assert_eq!(span(&[("range", "bytes=100-")], 100), Span::Unsatisfiable);
        assert_eq!(span(&[("range", "bytes=-0")], 100), Span::Unsatisfiable);
        assert_eq!(span(&[("range", "bytes=0-")], 0), Span::Unsatisfiable);
        assert_eq!(span(&[("range", "bytes=0-1,5-6")], 100), Span::Full);
        assert_eq!(span(&[("range", "bytes=9-1")], 100), Span::Full);
        assert_eq!(span(&[("range", "lines=1-2")], 100), Span::Full);
        assert_eq!(span(&[], 100), Span::Full);
    }

    #[test]
    fn if_range_with_tag_or_date() {
        let range = ("range", "bytes=0-0");
        assert_eq!(
            span(&[range, ("if-range", "\"abc\"")], 10),
            Span::Partial(0..=0)
        );
        assert_eq!(span(&[range, ("if-range", "\"old\"")], 10), Span::Full);
        assert_eq!(span(&[range, ("if-range", "W/\"abc\"")], 10), Span::Full);
        let date = httpdate::fmt_http_date(at(1_000_000));
        assert_eq!(
            span(&[range, ("if-range", &date)], 10),
            Span::Partial(0..=0)
        );
        let other = httpdate::fmt_http_date(at(5));
        assert_eq!(span(&[range, ("if-range", &other)], 10), Span::Full);
    }

    #[test]
    fn head_ignores_range() {
        let h = headers(&[("range", "bytes=0-1")]);
        assert_eq!(
            requested_span(&Method::HEAD, &h, ETAG, at(1), 10),
            Span::Full
        );
    }

    use proptest::prelude::*;

    fn header_text() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "bytes=",
            "bytes",
            "=",
            "-",
            ",",
            "0",
            "1",
            "9",
            "18446744073709551615",
            " ",
            "x",
            "\"abc\"",
            "W/",
            "*",
        ]);
        prop::collection::vec(pieces, 0..10).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_range_gives_a_span_inside_the_file(
            range in header_text(),
            if_range in proptest::option::of(header_text()),
            len in prop_oneof![Just(0u64), 1u64..2000, Just(u64::MAX)],
        ) {
            let mut headers = HeaderMap::new();
            let Ok(value) = HeaderValue::from_str(&range) else {
                return Ok(());
            };
            headers.insert(RANGE, value);
            if let Some(Ok(value)) = if_range.map(|v| HeaderValue::from_str(&v)) {
                headers.insert(IF_RANGE, value);
            }
            match requested_span(&Method::GET, &headers, ETAG, SystemTime::UNIX_EPOCH, len) {
                Span::Partial(span) => {
                    prop_assert!(span.start() <= span.end(), "{:?}", span);
                    prop_assert!(*span.end() < len, "{:?} of {}", span, len);
                }
                Span::Full | Span::Unsatisfiable => {}
            }
        }

        #[test]
        fn any_validators_give_a_verdict(
            if_match in proptest::option::of(header_text()),
            if_none_match in proptest::option::of(header_text()),
            since in proptest::option::of("[A-Za-z0-9 ,:]{0,40}"),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in [(IF_MATCH, if_match), (IF_NONE_MATCH, if_none_match), (IF_MODIFIED_SINCE, since)] {
                if let Some(Ok(value)) = value.map(|v| HeaderValue::from_str(&v)) {
                    headers.insert(name, value);
                }
            }
            let _ = preconditions(&Method::GET, &headers, ETAG, SystemTime::UNIX_EPOCH);
        }
    }
}

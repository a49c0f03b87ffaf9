//! Compression on the fly: which coding a client gets (`Accept-Encoding`
//! with q-values, RFC 9110 §12.5.3), which responses qualify, and the
//! encoders (`encoder`). The bodies that use them are in `body::compressed`.

mod encoder;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

pub use crate::model::Coding;
use crate::model::Compress;
pub use encoder::{compress_whole, Encoder};

/// Codings from `offered` that the client accepts, best first: by its
/// q-value, then in the order offered. `identity` is never listed; it is
/// what a client gets when nothing here suits it.
pub fn negotiate(accept_encoding: Option<&HeaderValue>, offered: &[Coding]) -> Vec<Coding> {
    let header = accept_encoding
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if header.is_empty() {
        return Vec::new();
    }
    let mut ranked: Vec<(f32, Coding)> = offered
        .iter()
        .filter_map(|&coding| Some((quality(header, coding)?, coding)))
        .filter(|(q, _)| *q > 0.0)
        .collect();
    // Stable: equal q-values keep the operator's order.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.into_iter().map(|(_, coding)| coding).collect()
}

/// The q-value the header gives `coding`: its own entry, else `*`, else none.
fn quality(header: &str, coding: Coding) -> Option<f32> {
    let mut wildcard = None;
    for entry in header.split(',') {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|param| {
                let (key, value) = param.split_once('=')?;
                key.trim().eq_ignore_ascii_case("q").then(|| value.trim())
            })
            .find_map(|value| value.parse::<f32>().ok())
            .unwrap_or(1.0);
        let named = name.eq_ignore_ascii_case(coding.token())
            || (coding == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"));
        if named {
            return Some(q);
        }
        if name == "*" {
            wildcard = Some(q);
        }
    }
    wildcard
}

/// The encoders that may be live at once, shared by every route of a
/// snapshot: each holds its state while its response streams, and a client
/// must not be able to make that grow without bound.
#[derive(Debug)]
pub struct Streams {
    limit: usize,
    live: AtomicUsize,
}

/// One live encoder's place, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<Streams>);

impl Streams {
    pub fn new(limit: usize) -> Arc<Streams> {
        Arc::new(Streams {
            limit,
            live: AtomicUsize::new(0),
        })
    }

    /// A place for one more encoder; `None` when all are taken.
    pub fn take(self: &Arc<Self>) -> Option<StreamSlot> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < self.limit).then_some(live + 1)
            })
            .ok()
            .map(|_| StreamSlot(Arc::clone(self)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A route's `compress`, ready to ask per response.
#[derive(Debug)]
pub struct Policy {
    codings: Vec<Coding>,
    levels: Vec<(Coding, i32)>,
    min_size: u64,
    types: Vec<String>,
    streams: Arc<Streams>,
}

impl std::fmt::Display for Policy {
    /// `compress br/4 gzip/6`: the codings in order, with their levels.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("compress")?;
        for (coding, level) in &self.levels {
            write!(f, " {}/{level}", coding.token())?;
        }
        Ok(())
    }
}

/// What a response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not a candidate at all (already encoded, a range, too small…).
    Unchanged,
    /// A candidate, but the client takes none of the codings: sent as it
    /// is, with `Vary: Accept-Encoding` so caches keep the two apart.
    Identity,
    Compress(Coding, i32),
}

impl Policy {
    pub fn new(compress: &Compress, streams: Arc<Streams>) -> Policy {
        Policy {
            codings: compress.codings.iter().map(|(coding, _)| *coding).collect(),
            levels: compress.codings.clone(),
            min_size: compress.min_size,
            types: compress.types.clone(),
            streams,
        }
    }

    /// A place for a streaming encoder, if one is free.
    pub fn stream_slot(&self) -> Option<StreamSlot> {
        self.streams.take()
    }

    pub fn min_size(&self) -> u64 {
        self.min_size
    }

    /// The level configured for `coding`.
    pub fn level(&self, coding: Coding) -> i32 {
        self.levels
            .iter()
            .find(|(c, _)| *c == coding)
            .map_or(coding.default_level(), |(_, level)| *level)
    }

    /// Whether a body of `content_type` is one the route compresses.
    pub fn compresses_type(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(media) = content_type.and_then(|value| value.to_str().ok()) else {
            return false;
        };
        let media = media.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = media.split_once('/') else {
            return false;
        };
        self.types.iter().any(|pattern| {
            let Some((want_kind, want_subtype)) = pattern.split_once('/') else {
                return false;
            };
            let subtype_matches = match want_subtype.strip_prefix('*') {
                Some("") => true,
                Some(suffix) => subtype
                    .len()
                    .checked_sub(suffix.len())
                    .is_some_and(|at| subtype[at..].eq_ignore_ascii_case(suffix)),
                None => subtype.eq_ignore_ascii_case(want_subtype),
            };
            kind.eq_ignore_ascii_case(want_kind) && subtype_matches
        })
    }

    /// The client's best coding among the route's.
    pub fn choose(&self, accept_encoding: Option<&HeaderValue>) -> Option<Coding> {
        negotiate(accept_encoding, &self.codings).first().copied()
    }

    /// What a response of `status` with `headers` and a body of `length`
    /// bytes (if known) gets, for a request of `method` that accepts
    /// `accept_encoding`.
    pub fn decide(
        &self,
        method: &Method,
        accept_encoding: Option<&HeaderValue>,
        (status, headers): (StatusCode, &HeaderMap),
        length: Option<u64>,
    ) -> Decision {
        let bodiless = status.is_informational()
            || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
            || *method == Method::CONNECT;
        let encoded = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"));
        // A range is of the representation as stored: compressing it would
        // make a range of nothing the client can put together.
        let partial = status == StatusCode::PARTIAL_CONTENT || headers.contains_key(CONTENT_RANGE);
        let small = length.is_some_and(|length| length < self.min_size);
        if bodiless || encoded || partial || small || no_transform(headers) {
            return Decision::Unchanged;
        }
        if !self.compresses_type(headers.get(CONTENT_TYPE)) {
            return Decision::Unchanged;
        }
        match self.choose(accept_encoding) {
            Some(coding) => Decision::Compress(coding, self.level(coding)),
            None => Decision::Identity,
        }
    }
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6): intermediaries must
/// not change the content, its coding included.
fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(says_no_transform)
}

/// Whether one `Cache-Control` value has `no-transform`.
pub fn says_no_transform(cache_control: &HeaderValue) -> bool {
    cache_control
        .to_str()
        .unwrap_or("")
        .split(',')
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
}

/// A strong `ETag` made weak (RFC 9110 §8.8.3.3: the compressed bytes are
/// not the ones the tag named); a weak one stays as it is.
pub fn weaken(etag: &HeaderValue) -> HeaderValue {
    if etag.as_bytes().starts_with(b"W/") {
        return etag.clone();
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    HeaderValue::from_bytes(&weak).unwrap_or_else(|_| etag.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Coding; 3] = Coding::ALL;

    fn order(header: &str) -> Vec<Coding> {
        negotiate(Some(&HeaderValue::from_str(header).unwrap()), &ALL)
    }

    #[test]
    fn q_values_rank_and_ties_keep_the_operators_order() {
        use Coding::*;
        assert_eq!(order("gzip, deflate, br, zstd"), [Brotli, Zstd, Gzip]);
        assert_eq!(order("gzip;q=1, br;q=0.5"), [Gzip, Brotli]);
        assert_eq!(order("br;q=0, gzip"), [Gzip]);
        assert_eq!(order("*;q=0.1, gzip"), [Gzip, Brotli, Zstd]);
        assert_eq!(order("*;q=0, gzip"), [Gzip]);
        assert_eq!(order("x-gzip"), [Gzip]);
        assert_eq!(order("identity"), []);
        assert_eq!(order("GZIP; Q=0.5"), [Gzip]);
        assert_eq!(negotiate(None, &ALL), []);
        assert_eq!(
            negotiate(Some(&HeaderValue::from_static("br, gzip")), &[Gzip, Brotli]),
            [Gzip, Brotli]
        );
    }

    fn policy(types: &[&str], min_size: u64) -> Policy {
        Policy::new(
            &Compress {
                codings: vec![(Coding::Brotli, 4), (Coding::Gzip, 1)],
                min_size,
                types: types.iter().map(|t| (*t).to_owned()).collect(),
            },
            Streams::new(2),
        )
    }

    #[test]
    fn encoder_places_are_bounded_and_given_back() {
        let streams = Streams::new(2);
        let first = streams.take();
        let second = streams.take();
        assert!(first.is_some() && second.is_some());
        assert!(streams.take().is_none());
        drop(first);
        assert!(streams.take().is_some());
    }

    #[test]
    fn media_types_match_exactly_by_type_or_by_suffix() {
        let policy = policy(&["text/*", "application/json", "application/*+xml"], 0);
        let matches =
            |value: &str| policy.compresses_type(Some(&HeaderValue::from_str(value).unwrap()));
        assert!(matches("text/html; charset=utf-8"));
        assert!(matches("Application/JSON"));
        assert!(matches("application/atom+xml"));
        assert!(!matches("application/xml"));
        assert!(!matches("application/jsonx"));
        assert!(!matches("image/png"));
        assert!(!matches("texthtml"));
        assert!(!policy.compresses_type(None));
    }

    #[test]
    fn only_whole_unencoded_transformable_bodies_of_the_types_qualify() {
        let policy = policy(&["text/*"], 1024);
        let accept = HeaderValue::from_static("gzip, br");
        let decide = |status: u16, fields: &[(&str, &str)], method: Method| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            let mut length = None;
            for (name, value) in fields {
                if *name == "content-length" {
                    length = value.parse().ok();
                }
                headers.insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            let status = StatusCode::from_u16(status).unwrap();
            policy.decide(&method, Some(&accept), (status, &headers), length)
        };
        let brotli = Decision::Compress(Coding::Brotli, 4);
        assert_eq!(decide(200, &[], Method::GET), brotli);
        assert_eq!(
            decide(404, &[("content-length", "5000")], Method::GET),
            brotli
        );
        assert_eq!(
            decide(200, &[("content-length", "1023")], Method::GET),
            Decision::Unchanged
        );
        assert_eq!(
            decide(206, &[("content-range", "bytes 0-9/99")], Method::GET),
            Decision::Unchanged
        );
        assert_eq!(
            decide(200, &[("content-encoding", "gzip")], Method::GET),
            Decision::Unchanged
        );
        assert_eq!(
            decide(
                200,
                &[("cache-control", "public, No-Transform")],
                Method::GET
            ),
            Decision::Unchanged
        );
        assert_eq!(decide(304, &[], Method::GET), Decision::Unchanged);
        assert_eq!(
            decide(200, &[("content-type", "image/png")], Method::GET),
            Decision::Unchanged
        );
        assert_eq!(decide(200, &[], Method::HEAD), brotli);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let none = policy.decide(&Method::GET, None, (StatusCode::OK, &headers), None);
        assert_eq!(none, Decision::Identity);
    }

    #[test]
    fn etags_are_weakened_once() {
        assert_eq!(weaken(&HeaderValue::from_static("\"abc\"")), "W/\"abc\"");
        assert_eq!(weaken(&HeaderValue::from_static("W/\"abc\"")), "W/\"abc\"");
    }
}

//! Entry points for the `cargo fuzz` targets in `fuzz/`, which build against
//! the library from outside and so cannot reach the crate's private
//! modules. Each runs one parser on untrusted input and checks what must
//! hold for any input; the same properties run as proptests in CI.

use std::path::Path;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method};

use crate::static_files::conditional::{requested_span, Span};

/// The config loader on arbitrary text: diagnostics, never a panic, and
/// every span inside the text.
pub fn config_text(text: &str) {
    let (raw, mut items) = crate::config::parse(text);
    if let Err(errors) = crate::config::validate::validate(raw, Path::new("/nonexistent")) {
        items.extend(errors);
    }
    for item in items {
        if let Some(span) = item.span {
            assert!(span.end <= text.len(), "span {span:?} past the end");
        }
    }
}

/// The request path normaliser: a normalised path normalises to itself
/// once encoded again.
pub fn request_path(raw: &str) {
    if let Ok(path) = crate::request_path::normalize(raw) {
        let again = crate::request_path::encode(&path);
        assert_eq!(
            crate::request_path::normalize(&again).ok().as_deref(),
            Some(&*path)
        );
    }
}

/// `Range` and `If-Range` for a file of `len` bytes: a span inside the file.
pub fn range(range: &[u8], if_range: &[u8], len: u64) {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(range) {
        headers.insert(http::header::RANGE, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(if_range) {
        headers.insert(http::header::IF_RANGE, value);
    }
    if let Span::Partial(span) =
        requested_span(&Method::GET, &headers, "\"e\"", SystemTime::UNIX_EPOCH, len)
    {
        assert!(span.start() <= span.end() && *span.end() < len);
    }
}

/// The PROXY protocol parser: a header inside the input, and an answer that
/// more bytes never change (every prefix gets "need more" or the same
/// answer, and a header is not complete before its last byte).
pub fn proxy_header(data: &[u8]) {
    use crate::proxy_protocol::parse;
    let whole = parse(data);
    if let Ok(Some((len, _))) = whole {
        assert!(len <= data.len(), "header of {len} bytes in {}", data.len());
    }
    for cut in 0..data.len() {
        let prefix = parse(&data[..cut]);
        match whole {
            Ok(Some((len, _))) if cut < len => assert_eq!(prefix, Ok(None)),
            _ => assert!(prefix == Ok(None) || prefix == whole, "{prefix:?} at {cut}"),
        }
    }
}

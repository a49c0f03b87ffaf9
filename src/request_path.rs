//! Request path normalisation: the router and the file lookup only ever see a
//! decoded path with `.`/`..` resolved, so no spelling of a path can reach a
//! route or a file that its plain spelling would not.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// What must be escaped to put a decoded path back into a request target or
/// a `Location`: the path set of the WHATWG URL standard, plus `%` itself so
/// a decoded `%` is not decoded a second time downstream.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Why a request path was refused; every variant is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is not absolute")]
    NotAbsolute,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("the path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path has a malformed percent escape")]
    BadEscape,
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
}

/// Decodes percent escapes and resolves `.`, `..` and empty segments.
///
/// A trailing slash is kept because it distinguishes a directory request
/// (`/docs/`) from a file request (`/docs`). Borrows when nothing changes,
/// which is the common case.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    if !raw.contains('%') && !raw.contains("/.") && !raw.contains("//") {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = percent_decode(raw)?;
    Ok(Cow::Owned(resolve_segments(&decoded)?))
}

/// Percent-encodes a normalised path for use in a URI again.
pub fn encode(path: &str) -> Cow<'_, str> {
    utf8_percent_encode(path, PATH).into()
}

fn percent_decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            i += 3;
            match value {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                0 => return Err(PathError::Nul),
                other => other,
            }
        } else {
            i += 1;
            bytes[i - 1]
        };
        out.push(byte);
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

fn resolve_segments(decoded: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut ends_as_directory = false;
    for segment in decoded.split('/').skip(1) {
        ends_as_directory = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            name => segments.push(name),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if ends_as_directory || segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw).expect(raw).into_owned()
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(normalize("/a/b.html"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed("/"))));
    }

    #[test]
    fn dot_segments_and_escapes_are_resolved() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("/a//b/"), "/a/b/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/%61%62c"), "/abc");
        assert_eq!(ok("/a/%2e%2E/b"), "/b");
        assert_eq!(ok("/caf%C3%A9"), "/café");
        assert_eq!(ok("/a%20b"), "/a b");
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        for decoded in ["/a b", "/café", "/../x?#", "/50%", "/a\"b<c>"] {
            let encoded = encode(decoded);
            assert!(encoded.parse::<http::Uri>().is_ok(), "{encoded}");
            assert_eq!(percent_decode(&encoded).as_deref(), Ok(decoded));
        }
        assert_eq!(encode("/plain/path"), "/plain/path");
    }

    #[test]
    fn escapes_from_root_are_refused() {
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize("/a%00b"), Err(PathError::Nul));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }

    use proptest::prelude::*;

    /// Paths built from the pieces that make normalisation hard.
    fn tricky_path() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "/", ".", "..", "a", "é", "%", "%2e", "%2E", "%2f", "%5c", "%25", "%00", "%c3%a9",
            "%ff", "%", "2", "f", "?", " ", "//",
        ]);
        prop::collection::vec(pieces, 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    proptest! {
        #[test]
        fn normalised_paths_are_resolved_and_stable(raw in tricky_path()) {
            let Ok(path) = normalize(&raw) else {
                return Ok(());
            };
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.contains("//"), "{}", path);
            prop_assert!(!path.contains('\\') && !path.contains('\0'));
            let interior = path.trim_end_matches('/');
            prop_assert!(
                interior.split('/').skip(1).all(|segment| segment != "." && segment != ".."),
                "{}",
                path
            );
            // Encoding and normalising again gives the same path back.
            let encoded = encode(&path);
            prop_assert_eq!(normalize(&encoded).map(Cow::into_owned), Ok(path.clone().into_owned()));
        }

        #[test]
        fn any_text_is_answered_without_a_panic(raw in ".{0,64}") {
            let _ = normalize(&raw);
        }
    }
}

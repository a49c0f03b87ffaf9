//! Choosing a precompressed variant from `Accept-Encoding` (RFC 9110 §12.5.3).

use http::HeaderValue;

/// A content coding that a precompressed file can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    /// The file name suffix of the variant stored in this coding.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
            Encoding::Identity => "",
        }
    }

    /// The `Content-Encoding` value, if the coding is not identity.
    pub fn header(self) -> Option<HeaderValue> {
        match self {
            Encoding::Brotli => Some(HeaderValue::from_static("br")),
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Identity => None,
        }
    }

    fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
            Encoding::Identity => "identity",
        }
    }
}

/// Codings to try, best first. Identity always comes last as the fallback:
/// answering 406 for `identity;q=0` helps nobody when no variant exists.
pub fn preference(accept_encoding: Option<&HeaderValue>) -> Vec<Encoding> {
    let header = accept_encoding.and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut ranked: Vec<(f32, Encoding)> = [Encoding::Brotli, Encoding::Gzip]
        .into_iter()
        .filter_map(|coding| Some((quality(header, coding)?, coding)))
        .filter(|(q, _)| *q > 0.0)
        .collect();
    // Stable sort: on equal quality brotli (smaller) stays ahead of gzip.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut order: Vec<Encoding> = ranked.into_iter().map(|(_, coding)| coding).collect();
    order.push(Encoding::Identity);
    order
}

/// The q-value the header gives `coding`: its own entry, else `*`, else none.
fn quality(header: &str, coding: Encoding) -> Option<f32> {
    let mut wildcard = None;
    for entry in header.split(',') {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|param| param.trim().strip_prefix("q="))
            .find_map(|value| value.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let named = name.eq_ignore_ascii_case(coding.token())
            || (coding == Encoding::Gzip && name.eq_ignore_ascii_case("x-gzip"));
        if named {
            return Some(q);
        }
        if name == "*" {
            wildcard = Some(q);
        }
    }
    wildcard
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Brotli, Gzip, Identity};

    fn prefs(header: &str) -> Vec<Encoding> {
        preference(Some(&HeaderValue::from_str(header).expect("header")))
    }

    #[test]
    fn q_values_order_the_variants() {
        assert_eq!(prefs("gzip, br"), [Brotli, Gzip, Identity]);
        assert_eq!(prefs("gzip;q=1, br;q=0.5"), [Gzip, Brotli, Identity]);
        assert_eq!(prefs("gzip"), [Gzip, Identity]);
        assert_eq!(prefs("br;q=0, gzip"), [Gzip, Identity]);
        assert_eq!(prefs("*"), [Brotli, Gzip, Identity]);
        assert_eq!(prefs("*;q=0, gzip"), [Gzip, Identity]);
        assert_eq!(prefs("identity"), [Identity]);
        assert_eq!(prefs("x-gzip"), [Gzip, Identity]);
        assert_eq!(prefs("GZIP ; q=0.8"), [Gzip, Identity]);
        assert_eq!(preference(None), [Identity]);
    }
}

//! Which variant of a file a client gets: a precompressed twin on disk
//! (`app.js.br`), or the plain file (RFC 9110 §12.5.3).

use http::HeaderValue;

use crate::compression::{self, Coding};

/// The codings a precompressed twin can be stored in, smallest first.
pub const STORED: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

/// The file name suffix of a twin stored in `coding`.
pub fn suffix(coding: Coding) -> &'static str {
    match coding {
        Coding::Brotli => ".br",
        Coding::Zstd => ".zst",
        Coding::Gzip => ".gz",
    }
}

/// Variants to try, best first; `None` (the plain file) always comes last
/// as the fallback: answering 406 for `identity;q=0` helps nobody.
pub fn preference(accept_encoding: Option<&HeaderValue>) -> Vec<Option<Coding>> {
    let mut order: Vec<Option<Coding>> = compression::negotiate(accept_encoding, &STORED)
        .into_iter()
        .map(Some)
        .collect();
    order.push(None);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::{Brotli, Gzip, Zstd};

    fn prefs(header: &str) -> Vec<Option<Coding>> {
        preference(Some(&HeaderValue::from_str(header).expect("header")))
    }

    #[test]
    fn q_values_order_the_variants() {
        assert_eq!(prefs("gzip, br"), [Some(Brotli), Some(Gzip), None]);
        assert_eq!(
            prefs("gzip;q=1, br;q=0.5"),
            [Some(Gzip), Some(Brotli), None]
        );
        assert_eq!(prefs("*"), [Some(Brotli), Some(Zstd), Some(Gzip), None]);
        assert_eq!(prefs("identity"), [None]);
        assert_eq!(preference(None), [None]);
    }
}

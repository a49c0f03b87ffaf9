//! Origins as browsers send them, for a `websocket`'s `origins` and a
//! `cors`'s: both compare them with a request's `Origin` header.

use toml::Spanned;

use super::{Checker, ConfigError};

/// The origins listed, each checked to be one a browser could send.
pub(super) fn origins(check: &mut Checker, raw: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
    for origin in raw.get_ref() {
        if !is_serialised_origin(origin.get_ref()) {
            check.error(
                origin.span(),
                ConfigError::BadOrigin(origin.get_ref().clone()),
            );
        }
    }
    raw.get_ref().iter().map(|o| o.get_ref().clone()).collect()
}

fn is_serialised_origin(text: &str) -> bool {
    if text == "*" || text == "null" {
        return true;
    }
    let Some((scheme, authority)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    scheme_ok
        && !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && authority.parse::<http::uri::Authority>().is_ok()
}

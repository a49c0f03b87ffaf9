//! A route's `request_headers`, `response_headers` and `hsts`.

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{RawHeaderRules, RawRoute};
use crate::model::{HeaderRules, RouteHeaders};

/// Fields no rule may touch: those that frame the message or belong to one
/// hop (RFC 9110 §7.6.1), and the WebSocket handshake's, which the gateway
/// makes and checks itself.
fn is_managed(name: &str) -> bool {
    const FIELDS: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    FIELDS.contains(&name) || name.starts_with("sec-websocket-")
}

pub(super) fn route_headers(check: &mut Checker, raw: &RawRoute) -> RouteHeaders {
    RouteHeaders {
        request: rules(check, &raw.request_headers),
        response: rules(check, &raw.response_headers),
        hsts: raw.hsts.as_ref().and_then(|hsts| policy(check, hsts)),
    }
}

fn rules(check: &mut Checker, raw: &Option<Spanned<RawHeaderRules>>) -> HeaderRules {
    let Some(raw) = raw else {
        return HeaderRules::default();
    };
    let raw = raw.get_ref();
    let mut fields = |map: &Option<std::collections::BTreeMap<String, Spanned<String>>>| {
        let mut valid = Vec::new();
        for (name, value) in map.iter().flatten() {
            // The key has no position of its own; its value is on its line.
            let Some(name) = field_name(check, name, value.span()) else {
                continue;
            };
            if http::HeaderValue::from_str(value.get_ref()).is_err() {
                check.error(value.span(), ConfigError::BadHeaderValue(name));
                continue;
            }
            valid.push((name, value.get_ref().clone()));
        }
        valid
    };
    let set = fields(&raw.set);
    let add = fields(&raw.add);
    let remove = raw
        .remove
        .iter()
        .flatten()
        .filter_map(|name| field_name(check, name.get_ref(), name.span()))
        .collect();
    HeaderRules { set, add, remove }
}

/// The field name in lower case, if it is one a rule may use.
fn field_name(check: &mut Checker, name: &str, span: std::ops::Range<usize>) -> Option<String> {
    let Ok(parsed) = http::HeaderName::from_bytes(name.as_bytes()) else {
        check.error(span, ConfigError::BadHeaderName(name.to_owned()));
        return None;
    };
    if is_managed(parsed.as_str()) {
        check.error(span, ConfigError::ManagedHeader(name.to_owned()));
        return None;
    }
    Some(parsed.as_str().to_owned())
}

/// An HSTS value (RFC 6797 §6.1): `max-age`, and optionally
/// `includeSubDomains` and `preload`, each once.
fn policy(check: &mut Checker, raw: &Spanned<String>) -> Option<String> {
    let text = raw.get_ref();
    let mut max_age = false;
    let mut seen = Vec::new();
    let valid = text.split(';').map(str::trim).all(|directive| {
        let name = directive
            .split_once('=')
            .map_or(directive, |(name, _)| name)
            .trim()
            .to_ascii_lowercase();
        if seen.contains(&name) {
            return false;
        }
        seen.push(name.clone());
        match name.as_str() {
            "max-age" => {
                max_age = directive
                    .split_once('=')
                    .is_some_and(|(_, seconds)| seconds.trim().parse::<u64>().is_ok());
                max_age
            }
            "includesubdomains" | "preload" => !directive.contains('='),
            _ => false,
        }
    });
    if valid && max_age {
        Some(text.clone())
    } else {
        check.error(raw.span(), ConfigError::BadHsts(text.clone()));
        None
    }
}

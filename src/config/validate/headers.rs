//! A route's `request_headers`, `response_headers` and `hsts`.

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{RawCors, RawHeaderRules, RawRoute};
use crate::model::{Cors, HeaderRules, RouteHeaders};

/// What a preflight may ask for when `methods` is not given: the methods a
/// simple cross-origin request may use anyway (Fetch's CORS-safelisted methods).
const SAFELISTED_METHODS: [&str; 3] = ["GET", "HEAD", "POST"];

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
        cors: raw.cors.as_ref().and_then(|cors| cors_policy(check, cors)),
    }
}

fn cors_policy(check: &mut Checker, raw: &Spanned<RawCors>) -> Option<Cors> {
    let raw = raw.get_ref();
    let origins = super::origins::origins(check, &raw.origins);
    let credentials = raw.credentials.as_ref().is_some_and(|c| *c.get_ref());
    if origins.is_empty() {
        check.error(raw.origins.span(), ConfigError::NoCorsOrigins);
        return None;
    }
    if origins.iter().any(|o| o == "*") && (origins.len() > 1 || credentials) {
        check.error(raw.origins.span(), ConfigError::CorsWildcard);
        return None;
    }
    let methods = match &raw.methods {
        None => SAFELISTED_METHODS.map(str::to_owned).to_vec(),
        Some(list) => list
            .iter()
            .filter_map(|method| {
                let text = method.get_ref();
                let valid = http::Method::from_bytes(text.as_bytes()).is_ok()
                    && text.bytes().all(|b| b.is_ascii_alphabetic());
                if !valid {
                    check.error(method.span(), ConfigError::BadMethod(text.clone()));
                }
                valid.then(|| text.to_ascii_uppercase())
            })
            .collect(),
    };
    let mut names = |list: &Option<Vec<Spanned<String>>>| -> Vec<String> {
        list.iter()
            .flatten()
            .filter_map(|name| check.header_name(name))
            .collect()
    };
    let headers = names(&raw.headers);
    let expose = names(&raw.expose);
    let max_age = raw
        .max_age
        .as_ref()
        .map(|_| check.duration(&raw.max_age, std::time::Duration::ZERO));
    Some(Cors {
        origins,
        methods,
        headers,
        expose,
        max_age,
        credentials,
    })
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

//! `[[routes]]`: names, hosts and paths, and the `static` and `websocket`
//! actions (the pools behind `proxy` and `websocket` are in `pools`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use toml::Spanned;

use super::{pools, Checker, ConfigError};
use crate::config::{RawRoute, RawStatic, RawWebSocket};
use crate::model::{self, Content, HostMatch, Policy, Route, StaticSettings, WebSocketAction};
use crate::request_path;

pub(super) fn routes(
    check: &mut Checker,
    raw: Vec<Spanned<RawRoute>>,
    base_dir: &Path,
) -> Vec<Route> {
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut compiled: Vec<Route> = Vec::new();
    for spanned in raw {
        let span = spanned.span();
        let raw = spanned.into_inner();
        let name = raw.name.get_ref().clone();
        if name.is_empty() {
            check.error(raw.name.span(), ConfigError::EmptyRouteName);
        } else if names.insert(name.clone(), ()).is_some() {
            check.error(
                raw.name.span(),
                ConfigError::DuplicateRouteName(name.clone()),
            );
        }
        let host = match &raw.host {
            None => Some(HostMatch::Any),
            Some(host) => HostMatch::parse(host.get_ref()).or_else(|| {
                check.error(host.span(), ConfigError::BadHost(host.get_ref().clone()));
                None
            }),
        };
        let prefix = route_prefix(check, &raw.path);
        let logging = super::log::route_logging(check, &raw);
        let auth = raw
            .auth
            .as_ref()
            .and_then(|auth| super::auth::auth(check, auth, &name, base_dir));
        let request_rate = super::limits::rate(
            check,
            ("request_rate", &raw.request_rate),
            ("request_burst", &raw.request_burst),
        );
        let static_files = raw
            .static_files
            .as_ref()
            .and_then(|files| static_dir(check, files, base_dir).map(Content::Static));
        let proxy = raw
            .proxy
            .as_ref()
            .map(|proxy| Content::Proxy(pools::proxy(check, proxy, base_dir)));
        let redirect = raw
            .redirect
            .as_ref()
            .and_then(|redirect| super::redirects::redirect(check, redirect))
            .map(Content::Redirect);
        let contents = [
            ("static", raw.static_files.as_ref().map(Spanned::span)),
            ("proxy", raw.proxy.as_ref().map(Spanned::span)),
            ("redirect", raw.redirect.as_ref().map(Spanned::span)),
        ];
        let mut given = contents
            .into_iter()
            .filter_map(|(key, span)| Some((key, span?)));
        if let Some((first, _)) = given.next() {
            for (second, span) in given {
                let error = ConfigError::TwoContents {
                    route: name.clone(),
                    first,
                    second,
                };
                check.error(span, error);
            }
        }
        let content = static_files.or(proxy).or(redirect);
        let rewrite = raw
            .rewrite
            .as_ref()
            .and_then(|rewrite| super::redirects::rewrite(check, rewrite));
        let trailing_slash = raw
            .trailing_slash
            .as_ref()
            .and_then(|rule| super::redirects::trailing_slash(check, rule, &raw));
        let websocket = raw
            .websocket
            .as_ref()
            .map(|ws| websocket(check, ws, base_dir));
        let actions = [
            raw.static_files.is_some(),
            raw.websocket.is_some(),
            raw.proxy.is_some(),
            raw.redirect.is_some(),
        ];
        if !actions.contains(&true) {
            check.error(span, ConfigError::NoAction(name.clone()));
        }
        let (Some(host), Some(prefix)) = (host, prefix) else {
            continue;
        };
        if let Some(other) = compiled.iter().find(|r| r.host == host && r.path == prefix) {
            let error = ConfigError::DuplicateRoute {
                name: name.clone(),
                other: other.name.clone(),
            };
            check.error(raw.path.span(), error);
        }
        let headers = super::headers::route_headers(check, &raw);
        compiled.push(Route {
            name,
            host,
            path: prefix,
            content,
            websocket,
            logging,
            request_rate,
            auth,
            headers,
            rewrite,
            trailing_slash,
            error_pages: super::error_pages::pages(check, &raw.error_pages, base_dir),
            intercept_backend_errors: raw.intercept_backend_errors.unwrap_or(false),
            compress: raw
                .compress
                .as_ref()
                .and_then(|compress| super::compress::compress(check, compress)),
        });
    }
    compiled
}

/// The route's path as the router compares it: normalised, no trailing slash.
fn route_prefix(check: &mut Checker, path: &Spanned<String>) -> Option<String> {
    let given = path.get_ref();
    if !given.starts_with('/') {
        check.error(path.span(), ConfigError::PathNotAbsolute);
        return None;
    }
    let normal = request_path::normalize(given)
        .ok()
        .map(|p| without_trailing_slash(&p).to_owned());
    let accepted = normal.as_deref().is_some_and(|normal| {
        !given.contains(['?', '#']) && without_trailing_slash(given) == normal
    });
    if !accepted {
        let error = ConfigError::PathNotNormal {
            given: given.clone(),
            normal: normal.unwrap_or_else(|| "/".to_owned()),
        };
        check.error(path.span(), error);
        return None;
    }
    normal
}

fn without_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some("") | None => path,
        Some(stripped) => stripped,
    }
}

fn websocket(check: &mut Checker, ws: &Spanned<RawWebSocket>, base_dir: &Path) -> WebSocketAction {
    let raw = ws.get_ref();
    let keys = pools::PoolKeys {
        action: "websocket",
        schemes: model::WEBSOCKET,
        backends: &raw.backends,
        balance: &raw.balance,
        hash_key: &raw.hash_key,
        connect_timeout: &raw.connect_timeout,
        backend_ca: &raw.backend_ca,
        health_check: &raw.health_check,
    };
    let optional = |duration: Duration| (!duration.is_zero()).then_some(duration);
    let defaults = Policy::default();
    WebSocketAction {
        pool: pools::pool(check, keys, base_dir),
        origins: super::origins::origins(check, &raw.origins),
        require_origin: raw.require_origin,
        subprotocols: raw.subprotocols.clone(),
        policy: Policy {
            max_message_size: message_size(check, &raw.max_message_size, defaults.max_message_size),
            ping_interval: optional(check.duration(
                &raw.ping_interval,
                defaults.ping_interval.unwrap_or_default(),
            )),
            ping_timeout: check.positive(&raw.ping_timeout, defaults.ping_timeout, "ping_timeout"),
            idle_timeout: optional(check.duration(&raw.idle_timeout, Duration::ZERO)),
            limits: super::limits::session_limits(check, raw),
        },
        strip_prefix: raw.strip_prefix,
        over_http2: raw.over_http2.unwrap_or(true),
        handshake_rate: super::limits::rate(
            check,
            ("handshake_rate", &raw.handshake_rate),
            ("handshake_burst", &raw.handshake_burst),
        ),
        max_sessions_per_client: super::limits::cap(
            check,
            &raw.max_sessions_per_client,
            "max_sessions_per_client",
        ),
    }
}

/// `hide`: patterns of names, each one path segment (no `/`).
fn hide(check: &mut Checker, raw: &Option<Spanned<Vec<Spanned<String>>>>) -> Vec<String> {
    let Some(list) = raw else {
        return vec![StaticSettings::DEFAULT_HIDE.to_owned()];
    };
    for pattern in list.get_ref() {
        if pattern.get_ref().is_empty() || pattern.get_ref().contains('/') {
            check.error(
                pattern.span(),
                ConfigError::BadHidePattern(pattern.get_ref().clone()),
            );
        }
    }
    list.get_ref().iter().map(|p| p.get_ref().clone()).collect()
}

/// `max_message_size`: a limit of zero would close every session at its
/// first message.
fn message_size(check: &mut Checker, text: &Option<Spanned<String>>, default: u64) -> u64 {
    let size = check.size(text, default);
    match text {
        Some(text) if size == 0 => {
            check.error(text.span(), ConfigError::ZeroSize("max_message_size"));
            default
        }
        _ => size,
    }
}

/// `origins`: each a serialised origin (RFC 6454 §6.1) as browsers send it,
/// or `*`; anything else could never match and would refuse every browser.
fn static_dir(
    check: &mut Checker,
    files: &Spanned<RawStatic>,
    base_dir: &Path,
) -> Option<StaticSettings> {
    let raw = files.get_ref();
    let given = raw.root.get_ref().clone();
    let joined = base_dir.join(&given);
    let resolved = std::path::absolute(&joined).unwrap_or(joined);
    let root = match std::fs::metadata(&resolved) {
        Ok(meta) if meta.is_dir() => {
            std::fs::canonicalize(&resolved).map_err(|source| ConfigError::RootUnreadable {
                given: given.clone(),
                source,
            })
        }
        Ok(_) => Err(ConfigError::RootNotDirectory { given, resolved }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ConfigError::RootMissing { given, resolved })
        }
        Err(source) => Err(ConfigError::RootUnreadable { given, source }),
    };
    let root = root.map_err(|e| check.error(raw.root.span(), e)).ok();
    let index = match &raw.index {
        Some(index) if index.get_ref().is_empty() || index.get_ref().contains('/') => {
            check.error(index.span(), ConfigError::BadIndex(index.get_ref().clone()));
            None
        }
        Some(index) => Some(index.get_ref().clone()),
        None => Some("index.html".to_owned()),
    };
    let cache_control = match &raw.cache_control {
        Some(value) => match HeaderValue::from_str(value.get_ref()) {
            Ok(_) => Some(Some(value.get_ref().clone())),
            Err(_) => {
                check.error(
                    value.span(),
                    ConfigError::BadCacheControl(value.get_ref().clone()),
                );
                None
            }
        },
        None => Some(None),
    };
    Some(StaticSettings {
        root: root?,
        index: index?,
        cache_control: cache_control?,
        precompressed: raw.precompressed,
        hide: hide(check, &raw.hide),
    })
}

//! `auth = { ... }` on a route: the htpasswd file of basic auth, read and
//! checked here (weak hashes refused), and its realm; JWT keys, read and
//! checked against the algorithms listed, and where tokens come from.

use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::{pools, Checker, ConfigError};
use crate::config::{RawAuth, RawForward, RawJwt};
use crate::credentials::Htpasswd;
use crate::model::{
    self, fingerprint, Auth, BasicAuth, ClientCertAuth, ForwardAuth, JwtAuth, Material, TokenSource,
};
use crate::tokens::{self, ClaimRules, Verifier};

/// How long keys fetched from a URL are used when the config does not say.
const DEFAULT_KEYS_REFRESH: Duration = Duration::from_secs(300);

/// Clock difference allowed for `exp` and `nbf` when the config does not say.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

pub(super) fn auth(
    check: &mut Checker,
    raw: &Spanned<RawAuth>,
    route: &str,
    base_dir: &Path,
) -> Option<Auth> {
    let auth = raw.get_ref();
    let methods = [
        auth.basic.is_some(),
        auth.jwt.is_some(),
        auth.forward.is_some(),
        auth.client_cert.is_some(),
    ];
    if !methods.contains(&true) {
        check.error(raw.span(), ConfigError::AuthEmpty);
        return None;
    }
    let jwt = match &auth.jwt {
        Some(jwt) => Some(self::jwt(check, jwt.get_ref(), base_dir)?),
        None => None,
    };
    let basic = match &auth.basic {
        Some(file) => Some(basic(check, auth, file, route, base_dir)?),
        None => None,
    };
    let forward = auth
        .forward
        .as_ref()
        .map(|forward| self::forward(check, forward.get_ref(), base_dir));
    let client_cert = auth.client_cert.as_ref().map(|raw| {
        let raw = raw.get_ref();
        let mut header = |given: &Option<Spanned<String>>, default: &str| {
            given
                .as_ref()
                .and_then(|name| check.header_name(name))
                .unwrap_or_else(|| default.to_owned())
        };
        ClientCertAuth {
            subject_header: header(&raw.subject_header, "x-client-cert-subject"),
            san_header: header(&raw.san_header, "x-client-cert-san"),
        }
    });
    Some(Auth {
        basic,
        jwt,
        forward,
        client_cert,
    })
}

/// How long the auth service may take to answer when the config does not say.
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

fn forward(check: &mut Checker, raw: &RawForward, base_dir: &Path) -> ForwardAuth {
    let timeout = check.positive(&raw.timeout, DEFAULT_FORWARD_TIMEOUT, "timeout");
    let keys = pools::PoolKeys {
        action: "forward",
        schemes: model::HTTP,
        backends: &raw.backends,
        balance: &raw.balance,
        hash_key: &None,
        connect_timeout: &raw.connect_timeout,
        backend_ca: &raw.backend_ca,
        health_check: &raw.health_check,
    };
    let mut pool = pools::pool(check, keys, base_dir);
    if raw.connect_timeout.is_none() {
        pool.connect_timeout = timeout;
    }
    let copy_headers = raw
        .copy_headers
        .iter()
        .flat_map(|list| list.get_ref())
        .filter_map(|name| check.header_name(name))
        .collect();
    let fail_open = match &raw.on_error {
        None => false,
        Some(text) => match text.get_ref().as_str() {
            "deny" => false,
            "allow" => true,
            other => {
                check.error(text.span(), ConfigError::BadOnError(other.to_owned()));
                false
            }
        },
    };
    let revalidate = raw
        .revalidate
        .as_ref()
        .map(|_| check.positive(&raw.revalidate, Duration::from_secs(60), "revalidate"));
    ForwardAuth {
        pool,
        timeout,
        copy_headers,
        cache: check.duration(&raw.cache, Duration::ZERO),
        revalidate,
        fail_open,
    }
}

fn basic(
    check: &mut Checker,
    auth: &RawAuth,
    file: &Spanned<String>,
    route: &str,
    base_dir: &Path,
) -> Option<BasicAuth> {
    let realm = match &auth.realm {
        None => route.to_owned(),
        Some(realm) => {
            // A quoted-string in WWW-Authenticate: no quote, backslash or control character.
            let quotable = realm
                .get_ref()
                .chars()
                .all(|c| !c.is_control() && c != '"' && c != '\\');
            if !quotable {
                check.error(realm.span(), ConfigError::BadRealm);
            }
            realm.get_ref().clone()
        }
    };
    let path = base_dir.join(file.get_ref());
    let given = file.get_ref().clone();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => {
            check.error(
                file.span(),
                ConfigError::HtpasswdUnreadable { given, source },
            );
            return None;
        }
    };
    let users = match Htpasswd::parse(&text) {
        Ok(users) => users,
        Err(error) => {
            check.error(file.span(), ConfigError::Htpasswd { given, error });
            return None;
        }
    };
    Some(BasicAuth {
        file: given,
        realm,
        fingerprint: fingerprint([text.as_bytes()]),
        users: Material::new(users),
    })
}

fn jwt(check: &mut Checker, raw: &RawJwt, base_dir: &Path) -> Option<JwtAuth> {
    let names: Vec<String> = raw
        .algorithms
        .get_ref()
        .iter()
        .map(|n| n.get_ref().clone())
        .collect();
    let algorithms = match tokens::algorithms(&names) {
        Ok(algorithms) => Some(algorithms),
        Err(error) => {
            check.error(raw.algorithms.span(), ConfigError::JwtKeys(error));
            None
        }
    };
    let leeway = check.duration(&raw.leeway, DEFAULT_LEEWAY);
    let token_from = token_sources(check, raw);
    let claims_to_headers = claims_to_headers(check, raw);
    let expired_close_code = match &raw.expired_close_code {
        None => 1008,
        Some(code) => match u16::try_from(*code.get_ref()) {
            Ok(code @ (1008 | 4000..=4999)) => code,
            _ => {
                check.error(code.span(), ConfigError::BadExpiredCloseCode);
                1008
            }
        },
    };
    let rules = ClaimRules {
        issuers: raw.issuer.iter().map(|i| i.get_ref().clone()).collect(),
        audiences: raw.audience.iter().map(|a| a.get_ref().clone()).collect(),
        leeway,
    };
    let given = raw.keys.get_ref().clone();
    let keys_refresh = check.positive(&raw.keys_refresh, DEFAULT_KEYS_REFRESH, "keys_refresh");
    let at_url = given.starts_with("http://") || given.starts_with("https://");
    let (keys_pool, fingerprint, verifier) = if at_url {
        // Fetched when serving: what `check` can say is that the URL is one.
        let span = raw.keys.span();
        let urls = Spanned::new(span.clone(), vec![raw.keys.clone()]);
        let keys = pools::PoolKeys {
            action: "jwt keys",
            schemes: model::HTTP,
            backends: &urls,
            balance: &None,
            hash_key: &None,
            connect_timeout: &None,
            backend_ca: &None,
            health_check: &None,
        };
        let pool = pools::pool(check, keys, base_dir);
        algorithms?;
        (Some(pool), String::new(), Material::default())
    } else {
        let text = match std::fs::read(base_dir.join(&given)) {
            Ok(text) => text,
            Err(source) => {
                let error = ConfigError::JwtKeysUnreadable {
                    given: given.clone(),
                    source,
                };
                check.error(raw.keys.span(), error);
                return None;
            }
        };
        let verifier = match Verifier::from_file_text(&text, &algorithms?, &rules) {
            Ok(verifier) => verifier,
            Err(error) => {
                check.error(raw.keys.span(), ConfigError::JwtKeys(error));
                return None;
            }
        };
        (
            None,
            fingerprint([text.as_slice()]),
            Material::new(verifier),
        )
    };
    Some(JwtAuth {
        keys: given,
        keys_pool,
        keys_refresh,
        algorithms: names,
        issuer: raw.issuer.as_ref().map(|i| i.get_ref().clone()),
        audience: raw.audience.as_ref().map(|a| a.get_ref().clone()),
        leeway,
        token_from,
        claims_to_headers,
        expired_close_code,
        fingerprint,
        verifier,
    })
}

/// `token_from`: `header:NAME`, `cookie:NAME` or `query:NAME`; by default
/// the `Authorization: Bearer` header.
fn token_sources(check: &mut Checker, raw: &RawJwt) -> Vec<TokenSource> {
    let Some(list) = &raw.token_from else {
        return vec![TokenSource::Header("authorization".to_owned())];
    };
    let mut sources = Vec::new();
    for entry in list.get_ref() {
        let text = entry.get_ref();
        let source = match text.split_once(':') {
            Some(("header", name)) if HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                Some(TokenSource::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if !name.is_empty() => {
                Some(TokenSource::Cookie(name.to_owned()))
            }
            Some(("query", name)) if !name.is_empty() => Some(TokenSource::Query(name.to_owned())),
            None if text == "subprotocol" => Some(TokenSource::Subprotocol),
            _ => None,
        };
        match source {
            Some(source) => sources.push(source),
            None => check.error(entry.span(), ConfigError::BadTokenSource(text.clone())),
        }
    }
    if sources.is_empty() && list.get_ref().is_empty() {
        check.error(list.span(), ConfigError::BadTokenSource(String::new()));
    }
    sources
}

/// `claims_to_headers = { sub = "X-User" }`: claim → a valid header name.
fn claims_to_headers(check: &mut Checker, raw: &RawJwt) -> Vec<(String, String)> {
    let Some(map) = &raw.claims_to_headers else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for (claim, header) in map.get_ref() {
        let name = header.get_ref();
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            check.error(header.span(), ConfigError::BadHeaderName(name.clone()));
            continue;
        }
        pairs.push((claim.clone(), name.to_ascii_lowercase()));
    }
    pairs
}

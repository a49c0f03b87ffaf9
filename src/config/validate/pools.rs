//! Backend pools of `proxy` and `websocket` actions: backends, balance,
//! health checks and TLS to backends; the `proxy` action; `trusted_proxies`.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{RawHealthCheck, RawProxy};
use crate::forwarding::{self, Network, TrustedProxies};
use crate::model::{
    self, fingerprint, BackendAddress, BackendRoots, Balance, HashKey, HealthCheck, Material, Pool,
    ProxyAction, ProxySettings, Schemes,
};
use crate::tls::{self, certs};

/// Defaults of a `proxy` action and of `health_check` (documented in docs/configuration.md).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_body_timeout` and `proxy_read_timeout` default.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
const RETRIES: u32 = 1;
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const HEALTH_THRESHOLD: u32 = 2;

/// The keys a `proxy` and a `websocket` action share.
pub(super) struct PoolKeys<'a> {
    /// "proxy" or "websocket", for messages.
    pub action: &'static str,
    pub schemes: Schemes,
    pub backends: &'a Spanned<Vec<Spanned<String>>>,
    pub balance: &'a Option<Spanned<String>>,
    pub hash_key: &'a Option<Spanned<String>>,
    pub connect_timeout: &'a Option<Spanned<String>>,
    pub backend_ca: &'a Option<Spanned<String>>,
    pub health_check: &'a Option<Spanned<RawHealthCheck>>,
}

pub(super) fn pool(check: &mut Checker, keys: PoolKeys<'_>, base_dir: &Path) -> Pool {
    let mut backends = Vec::new();
    for url in keys.backends.get_ref() {
        match BackendAddress::parse(url.get_ref(), keys.schemes) {
            // Listed twice, it would get twice the traffic and, from the
            // first reload on, share one health and load record.
            Ok(backend)
                if backends
                    .iter()
                    .any(|b: &BackendAddress| b.url == backend.url) =>
            {
                check.error(url.span(), ConfigError::DuplicateBackend(backend.url));
            }
            Ok(backend) => backends.push(backend),
            Err(error) => check.error(url.span(), ConfigError::Backend(error)),
        }
    }
    if keys.backends.get_ref().is_empty() {
        check.error(keys.backends.span(), ConfigError::NoBackends(keys.action));
    }
    let any_tls = backends.iter().any(|backend| backend.tls);
    let connect_timeout = check.positive(
        keys.connect_timeout,
        model::DEFAULT_CONNECT_TIMEOUT,
        "connect_timeout",
    );
    Pool {
        backends,
        balance: balance(check, keys.balance, keys.hash_key),
        connect_timeout,
        roots: backend_roots(check, &keys, any_tls, base_dir),
        health_check: keys
            .health_check
            .as_ref()
            .map(|raw| health_check(check, raw.get_ref())),
    }
}

pub(super) fn proxy(check: &mut Checker, raw: &Spanned<RawProxy>, base_dir: &Path) -> ProxyAction {
    let raw = raw.get_ref();
    let keys = PoolKeys {
        action: "proxy",
        schemes: model::HTTP,
        backends: &raw.backends,
        balance: &raw.balance,
        hash_key: &raw.hash_key,
        connect_timeout: &raw.connect_timeout,
        backend_ca: &raw.backend_ca,
        health_check: &raw.health_check,
    };
    let pool = pool(check, keys, base_dir);
    let retries = match &raw.retries {
        None => RETRIES,
        Some(retries) => u32::try_from(*retries.get_ref()).unwrap_or_else(|_| {
            check.error(retries.span(), ConfigError::NegativeRetries);
            RETRIES
        }),
    };
    let settings = ProxySettings {
        response_timeout: check.positive(
            &raw.response_timeout,
            RESPONSE_TIMEOUT,
            "response_timeout",
        ),
        body_timeout: check.duration(&raw.body_timeout, BODY_TIMEOUT),
        retries,
        preserve_host: raw.preserve_host.unwrap_or(true),
        strip_prefix: raw.strip_prefix,
        http2: raw.http2,
    };
    ProxyAction { pool, settings }
}

fn balance(
    check: &mut Checker,
    balance: &Option<Spanned<String>>,
    hash_key: &Option<Spanned<String>>,
) -> Balance {
    let key = hash_key.as_ref().and_then(|key| {
        HashKey::parse(key.get_ref()).or_else(|| {
            check.error(key.span(), ConfigError::BadHashKey(key.get_ref().clone()));
            None
        })
    });
    let chosen = match balance.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
        None | Some(("round_robin", _)) => Balance::RoundRobin,
        Some(("least_connections", _)) => Balance::LeastConnections,
        Some(("hash", _)) => return Balance::Hash(key.unwrap_or(HashKey::ClientIp)),
        Some((other, span)) => {
            check.error(span, ConfigError::BadBalance(other.to_owned()));
            Balance::RoundRobin
        }
    };
    if let Some(key) = hash_key {
        check.error(key.span(), ConfigError::HashKeyWithoutHash);
    }
    chosen
}

fn health_check(check: &mut Checker, raw: &RawHealthCheck) -> HealthCheck {
    let path = raw.path.get_ref();
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        check.error(raw.path.span(), ConfigError::BadHealthPath(path.clone()));
    }
    HealthCheck {
        path: path.clone(),
        interval: check.positive(&raw.interval, HEALTH_INTERVAL, "interval"),
        timeout: check.positive(&raw.timeout, HEALTH_TIMEOUT, "timeout"),
        unhealthy_after: at_least_one(check, &raw.unhealthy_after, "unhealthy_after"),
        healthy_after: at_least_one(check, &raw.healthy_after, "healthy_after"),
    }
}

fn at_least_one(check: &mut Checker, count: &Option<Spanned<i64>>, key: &'static str) -> u32 {
    let Some(count) = count else {
        return HEALTH_THRESHOLD;
    };
    match u32::try_from(*count.get_ref()) {
        Ok(n) if n >= 1 => n,
        _ => {
            check.error(count.span(), ConfigError::TooSmall(key));
            HEALTH_THRESHOLD
        }
    }
}

/// How an action's TLS backends are verified: against `backend_ca` if set,
/// else against the platform's roots.
fn backend_roots(
    check: &mut Checker,
    keys: &PoolKeys<'_>,
    any_tls: bool,
    base_dir: &Path,
) -> Option<BackendRoots> {
    match keys.backend_ca {
        Some(ca) => {
            if !any_tls {
                check.warn(ca.span(), ConfigError::CaWithoutTls);
            }
            let loaded = certs::read(base_dir, ca.get_ref(), "CA")
                .and_then(|bytes| certs::parse_chain(ca.get_ref(), &bytes))
                .and_then(|chain| tls::load_ca(&chain, ca.get_ref()).map(|_| chain));
            match loaded {
                Ok(chain) => Some(BackendRoots::File {
                    file: ca.get_ref().clone(),
                    fingerprint: fingerprint(chain.iter().map(|der| der.as_ref())),
                    certificates: Material::new(chain),
                }),
                Err(error) => {
                    check.error(ca.span(), ConfigError::Certificate(error));
                    None
                }
            }
        }
        None if any_tls => {
            let (_, count) = tls::platform_roots();
            if *count == 0 {
                check.warn(keys.backends.span(), ConfigError::NoPlatformRoots);
            }
            Some(BackendRoots::Platform)
        }
        None => None,
    }
}

/// `trusted_proxies = [...]` and `client_ip_headers = [...]` at the top of the file.
pub(super) fn trusted_proxies(
    check: &mut Checker,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    client_ip_headers: &Option<Spanned<Vec<Spanned<String>>>>,
) -> TrustedProxies {
    let networks = raw
        .iter()
        .flat_map(|list| list.get_ref())
        .filter_map(|text| {
            let network = Network::parse(text.get_ref());
            match &network {
                None => check.error(text.span(), ConfigError::BadNetwork(text.get_ref().clone())),
                Some(network) if network.is_everything() => check.warn(
                    text.span(),
                    ConfigError::TrustsEveryone(text.get_ref().clone()),
                ),
                Some(_) => {}
            }
            network
        })
        .collect();
    let client_ip_headers = match client_ip_headers {
        None => forwarding::default_client_ip_headers(),
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(|name| check.header_name(name))
            .collect(),
    };
    TrustedProxies::new(networks, client_ip_headers)
}

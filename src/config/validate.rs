//! Raw config → [`Snapshot`]. Every check reports at the span of the value it
//! is about, and all checks run, so one pass shows every mistake.

mod pools;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use toml::Spanned;

use super::{
    parse_duration, parse_size, Diagnostic, RawConfig, RawListener, RawRoute, RawServer, RawStatic,
    RawTls, RawWebSocket, Severity,
};
use crate::request_path;
use crate::router::{HostMatch, Route, Router};
use crate::snapshot::{self, Content, Drain, Limits, Listener, Snapshot};
use crate::static_files::{CacheBudget, StaticDir};
use crate::tls::{self, certs, CertError, ServerTls, SniResolver, Which};
use crate::upstream::{self, BackendUrlError};
use crate::websocket::{Policy, WebSocketRoute};

/// The admin listener's address when `[admin]` is absent.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

/// Below this, ordinary browser requests with a few cookies would get 431.
const MIN_REQUEST_HEAD: u64 = 8 * 1024;

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file: {source}")]
    Unreadable {
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Toml(String),
    #[error("unknown section `{0}`; expected `trusted_proxies`, `listeners`, `admin`, `server` or `routes`")]
    UnknownSection(String),
    #[error("expected an array of tables, written as [[listeners]] or [[routes]]")]
    NotAnArrayOfTables,
    #[error("no listeners: add at least one [[listeners]] with bind = \"0.0.0.0:8080\"")]
    NoListeners,
    #[error(
        "`{0}` is not a socket address; write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""
    )]
    BadAddress(String),
    #[error("address {0} is bound twice; each listener needs its own address")]
    DuplicateListener(SocketAddr),
    #[error("admin address {0} is also a public listener; health and metrics must not be served to clients")]
    AdminIsPublic(SocketAddr),
    #[error(
        "`{0}` is not a duration; write a whole number and a unit: ms, s, m or h (e.g. \"30s\")"
    )]
    BadDuration(String),
    #[error(
        "`{0}` is not a size; write a whole number and a unit: B, KiB, MiB or GiB (e.g. \"64KiB\")"
    )]
    BadSize(String),
    #[error("max_connections must be at least 1")]
    NoConnections,
    #[error("max_request_head must be at least 8KiB")]
    RequestHeadTooSmall,
    #[error("route name must not be empty; it labels the route's metrics")]
    EmptyRouteName,
    #[error("route name `{0}` is used by another route; names must be unique because they label metrics")]
    DuplicateRouteName(String),
    #[error("`{0}` is not a host name; write an exact name (\"chat.example.com\") or a wildcard (\"*.example.com\")")]
    BadHost(String),
    #[error("path must start with '/'")]
    PathNotAbsolute,
    #[error("path `{given}` is not in normal form; write it as `{normal}`")]
    PathNotNormal { given: String, normal: String },
    #[error("route `{name}` has the same host and path as route `{other}`; one of them could never match")]
    DuplicateRoute { name: String, other: String },
    #[error("route `{0}` has no action; add `static = {{ root = \"public\" }}`, `proxy = {{ backends = [\"http://127.0.0.1:3000\"] }}` or `websocket = {{ backends = [\"ws://127.0.0.1:9001\"] }}`")]
    NoAction(String),
    #[error(
        "route `{0}` has both `static` and `proxy`; plain requests can go to only one of them"
    )]
    StaticAndProxy(String),
    #[error("static root `{given}` does not exist (looked for {})", resolved.display())]
    RootMissing { given: String, resolved: PathBuf },
    #[error("static root `{given}` is not a directory ({})", resolved.display())]
    RootNotDirectory { given: String, resolved: PathBuf },
    #[error("static root `{given}` cannot be read: {source}")]
    RootUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(BackendUrlError),
    #[error("a {0} action needs at least one backend")]
    NoBackends(&'static str),
    #[error("`{0}` is not a balance; write \"round_robin\", \"least_connections\" or \"hash\"")]
    BadBalance(String),
    #[error("`{0}` is not a hash key; write \"cookie:NAME\", \"header:NAME\" or \"client_ip\"")]
    BadHashKey(String),
    #[error("hash_key only applies with balance = \"hash\"")]
    HashKeyWithoutHash,
    #[error("health check path `{0}` must start with '/'")]
    BadHealthPath(String),
    #[error("{0} must be at least 1")]
    TooSmall(&'static str),
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("retries must be 0 or more")]
    NegativeRetries,
    #[error("`{0}` is not an address or network; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")]
    BadNetwork(String),
    #[error("index `{0}` must be a plain file name, without '/'")]
    BadIndex(String),
    #[error("cache_control `{0}` is not a valid header value")]
    BadCacheControl(String),
    #[error(transparent)]
    Certificate(CertError),
    #[error("tls needs a certificate: write `tls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}` or `tls = {{ certificates = [{{ cert = \"a.pem\", key = \"a-key.pem\" }}] }}`")]
    TlsNoCertificate,
    #[error("write either `cert` and `key`, or `certificates = [...]`, not both")]
    TlsBothForms,
    #[error("`cert` needs its `key` next to it")]
    CertWithoutKey,
    #[error("`key` needs its `cert` next to it")]
    KeyWithoutCert,
    #[error("certificate `{given}` expired on {when}; clients will refuse it")]
    CertificateExpired { given: String, when: String },
    #[error("certificate `{given}` covers `{name}`, which `{other}` already covers on this listener; SNI could not tell them apart")]
    OverlappingName {
        given: String,
        name: String,
        other: String,
    },
    #[error("certificate `{given}` covers `{name}`, which listener {listener} serves with `{other}`; clients would see a different certificate on each port")]
    NameOnOtherListener {
        given: String,
        name: String,
        listener: SocketAddr,
        other: String,
    },
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    #[error("redirect_https is for plaintext listeners; this listener already terminates TLS")]
    RedirectOnTls,
    #[error("https_port only applies with redirect_https = true")]
    HttpsPortWithoutRedirect,
    #[error("https_port must be between 1 and 65535")]
    BadPort,
    #[error("shutdown_delay ({delay:?}) plus drain_spread ({spread:?}) must fit in shutdown_timeout ({timeout:?}), or sessions are cut before their close is sent")]
    DrainLongerThanShutdown {
        delay: Duration,
        spread: Duration,
        timeout: Duration,
    },
    #[error("backend_ca is set but no backend uses TLS (wss:// or https://)")]
    CaWithoutTls,
    #[error("no CA certificates found on this machine to verify wss:// or https:// backends; set `backend_ca = \"ca.pem\"`")]
    NoPlatformRoots,
}

/// Collects diagnostics while checks run, so every check gets its say.
struct Checker {
    errors: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, span: Range<usize>, error: ConfigError) {
        self.errors.push(Diagnostic::error(Some(span), error));
    }

    fn warn(&mut self, span: Range<usize>, error: ConfigError) {
        self.errors.push(Diagnostic {
            span: Some(span),
            error,
            severity: Severity::Warning,
        });
    }

    fn address(&mut self, text: &Spanned<String>) -> Option<SocketAddr> {
        let parsed = text.get_ref().parse().ok();
        if parsed.is_none() {
            self.error(text.span(), ConfigError::BadAddress(text.get_ref().clone()));
        }
        parsed
    }

    fn duration(&mut self, text: &Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        parse_duration(text.get_ref()).unwrap_or_else(|| {
            self.error(
                text.span(),
                ConfigError::BadDuration(text.get_ref().clone()),
            );
            default
        })
    }

    fn size(&mut self, text: &Option<Spanned<String>>, default: u64) -> u64 {
        let Some(text) = text else { return default };
        parse_size(text.get_ref()).unwrap_or_else(|| {
            self.error(text.span(), ConfigError::BadSize(text.get_ref().clone()));
            default
        })
    }
}

/// Checks a parsed config and compiles it into a snapshot. On success the
/// diagnostics returned are warnings; on failure they include them.
pub fn validate(
    raw: RawConfig,
    base_dir: &Path,
) -> Result<(Snapshot, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut check = Checker { errors: Vec::new() };
    let listeners = listeners(&mut check, &raw, base_dir);
    let admin = match &raw.admin {
        Some(admin) => {
            let bind = &admin.get_ref().bind;
            let addr = check.address(bind);
            let public = |a: &SocketAddr| listeners.iter().any(|l| l.bind == *a);
            if let Some(addr) = addr.filter(|a| a.port() != 0 && public(a)) {
                check.error(bind.span(), ConfigError::AdminIsPublic(addr));
            }
            addr
        }
        None => DEFAULT_ADMIN_BIND.parse().ok(),
    };
    let metrics = raw
        .admin
        .as_ref()
        .and_then(|admin| admin.get_ref().metrics)
        .unwrap_or(true);
    let (limits, budget) = server_settings(&mut check, &raw.server);
    let drain = drain_settings(&mut check, &raw.server);
    let route_sources = raw
        .route_tables
        .into_iter()
        .filter_map(|table| {
            let name = table.get("name")?.as_str()?.to_owned();
            Some((name, table))
        })
        .collect();
    let trusted_proxies = pools::trusted_proxies(&mut check, &raw.trusted_proxies);
    let routes = routes(&mut check, raw.routes, base_dir, &budget);
    let failed = check.errors.iter().any(|d| d.severity == Severity::Error);
    match admin {
        Some(admin) if !failed => Ok((
            Snapshot {
                listeners,
                admin,
                metrics,
                limits,
                drain,
                trusted_proxies,
                router: Router::new(routes),
                route_sources,
            },
            check.errors,
        )),
        _ => Err(check.errors),
    }
}

/// Which certificate file serves a name on a listener, for the cross-listener check.
type NameOwners = HashMap<String, (SocketAddr, String)>;

fn listeners(check: &mut Checker, raw: &RawConfig, base_dir: &Path) -> Vec<Listener> {
    if raw.listeners.is_empty() {
        check
            .errors
            .push(Diagnostic::error(None, ConfigError::NoListeners));
    }
    let mut compiled: Vec<Listener> = Vec::new();
    let mut names_elsewhere = NameOwners::new();
    for listener in &raw.listeners {
        let addr = check.address(&listener.bind);
        // Port 0 asks the OS for a fresh port each time, so it never collides.
        let taken = addr.filter(|a| a.port() != 0 && compiled.iter().any(|l| l.bind == *a));
        if let Some(addr) = taken {
            check.error(listener.bind.span(), ConfigError::DuplicateListener(addr));
        }
        let bind = addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let tls = listener
            .tls
            .as_ref()
            .and_then(|tls| server_tls(check, tls, base_dir, bind, &mut names_elsewhere));
        let redirect_https = redirect_https(check, listener);
        if addr.is_some() && taken.is_none() {
            compiled.push(Listener {
                bind,
                tls,
                redirect_https,
                meters: OnceLock::new(),
            });
        }
    }
    compiled
}

/// The `https://` port a plaintext listener redirects to, if it does.
fn redirect_https(check: &mut Checker, listener: &RawListener) -> Option<u16> {
    let enabled = listener.redirect_https.as_ref().filter(|on| *on.get_ref());
    let Some(enabled) = enabled else {
        if let Some(port) = &listener.https_port {
            check.error(port.span(), ConfigError::HttpsPortWithoutRedirect);
        }
        return None;
    };
    if listener.tls.is_some() {
        check.error(enabled.span(), ConfigError::RedirectOnTls);
    }
    let Some(port) = &listener.https_port else {
        return Some(443);
    };
    match u16::try_from(*port.get_ref()) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            check.error(port.span(), ConfigError::BadPort);
            Some(443)
        }
    }
}

/// Loads a listener's certificates and builds its TLS settings; every file
/// problem is reported at the `cert` or `key` value it concerns.
fn server_tls(
    check: &mut Checker,
    raw: &Spanned<RawTls>,
    base_dir: &Path,
    bind: SocketAddr,
    names_elsewhere: &mut NameOwners,
) -> Option<Arc<ServerTls>> {
    let tls = raw.get_ref();
    let mut pairs = Vec::new();
    match (&tls.cert, &tls.key, &tls.certificates) {
        (Some(cert), Some(key), None) => pairs.push((cert, key)),
        (None, None, Some(list)) if list.get_ref().is_empty() => {
            check.error(list.span(), ConfigError::TlsNoCertificate);
        }
        (None, None, Some(list)) => pairs.extend(
            list.get_ref()
                .iter()
                .map(|pair| (&pair.get_ref().cert, &pair.get_ref().key)),
        ),
        (_, _, Some(list)) => check.error(list.span(), ConfigError::TlsBothForms),
        (Some(cert), None, None) => check.error(cert.span(), ConfigError::CertWithoutKey),
        (None, Some(key), None) => check.error(key.span(), ConfigError::KeyWithoutCert),
        (None, None, None) => check.error(raw.span(), ConfigError::TlsNoCertificate),
    }
    let handshake_timeout = check.duration(&tls.handshake_timeout, tls::DEFAULT_HANDSHAKE_TIMEOUT);
    let provider = tls::provider();
    let mut resolver: Option<SniResolver> = None;
    // Which certificate (by its position in `pairs`) took each name on this listener.
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut complete = true;
    for (index, (cert, key)) in pairs.iter().enumerate() {
        let loaded = match certs::load(base_dir, cert.get_ref(), key.get_ref(), &provider) {
            Ok(loaded) => loaded,
            Err(errors) => {
                for (which, error) in errors {
                    let span = match which {
                        Which::Cert => cert.span(),
                        Which::Key => key.span(),
                    };
                    check.error(span, ConfigError::Certificate(error));
                }
                complete = false;
                continue;
            }
        };
        let given = cert.get_ref();
        if certs::has_expired(loaded.not_after) {
            let when = certs::format_time(loaded.not_after);
            let error = ConfigError::CertificateExpired {
                given: given.clone(),
                when,
            };
            check.warn(cert.span(), error);
        }
        let resolver = resolver.get_or_insert_with(|| SniResolver::new(Arc::clone(&loaded.key)));
        for name in &loaded.names {
            match owners.get(name) {
                Some(&owner) if owner != index => {
                    let error = ConfigError::OverlappingName {
                        given: given.clone(),
                        name: name.clone(),
                        other: pairs[owner].0.get_ref().clone(),
                    };
                    check.error(cert.span(), error);
                }
                Some(_) => {}
                None => {
                    resolver.add(name, &loaded.key);
                    owners.insert(name.clone(), index);
                }
            }
            match names_elsewhere.get(name) {
                Some((listener, other)) if *listener != bind && other != given => {
                    let error = ConfigError::NameOnOtherListener {
                        given: given.clone(),
                        name: name.clone(),
                        listener: *listener,
                        other: other.clone(),
                    };
                    check.warn(cert.span(), error);
                }
                Some(_) => {}
                None => {
                    names_elsewhere.insert(name.clone(), (bind, given.clone()));
                }
            }
        }
    }
    let resolver = resolver.filter(|_| complete)?;
    match ServerTls::new(resolver, handshake_timeout) {
        Ok(server) => Some(Arc::new(server)),
        Err(error) => {
            check.error(raw.span(), ConfigError::TlsSetup(error.to_string()));
            None
        }
    }
}

fn server_settings(check: &mut Checker, raw: &RawServer) -> (Limits, Arc<CacheBudget>) {
    let head_default = snapshot::DEFAULT_MAX_REQUEST_HEAD as u64;
    let mut max_request_head = check.size(&raw.max_request_head, head_default);
    if max_request_head < MIN_REQUEST_HEAD {
        if let Some(text) = &raw.max_request_head {
            check.error(text.span(), ConfigError::RequestHeadTooSmall);
        }
        max_request_head = head_default;
    }
    let limits = Limits {
        header_read_timeout: check.duration(
            &raw.header_read_timeout,
            snapshot::DEFAULT_HEADER_READ_TIMEOUT,
        ),
        send_timeout: check.duration(&raw.send_timeout, snapshot::DEFAULT_SEND_TIMEOUT),
        max_request_head: usize::try_from(max_request_head).unwrap_or(usize::MAX),
        max_connections: max_connections(check, &raw.max_connections),
    };
    let budget = CacheBudget::new(
        check.size(&raw.file_cache_size, snapshot::DEFAULT_FILE_CACHE_SIZE),
        check.size(
            &raw.file_cache_max_file,
            snapshot::DEFAULT_FILE_CACHE_MAX_FILE,
        ),
    );
    (limits, Arc::new(budget))
}

fn drain_settings(check: &mut Checker, raw: &RawServer) -> Drain {
    let defaults = Drain::default();
    let shutdown_timeout = check.duration(&raw.shutdown_timeout, defaults.shutdown_timeout);
    let shutdown_delay = check.duration(&raw.shutdown_delay, defaults.shutdown_delay);
    // Closes are spread inside the shutdown deadline: an unset spread fits
    // itself in; a set one that does not fit is a mistake.
    let room = shutdown_timeout.saturating_sub(shutdown_delay);
    let spread = match &raw.drain_spread {
        None => defaults.spread.min(room),
        Some(_) => check.duration(&raw.drain_spread, defaults.spread),
    };
    if shutdown_delay + spread > shutdown_timeout {
        let span = [
            &raw.drain_spread,
            &raw.shutdown_delay,
            &raw.shutdown_timeout,
        ]
        .into_iter()
        .flatten()
        .next()
        .map(Spanned::span);
        check.errors.push(Diagnostic::error(
            span,
            ConfigError::DrainLongerThanShutdown {
                delay: shutdown_delay,
                spread,
                timeout: shutdown_timeout,
            },
        ));
    }
    Drain {
        shutdown_timeout,
        shutdown_delay,
        spread,
        reload_grace: check.duration(&raw.reload_grace, defaults.reload_grace),
    }
}

fn max_connections(check: &mut Checker, raw: &Option<Spanned<u64>>) -> usize {
    let Some(raw) = raw else {
        return snapshot::DEFAULT_MAX_CONNECTIONS;
    };
    match usize::try_from(*raw.get_ref()) {
        Ok(count) if count >= 1 => count,
        _ => {
            check.error(raw.span(), ConfigError::NoConnections);
            snapshot::DEFAULT_MAX_CONNECTIONS
        }
    }
}

fn routes(
    check: &mut Checker,
    raw: Vec<Spanned<RawRoute>>,
    base_dir: &Path,
    budget: &Arc<CacheBudget>,
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
        let static_files = raw
            .static_files
            .as_ref()
            .and_then(|files| static_dir(check, files, base_dir, budget).map(Content::Static));
        let proxy = raw
            .proxy
            .as_ref()
            .map(|proxy| Content::Proxy(pools::proxy(check, proxy, base_dir)));
        if let (Some(_), Some(proxy)) = (&raw.static_files, &raw.proxy) {
            check.error(proxy.span(), ConfigError::StaticAndProxy(name.clone()));
        }
        let content = static_files.or(proxy);
        let websocket = raw
            .websocket
            .as_ref()
            .map(|ws| Arc::new(websocket(check, ws, base_dir)));
        if raw.static_files.is_none() && raw.websocket.is_none() && raw.proxy.is_none() {
            check.error(span, ConfigError::NoAction(name.clone()));
        }
        let (Some(host), Some(prefix)) = (host, prefix) else {
            continue;
        };
        if let Some(other) = compiled
            .iter()
            .find(|r| r.host == host && r.prefix == prefix)
        {
            let error = ConfigError::DuplicateRoute {
                name: name.clone(),
                other: other.name.clone(),
            };
            check.error(raw.path.span(), error);
        }
        compiled.push(Route {
            name,
            host,
            prefix,
            content,
            websocket,
            meters: OnceLock::new(),
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

/// Defaults of a `websocket` action (documented in the README).
const WS_MAX_MESSAGE_SIZE: u64 = 1 << 20;
const WS_PING_INTERVAL: Duration = Duration::from_secs(30);
const WS_PING_TIMEOUT: Duration = Duration::from_secs(10);

fn websocket(check: &mut Checker, ws: &Spanned<RawWebSocket>, base_dir: &Path) -> WebSocketRoute {
    let raw = ws.get_ref();
    let keys = pools::PoolKeys {
        action: "websocket",
        schemes: upstream::WEBSOCKET,
        backends: &raw.backends,
        balance: &raw.balance,
        hash_key: &raw.hash_key,
        connect_timeout: &raw.connect_timeout,
        backend_ca: &raw.backend_ca,
        health_check: &raw.health_check,
    };
    let optional = |duration: Duration| (!duration.is_zero()).then_some(duration);
    WebSocketRoute {
        backends: Arc::new(pools::pool(check, keys, base_dir)),
        origins: raw.origins.clone(),
        require_origin: raw.require_origin,
        subprotocols: raw.subprotocols.clone(),
        policy: Policy {
            max_message_size: check.size(&raw.max_message_size, WS_MAX_MESSAGE_SIZE),
            ping_interval: optional(check.duration(&raw.ping_interval, WS_PING_INTERVAL)),
            ping_timeout: check.duration(&raw.ping_timeout, WS_PING_TIMEOUT),
            idle_timeout: optional(check.duration(&raw.idle_timeout, Duration::ZERO)),
        },
        strip_prefix: raw.strip_prefix,
        meters: OnceLock::new(),
    }
}

fn static_dir(
    check: &mut Checker,
    files: &Spanned<RawStatic>,
    base_dir: &Path,
    budget: &Arc<CacheBudget>,
) -> Option<StaticDir> {
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
            Ok(header) => Some(Some(header)),
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
    Some(StaticDir::new(
        root?,
        index?,
        cache_control?,
        raw.precompressed,
        Arc::clone(budget),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    /// Validates `text` with `base` as the config's directory; returns the messages.
    fn errors_in(text: &str, base: &Path) -> Vec<String> {
        let (raw, mut errors) = parse(text);
        match validate(raw, base) {
            Ok((_, warnings)) => errors.extend(warnings),
            Err(more) => errors.extend(more),
        }
        errors.iter().map(|d| d.error.to_string()).collect()
    }

    fn with_site(routes: &str) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("public")).expect("mkdir");
        std::fs::write(dir.path().join("file.txt"), "x").expect("write");
        let text = format!("[[listeners]]\nbind = \"127.0.0.1:8080\"\n\n{routes}");
        let errors = errors_in(&text, dir.path());
        (dir, errors)
    }

    fn single_error(routes: &str) -> String {
        let (_dir, errors) = with_site(routes);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    const SITE: &str = "static = { root = \"public\" }";

    #[test]
    fn a_good_config_has_no_errors() {
        let (_dir, errors) = with_site(&format!(
            "[admin]\nbind = \"127.0.0.1:9191\"\n[server]\nheader_read_timeout = \"5s\"\n\
             [[routes]]\nname = \"site\"\nhost = \"*.example.com\"\npath = \"/docs/\"\n{SITE}\n"
        ));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let message = single_error(&format!(
            "[[routes]]\nname = \"a\"\npath = \"/\"\nrot = 1\n{SITE}\n"
        ));
        assert!(
            message.starts_with("unknown field `rot`, expected one of"),
            "{message}"
        );
    }

    #[test]
    fn bad_socket_address() {
        let text = "[[listeners]]\nbind = \"8080\"\n";
        assert_eq!(
            errors_in(text, Path::new(".")),
            ["`8080` is not a socket address; write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""]
        );
    }

    #[test]
    fn two_listeners_on_one_address() {
        let text =
            "[[listeners]]\nbind = \"127.0.0.1:80\"\n[[listeners]]\nbind = \"127.0.0.1:80\"\n";
        assert_eq!(
            errors_in(text, Path::new(".")),
            ["address 127.0.0.1:80 is bound twice; each listener needs its own address"]
        );
    }

    #[test]
    fn admin_on_a_public_address() {
        let text = "[[listeners]]\nbind = \"127.0.0.1:80\"\n[admin]\nbind = \"127.0.0.1:80\"\n";
        assert_eq!(
            errors_in(text, Path::new(".")),
            ["admin address 127.0.0.1:80 is also a public listener; health and metrics must not be served to clients"]
        );
    }

    #[test]
    fn no_listeners() {
        assert_eq!(
            errors_in("", Path::new(".")),
            ["no listeners: add at least one [[listeners]] with bind = \"0.0.0.0:8080\""]
        );
    }

    #[test]
    fn duplicate_route_names() {
        let message = single_error(&format!(
            "[[routes]]\nname = \"a\"\npath = \"/x\"\n{SITE}\n[[routes]]\nname = \"a\"\npath = \"/y\"\n{SITE}\n"
        ));
        assert_eq!(message, "route name `a` is used by another route; names must be unique because they label metrics");
    }

    #[test]
    fn same_host_and_path() {
        let message = single_error(&format!(
            "[[routes]]\nname = \"a\"\npath = \"/x\"\n{SITE}\n[[routes]]\nname = \"b\"\npath = \"/x/\"\n{SITE}\n"
        ));
        assert_eq!(
            message,
            "route `b` has the same host and path as route `a`; one of them could never match"
        );
    }

    #[test]
    fn path_must_be_absolute_and_normal() {
        let message = single_error(&format!("[[routes]]\nname = \"a\"\npath = \"x\"\n{SITE}\n"));
        assert_eq!(message, "path must start with '/'");
        let message = single_error(&format!(
            "[[routes]]\nname = \"a\"\npath = \"/a/../b\"\n{SITE}\n"
        ));
        assert_eq!(
            message,
            "path `/a/../b` is not in normal form; write it as `/b`"
        );
    }

    #[test]
    fn static_root_must_be_an_existing_directory() {
        let message =
            single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"nope\" }\n");
        assert!(
            message.starts_with("static root `nope` does not exist (looked for "),
            "{message}"
        );
        let message = single_error(
            "[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"file.txt\" }\n",
        );
        assert!(
            message.starts_with("static root `file.txt` is not a directory ("),
            "{message}"
        );
    }

    #[test]
    fn websocket_backends_are_checked() {
        let message =
            single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [] }\n");
        assert_eq!(message, "a websocket action needs at least one backend");
        let message = single_error(
            "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"http://a:1\"] }\n",
        );
        assert_eq!(message, "backend `http://a:1` must use ws:// or wss://");
        let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://a:1\"], ping_interval = \"soon\" }\n");
        assert_eq!(message, "`soon` is not a duration; write a whole number and a unit: ms, s, m or h (e.g. \"30s\")");
        let message = single_error(
            "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backend = [\"ws://a:1\"] }\n",
        );
        assert!(message.starts_with("unknown field `backend`"), "{message}");
    }

    #[test]
    fn a_route_needs_an_action() {
        let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\n");
        assert_eq!(
            message,
            "route `a` has no action; add `static = { root = \"public\" }`, `proxy = { backends = [\"http://127.0.0.1:3000\"] }` or `websocket = { backends = [\"ws://127.0.0.1:9001\"] }`"
        );
    }

    #[test]
    fn proxy_pools_are_checked() {
        let route = |action: &str| format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{action}\n");
        let cases = [
            ("proxy = { backends = [] }", "a proxy action needs at least one backend"),
            (
                "proxy = { backends = [\"ws://a:1\"] }",
                "backend `ws://a:1` must use http:// or https://",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], balance = \"random\" }",
                "`random` is not a balance; write \"round_robin\", \"least_connections\" or \"hash\"",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], balance = \"hash\", hash_key = \"cookie\" }",
                "`cookie` is not a hash key; write \"cookie:NAME\", \"header:NAME\" or \"client_ip\"",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], hash_key = \"client_ip\" }",
                "hash_key only applies with balance = \"hash\"",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], retries = -1 }",
                "retries must be 0 or more",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], response_timeout = \"0s\" }",
                "response_timeout must be longer than zero",
            ),
            (
                "websocket = { backends = [\"ws://a:1\"], health_check = { path = \"healthz\" } }",
                "health check path `healthz` must start with '/'",
            ),
            (
                "websocket = { backends = [\"ws://a:1\"], health_check = { path = \"/h\", interval = \"0ms\" } }",
                "interval must be longer than zero",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], health_check = { path = \"/h\", unhealthy_after = 0 } }",
                "unhealthy_after must be at least 1",
            ),
            (
                "proxy = { backends = [\"http://a:1\"], health_check = { path = \"/h\", every = \"1s\" } }",
                "unknown field `every`",
            ),
            (
                "proxy = { backends = [\"http://a:1\"] }\nstatic = { root = \"public\" }",
                "route `a` has both `static` and `proxy`; plain requests can go to only one of them",
            ),
        ];
        for (action, expected) in cases {
            let message = single_error(&route(action));
            assert!(message.starts_with(expected), "{action}: {message}");
        }
        let good = route(
            "proxy = { backends = [\"http://a:1\", \"https://b\"], balance = \"hash\", hash_key = \"header:x-user\", retries = 0, preserve_host = false, health_check = { path = \"/healthz?full=1\", interval = \"1s\", timeout = \"500ms\", unhealthy_after = 3, healthy_after = 1 } }\nwebsocket = { backends = [\"ws://a:1\"], balance = \"least_connections\" }",
        );
        assert_eq!(with_site(&good).1, Vec::<String>::new());
    }

    #[test]
    fn trusted_proxies_must_be_networks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\", \"::1\"]\n[[listeners]]\nbind = \"127.0.0.1:8080\"\n[[routes]]\nname = \"a\"\npath = \"/\"\nproxy = { backends = [\"http://a:1\"] }\n";
        assert_eq!(
            errors_in(text, dir.path()),
            ["`10.0.0.1/8` is not an address or network; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\""]
        );
    }

    #[test]
    fn bad_host_duration_size_index_and_header() {
        let message = single_error(&format!(
            "[[routes]]\nname = \"a\"\nhost = \"a b\"\npath = \"/\"\n{SITE}\n"
        ));
        assert_eq!(message, "`a b` is not a host name; write an exact name (\"chat.example.com\") or a wildcard (\"*.example.com\")");
        let message = single_error("[server]\nshutdown_timeout = \"30\"\n");
        assert_eq!(
            message,
            "`30` is not a duration; write a whole number and a unit: ms, s, m or h (e.g. \"30s\")"
        );
        let message = single_error(&format!(
            "[server]\nshutdown_timeout = \"5s\"\ndrain_spread = \"10s\"\n\
             [[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\n"
        ));
        assert_eq!(message, "shutdown_delay (0ns) plus drain_spread (10s) must fit in shutdown_timeout (5s), or sessions are cut before their close is sent");
        let message = single_error("[server]\nfile_cache_size = \"lots\"\n");
        assert_eq!(message, "`lots` is not a size; write a whole number and a unit: B, KiB, MiB or GiB (e.g. \"64KiB\")");
        let message = single_error("[server]\nmax_connections = 0\n");
        assert_eq!(message, "max_connections must be at least 1");
        let message = single_error("[server]\nmax_request_head = \"1KiB\"\n");
        assert_eq!(message, "max_request_head must be at least 8KiB");
        let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"public\", index = \"a/b\" }\n");
        assert_eq!(
            message,
            "index `a/b` must be a plain file name, without '/'"
        );
        let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"public\", cache_control = \"a\\nb\" }\n");
        assert_eq!(message, "cache_control `a\nb` is not a valid header value");
    }

    /// A self-signed certificate for `names`, valid until January of `until_year`.
    fn write_cert(dir: &Path, stem: &str, names: &[&str], until_year: i32) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-sign");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem())
            .expect("write key");
    }

    /// Messages for a config with one TLS listener carrying `tls`, in a
    /// directory holding certificates `a` (a.example.com), `b` (b.example.com),
    /// `ab` (both names) and `old` (expired).
    fn tls_messages(listeners: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cert(dir.path(), "a", &["a.example.com"], 4000);
        write_cert(dir.path(), "b", &["b.example.com"], 4000);
        write_cert(dir.path(), "ab", &["a.example.com", "b.example.com"], 4000);
        write_cert(dir.path(), "old", &["old.example.com"], 2020);
        errors_in(listeners, dir.path())
    }

    fn tls_listener(tls: &str) -> String {
        format!("[[listeners]]\nbind = \"127.0.0.1:8443\"\ntls = {tls}\n")
    }

    #[test]
    fn certificate_files_are_read_and_must_hold_what_they_claim() {
        let pair = |cert: &str, key: &str| {
            tls_messages(&tls_listener(&format!(
                "{{ cert = \"{cert}\", key = \"{key}\" }}"
            )))
        };
        assert!(pair("a.pem", "a-key.pem").is_empty());
        let missing = pair("nope.pem", "a-key.pem");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("cannot read certificate file `nope.pem` (")
                && missing[0].contains("No such file"),
            "{missing:?}"
        );
        assert_eq!(
            pair("a-key.pem", "a-key.pem"),
            ["`a-key.pem` holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)"]
        );
        assert_eq!(
            pair("a.pem", "a.pem"),
            ["`a.pem` holds no private key (expected PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)"]
        );
        assert_eq!(
            pair("a.pem", "b-key.pem"),
            ["key `b-key.pem` does not belong to certificate `a.pem`"]
        );
    }

    #[test]
    fn an_expired_certificate_is_a_warning() {
        let messages = tls_messages(&tls_listener(
            "{ cert = \"old.pem\", key = \"old-key.pem\" }",
        ));
        assert_eq!(
            messages,
            ["certificate `old.pem` expired on Wed, 01 Jan 2020 00:00:00 GMT; clients will refuse it"]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        write_cert(dir.path(), "old", &["old.example.com"], 2020);
        let (raw, _) = parse(&tls_listener(
            "{ cert = \"old.pem\", key = \"old-key.pem\" }",
        ));
        let (_, warnings) = validate(raw, dir.path()).expect("an expired certificate still loads");
        assert_eq!(warnings[0].severity, Severity::Warning);
    }

    #[test]
    fn certificate_names_must_not_overlap_on_a_listener() {
        let messages = tls_messages(&tls_listener(
            "{ certificates = [ { cert = \"a.pem\", key = \"a-key.pem\" }, { cert = \"ab.pem\", key = \"ab-key.pem\" } ] }",
        ));
        assert_eq!(
            messages,
            ["certificate `ab.pem` covers `a.example.com`, which `a.pem` already covers on this listener; SNI could not tell them apart"]
        );
        let other_listener = format!(
            "{}[[listeners]]\nbind = \"127.0.0.1:9443\"\ntls = {{ cert = \"ab.pem\", key = \"ab-key.pem\" }}\n",
            tls_listener("{ cert = \"a.pem\", key = \"a-key.pem\" }")
        );
        assert_eq!(
            tls_messages(&other_listener),
            ["certificate `ab.pem` covers `a.example.com`, which listener 127.0.0.1:8443 serves with `a.pem`; clients would see a different certificate on each port"]
        );
    }

    #[test]
    fn tls_tables_need_one_complete_form() {
        assert_eq!(
            tls_messages(&tls_listener("{ cert = \"a.pem\" }")),
            ["`cert` needs its `key` next to it"]
        );
        assert_eq!(
            tls_messages(&tls_listener("{ certificates = [] }")),
            ["tls needs a certificate: write `tls = { cert = \"site.pem\", key = \"site-key.pem\" }` or `tls = { certificates = [{ cert = \"a.pem\", key = \"a-key.pem\" }] }`"]
        );
        assert_eq!(
            tls_messages(&tls_listener(
                "{ cert = \"a.pem\", key = \"a-key.pem\", certificates = [{ cert = \"b.pem\", key = \"b-key.pem\" }] }"
            )),
            ["write either `cert` and `key`, or `certificates = [...]`, not both"]
        );
        assert_eq!(
            tls_messages(&format!(
                "{}redirect_https = true\n",
                tls_listener("{ cert = \"a.pem\", key = \"a-key.pem\" }")
            )),
            ["redirect_https is for plaintext listeners; this listener already terminates TLS"]
        );
        assert_eq!(
            tls_messages("[[listeners]]\nbind = \"127.0.0.1:80\"\nhttps_port = 443\n"),
            ["https_port only applies with redirect_https = true"]
        );
        assert_eq!(
            tls_messages("[[listeners]]\nbind = \"127.0.0.1:80\"\nredirect_https = true\nhttps_port = 70000\n"),
            ["https_port must be between 1 and 65535"]
        );
    }

    #[test]
    fn backend_ca_is_read_and_checked() {
        let message = single_error(
            "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"wss://a:1\"], backend_ca = \"file.txt\" }\n",
        );
        assert_eq!(
            message,
            "`file.txt` holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)"
        );
        let (_dir, messages) = with_site(
            "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://a:1\"], backend_ca = \"missing.pem\" }\n",
        );
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages.contains(
            &"backend_ca is set but no backend uses TLS (wss:// or https://)".to_owned()
        ));
    }
}

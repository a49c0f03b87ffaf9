//! The configuration file: raw serde types that say exactly what the TOML says,
//! and the loader that turns a file into a validated [`Model`].
//!
//! Each top-level section, and each `[[listeners]]`/`[[routes]]` entry, is
//! deserialized on its own so that one typo does not hide the other mistakes:
//! `wsgate check` reports every error it can find in one pass.

mod units;
pub(crate) mod validate;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::model::Model;

pub use units::{parse_duration, parse_rate, parse_size};
pub use validate::{ConfigError, DEFAULT_ADMIN_BIND};

/// `[[listeners]]`: one socket that accepts client connections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub bind: Spanned<String>,
    pub tls: Option<Spanned<RawTls>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub https_port: Option<Spanned<i64>>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header.
    pub proxy_protocol: Option<Spanned<bool>>,
    /// A plaintext listener also takes HTTP/2 with prior knowledge.
    pub h2c: Option<Spanned<bool>>,
    pub request_rate: Option<Spanned<String>>,
    pub request_burst: Option<Spanned<i64>>,
}

/// `tls = { ... }` on a listener: one certificate, or several picked by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub certificates: Option<Spanned<Vec<Spanned<RawCertificate>>>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub client_auth: Option<Spanned<RawClientAuth>>,
    /// A file of session ticket keys that replicas share.
    pub ticket_keys: Option<Spanned<String>>,
    /// Certificates ordered and renewed from an ACME CA.
    pub acme: Option<Spanned<RawAcme>>,
}

/// `acme = { ... }` in a listener's `tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub domains: Spanned<Vec<Spanned<String>>>,
    pub email: Option<Spanned<String>>,
    pub directory: Option<Spanned<String>>,
    pub directory_ca: Option<Spanned<String>>,
    pub state: Spanned<String>,
    pub challenge: Option<Spanned<String>>,
}

/// `client_auth = { ... }` in a listener's `tls`: mTLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    pub ca: Spanned<String>,
    pub required: Option<bool>,
    pub crls: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `client_cert = { ... }` in a route's `auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCert {
    pub subject_header: Option<Spanned<String>>,
    pub san_header: Option<Spanned<String>>,
}

/// One `{ cert = "...", key = "..." }` pair.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[admin]`: the operator's listener for health and metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Spanned<String>,
    /// `false` turns off `/metrics` and the counting behind it.
    pub metrics: Option<bool>,
}

/// `[server]`: process-wide limits and timeouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub header_read_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub max_request_head: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub shutdown_delay: Option<Spanned<String>>,
    pub drain_spread: Option<Spanned<String>>,
    pub reload_grace: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_connections_per_client: Option<Spanned<i64>>,
    pub client_ipv6_prefix: Option<Spanned<i64>>,
    pub max_tracked_clients: Option<Spanned<i64>>,
    pub file_cache_size: Option<Spanned<String>>,
    pub file_cache_max_file: Option<Spanned<String>>,
    pub max_compressed_streams: Option<Spanned<i64>>,
}

/// `[[routes]]`: which requests a route takes and what it does with them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub path: Spanned<String>,
    #[serde(rename = "static")]
    pub static_files: Option<Spanned<RawStatic>>,
    pub websocket: Option<Spanned<RawWebSocket>>,
    pub proxy: Option<Spanned<RawProxy>>,
    /// `"all"`, `"errors"` or `"off"`: which of the route's requests and
    /// sessions the access log records.
    pub access_log: Option<Spanned<String>>,
    /// Whether logged paths keep their query string.
    pub log_query: Option<bool>,
    pub request_rate: Option<Spanned<String>>,
    pub request_burst: Option<Spanned<i64>>,
    pub auth: Option<Spanned<RawAuth>>,
    /// Changes to what the route forwards to its backends.
    pub request_headers: Option<Spanned<RawHeaderRules>>,
    /// Changes to everything the route answers.
    pub response_headers: Option<Spanned<RawHeaderRules>>,
    /// A `Strict-Transport-Security` value, sent over TLS.
    pub hsts: Option<Spanned<String>>,
    pub cors: Option<Spanned<RawCors>>,
    /// Answers every request with a redirect (instead of static, proxy or page).
    pub redirect: Option<Spanned<RawRedirect>>,
    /// Changes the request's path before the action.
    pub rewrite: Option<Spanned<RawRewrite>>,
    /// `"add"` or `"remove"`: redirects the other spelling of each path.
    pub trailing_slash: Option<Spanned<String>>,
    pub error_pages: Option<RawErrorPages>,
    /// Backends' error answers get the error pages too.
    pub intercept_backend_errors: Option<bool>,
    pub compress: Option<Spanned<RawCompress>>,
}

/// `compress = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompress {
    /// `"br"`, `"zstd"`, `"gzip"`, in the order offered.
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub min_size: Option<Spanned<String>>,
    pub types: Option<Spanned<Vec<Spanned<String>>>>,
    /// Coding → level.
    pub levels: Option<std::collections::BTreeMap<String, Spanned<i64>>>,
}

/// `error_pages = { 404 = "errors/404.html", "5xx" = "errors/5xx.html" }`:
/// status (or class) → file.
pub type RawErrorPages = std::collections::BTreeMap<String, Spanned<String>>;

/// `redirect = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: Spanned<String>,
    pub status: Option<Spanned<i64>>,
}

/// `rewrite = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

/// `cors = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Spanned<Vec<Spanned<String>>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub headers: Option<Vec<Spanned<String>>>,
    pub expose: Option<Vec<Spanned<String>>>,
    pub max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub credentials: Option<Spanned<bool>>,
}

/// `request_headers = { ... }` or `response_headers = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    /// Name → value: replaces any field of the name.
    pub set: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    /// Name → value: appended beside any field of the name.
    pub add: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub remove: Option<Vec<Spanned<String>>>,
}

/// `auth = { ... }` on a route: who may use it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// An htpasswd file of bcrypt or argon2 hashes.
    pub basic: Option<Spanned<String>>,
    pub realm: Option<Spanned<String>>,
    pub jwt: Option<Spanned<RawJwt>>,
    pub forward: Option<Spanned<RawForward>>,
    pub client_cert: Option<Spanned<RawClientCert>>,
}

/// `forward = { ... }` in a route's `auth`: the auth service and how it is asked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub backends: Spanned<Vec<Spanned<String>>>,
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub backend_ca: Option<Spanned<String>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub timeout: Option<Spanned<String>>,
    pub copy_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub cache: Option<Spanned<String>>,
    pub revalidate: Option<Spanned<String>>,
    /// `"deny"` (503) or `"allow"`.
    pub on_error: Option<Spanned<String>>,
}

/// `jwt = { ... }` in a route's `auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// PEM public keys or a JWKS document, as a file or an `http(s)://` URL.
    pub keys: Spanned<String>,
    pub keys_refresh: Option<Spanned<String>>,
    pub algorithms: Spanned<Vec<Spanned<String>>>,
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    /// `"header:NAME"`, `"cookie:NAME"`, `"query:NAME"`.
    pub token_from: Option<Spanned<Vec<Spanned<String>>>>,
    pub claims_to_headers: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    pub expired_close_code: Option<Spanned<i64>>,
}

/// `[log]`: the access log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"stdout"`, `"stderr"`, `"off"`, or a file path.
    pub access: Option<Spanned<String>>,
    /// `"json"`, `"combined"`, or a template of `$field` names.
    pub format: Option<Spanned<String>>,
}

/// `websocket = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub backends: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "no_origins")]
    pub origins: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub require_origin: bool,
    #[serde(default)]
    pub subprotocols: Vec<String>,
    pub max_message_size: Option<Spanned<String>>,
    pub ping_interval: Option<Spanned<String>>,
    pub ping_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Whether HTTP/2 clients may open sessions as streams (RFC 8441); default true.
    pub over_http2: Option<bool>,
    pub backend_ca: Option<Spanned<String>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub handshake_rate: Option<Spanned<String>>,
    pub handshake_burst: Option<Spanned<i64>>,
    pub max_sessions_per_client: Option<Spanned<i64>>,
    pub client_message_rate: Option<Spanned<String>>,
    pub client_message_burst: Option<Spanned<i64>>,
    pub client_byte_rate: Option<Spanned<String>>,
    pub client_byte_burst: Option<Spanned<String>>,
    /// `"slow"` or `"close"`.
    pub rate_exceeded: Option<Spanned<String>>,
    pub rate_exceeded_grace: Option<Spanned<String>>,
    pub max_session_duration: Option<Spanned<String>>,
    pub max_session_duration_code: Option<Spanned<i64>>,
}

fn no_origins() -> Spanned<Vec<Spanned<String>>> {
    Spanned::new(0..0, Vec::new())
}

/// `proxy = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub backends: Spanned<Vec<Spanned<String>>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub preserve_host: Option<bool>,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Speak HTTP/2 to the backends (h2c, or ALPN h2 over TLS).
    #[serde(default)]
    pub http2: bool,
    pub backend_ca: Option<Spanned<String>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
}

/// `health_check = { ... }` on a `proxy` or `websocket` action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub unhealthy_after: Option<Spanned<i64>>,
    pub healthy_after: Option<Spanned<i64>>,
}

/// `static = { ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    pub root: Spanned<String>,
    pub index: Option<Spanned<String>>,
    pub cache_control: Option<Spanned<String>>,
    #[serde(default)]
    pub precompressed: bool,
    pub hide: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Everything the file says, section by section.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    pub client_ip_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub listeners: Vec<RawListener>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub server: RawServer,
    pub log: Option<Spanned<RawLog>>,
    pub error_pages: Option<RawErrorPages>,
    pub routes: Vec<Spanned<RawRoute>>,
}

/// One problem found in a config file, located by byte span.
#[derive(Debug)]
pub struct Diagnostic {
    pub span: Option<Range<usize>>,
    pub error: ConfigError,
    pub severity: Severity,
}

/// Errors stop a config from loading; warnings are printed and the config runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Diagnostic {
    pub fn error(span: Option<Range<usize>>, error: ConfigError) -> Diagnostic {
        Diagnostic {
            span,
            error,
            severity: Severity::Error,
        }
    }
}

/// A config that loaded, with any warnings about it.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub warnings: Diagnostics,
}

/// Problems found in one config file, printable as `FILE:LINE:COL: message`
/// (warnings as `FILE:LINE:COL: warning: message`).
#[derive(Debug)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub text: String,
    pub items: Vec<Diagnostic>,
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for item in &self.items {
            let file = self.file.display();
            let label = match item.severity {
                Severity::Error => "",
                Severity::Warning => "warning: ",
            };
            match &item.span {
                Some(span) => {
                    let (line, col) = line_col(&self.text, span.start);
                    writeln!(f, "{file}:{line}:{col}: {label}{}", item.error)?;
                }
                None => writeln!(f, "{file}: {label}{}", item.error)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Reads, parses and validates a config file. Certificate and key files it
/// names are read too, so a loaded config is ready to serve.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(source) => {
            let error = ConfigError::Unreadable { source };
            return Err(Diagnostics {
                file: path.to_path_buf(),
                text: String::new(),
                items: vec![Diagnostic::error(None, error)],
            });
        }
    };
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let (raw, mut items) = parse(&text);
    let validated = validate::validate(raw, base_dir);
    let model = match validated {
        Ok((model, warnings)) => {
            items.extend(warnings);
            Some(model)
        }
        Err(diagnostics) => {
            items.extend(diagnostics);
            None
        }
    };
    items.sort_by_key(|item| item.span.as_ref().map_or(0, |span| span.start));
    let failed = items.iter().any(|item| item.severity == Severity::Error);
    let diagnostics = Diagnostics {
        file: path.to_path_buf(),
        text,
        items,
    };
    match model {
        Some(model) if !failed => Ok(Loaded {
            model,
            warnings: diagnostics,
        }),
        _ => Err(diagnostics),
    }
}

/// The files besides `path` itself that loading it reads: certificates,
/// keys, CA bundles and htpasswd files, as the config names them (relative to its
/// directory). Empty when the file cannot be read or parsed.
pub fn referenced_files(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let (raw, _) = parse(&text);
    let mut names: Vec<&str> = Vec::new();
    for tls in raw.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        let tls = tls.get_ref();
        if let Some(keys) = &tls.ticket_keys {
            names.push(keys.get_ref().as_str());
        }
        if let Some(ca) = tls
            .acme
            .as_ref()
            .and_then(|a| a.get_ref().directory_ca.as_ref())
        {
            names.push(ca.get_ref().as_str());
        }
        if let Some(client_auth) = &tls.client_auth {
            let client_auth = client_auth.get_ref();
            names.push(client_auth.ca.get_ref().as_str());
            names.extend(
                client_auth
                    .crls
                    .iter()
                    .flat_map(|list| list.get_ref())
                    .map(|crl| crl.get_ref().as_str()),
            );
        }
        names.extend(
            [&tls.cert, &tls.key]
                .into_iter()
                .flatten()
                .map(|n| n.get_ref().as_str()),
        );
        for pair in tls.certificates.iter().flat_map(|c| c.get_ref()) {
            names.extend(
                [pair.get_ref().cert.get_ref(), pair.get_ref().key.get_ref()].map(String::as_str),
            );
        }
    }
    names.extend(
        raw.error_pages
            .iter()
            .flatten()
            .map(|(_, file)| file.get_ref().as_str()),
    );
    for route in &raw.routes {
        let route = route.get_ref();
        let websocket_ca = route
            .websocket
            .as_ref()
            .and_then(|ws| ws.get_ref().backend_ca.as_ref());
        let proxy_ca = route
            .proxy
            .as_ref()
            .and_then(|p| p.get_ref().backend_ca.as_ref());
        let auth = route.auth.as_ref().map(Spanned::get_ref);
        let htpasswd = auth.and_then(|auth| auth.basic.as_ref());
        let jwt_keys = auth
            .and_then(|auth| auth.jwt.as_ref())
            .map(|jwt| &jwt.get_ref().keys);
        names.extend(
            route
                .error_pages
                .iter()
                .flatten()
                .map(|(_, file)| file.get_ref().as_str()),
        );
        names.extend(
            [websocket_ca, proxy_ca, htpasswd, jwt_keys]
                .into_iter()
                .flatten()
                .map(|n| n.get_ref().as_str()),
        );
    }
    names.into_iter().map(|name| base_dir.join(name)).collect()
}

/// Parses TOML text into the raw sections, collecting every syntax and shape
/// error. What did parse is returned too, so validation can still report on it.
pub fn parse(text: &str) -> (RawConfig, Vec<Diagnostic>) {
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(error) => return (RawConfig::default(), vec![toml_diagnostic(error)]),
    };
    let mut raw = RawConfig::default();
    let mut errors = Vec::new();
    for (key, value) in table.into_inner() {
        match key.get_ref().as_ref() {
            "listeners" => raw.listeners = entries(value, &mut errors),
            "routes" => raw.routes = entries(value, &mut errors),
            "admin" => raw.admin = section(value, &mut errors),
            "server" => raw.server = section(value, &mut errors).unwrap_or_default(),
            "log" => raw.log = section(value, &mut errors),
            "error_pages" => raw.error_pages = section(value, &mut errors),
            "trusted_proxies" => raw.trusted_proxies = section(value, &mut errors),
            "client_ip_headers" => raw.client_ip_headers = section(value, &mut errors),
            other => errors.push(Diagnostic::error(
                Some(key.span()),
                ConfigError::UnknownSection(other.to_owned()),
            )),
        }
    }
    (raw, errors)
}

fn section<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| errors.push(toml_diagnostic(e)))
        .ok()
}

/// An array of tables, each entry deserialized separately so that one bad
/// entry does not hide the errors of the others.
fn entries<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<T> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .filter_map(|item| section(item, errors))
            .collect(),
        _ => {
            errors.push(Diagnostic::error(
                Some(span),
                ConfigError::NotAnArrayOfTables,
            ));
            Vec::new()
        }
    }
}

fn toml_diagnostic(error: toml::de::Error) -> Diagnostic {
    Diagnostic::error(
        error.span(),
        ConfigError::Toml(error.message().trim().to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a\nbc\n  d";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 2));
        assert_eq!(line_col(text, 7), (3, 3));
    }

    #[test]
    fn one_bad_route_does_not_hide_the_next() {
        let text = "[[routes]]\nname = \"a\"\npath = \"/\"\nroot = \"x\"\n\n[[routes]]\nname = \"b\"\npth = \"/b\"\n";
        let (_, errors) = parse(text);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn unknown_top_level_section_is_named() {
        let (_, errors) = parse("[rutes]\n");
        assert_eq!(
            errors[0].error.to_string(),
            "unknown section `rutes`; expected `trusted_proxies`, `client_ip_headers`, `listeners`, `admin`, `server`, `log` or `routes`"
        );
        assert_eq!(errors[0].span, Some(1..6));
    }

    use proptest::prelude::*;

    /// Config-shaped text: real sections and keys with values of every kind,
    /// some broken, in any order.
    fn config_text() -> impl Strategy<Value = String> {
        let lines = prop::sample::select(vec![
            "[[listeners]]\n",
            "bind = \"127.0.0.1:0\"\n",
            "bind = \"nonsense\"\n",
            "tls = { cert = \"missing.pem\", key = \"missing.pem\" }\n",
            "[admin]\n",
            "[server]\n",
            "max_connections = 0\n",
            "shutdown_timeout = \"1s\"\n",
            "drain_spread = \"5s\"\n",
            "header_read_timeout = \"0s\"\n",
            "max_request_head = \"1KiB\"\n",
            "[[routes]]\n",
            "name = \"a\"\n",
            "name = \"\"\n",
            "path = \"/\"\n",
            "path = \"/a/../b\"\n",
            "host = \"*.example.com\"\n",
            "static = { root = \".\" }\n",
            "static = { root = \".\", hide = [\"a/b\"] }\n",
            "websocket = { backends = [\"ws://127.0.0.1:1\"], origins = [\"x\"] }\n",
            "websocket = { backends = [] }\n",
            "proxy = { backends = [\"http://u@a:1\"], balance = \"hash\", hash_key = \"cookie:\" }\n",
            "trusted_proxies = [\"0.0.0.0/0\", \"10.0.0.1/8\"]\n",
            "client_ip_headers = [\"bad header\"]\n",
            "= broken\n",
            "[[routes]\n",
            "\u{e9}\u{1f600} = 1\n",
        ]);
        prop::collection::vec(lines, 0..16).prop_map(|lines| lines.concat())
    }

    proptest! {
        #[test]
        fn any_config_text_gets_diagnostics_not_a_panic(text in config_text()) {
            let (raw, mut items) = parse(&text);
            let dir = std::env::temp_dir();
            match validate::validate(raw, &dir) {
                Ok((_, warnings)) => items.extend(warnings),
                Err(errors) => items.extend(errors),
            }
            for item in &items {
                if let Some(span) = &item.span {
                    prop_assert!(span.end <= text.len(), "{:?} past the end of {:?}", span, text);
                    let _ = line_col(&text, span.start);
                }
            }
        }

        #[test]
        fn arbitrary_text_is_parsed_without_a_panic(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}

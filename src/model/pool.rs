//! Backend pools as the config describes them: addresses, balance, connect
//! timeout, how TLS backends are verified, and the active health check.

use std::fmt;
use std::time::Duration;

use http::header::HeaderName;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::Material;

/// The backends of one `proxy` or `websocket` action, and how to use them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub backends: Vec<BackendAddress>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// How `wss://`/`https://` backends are verified; `None` when no backend uses TLS.
    pub roots: Option<BackendRoots>,
    pub health_check: Option<HealthCheck>,
}

/// `connect_timeout` when the config does not set one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Pool {
    /// `backends` with the defaults: round-robin, no health check, and no
    /// TLS roots (so plaintext backends only).
    pub fn new(backends: Vec<BackendAddress>) -> Pool {
        Pool {
            backends,
            balance: Balance::RoundRobin,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            roots: None,
            health_check: None,
        }
    }
}

/// What a pool's TLS backends are verified against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendRoots {
    /// The machine's CA certificates.
    Platform,
    /// `backend_ca = "..."`: the CA certificates in that file.
    File {
        file: String,
        fingerprint: String,
        #[serde(skip)]
        certificates: Material<Vec<CertificateDer<'static>>>,
    },
}

/// `health_check = { ... }`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Path and query of the probe request.
    pub path: String,
    pub interval: Duration,
    /// For the whole probe: connect, TLS, request and response head.
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// `balance = "..."` on a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    /// Fewest requests in flight (HTTP) or live sessions (WebSocket).
    LeastConnections,
    Hash(HashKey),
}

/// What `balance = "hash"` hashes (`hash_key = "..."`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum HashKey {
    /// `cookie:NAME`
    Cookie(String),
    /// `header:NAME`
    Header(HeaderName),
    /// `client_ip`: the client's address, as trusted proxies report it.
    ClientIp,
}

impl HashKey {
    /// Parses the config form; `None` when it is none of the three.
    pub fn parse(text: &str) -> Option<HashKey> {
        if text == "client_ip" {
            return Some(HashKey::ClientIp);
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            return valid.then(|| HashKey::Cookie(name.to_owned()));
        }
        let name = text.strip_prefix("header:")?;
        HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashKey::Header)
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::ClientIp => f.write_str("client_ip"),
        }
    }
}

impl From<HashKey> for String {
    fn from(key: HashKey) -> String {
        key.to_string()
    }
}

impl TryFrom<String> for HashKey {
    type Error = String;

    fn try_from(text: String) -> Result<HashKey, String> {
        HashKey::parse(&text).ok_or_else(|| format!("`{text}` is not a hash key"))
    }
}

/// Why a backend URL in the config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendUrlError {
    #[error("backend `{url}` is not a URL; write it like \"{}://127.0.0.1:9001\"", expected.plain)]
    NotAUrl { url: String, expected: Schemes },
    #[error("backend `{url}` must use {}:// or {}://", expected.plain, expected.tls)]
    Scheme { url: String, expected: Schemes },
    #[error("backend `{0}` has no host")]
    NoHost(String),
    #[error("backend `{0}` must not have a query or fragment")]
    Query(String),
    #[error("backend `{0}` must not carry a user name or password: wsgate does not send them, and the URL labels metrics and shows in /config")]
    UserInfo(String),
}

/// The URL schemes one kind of backend may use: plaintext, and over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schemes {
    pub plain: &'static str,
    pub tls: &'static str,
}

/// `ws://` and `wss://`, for WebSocket backends.
pub const WEBSOCKET: Schemes = Schemes {
    plain: "ws",
    tls: "wss",
};

/// `http://` and `https://`, for proxied HTTP.
pub const HTTP: Schemes = Schemes {
    plain: "http",
    tls: "https",
};

/// Where one backend is, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendAddress {
    /// As written in the config; names the backend in logs, metrics and `/config`.
    pub url: String,
    /// Lowercase, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// A path prefix from the URL, without a trailing slash ("" for none).
    pub path: String,
    /// Whether the URL's scheme asks for TLS (`wss://`, `https://`).
    pub tls: bool,
}

impl BackendAddress {
    /// Parses `scheme://host[:port][/path]` with one of `schemes`; the port
    /// defaults to 80, or 443 over TLS.
    pub fn parse(url: &str, schemes: Schemes) -> Result<BackendAddress, BackendUrlError> {
        let uri: http::Uri = url.parse().map_err(|_| BackendUrlError::NotAUrl {
            url: url.to_owned(),
            expected: schemes,
        })?;
        let tls = match uri.scheme_str() {
            Some(scheme) if scheme == schemes.plain => false,
            Some(scheme) if scheme == schemes.tls => true,
            _ => {
                return Err(BackendUrlError::Scheme {
                    url: url.to_owned(),
                    expected: schemes,
                })
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| BackendUrlError::NoHost(url.to_owned()))?;
        if uri.query().is_some() || url.contains('#') {
            return Err(BackendUrlError::Query(url.to_owned()));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(BackendUrlError::UserInfo(url.to_owned()));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        Ok(BackendAddress {
            url: url.to_owned(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            host,
            path: uri.path().trim_end_matches('/').to_owned(),
            tls,
        })
    }

    /// `host:port` as a `Host` header carries it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_are_parsed() {
        let backend = BackendAddress::parse("ws://127.0.0.1:9001/base/", WEBSOCKET).expect("valid");
        assert_eq!(
            (backend.authority().as_str(), backend.path.as_str()),
            ("127.0.0.1:9001", "/base")
        );
        assert!(!backend.tls);
        let v6 = BackendAddress::parse("ws://[::1]", WEBSOCKET).expect("valid");
        assert_eq!(v6.authority(), "[::1]:80");
        let secure = BackendAddress::parse("wss://example.com", WEBSOCKET).expect("valid");
        assert_eq!(
            (secure.authority().as_str(), secure.tls),
            ("example.com:443", true)
        );
        assert_eq!(
            BackendAddress::parse("http://a:1", WEBSOCKET).map(|_| ()),
            Err(BackendUrlError::Scheme {
                url: "http://a:1".into(),
                expected: WEBSOCKET
            })
        );
        assert!(matches!(
            BackendAddress::parse("nonsense", WEBSOCKET),
            Err(BackendUrlError::Scheme { .. })
        ));
        assert!(matches!(
            BackendAddress::parse("ws://a b:1", WEBSOCKET),
            Err(BackendUrlError::NotAUrl { .. })
        ));
        assert!(matches!(
            BackendAddress::parse("ws://a:1/?x=1", WEBSOCKET),
            Err(BackendUrlError::Query(_))
        ));
        assert!(matches!(
            BackendAddress::parse("ws://user:secret@a:1", WEBSOCKET),
            Err(BackendUrlError::UserInfo(_))
        ));
    }

    #[test]
    fn hash_keys_round_trip_through_their_text() {
        for text in ["cookie:sid", "header:x-user", "client_ip"] {
            let key = HashKey::parse(text).expect(text);
            assert_eq!(String::from(key), text);
        }
    }
}

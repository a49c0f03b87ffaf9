//! Backend pools: round-robin over healthy backends, a short back-off for a
//! backend that refused a connection, and bounded connect time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::metrics::{BackendMeters, UpstreamErrorKind};

/// How long a backend that refused a connection is tried only as a last resort.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(3);

/// Why a backend URL in the config is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendUrlError {
    #[error("backend `{0}` is not a URL; write it like \"ws://127.0.0.1:9001\"")]
    NotAUrl(String),
    #[error("backend `{url}` must use {}:// or {}://", expected.plain, expected.tls)]
    Scheme { url: String, expected: Schemes },
    #[error("backend `{0}` has no host")]
    NoHost(String),
    #[error("backend `{0}` must not have a query or fragment")]
    Query(String),
}

/// Why no backend connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the route has no backends")]
    NoBackends,
    #[error("cannot connect to {backend}: {source}")]
    Refused {
        backend: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {backend} took longer than {after:?}")]
    Timeout { backend: String, after: Duration },
    #[error("TLS with {backend} failed: {source}")]
    Tls {
        backend: String,
        #[source]
        source: std::io::Error,
    },
}

impl ConnectError {
    /// The `kind` label of `wsgate_upstream_errors_total`.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            ConnectError::NoBackends | ConnectError::Refused { .. } => UpstreamErrorKind::Connect,
            ConnectError::Timeout { .. } => UpstreamErrorKind::ConnectTimeout,
            ConnectError::Tls { .. } => UpstreamErrorKind::Tls,
        }
    }
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

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// As written in the config; used in logs and metrics labels.
    pub url: String,
    host: String,
    port: u16,
    /// A path prefix from the URL, without a trailing slash ("" for none).
    pub path: String,
    /// Whether the URL's scheme asks for TLS (`wss://`, `https://`).
    pub tls: bool,
    /// Milliseconds (on the process clock) until which the backend is avoided.
    avoid_until_ms: AtomicU64,
    /// Set once, when the snapshot is attached to a running server's metrics.
    pub meters: OnceLock<BackendMeters>,
}

impl Backend {
    /// Parses `scheme://host[:port][/path]` with one of `schemes`; the port
    /// defaults to 80, or 443 over TLS.
    pub fn parse(url: &str, schemes: Schemes) -> Result<Backend, BackendUrlError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| BackendUrlError::NotAUrl(url.to_owned()))?;
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
        Ok(Backend {
            url: url.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: uri.path().trim_end_matches('/').to_owned(),
            tls,
            avoid_until_ms: AtomicU64::new(0),
            meters: OnceLock::new(),
        })
    }

    /// `host:port` as a `Host` header would carry it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn avoided(&self, now_ms: u64) -> bool {
        self.avoid_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Opens a TCP connection within `timeout`; a refusal puts the backend in back-off.
    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let started = Instant::now();
        let stream = self.connect_tcp(timeout).await?;
        self.connected(started);
        Ok(stream)
    }

    fn connected(&self, started: Instant) {
        if let Some(meters) = self.meters.get() {
            meters.connected(started.elapsed());
        }
    }

    async fn connect_tcp(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let result = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(ConnectError::Refused {
                backend: self.url.clone(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                backend: self.url.clone(),
                after: timeout,
            }),
        };
        match &result {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.avoid_until_ms.store(0, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, "backend connection failed");
                let until = now_ms() + REFUSED_BACKOFF.as_millis() as u64;
                self.avoid_until_ms.store(until, Ordering::Relaxed);
            }
        }
        result
    }

    /// Opens a TCP connection and runs a TLS handshake over it, each within
    /// `timeout`. The backend's certificate must be valid for the URL's host
    /// under `config`'s roots; there is deliberately no way to skip that.
    pub async fn connect_tls(
        &self,
        timeout: Duration,
        config: &Arc<ClientConfig>,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let started = Instant::now();
        let stream = self.connect_tcp(timeout).await?;
        let tls_error = |source| ConnectError::Tls {
            backend: self.url.clone(),
            source,
        };
        let server_name = ServerName::try_from(self.host.clone())
            .map_err(|e| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let connector = TlsConnector::from(Arc::clone(config));
        let result =
            match tokio::time::timeout(timeout, connector.connect(server_name, stream)).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(source)) => Err(tls_error(source)),
                Err(_) => Err(ConnectError::Timeout {
                    backend: self.url.clone(),
                    after: timeout,
                }),
            };
        match &result {
            Ok(_) => self.connected(started),
            // A certificate problem is the operator's to fix: say which and why.
            Err(error) => tracing::warn!(%error, "backend TLS handshake failed"),
        }
        result
    }
}

/// The backends of one route.
#[derive(Debug)]
pub struct BackendPool {
    backends: Vec<Backend>,
    next: AtomicUsize,
}

impl BackendPool {
    pub fn new(backends: Vec<Backend>) -> BackendPool {
        BackendPool {
            backends,
            next: AtomicUsize::new(0),
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Every backend once, in the order to try them: round-robin from the
    /// next in turn, backends in back-off after the others.
    pub fn order(&self) -> Vec<&Backend> {
        let count = self.backends.len();
        if count == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let now = now_ms();
        let rotated = (0..count).map(|i| &self.backends[(start + i) % count]);
        let (healthy, avoided): (Vec<&Backend>, Vec<&Backend>) =
            rotated.partition(|b| !b.avoided(now));
        healthy.into_iter().chain(avoided).collect()
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let backend = Backend::parse("ws://127.0.0.1:9001/base/", WEBSOCKET).expect("valid");
        assert_eq!(
            (backend.authority().as_str(), backend.path.as_str()),
            ("127.0.0.1:9001", "/base")
        );
        assert!(!backend.tls);
        let v6 = Backend::parse("ws://[::1]", WEBSOCKET).expect("valid");
        assert_eq!(v6.authority(), "[::1]:80");
        let secure = Backend::parse("wss://example.com", WEBSOCKET).expect("valid");
        assert_eq!(
            (secure.authority().as_str(), secure.tls),
            ("example.com:443", true)
        );
        assert_eq!(
            Backend::parse("http://a:1", WEBSOCKET).map(|_| ()),
            Err(BackendUrlError::Scheme {
                url: "http://a:1".into(),
                expected: WEBSOCKET
            })
        );
        assert!(matches!(
            Backend::parse("nonsense", WEBSOCKET),
            Err(BackendUrlError::Scheme { .. })
        ));
        assert!(matches!(
            Backend::parse("ws://a b:1", WEBSOCKET),
            Err(BackendUrlError::NotAUrl(_))
        ));
        assert!(matches!(
            Backend::parse("ws://a:1/?x=1", WEBSOCKET),
            Err(BackendUrlError::Query(_))
        ));
    }

    #[test]
    fn round_robin_puts_backends_in_back_off_last() {
        let pool = BackendPool::new(
            ["ws://a:1", "ws://b:1", "ws://c:1"]
                .iter()
                .map(|u| Backend::parse(u, WEBSOCKET).expect("valid"))
                .collect(),
        );
        let firsts: Vec<&str> = (0..3).map(|_| pool.order()[0].url.as_str()).collect();
        assert_eq!(firsts, ["ws://a:1", "ws://b:1", "ws://c:1"]);
        pool.backends[0]
            .avoid_until_ms
            .store(u64::MAX, Ordering::Relaxed);
        let order: Vec<&str> = pool.order().iter().map(|b| b.url.as_str()).collect();
        assert_eq!(order, ["ws://b:1", "ws://c:1", "ws://a:1"]);
    }
}

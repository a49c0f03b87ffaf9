//! Backend pools: which backend gets a request (balance and health), and
//! bounded, measured connects to it.

pub mod balance;
pub mod health;
mod log_throttle;
pub mod stream;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderMap;
use prometheus::IntCounter;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::metrics::{BackendMeters, UpstreamErrorKind};
pub use balance::{Balance, HashKey};
pub use health::HealthCheck;
use health::{now_ms, Health};
pub(crate) use log_throttle::warn_throttled;
pub use log_throttle::LogThrottle;
pub use stream::{UpstreamIo, UpstreamStream};

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
}

/// Why no backend connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no healthy backend: every one failed its health checks")]
    NoHealthyBackend,
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
            ConnectError::NoHealthyBackend => UpstreamErrorKind::NoHealthyBackend,
            ConnectError::Refused { .. } => UpstreamErrorKind::Connect,
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

/// `http://` and `https://`, for proxied HTTP.
pub const HTTP: Schemes = Schemes {
    plain: "http",
    tls: "https",
};

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// As written in the config; used in logs and metrics labels.
    pub url: String,
    host: String,
    port: u16,
    /// `host:port` as a `Host` header carries it, formed once.
    authority: String,
    /// A path prefix from the URL, without a trailing slash ("" for none).
    pub path: String,
    /// Whether the URL's scheme asks for TLS (`wss://`, `https://`).
    pub tls: bool,
    /// Who the backend is for consistent hashing: its `host:port`, so the
    /// `ws://` and `http://` URLs of one server pick alike.
    hash_id: u64,
    pub health: Health,
    /// Requests in flight or sessions open, for `least_connections`.
    busy: AtomicUsize,
    /// Set once, when the snapshot is attached to a running server's metrics.
    pub meters: OnceLock<BackendMeters>,
    /// Every warning about this backend goes through it.
    pub warnings: LogThrottle,
}

impl Backend {
    /// Parses `scheme://host[:port][/path]` with one of `schemes`; the port
    /// defaults to 80, or 443 over TLS.
    pub fn parse(url: &str, schemes: Schemes) -> Result<Backend, BackendUrlError> {
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
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Backend {
            url: url.to_owned(),
            hash_id: balance::stable_hash(format!("{host}:{port}").as_bytes()),
            authority,
            host,
            port,
            path: uri.path().trim_end_matches('/').to_owned(),
            tls,
            health: Health::default(),
            busy: AtomicUsize::new(0),
            meters: OnceLock::new(),
            warnings: LogThrottle::default(),
        })
    }

    /// `host:port` as a `Host` header would carry it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Counts a request or session on this backend while the guard lives.
    pub fn busy(self: &Arc<Backend>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Counts a failed attempt to use this backend.
    pub fn failed(&self, kind: UpstreamErrorKind) {
        if let Some(meters) = self.meters.get() {
            meters.failed(kind);
        }
    }

    /// Sets the `wsgate_upstream_healthy` gauge from the current verdict.
    pub fn show_health(&self) {
        if let Some(meters) = self.meters.get() {
            meters.healthy(self.health.is_healthy());
        }
    }

    async fn open_tcp(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(source)) => Err(ConnectError::Refused {
                backend: self.url.clone(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                backend: self.url.clone(),
                after: timeout,
            }),
        }
    }

    /// A TLS session over `stream`, within `timeout`. The backend's
    /// certificate must be valid for the URL's host under `config`'s roots;
    /// there is deliberately no way to skip that.
    async fn open_tls(
        &self,
        stream: TcpStream,
        timeout: Duration,
        config: &Arc<ClientConfig>,
    ) -> Result<UpstreamStream, ConnectError> {
        let tls_error = |source| ConnectError::Tls {
            backend: self.url.clone(),
            source,
        };
        let server_name = ServerName::try_from(self.host.clone())
            .map_err(|e| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let connector = TlsConnector::from(Arc::clone(config));
        match tokio::time::timeout(timeout, connector.connect(server_name, stream)).await {
            Ok(Ok(stream)) => Ok(UpstreamStream::Tls(Box::new(stream))),
            Ok(Err(source)) => Err(tls_error(source)),
            Err(_) => Err(ConnectError::Timeout {
                backend: self.url.clone(),
                after: timeout,
            }),
        }
    }
}

/// Keeps a backend's `busy` count one higher while it lives.
#[derive(Debug)]
pub struct Busy(Arc<Backend>);

impl Busy {
    pub fn backend(&self) -> &Backend {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends of one route's action, and how to reach them.
#[derive(Debug)]
pub struct BackendPool {
    backends: Vec<Arc<Backend>>,
    pub balance: Balance,
    next: AtomicUsize,
    pub connect_timeout: Duration,
    /// How `wss://`/`https://` backends are verified: the action's
    /// `backend_ca`, or the platform's roots. `None` when no backend uses TLS.
    pub tls: Option<Arc<ClientConfig>>,
    pub health_check: Option<HealthCheck>,
    /// Counts requests refused because every backend failed its health checks.
    pub no_healthy_backend: OnceLock<IntCounter>,
    /// Warnings about the pool as a whole (no backend left to try).
    pub warnings: LogThrottle,
}

impl BackendPool {
    pub fn new(backends: Vec<Backend>, connect_timeout: Duration) -> BackendPool {
        BackendPool {
            backends: backends.into_iter().map(Arc::new).collect(),
            balance: Balance::RoundRobin,
            next: AtomicUsize::new(0),
            connect_timeout,
            tls: None,
            health_check: None,
            no_healthy_backend: OnceLock::new(),
            warnings: LogThrottle::default(),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backends to try for one request, best first: by the pool's
    /// balance, those in passive back-off after the others, and none that
    /// the active health check took out.
    pub fn order(&self, headers: &HeaderMap, client_ip: IpAddr) -> Vec<&Arc<Backend>> {
        let count = self.backends.len();
        if count == 0 {
            return Vec::new();
        }
        let mut order: Vec<&Arc<Backend>> = match &self.balance {
            Balance::Hash(key) => {
                let key = key.hash(headers, client_ip);
                let mut order: Vec<&Arc<Backend>> = self.backends.iter().collect();
                order.sort_by_key(|b| std::cmp::Reverse(balance::score(key, b.hash_id)));
                order
            }
            Balance::RoundRobin | Balance::LeastConnections => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
                let mut order: Vec<&Arc<Backend>> = (0..count)
                    .map(|i| &self.backends[(start + i) % count])
                    .collect();
                if self.balance == Balance::LeastConnections {
                    // Stable: equally busy backends keep their round-robin turn.
                    order.sort_by_key(|b| b.busy.load(Ordering::Relaxed));
                }
                order
            }
        };
        order.retain(|b| b.health.probed_up());
        let now = now_ms();
        // Stable: the balance's order holds within each group.
        order.sort_by_key(|b| b.health.backing_off(now));
        order
    }

    /// Counts (and says) that a request found no backend to try.
    pub fn none_healthy(&self) -> ConnectError {
        if let Some(counter) = self.no_healthy_backend.get() {
            counter.inc();
        }
        ConnectError::NoHealthyBackend
    }

    /// Connects to `backend` (TCP, and TLS for `wss://`/`https://`) within
    /// the pool's `connect_timeout`, and keeps the books: connect time, the
    /// error count, and the backend's passive health.
    pub async fn connect(&self, backend: &Backend) -> Result<UpstreamStream, ConnectError> {
        let started = Instant::now();
        let result = self.open(backend).await;
        match &result {
            Ok(_) => {
                if let Some(meters) = backend.meters.get() {
                    meters.connected(started.elapsed());
                }
                let was_healthy = backend.health.is_healthy();
                backend.health.connect_succeeded();
                if !was_healthy {
                    backend.show_health();
                }
            }
            Err(error) => {
                let backoff = backend.health.connect_failed();
                backend.failed(error.kind());
                backend.show_health();
                warn_throttled!(
                    backend.warnings,
                    %error,
                    ?backoff,
                    "backend connection failed; trying it last until the back-off ends"
                );
            }
        }
        result
    }

    /// Opens a connection to `backend` without touching health or metrics
    /// (health probes use this).
    async fn open(&self, backend: &Backend) -> Result<UpstreamStream, ConnectError> {
        let timeout = self.connect_timeout;
        let stream = backend.open_tcp(timeout).await?;
        if !backend.tls {
            return Ok(UpstreamStream::Plain(stream));
        }
        match &self.tls {
            Some(config) => backend.open_tls(stream, timeout, config).await,
            None => Err(ConnectError::Tls {
                backend: backend.url.clone(),
                source: std::io::Error::other("the route has no TLS settings for this backend"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_are_parsed() {
        let backend = Backend::parse("ws://127.0.0.1:9001/base/", WEBSOCKET).expect("valid");
        assert_eq!(
            (backend.authority(), backend.path.as_str()),
            ("127.0.0.1:9001", "/base")
        );
        assert!(!backend.tls);
        let v6 = Backend::parse("ws://[::1]", WEBSOCKET).expect("valid");
        assert_eq!(v6.authority(), "[::1]:80");
        let secure = Backend::parse("wss://example.com", WEBSOCKET).expect("valid");
        assert_eq!((secure.authority(), secure.tls), ("example.com:443", true));
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
            Err(BackendUrlError::NotAUrl { .. })
        ));
        assert!(matches!(
            Backend::parse("ws://a:1/?x=1", WEBSOCKET),
            Err(BackendUrlError::Query(_))
        ));
    }

    fn pool(urls: &[&str], balance: Balance) -> BackendPool {
        let mut pool = BackendPool::new(
            urls.iter()
                .map(|u| Backend::parse(u, WEBSOCKET).expect("valid"))
                .collect(),
            Duration::from_secs(1),
        );
        pool.balance = balance;
        pool
    }

    fn names(order: Vec<&Arc<Backend>>) -> Vec<&str> {
        order.into_iter().map(|b| b.url.as_str()).collect()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_puts_backends_in_back_off_last() {
        let pool = pool(&["ws://a:1", "ws://b:1", "ws://c:1"], Balance::RoundRobin);
        let none = HeaderMap::new();
        let firsts: Vec<&str> = (0..3)
            .map(|_| pool.order(&none, IP)[0].url.as_str())
            .collect();
        assert_eq!(firsts, ["ws://a:1", "ws://b:1", "ws://c:1"]);
        pool.backends[0].health.connect_failed();
        assert_eq!(
            names(pool.order(&none, IP)),
            ["ws://b:1", "ws://c:1", "ws://a:1"]
        );
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let pool = pool(
            &["ws://a:1", "ws://b:1", "ws://c:1"],
            Balance::LeastConnections,
        );
        let none = HeaderMap::new();
        let _a = pool.backends[0].busy();
        let _c = [pool.backends[2].busy(), pool.backends[2].busy()];
        for _ in 0..3 {
            assert_eq!(pool.order(&none, IP)[0].url, "ws://b:1");
        }
        assert_eq!(names(pool.order(&none, IP))[2], "ws://c:1");
    }

    #[test]
    fn hashing_is_sticky_and_falls_over_in_score_order() {
        let key = HashKey::parse("header:x-user").expect("valid");
        let pool = pool(&["ws://a:1", "ws://b:1", "ws://c:1"], Balance::Hash(key));
        let mut headers = HeaderMap::new();
        headers.insert("x-user", http::HeaderValue::from_static("u1"));
        let first = names(pool.order(&headers, IP));
        for _ in 0..5 {
            assert_eq!(names(pool.order(&headers, IP)), first);
        }
        // http:// and ws:// URLs of the same servers pick the same one.
        let same = BackendPool::new(
            ["http://a:1", "http://b:1", "http://c:1"]
                .iter()
                .map(|u| Backend::parse(u, HTTP).expect("valid"))
                .collect(),
            Duration::from_secs(1),
        );
        let same = BackendPool {
            balance: pool.balance.clone(),
            ..same
        };
        let mirrored: Vec<String> = names(same.order(&headers, IP))
            .iter()
            .map(|u| u.replace("http", "ws"))
            .collect();
        assert_eq!(mirrored, first);
        let winner = pool
            .backends
            .iter()
            .position(|b| b.url == first[0])
            .expect("listed");
        pool.backends[winner].health.connect_failed();
        let order = names(pool.order(&headers, IP));
        assert_eq!(order, [first[1], first[2], first[0]]);
    }

    #[test]
    fn backends_the_health_check_took_out_get_nothing() {
        let pool = pool(&["ws://a:1", "ws://b:1"], Balance::RoundRobin);
        let check = HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 1,
            healthy_after: 1,
        };
        pool.backends[1].health.probed(false, &check);
        let none = HeaderMap::new();
        for _ in 0..3 {
            assert_eq!(names(pool.order(&none, IP)), ["ws://a:1"]);
        }
        pool.backends[0].health.probed(false, &check);
        assert!(pool.order(&none, IP).is_empty());
    }
}

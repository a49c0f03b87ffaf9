//! Backend pools: which backend gets a request (balance and health), and
//! bounded, measured connects to it.

pub mod balance;
pub mod health;
mod log_throttle;
pub mod stream;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use prometheus::IntCounter;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::metrics::{BackendMeters, UpstreamErrorKind};
use crate::model::{BackendAddress, Balance, HealthCheck, Pool};
use health::{now_ms, Health};
pub(crate) use log_throttle::warn_throttled;
pub use log_throttle::LogThrottle;
pub use stream::{UpstreamIo, UpstreamStream};

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
    /// `None` with metrics off.
    pub meters: Option<BackendMeters>,
    /// Every warning about this backend goes through it.
    pub warnings: LogThrottle,
    /// Set by the operator (`POST /backends/.../drain`): no new requests or
    /// sessions. Kept by reloads that keep the backend.
    drained: AtomicBool,
}

impl Backend {
    /// The backend at `address`, counted by `meters`.
    pub fn new(address: BackendAddress, meters: Option<BackendMeters>) -> Backend {
        let authority = address.authority();
        let BackendAddress {
            url,
            host,
            port,
            path,
            tls,
        } = address;
        Backend {
            url,
            hash_id: balance::stable_hash(format!("{host}:{port}").as_bytes()),
            authority,
            host,
            port,
            path,
            tls,
            health: Health::default(),
            busy: AtomicUsize::new(0),
            meters,
            warnings: LogThrottle::default(),
            drained: AtomicBool::new(false),
        }
    }

    /// Takes the backend out of (`true`) or back into new placements.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
        if let Some(meters) = &self.meters {
            meters.drained(drained);
        }
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Where the backend ranks for a key under consistent hashing.
    pub fn hash_score(&self, key: u64) -> u64 {
        balance::score(key, self.hash_id)
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
        if let Some(meters) = &self.meters {
            meters.failed(kind);
        }
    }

    /// Sets the `wsgate_upstream_healthy` gauge from the current verdict.
    pub fn show_health(&self) {
        if let Some(meters) = &self.meters {
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
    /// The backends are spoken to in HTTP/2 (a proxy route's `http2`), and
    /// so are their health checks.
    pub http2: bool,
    /// Counts requests refused because every backend failed its health checks.
    pub no_healthy_backend: Option<IntCounter>,
    /// Warnings about the pool as a whole (no backend left to try).
    pub warnings: LogThrottle,
}

impl BackendPool {
    /// A pool of `backends` (shared with the pool this one replaces, when a
    /// reload kept them) with the settings of `model`; `tls` verifies its
    /// `wss://`/`https://` backends.
    pub fn new(
        backends: Vec<Arc<Backend>>,
        model: &Pool,
        tls: Option<Arc<ClientConfig>>,
        no_healthy_backend: Option<IntCounter>,
    ) -> BackendPool {
        BackendPool {
            backends,
            balance: model.balance.clone(),
            next: AtomicUsize::new(0),
            connect_timeout: model.connect_timeout,
            tls,
            health_check: model.health_check.clone(),
            http2: false,
            no_healthy_backend,
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
                let key = balance::key_hash(key, headers, client_ip);
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
        order.retain(|b| b.health.probed_up() && !b.is_drained());
        let now = now_ms();
        // Stable: the balance's order holds within each group.
        order.sort_by_key(|b| b.health.backing_off(now));
        order
    }

    /// The consistent-hash key of a request, when the pool places by hash.
    pub fn placement_key(&self, headers: &HeaderMap, client_ip: IpAddr) -> Option<u64> {
        match &self.balance {
            Balance::Hash(key) => Some(balance::key_hash(key, headers, client_ip)),
            Balance::RoundRobin | Balance::LeastConnections => None,
        }
    }

    /// Counts (and says) that a request found no backend to try.
    pub fn none_healthy(&self) -> ConnectError {
        if let Some(counter) = &self.no_healthy_backend {
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
                if let Some(meters) = &backend.meters {
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
    use crate::model::{HashKey, HealthCheck, Schemes, HTTP, WEBSOCKET};

    fn pool_of(urls: &[&str], schemes: Schemes, balance: Balance) -> BackendPool {
        let backends = urls
            .iter()
            .map(|u| BackendAddress::parse(u, schemes).expect("valid"))
            .collect::<Vec<_>>();
        let model = Pool {
            backends: backends.clone(),
            balance,
            connect_timeout: Duration::from_secs(1),
            roots: None,
            health_check: None,
        };
        let backends = backends
            .into_iter()
            .map(|address| Arc::new(Backend::new(address, None)))
            .collect();
        BackendPool::new(backends, &model, None, None)
    }

    fn pool(urls: &[&str], balance: Balance) -> BackendPool {
        pool_of(urls, WEBSOCKET, balance)
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
        let same = pool_of(
            &["http://a:1", "http://b:1", "http://c:1"],
            HTTP,
            pool.balance.clone(),
        );
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

//! The immutable, validated, compiled configuration that requests are served
//! from. A reload builds a new one and swaps it in; a request or connection
//! keeps the one it started with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::forwarding::TrustedProxies;
use crate::metrics::ListenerMeters;
use crate::proxy::ProxyRoute;

use crate::router::Router;
use crate::static_files::StaticDir;
use crate::tls::ServerTls;

/// Header read timeout when the config does not set one.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's `send_timeout` default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Request head (request line plus headers) size limit when the config does not set one.
pub const DEFAULT_MAX_REQUEST_HEAD: usize = 64 * 1024;
/// How long a graceful shutdown waits for in-flight work when the config does not say.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sessions a reload cut off keep running, when the config does not say.
pub const DEFAULT_RELOAD_GRACE: Duration = Duration::from_secs(30);
/// Over how long session closes are spread, when the config does not say.
pub const DEFAULT_DRAIN_SPREAD: Duration = Duration::from_secs(10);
/// Client connections served at once (an upgraded WebSocket counts as one)
/// when the config does not say; each proxied session also needs a backend
/// socket, so twice this must fit the open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Total bytes of small files kept in memory when the config does not say.
pub const DEFAULT_FILE_CACHE_SIZE: u64 = 64 * 1024 * 1024;
/// Files up to this size are cached in memory when the config does not say.
pub const DEFAULT_FILE_CACHE_MAX_FILE: u64 = 64 * 1024;

/// A whole running configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub listeners: Vec<Listener>,
    pub admin: SocketAddr,
    /// Whether the admin listener serves `/metrics` and the data path counts.
    pub metrics: bool,
    pub limits: Limits,
    pub drain: Drain,
    /// Whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    pub router: Router,
    /// Each route's table as the config file wrote it, by route name: what
    /// `GET /config` shows and `wsgate check --diff` compares.
    pub route_sources: BTreeMap<String, toml::Table>,
}

/// One public listener's settings.
#[derive(Debug)]
pub struct Listener {
    pub bind: SocketAddr,
    /// Present when the listener terminates TLS (https, wss).
    pub tls: Option<Arc<ServerTls>>,
    /// On a plaintext listener: answer every request with a 308 to the
    /// `https://` URL, on this port.
    pub redirect_https: Option<u16>,
    /// Set once, when the snapshot is attached to a running server's metrics.
    pub meters: OnceLock<ListenerMeters>,
}

impl Listener {
    /// A plaintext listener that serves routes.
    pub fn plain(bind: SocketAddr) -> Listener {
        Listener {
            bind,
            tls: None,
            redirect_https: None,
            meters: OnceLock::new(),
        }
    }
}

/// Process-wide bounds that keep slow or greedy clients from holding resources.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// How long a write to a client may wait for it to read; zero is off.
    pub send_timeout: Duration,
    pub max_request_head: usize,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_request_head: DEFAULT_MAX_REQUEST_HEAD,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How the server winds sessions and listeners down, on shutdown and on reload.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// From `SIGTERM` to the end: sessions and requests still open then are cut.
    pub shutdown_timeout: Duration,
    /// From `SIGTERM` (`/readyz` answers 503 at once) until the listeners
    /// stop accepting, so load balancers notice before connections are refused.
    pub shutdown_delay: Duration,
    /// Session closes (1001 on shutdown, 1012 after a reload) are spread
    /// evenly over this, so clients do not all reconnect at once.
    pub spread: Duration,
    /// How long sessions whose route or backend a reload removed keep running.
    pub reload_grace: Duration,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            shutdown_delay: Duration::ZERO,
            spread: DEFAULT_DRAIN_SPREAD,
            reload_grace: DEFAULT_RELOAD_GRACE,
        }
    }
}

/// What a route answers to plain (non-upgrade) requests.
#[derive(Debug)]
pub enum Content {
    /// Files below a directory.
    Static(StaticDir),
    /// A page compiled into the binary (the demo).
    Embedded(EmbeddedPage),
    /// Backends that the request is proxied to.
    Proxy(ProxyRoute),
}

/// A single page compiled into the binary, served at its route's prefix.
#[derive(Debug)]
pub struct EmbeddedPage {
    pub html: &'static str,
}

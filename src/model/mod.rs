//! The configuration as plain data: what `config::validate` returns, what
//! `GET /config` serves and `wsgate check --diff` and a reload compare. It
//! holds no sockets, tasks, caches or metric handles; the runtime
//! (`snapshot`) is built from it, and a reload is `diff(old, new)` → apply.
//!
//! Certificates and keys are read once, at validation, and carried here as
//! [`Material`] so the runtime never reads a file the checks did not
//! see; they compare and serialise by fingerprint, never by content.

mod auth;
mod compress;
pub mod diff;
mod error_pages;
mod headers;
mod host;
mod limits;
mod listener;
mod log;
mod pool;
mod redirect;
mod route;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::forwarding::TrustedProxies;
pub use auth::{Auth, BasicAuth, ClientCertAuth, ForwardAuth, JwtAuth, TokenSource};
pub use compress::{Coding, Compress};
pub use error_pages::{ErrorPage, ErrorPages, StatusMatch};
pub use headers::{Cors, HeaderRules, RouteHeaders};
pub use host::HostMatch;
pub use limits::{
    RateExceeded, RateLimit, SessionLimits, DEFAULT_CLIENT_IPV6_PREFIX, DEFAULT_MAX_TRACKED_CLIENTS,
};
pub use listener::{
    Acme, AcmeChallenge, Certificate, ClientAuth, Listener, ListenerTls, TicketKeys,
};
pub use log::{AccessLogSettings, LogRequests, LogTarget, RouteLogging};
pub use pool::{
    BackendAddress, BackendRoots, BackendUrlError, Balance, HashKey, HealthCheck, Pool, Schemes,
    DEFAULT_CONNECT_TIMEOUT, HTTP, WEBSOCKET,
};
pub use redirect::{Piece, Redirect, Rewrite, Target, TargetError, TrailingSlash};
pub use route::{
    Content, Page, Policy, ProxyAction, ProxySettings, Route, StaticSettings, WebSocketAction,
};

/// Header read timeout when the config does not set one.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's `send_timeout` default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `keepalive_timeout` default.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
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

/// A whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub listeners: Vec<Listener>,
    pub admin: SocketAddr,
    /// Whether the admin listener serves `/metrics` and the data path counts.
    pub metrics: bool,
    pub limits: Limits,
    pub drain: Drain,
    pub file_cache: FileCache,
    /// Whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    pub access_log: AccessLogSettings,
    /// Pages for the error answers of every route (and of requests no route takes).
    #[serde(default)]
    pub error_pages: ErrorPages,
    /// In the order the file lists them.
    pub routes: Vec<Route>,
}

impl Model {
    /// The route named `name` (names are unique in a config).
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.name == name)
    }
}

/// Process-wide bounds that keep slow or greedy clients from holding resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// How long a write to a client may wait for it to read; zero is off.
    pub send_timeout: Duration,
    /// How long an HTTP/2 connection with no open stream is kept; zero is off.
    pub keepalive_timeout: Duration,
    pub max_request_head: usize,
    pub max_connections: usize,
    /// Connections one client (see `client_ipv6_prefix`) may hold open.
    pub max_connections_per_client: Option<u32>,
    /// IPv6 clients count per network of this prefix length for every
    /// per-client limit.
    pub client_ipv6_prefix: u8,
    /// Rate-limit states kept at most; see `client_limits::RateTable`.
    pub max_tracked_clients: usize,
    /// Responses compressed on the fly at once; more go uncompressed.
    #[serde(default = "default_max_compressed_streams")]
    pub max_compressed_streams: usize,
}

fn default_max_compressed_streams() -> usize {
    DEFAULT_MAX_COMPRESSED_STREAMS
}

/// Each compressed stream holds its encoder's state (0.2 to 1.7 MiB at the
/// default levels, docs/configuration.md): 256 bound that near 450 MiB.
pub const DEFAULT_MAX_COMPRESSED_STREAMS: usize = 256;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_request_head: DEFAULT_MAX_REQUEST_HEAD,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: None,
            client_ipv6_prefix: DEFAULT_CLIENT_IPV6_PREFIX,
            max_tracked_clients: DEFAULT_MAX_TRACKED_CLIENTS,
            max_compressed_streams: DEFAULT_MAX_COMPRESSED_STREAMS,
        }
    }
}

/// How the server winds sessions and listeners down, on shutdown and on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The in-memory cache of small static files, shared by every static route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCache {
    /// Total bytes kept.
    pub size: u64,
    /// Files up to this size are cached.
    pub max_file: u64,
}

impl Default for FileCache {
    fn default() -> FileCache {
        FileCache {
            size: DEFAULT_FILE_CACHE_SIZE,
            max_file: DEFAULT_FILE_CACHE_MAX_FILE,
        }
    }
}

/// Material read from files during validation (a certificate with its key,
/// CA certificates), handed to the runtime as it was checked. It is never
/// serialised (`/config` must not expose keys) and never compared: the
/// fingerprint stored next to it stands for it.
pub struct Material<T>(Option<Arc<T>>);

// By hand: the derive would ask `T: Clone`, and only the `Arc` is cloned.
impl<T> Clone for Material<T> {
    fn clone(&self) -> Material<T> {
        Material(self.0.clone())
    }
}

impl<T> Material<T> {
    /// Material read now, owned by the model.
    pub fn new(value: T) -> Material<T> {
        Material(Some(Arc::new(value)))
    }

    /// Material already shared elsewhere.
    pub fn shared(value: Arc<T>) -> Material<T> {
        Material(Some(value))
    }

    /// `None` in a model read back from `GET /config`.
    pub fn get(&self) -> Option<&Arc<T>> {
        self.0.as_ref()
    }
}

impl<T> Default for Material<T> {
    fn default() -> Material<T> {
        Material(None)
    }
}

impl<T> PartialEq for Material<T> {
    fn eq(&self, _other: &Material<T>) -> bool {
        true
    }
}

impl<T> fmt::Debug for Material<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Read" } else { "NotRead" })
    }
}

/// SHA-1 over DER blocks, in hex: how `openssl x509 -fingerprint` names a
/// certificate, and here only a way to tell whether a file's content changed.
pub fn fingerprint<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha1::new();
    for block in blocks {
        hasher.update(block);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

//! Routes and their actions, as validated: which requests a route takes and
//! what it does with plain requests and with WebSocket upgrades.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Auth, Compress, ErrorPages, HostMatch, Pool, RateLimit, Redirect, Rewrite, RouteHeaders,
    RouteLogging, SessionLimits, TrailingSlash,
};

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Unique in a config: labels the route's metrics and names it in reloads.
    pub name: String,
    pub host: HostMatch,
    /// Normalised, without a trailing slash except for the root `/`.
    pub path: String,
    /// What plain (non-upgrade) requests get; `None` for upgrade-only routes.
    pub content: Option<Content>,
    /// Where WebSocket upgrades go; `None`: upgrades get 404.
    pub websocket: Option<WebSocketAction>,
    /// What the access log records of this route.
    #[serde(default)]
    pub logging: RouteLogging,
    /// Requests per client on this route, upgrades included.
    #[serde(default)]
    pub request_rate: Option<RateLimit>,
    /// Who may use the route.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Header rules for what the route forwards and answers, and HSTS.
    #[serde(default)]
    pub headers: RouteHeaders,
    /// Changes the path before the action sees it.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Redirects the non-canonical spelling of a path.
    #[serde(default)]
    pub trailing_slash: Option<TrailingSlash>,
    /// Pages for the route's error answers, before the global ones.
    #[serde(default)]
    pub error_pages: ErrorPages,
    /// Backends' error answers get the error pages too, not only wsgate's own.
    #[serde(default)]
    pub intercept_backend_errors: bool,
    /// Responses compressed on the fly (static files once, then cached).
    #[serde(default)]
    pub compress: Option<Compress>,
}

/// What a route answers plain requests with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Static(StaticSettings),
    Proxy(ProxyAction),
    /// A page compiled into the binary.
    Page(Page),
    /// A redirect elsewhere.
    Redirect(Redirect),
}

impl Content {
    /// The config key that sets it, for reports of what changed.
    pub fn key(&self) -> &'static str {
        match self {
            Content::Static(_) => "static",
            Content::Proxy(_) => "proxy",
            Content::Page(_) => "page",
            Content::Redirect(_) => "redirect",
        }
    }
}

/// The pages compiled into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Page {
    /// The built-in demo's page.
    Demo,
}

/// `static = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticSettings {
    /// Canonical, so a resolved file can be checked to lie below it.
    pub root: PathBuf,
    pub index: String,
    /// A valid header value.
    pub cache_control: Option<String>,
    pub precompressed: bool,
    /// Name patterns (`*`, `?`) never served; `.well-known` always is.
    pub hide: Vec<String>,
}

impl StaticSettings {
    /// What `hide` is when the config does not set it: every dot-name
    /// (`.env`, `.git`), as Caddy's `hide` and nginx's usual `location ~ /\.`.
    pub const DEFAULT_HIDE: &'static str = ".*";
}

/// `proxy = { ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyAction {
    pub pool: Pool,
    pub settings: ProxySettings,
}

/// `proxy = { ... }` settings other than the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySettings {
    /// For the response head, connect included, counted from the last piece
    /// of request body taken from the client.
    pub response_timeout: Duration,
    /// The longest pause in a request or response body; zero is off.
    pub body_timeout: Duration,
    /// Further backends tried after a failure that allows it.
    pub retries: u32,
    /// Send the client's `Host`; otherwise the backend's own authority.
    pub preserve_host: bool,
    pub strip_prefix: bool,
    /// Speak HTTP/2 to the backends: with prior knowledge (h2c) to
    /// `http://` ones, by ALPN to `https://` ones; requests from every
    /// client share a few multiplexed connections.
    #[serde(default)]
    pub http2: bool,
}

/// `websocket = { ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebSocketAction {
    pub pool: Pool,
    /// Allowed `Origin` values; empty allows every origin.
    pub origins: Vec<String>,
    pub require_origin: bool,
    /// Subprotocols a client must offer one of; empty skips the check.
    pub subprotocols: Vec<String>,
    pub policy: Policy,
    pub strip_prefix: bool,
    /// HTTP/2 clients may open sessions as streams of their connection
    /// (RFC 8441); off, they open them over HTTP/1.1.
    #[serde(default = "yes")]
    pub over_http2: bool,
    /// Upgrade requests per client.
    #[serde(default)]
    pub handshake_rate: Option<RateLimit>,
    /// Sessions one client may hold open on the route.
    #[serde(default)]
    pub max_sessions_per_client: Option<u32>,
}

impl WebSocketAction {
    /// Upgrades relayed to `pool`, from any origin, with the default policy.
    pub fn new(pool: Pool) -> WebSocketAction {
        WebSocketAction {
            pool,
            origins: Vec::new(),
            require_origin: false,
            subprotocols: Vec::new(),
            policy: Policy::default(),
            strip_prefix: false,
            over_http2: true,
            handshake_rate: None,
            max_sessions_per_client: None,
        }
    }
}

/// A route's limits and liveness settings for its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub max_message_size: u64,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub limits: SessionLimits,
}

impl Default for Policy {
    /// The defaults of a `websocket` action (docs/configuration.md).
    fn default() -> Policy {
        Policy {
            max_message_size: 1 << 20,
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            idle_timeout: None,
            limits: SessionLimits::default(),
        }
    }
}

impl Route {
    /// A route for any host at `path` with no action and every other key
    /// at its default; callers set the rest.
    pub fn new(name: &str, path: &str) -> Route {
        Route {
            name: name.to_owned(),
            host: HostMatch::Any,
            path: path.to_owned(),
            content: None,
            websocket: None,
            logging: RouteLogging::default(),
            request_rate: None,
            auth: None,
            headers: RouteHeaders::default(),
            rewrite: None,
            trailing_slash: None,
            error_pages: ErrorPages::default(),
            intercept_backend_errors: false,
            compress: None,
        }
    }

    /// The backend pools of the route's actions: WebSocket first, then proxy.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        let websocket = self.websocket.as_ref().map(|ws| &ws.pool);
        let proxy = match &self.content {
            Some(Content::Proxy(proxy)) => Some(&proxy.pool),
            _ => None,
        };
        let forward = self
            .auth
            .as_ref()
            .and_then(|auth| auth.forward.as_ref())
            .map(|forward| &forward.pool);
        let jwks = self
            .auth
            .as_ref()
            .and_then(|auth| auth.jwt.as_ref())
            .and_then(|jwt| jwt.keys_pool.as_ref());
        websocket
            .into_iter()
            .chain(proxy)
            .chain(forward)
            .chain(jwks)
    }

    /// Whether the route sets any per-client or per-session limit.
    pub fn has_limits(&self) -> bool {
        let websocket = self.websocket.as_ref().is_some_and(|ws| {
            let session = &ws.policy.limits;
            ws.handshake_rate.is_some()
                || ws.max_sessions_per_client.is_some()
                || session.client_message_rate.is_some()
                || session.client_byte_rate.is_some()
        });
        self.request_rate.is_some() || websocket
    }

    /// The config keys whose values differ between this route and `other`.
    pub fn changed_keys(&self, other: &Route) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.content != other.content {
            for content in [&self.content, &other.content].into_iter().flatten() {
                if !keys.contains(&content.key()) {
                    keys.push(content.key());
                }
            }
        }
        let (headers, theirs) = (&self.headers, &other.headers);
        let differs = [
            ("host", self.host != other.host),
            ("path", self.path != other.path),
            ("websocket", self.websocket != other.websocket),
            (
                "access_log",
                self.logging.requests != other.logging.requests,
            ),
            ("log_query", self.logging.query != other.logging.query),
            ("request_rate", self.request_rate != other.request_rate),
            ("auth", self.auth != other.auth),
            ("request_headers", headers.request != theirs.request),
            ("response_headers", headers.response != theirs.response),
            ("hsts", headers.hsts != theirs.hsts),
            ("cors", headers.cors != theirs.cors),
            ("rewrite", self.rewrite != other.rewrite),
            (
                "trailing_slash",
                self.trailing_slash != other.trailing_slash,
            ),
            ("error_pages", self.error_pages != other.error_pages),
            (
                "intercept_backend_errors",
                self.intercept_backend_errors != other.intercept_backend_errors,
            ),
            ("compress", self.compress != other.compress),
        ];
        keys.extend(
            differs
                .into_iter()
                .filter(|(_, differ)| *differ)
                .map(|(key, _)| key),
        );
        keys.sort_unstable();
        keys
    }
}

/// Serde's default for flags that are on unless turned off.
fn yes() -> bool {
    true
}

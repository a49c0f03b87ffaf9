//! The running routes, and which one a request gets from its host and
//! normalised path. Picking is pure: no I/O.
//!
//! Routes are kept sorted most specific first (exact host, then wildcard host
//! by suffix length, then host-less; within each, longest path prefix first),
//! so the first route that matches is the answer.

use std::sync::Arc;

use crate::auth::RouteAuth;
use crate::client_limits::RateRule;
use crate::compression::Policy;
use crate::error_pages::ErrorPages;
use crate::header_rules::RouteRules;
use crate::metrics::{HttpMeters, LimitMeters};
use crate::model::{HostMatch, RouteLogging, TrailingSlash};
use crate::proxy::ProxyRoute;
use crate::redirects::{Redirect, Rewrite};
use crate::static_files::{EmbeddedPage, StaticDir};
use crate::upstream::BackendPool;
use crate::websocket::WebSocketRoute;

/// One compiled `[[routes]]` entry.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub host: HostMatch,
    /// Normalised, without a trailing slash except for the root `/`.
    pub prefix: String,
    /// What plain (non-upgrade) requests get; `None` for upgrade-only routes.
    pub content: Option<Content>,
    /// Where WebSocket upgrades go; `None`: upgrades get 404.
    pub websocket: Option<Arc<WebSocketRoute>>,
    /// `None` with metrics off.
    pub meters: Option<HttpMeters>,
    /// What the access log records of the route.
    pub logging: RouteLogging,
    /// Requests per client, upgrades included.
    pub request_rate: Option<RateRule>,
    /// `None` with metrics off.
    pub limit_meters: Option<LimitMeters>,
    /// Who may use the route; checked before its action.
    pub auth: Option<RouteAuth>,
    /// Header rules for what the route forwards and answers, and HSTS.
    pub headers: Arc<RouteRules>,
    /// Changes the path before the action sees it.
    pub rewrite: Option<Rewrite>,
    /// Redirects the non-canonical spelling of a path.
    pub trailing_slash: Option<TrailingSlash>,
    /// Pages for the route's error answers, before the global ones.
    pub error_pages: ErrorPages,
    /// Backends' error answers get the pages too.
    pub intercept_backend_errors: bool,
    /// What the route compresses on the fly (its static files share it).
    pub compress: Option<Arc<Policy>>,
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
    /// A redirect elsewhere.
    Redirect(Redirect),
}

impl Route {
    /// The backend pools of the route: WebSocket, proxy, then the auth service's.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<BackendPool>> {
        let websocket = self.websocket.as_ref().map(|ws| &ws.backends);
        let proxy = match &self.content {
            Some(Content::Proxy(proxy)) => Some(&proxy.backends),
            _ => None,
        };
        let auth = self.auth.iter().flat_map(RouteAuth::pools);
        websocket.into_iter().chain(proxy).chain(auth)
    }

    /// The part of `path` below this route's prefix, always starting with `/`
    /// unless it is empty (the request named the prefix itself, without slash).
    /// A path a rewrite moved out from under the prefix is returned whole.
    pub fn strip_prefix<'p>(&self, path: &'p str) -> &'p str {
        if self.prefix == "/" {
            return path;
        }
        path.strip_prefix(self.prefix.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(path)
    }

    fn matches_path(&self, path: &str) -> bool {
        self.prefix == "/"
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// All routes of a snapshot, most specific first.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// Some route takes WebSockets on HTTP/2 streams: HTTP/2 connections
    /// offer them (RFC 8441 SETTINGS_ENABLE_CONNECT_PROTOCOL).
    websocket_over_h2: bool,
}

impl Router {
    /// Sorts the routes by specificity.
    pub fn new(mut routes: Vec<Route>) -> Router {
        routes.sort_by(|a, b| {
            a.host
                .rank()
                .cmp(&b.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        let websocket_over_h2 = routes
            .iter()
            .any(|route| route.websocket.as_ref().is_some_and(|ws| ws.over_http2));
        Router {
            routes,
            websocket_over_h2,
        }
    }

    /// Whether HTTP/2 connections offer WebSockets on their streams.
    pub fn websocket_over_h2(&self) -> bool {
        self.websocket_over_h2
    }

    /// The most specific route for `host` (without port) and a normalised `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.host.matches(host) && route.matches_path(path))
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The host name of a `Host` header or URI authority: port and trailing dot removed.
pub fn host_name(authority: &str) -> &str {
    let without_port = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(name, _port)| name)
    };
    without_port.strip_suffix('.').unwrap_or(without_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str) -> Route {
        Route {
            name: name.to_owned(),
            host: host.map_or(HostMatch::Any, |h| HostMatch::parse(h).expect(h)),
            prefix: prefix.to_owned(),
            content: None,
            websocket: None,
            meters: None,
            logging: Default::default(),
            request_rate: None,
            limit_meters: None,
            auth: None,
            headers: Default::default(),
            rewrite: None,
            trailing_slash: None,
            error_pages: ErrorPages::default(),
            intercept_backend_errors: false,
            compress: None,
        }
    }

    fn router() -> Router {
        Router::new(vec![
            route("root", None, "/"),
            route("ws", None, "/ws"),
            route("ws-deep", None, "/ws/deep"),
            route("chat", Some("chat.example.com"), "/"),
            route("chat-ws", Some("chat.example.com"), "/ws"),
            route("any-sub", Some("*.example.com"), "/"),
            route("any-api", Some("*.api.example.com"), "/"),
        ])
    }

    fn pick(host: Option<&str>, path: &str) -> Option<String> {
        router().route(host, path).map(|r| r.name.clone())
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert_eq!(pick(None, "/ws").as_deref(), Some("ws"));
        assert_eq!(pick(None, "/ws/").as_deref(), Some("ws"));
        assert_eq!(pick(None, "/ws/a").as_deref(), Some("ws"));
        assert_eq!(pick(None, "/ws-test.html").as_deref(), Some("root"));
        assert_eq!(pick(None, "/wsx").as_deref(), Some("root"));
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(pick(None, "/ws/deep/x").as_deref(), Some("ws-deep"));
        assert_eq!(pick(None, "/ws/deeper").as_deref(), Some("ws"));
    }

    #[test]
    fn host_specific_routes_come_first_case_insensitively() {
        assert_eq!(
            pick(Some("CHAT.example.com"), "/ws/x").as_deref(),
            Some("chat-ws")
        );
        assert_eq!(
            pick(Some("chat.example.com"), "/other").as_deref(),
            Some("chat")
        );
        assert_eq!(
            pick(Some("x.example.com"), "/ws").as_deref(),
            Some("any-sub")
        );
        assert_eq!(
            pick(Some("a.b.api.example.com"), "/").as_deref(),
            Some("any-api")
        );
        assert_eq!(pick(Some("example.com"), "/ws").as_deref(), Some("ws"));
        assert_eq!(pick(Some("other.org"), "/ws").as_deref(), Some("ws"));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let router = Router::new(vec![route("only", Some("a.example"), "/app")]);
        assert!(router.route(Some("a.example"), "/").is_none());
        assert!(router.route(Some("b.example"), "/app").is_none());
        assert!(router.route(None, "/app").is_none());
    }

    #[test]
    fn host_names_lose_port_and_trailing_dot() {
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("example.com"), "example.com");
    }
}

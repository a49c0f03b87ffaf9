//! The built-in demo: `wsgate` with no arguments serves a page, compiled into
//! the binary, whose browser code talks WebSocket to `/echo`, which the
//! gateway relays to an in-process echo backend.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::forwarding::TrustedProxies;
use crate::response;
use crate::router::{HostMatch, Route, Router};
use crate::snapshot::{Content, Drain, EmbeddedPage, Limits, Listener, Snapshot};
use crate::upstream::{self, Backend, BackendPool};
use crate::websocket::{Policy, WebSocketRoute};

/// Where the demo page is served.
pub const DEMO_BIND: &str = "127.0.0.1:8080";
/// Where the demo's admin endpoints are served.
pub const DEMO_ADMIN_BIND: &str = "127.0.0.1:9090";

const PAGE: &str = include_str!("demo/index.html");

/// The demo's configuration: the page at `/`, WebSocket `/echo` to the echo backend at `echo`.
pub fn snapshot(bind: SocketAddr, admin: SocketAddr, echo: SocketAddr) -> Snapshot {
    let page = Route {
        name: "demo".to_owned(),
        host: HostMatch::Any,
        prefix: "/".to_owned(),
        content: Some(Content::Embedded(EmbeddedPage { html: PAGE })),
        websocket: None,
        meters: OnceLock::new(),
    };
    let echo_backend = Backend::parse(&format!("ws://{echo}"), upstream::WEBSOCKET).ok();
    let echo = Route {
        name: "echo".to_owned(),
        host: HostMatch::Any,
        prefix: "/echo".to_owned(),
        content: None,
        websocket: Some(Arc::new(WebSocketRoute {
            backends: Arc::new(BackendPool::new(
                echo_backend.into_iter().collect(),
                Duration::from_secs(5),
            )),
            origins: Vec::new(),
            require_origin: false,
            subprotocols: Vec::new(),
            policy: Policy {
                max_message_size: 1 << 20,
                ping_interval: Some(Duration::from_secs(30)),
                ping_timeout: Duration::from_secs(10),
                idle_timeout: None,
            },
            strip_prefix: false,
            meters: OnceLock::new(),
        })),
        meters: OnceLock::new(),
    };
    Snapshot {
        listeners: vec![Listener::plain(bind)],
        admin,
        metrics: true,
        limits: Limits::default(),
        drain: Drain::default(),
        trusted_proxies: TrustedProxies::default(),
        router: Router::new(vec![page, echo]),
        route_sources: BTreeMap::new(),
    }
}

/// Serves an embedded page at its route's prefix (and `index.html`); nothing else.
pub fn serve_page<B>(req: &Request<B>, page: &EmbeddedPage, relative: &str) -> Response<Body> {
    if !matches!(relative, "" | "/" | "/index.html") {
        return response::status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response::method_not_allowed("GET, HEAD");
    }
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(page.html)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(page.html.len()));
    response
}

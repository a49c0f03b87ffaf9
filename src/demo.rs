//! The built-in demo: `wsgate` with no arguments serves a page, compiled into
//! the binary, whose browser code talks WebSocket to `/echo`, which the
//! gateway relays to an in-process echo backend.

use std::net::SocketAddr;

use crate::model::{
    BackendAddress, Content, Listener, Model, Page, Pool, Route, WebSocketAction, WEBSOCKET,
};

/// Where the demo page is served.
pub const DEMO_BIND: &str = "127.0.0.1:8080";
/// Where the demo's admin endpoints are served.
pub const DEMO_ADMIN_BIND: &str = "127.0.0.1:9090";

/// The demo page ([`Page::Demo`]).
pub const PAGE: &str = include_str!("demo/index.html");

/// The demo's configuration: the page at `/`, WebSocket `/echo` to the echo backend at `echo`.
pub fn model(bind: SocketAddr, admin: SocketAddr, echo: SocketAddr) -> Model {
    let page = Route {
        content: Some(Content::Page(Page::Demo)),
        ..Route::new("demo", "/")
    };
    let echo_backend = BackendAddress::parse(&format!("ws://{echo}"), WEBSOCKET).ok();
    let echo = Route {
        websocket: Some(WebSocketAction::new(Pool::new(
            echo_backend.into_iter().collect(),
        ))),
        ..Route::new("echo", "/echo")
    };
    Model {
        listeners: vec![Listener::plain(bind)],
        admin,
        metrics: true,
        limits: Default::default(),
        drain: Default::default(),
        file_cache: Default::default(),
        trusted_proxies: Default::default(),
        access_log: Default::default(),
        error_pages: Default::default(),
        routes: vec![page, echo],
    }
}

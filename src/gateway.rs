//! One request through the data path: snapshot → normalised path → route → action.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode, Version};

use crate::body::Body;
use crate::request_path;
use crate::response;
use crate::router::host_name;
use crate::snapshot::{Content, Snapshot};
use crate::{demo, static_files};

/// State shared by every connection of a running server.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    draining: AtomicBool,
}

impl Gateway {
    pub fn new(snapshot: Snapshot) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            draining: AtomicBool::new(false),
        })
    }

    /// The current config; callers keep it for the whole request or session.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether a graceful shutdown has begun (`/readyz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Answers one request on a public listener.
pub async fn handle<B>(
    gateway: Arc<Gateway>,
    req: Request<B>,
) -> Result<Response<Body>, Infallible> {
    let snapshot = gateway.snapshot();
    let path = match request_path::normalize(req.uri().path()) {
        Ok(path) => path,
        Err(error) => {
            tracing::debug!(path = req.uri().path(), %error, "refused request path");
            return Ok(response::status(StatusCode::BAD_REQUEST));
        }
    };
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(()) => return Ok(response::status(StatusCode::BAD_REQUEST)),
    };
    let Some(route) = snapshot.router.route(host, &path) else {
        return Ok(response::status(StatusCode::NOT_FOUND));
    };
    if is_websocket_upgrade(req.headers()) {
        // No route accepts WebSocket upgrades yet (DESIGN.md: upgrade to a route without `websocket` → 404).
        return Ok(response::status(StatusCode::NOT_FOUND));
    }
    let relative = route.strip_prefix(&path);
    let response = match &route.content {
        Some(Content::Static(dir)) => static_files::serve(&req, dir, relative),
        Some(Content::Embedded(page)) => demo::serve_page(&req, page, relative),
        None => response::status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

/// The host the request is for: the URI's authority (HTTP/2, absolute-form)
/// or the single `Host` header, without port. HTTP/1.1 requires `Host`
/// (RFC 9112 §3.2), so its absence or repetition is an error.
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, ()> {
    if let Some(host) = req.uri().host() {
        return Ok(Some(host_name(host)));
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().map(|h| Some(host_name(h))).map_err(|_| ()),
        (None, None) if req.version() != Version::HTTP_11 => Ok(None),
        _ => Err(()),
    }
}

/// `Connection: upgrade` plus `Upgrade: websocket`, as token lists in any case (RFC 6455 §4.2.1).
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, CONNECTION, "upgrade") && has_token(headers, UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

//! One request through the data path: snapshot → normalised path → route → action.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::connection::ClientConnection;
use crate::metrics::Metrics;
use crate::proxy::{self, ForwardContext};
use crate::request_path;
use crate::response;
use crate::router::{host_name, Route};
use crate::sessions::Sessions;
use crate::snapshot::{Content, Snapshot};
use crate::upstream::health;
use crate::websocket::{self, handshake, UpgradeContext};
use crate::{demo, static_files};

/// State shared by every connection of a running server.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    draining: AtomicBool,
    /// Set while a draining server still accepts (`shutdown_delay`): new
    /// sessions should go to an instance that stays.
    refusing_upgrades: AtomicBool,
    sessions: Arc<Sessions>,
    /// Cancelled when the current snapshot is replaced: ends its health checks.
    checks: Mutex<CancellationToken>,
    /// `None` when the config turned metrics off.
    metrics: Option<Metrics>,
}

impl Gateway {
    /// A gateway serving `snapshot`, with a metrics registry of its own
    /// unless the snapshot turns metrics off. Must be called inside a Tokio
    /// runtime when a pool has `health_check` (the checks are spawned on it).
    pub fn new(snapshot: Snapshot) -> Arc<Gateway> {
        let metrics = snapshot.metrics.then(|| {
            let metrics = Metrics::new();
            metrics.attach(&snapshot);
            metrics
        });
        let checks = CancellationToken::new();
        start_health_checks(&snapshot, &checks);
        Arc::new(Gateway {
            checks: Mutex::new(checks),
            metrics,
            snapshot: ArcSwap::from_pointee(snapshot),
            draining: AtomicBool::new(false),
            refusing_upgrades: AtomicBool::new(false),
            sessions: Arc::default(),
        })
    }

    /// The WebSocket sessions in progress.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The current config; callers keep it for the whole request or session.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether a graceful shutdown has begun (`/readyz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Puts `next` in service: requests and upgrades from now on use it,
    /// those under way keep the snapshot they started with. Its pools'
    /// health checks start and the replaced snapshot's stop.
    pub fn swap(&self, next: Arc<Snapshot>) {
        let checks = CancellationToken::new();
        start_health_checks(&next, &checks);
        self.snapshot.store(next);
        let replaced = std::mem::replace(
            &mut *self.checks.lock().unwrap_or_else(PoisonError::into_inner),
            checks,
        );
        replaced.cancel();
    }

    /// `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// While set, upgrades get 503. Once the listeners have closed, an
    /// upgrade can only come from a client that connected before, and is
    /// let through: its session is closed with the others.
    pub fn refuse_upgrades(&self, refuse: bool) {
        self.refusing_upgrades.store(refuse, Ordering::Release);
    }
}

/// Starts the active health checks of every pool in `snapshot`; they stop
/// when `retired` is cancelled. Runs inside the server's runtime.
fn start_health_checks(snapshot: &Snapshot, retired: &CancellationToken) {
    for route in snapshot.router.routes() {
        for pool in route.pools() {
            health::spawn_checks(pool, &route.name, retired);
        }
    }
}

/// Answers one request from `client` on a public listener, and counts it
/// under its route (or `unmatched`).
pub async fn handle(
    gateway: Arc<Gateway>,
    client: Arc<ClientConnection>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let snapshot = gateway.snapshot();
    let (response, route) = respond(&gateway, &snapshot, client, req).await;
    let meters = match route {
        Some(route) => route.meters.get(),
        None => gateway.metrics().map(Metrics::unmatched),
    };
    let Some(meters) = meters else {
        return Ok(response);
    };
    meters.request(&method, response.status());
    let meter = meters.body_meter(started);
    Ok(response.map(|body| body.metered(meter)))
}

/// The response, and the route that gave it (`None`: no route matched).
async fn respond<'s>(
    gateway: &Gateway,
    snapshot: &'s Snapshot,
    client: Arc<ClientConnection>,
    req: Request<Incoming>,
) -> (Response<Body>, Option<&'s Route>) {
    if let Some(port) = client.redirect_https {
        return (redirect_to_https(&req, port), None);
    }
    let path = match request_path::normalize(req.uri().path()) {
        Ok(path) => path,
        Err(error) => {
            tracing::debug!(path = req.uri().path(), %error, "refused request path");
            return (response::status(StatusCode::BAD_REQUEST), None);
        }
    };
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(()) => return (response::status(StatusCode::BAD_REQUEST), None),
    };
    let Some(route) = snapshot.router.route(host, &path) else {
        return (response::status(StatusCode::NOT_FOUND), None);
    };
    let relative = route.strip_prefix(&path);
    if handshake::is_upgrade(req.headers()) {
        let Some(websocket) = &route.websocket else {
            return (response::status(StatusCode::NOT_FOUND), Some(route));
        };
        // The load balancer has not noticed `/readyz` yet: send the client
        // to an instance that is staying.
        if gateway.refusing_upgrades.load(Ordering::Acquire) {
            return (
                response::status(StatusCode::SERVICE_UNAVAILABLE),
                Some(route),
            );
        }
        let relative_path = relative.to_owned();
        let cx = UpgradeContext {
            route_name: &route.name,
            client,
            relative_path: &relative_path,
            sessions: &gateway.sessions,
            trusted: &snapshot.trusted_proxies,
        };
        return (websocket::upgrade(req, websocket, cx).await, Some(route));
    }
    let response = match &route.content {
        Some(Content::Static(dir)) => static_files::serve(&req, dir, &path, relative),
        Some(Content::Embedded(page)) => demo::serve_page(&req, page, relative),
        Some(Content::Proxy(proxy)) => {
            let relative_path = relative.to_owned();
            let cx = ForwardContext {
                route_name: &route.name,
                client: &client,
                relative_path: &relative_path,
                trusted: &snapshot.trusted_proxies,
            };
            proxy::forward(req, proxy, cx).await
        }
        // A WebSocket-only route (RFC 9110 §15.5.22: say which protocol to upgrade to).
        None => {
            let mut response = response::status(StatusCode::UPGRADE_REQUIRED);
            response
                .headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            response
        }
    };
    (response, Some(route))
}

/// 308 to the same host and target over `https://` on `port`. Upgrade
/// requests get the same answer, without upgrading.
fn redirect_to_https<B>(req: &Request<B>, port: u16) -> Response<Body> {
    let host = match request_host(req) {
        Ok(Some(host)) => host,
        _ => return response::status(StatusCode::BAD_REQUEST),
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    response::permanent_redirect(&location)
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

//! The operator's listener: `/healthz`, `/readyz`, `/metrics`, `/config`,
//! `/sessions`, and the live dashboard (`/` and its `/events`). Never
//! served on a public listener.

mod dashboard;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};

use hyper::body::Incoming;

use crate::body::Body;
use crate::connection::{ClientConnection, Handler};
use crate::gateway::Gateway;
use crate::model::diff::{RunningConfig, RunningRoute};
use crate::{metrics, response};

/// The admin listener's handler, which `cli` hands to the server.
pub fn handler(gateway: &Arc<Gateway>) -> impl Handler {
    let gateway = Arc::clone(gateway);
    move |_client: Arc<ClientConnection>, req: Request<Incoming>| handle(Arc::clone(&gateway), req)
}

/// Answers one request on the admin listener.
pub async fn handle<B>(
    gateway: Arc<Gateway>,
    req: Request<B>,
) -> Result<Response<Body>, Infallible> {
    if let Some(rest) = req.uri().path().strip_prefix("/backends/") {
        return Ok(drain(&gateway, req.method(), rest));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(response::method_not_allowed("GET, HEAD"));
    }
    let response = match req.uri().path() {
        "/" => html(dashboard::PAGE),
        "/events" => dashboard::events(Arc::clone(&gateway)).unwrap_or_else(|| {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many dashboards open\n",
            )
        }),
        "/sessions" => json(&sessions(&gateway, req.uri().query().unwrap_or(""))),
        // Liveness: the process answers, whatever it is doing.
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // Readiness: load balancers stop sending new work once draining starts.
        "/readyz" if gateway.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => match gateway.metrics() {
            Some(metrics) => {
                let mut response = Response::new(Body::from(Bytes::from(metrics.encode())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                response
            }
            None => response::status(StatusCode::NOT_FOUND),
        },
        "/config" => json(&running_config(&gateway)),
        _ => response::status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

/// `POST /backends/{route}/{backend}/drain` (or `/undrain`): the backend
/// is named by its `host:port` or its percent-encoded URL.
fn drain(gateway: &Gateway, method: &Method, rest: &str) -> Response<Body> {
    if method != Method::POST {
        return response::method_not_allowed("POST");
    }
    let Some((route_and_backend, action)) = rest.rsplit_once('/') else {
        return response::status(StatusCode::NOT_FOUND);
    };
    let drain = match action {
        "drain" => true,
        "undrain" => false,
        _ => return response::status(StatusCode::NOT_FOUND),
    };
    let Some((route, backend)) = route_and_backend.split_once('/') else {
        return response::status(StatusCode::NOT_FOUND);
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    let (Some(route), Some(backend)) = (decode(route), decode(backend)) else {
        return response::status(StatusCode::BAD_REQUEST);
    };
    match gateway.drain_backend(&route, &backend, drain) {
        Some(done) => json(&done),
        None => text(StatusCode::NOT_FOUND, "no such route and backend\n"),
    }
}

/// The running model, each route with its live WebSocket sessions by
/// backend: what `wsgate check --diff` compares a new file against.
fn running_config(gateway: &Gateway) -> RunningConfig {
    let snapshot = gateway.snapshot();
    let counts = gateway.sessions().counts();
    let drained = |name: &str| -> Vec<String> {
        let running = snapshot.router.routes().iter().find(|r| r.name == name);
        running
            .into_iter()
            .flat_map(|route| route.pools())
            .flat_map(|pool| pool.backends())
            .filter(|backend| backend.is_drained())
            .map(|backend| backend.url.clone())
            .collect()
    };
    let routes = snapshot
        .model
        .routes
        .iter()
        .map(|route| RunningRoute {
            drained: drained(&route.name),
            route: route.clone(),
            sessions: counts
                .iter()
                .filter(|((name, _), _)| *name == route.name)
                .map(|((_, backend), count)| (backend.clone(), *count))
                .collect(),
        })
        .collect();
    RunningConfig {
        listeners: snapshot.model.listeners.clone(),
        routes,
    }
}

/// Sessions listed at most this many at a time.
const MAX_SESSIONS_PAGE: usize = 1000;

/// `GET /sessions?offset=N&limit=M`: live sessions, oldest first, a page
/// at a time (100 by default, at most 1000).
#[derive(Debug, serde::Serialize)]
struct SessionsPage {
    total: usize,
    offset: usize,
    sessions: Vec<crate::sessions::SessionView>,
}

fn sessions(gateway: &Gateway, query: &str) -> SessionsPage {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.parse::<usize>().ok())
    };
    let offset = param("offset").unwrap_or(0);
    let limit = param("limit").unwrap_or(100).min(MAX_SESSIONS_PAGE);
    let (total, sessions) = gateway.sessions().list(offset, limit);
    SessionsPage {
        total,
        offset,
        sessions,
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Body::from(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn html(page: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(page));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

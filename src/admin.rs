//! The operator's listener: `/healthz`, `/readyz`, `/metrics` and
//! `/config`. Never served on a public listener.

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
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(response::method_not_allowed("GET, HEAD"));
    }
    let response = match req.uri().path() {
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
        "/config" => {
            let body = serde_json::to_vec_pretty(&running_config(&gateway)).unwrap_or_default();
            let mut response = Response::new(Body::from(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => response::status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

/// The running model, each route with its live WebSocket sessions by
/// backend: what `wsgate check --diff` compares a new file against.
fn running_config(gateway: &Gateway) -> RunningConfig {
    let snapshot = gateway.snapshot();
    let counts = gateway.sessions().counts();
    let routes = snapshot
        .model
        .routes
        .iter()
        .map(|route| RunningRoute {
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

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

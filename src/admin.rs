//! The operator's listener: `/healthz`, `/readyz` and `/metrics`. Never
//! served on a public listener.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::gateway::Gateway;
use crate::{metrics, response};

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
        _ => response::status(StatusCode::NOT_FOUND),
    };
    Ok(response)
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

//! The WebSocket gateway: handshake checks, the backend handshake, and the
//! frame-aware relay that follows.

pub mod frame;
pub mod handshake;
pub mod relay;
mod transport;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::forwarding;
use crate::metrics::{UpgradeResult, UpstreamErrorKind, WsMeters};
use crate::request_path;
use crate::response;
use crate::server::ClientConnection;
use crate::upstream::{Backend, BackendPool, ConnectError};
use handshake::Refusal;
pub use relay::Policy;
use relay::{Closing, Initiator, Peer};

/// A route's `websocket = { ... }` action, compiled.
#[derive(Debug)]
pub struct WebSocketRoute {
    pub backends: BackendPool,
    /// Allowed `Origin` values; empty allows every origin.
    pub origins: Vec<String>,
    pub require_origin: bool,
    /// Subprotocols a client must offer one of; empty skips the check.
    pub subprotocols: Vec<String>,
    pub policy: Policy,
    pub connect_timeout: Duration,
    pub strip_prefix: bool,
    /// How `wss://` backends are verified: the route's `backend_ca`, or the
    /// platform's roots. `None` when the route has no `wss://` backend.
    pub backend_tls: Option<Arc<rustls::ClientConfig>>,
    /// Set once, when the snapshot is attached to a running server's metrics.
    pub meters: OnceLock<WsMeters>,
}

/// What an upgrade needs from the connection and the server.
pub struct UpgradeContext<'a> {
    pub route_name: &'a str,
    /// Kept by the session, so it counts against `max_connections` until it ends.
    pub client: Arc<ClientConnection>,
    /// The request path below the route's prefix, normalised.
    pub relative_path: &'a str,
    pub sessions: &'a TaskTracker,
    pub shutdown: &'a CancellationToken,
}

/// Why a handshake with the backends failed; each becomes a 502.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("handshake with {backend} failed: {source}")]
    Handshake {
        backend: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{backend} did not answer the handshake within {after:?}")]
    AnswerTimeout { backend: String, after: Duration },
    #[error("{backend} gave a malformed answer: {reason}")]
    BadAnswer {
        backend: String,
        reason: &'static str,
    },
}

impl UpstreamError {
    /// The `kind` label of `wsgate_upstream_errors_total`.
    fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamError::Connect(error) => error.kind(),
            UpstreamError::Handshake { .. } => UpstreamErrorKind::Protocol,
            UpstreamError::AnswerTimeout { .. } => UpstreamErrorKind::ResponseTimeout,
            UpstreamError::BadAnswer { .. } => UpstreamErrorKind::InvalidResponse,
        }
    }
}

/// Handles an upgrade request on a route with a `websocket` action.
pub async fn upgrade<B>(
    mut req: Request<B>,
    route: &Arc<WebSocketRoute>,
    cx: UpgradeContext<'_>,
) -> Response<Body> {
    let meters = route.meters.get();
    let count = |result| {
        if let Some(meters) = meters {
            meters.upgrade(result);
        }
    };
    if let Err(refusal) = handshake::check_client(&req, route) {
        tracing::debug!(route = cx.route_name, %refusal, "refused websocket handshake");
        count(match refusal {
            Refusal::Origin => UpgradeResult::OriginDenied,
            Refusal::Subprotocol => UpgradeResult::SubprotocolDenied,
            Refusal::NotGet | Refusal::Version | Refusal::Key => UpgradeResult::BadRequest,
        });
        return refuse(refusal);
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    // Counts as a session from here, so a drain that starts while the backend
    // handshake is under way still waits for this one and closes it with 1001.
    let in_progress = cx.sessions.token();
    let client = Arc::clone(&cx.client);
    let (mut answer, backend) = match handshake_with_backends(&req, route, &cx).await {
        Ok(answered) => answered,
        Err(error) => {
            tracing::warn!(route = cx.route_name, %error, "no backend took the websocket");
            count(UpgradeResult::BackendUnavailable);
            return response::status(StatusCode::BAD_GATEWAY);
        }
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        count(UpgradeResult::BackendRejected);
        // The backend's refusal (403, 404, 500…) is the client's answer.
        forwarding::strip_hop_by_hop(answer.headers_mut());
        return answer.map(Body::Upstream);
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    if let Err(reason) = handshake::check_backend_answer(answer.headers(), &key) {
        let error = UpstreamError::BadAnswer {
            backend: backend.url.clone(),
            reason,
        };
        tracing::warn!(route = cx.route_name, %error, "backend answered the handshake wrongly");
        count(UpgradeResult::BackendInvalid);
        if let Some(meters) = backend.meters.get() {
            meters.failed(error.kind());
        }
        return response::status(StatusCode::BAD_GATEWAY);
    }
    count(UpgradeResult::Ok);
    let (policy, allowed_rsv) = (route.policy, handshake::negotiated_rsv(answer.headers()));
    let backend_upgrade = hyper::upgrade::on(&mut answer);
    let (mut parts, _empty) = answer.into_parts();
    forwarding::strip_hop_by_hop(&mut parts.headers);
    handshake::set_upgrade_headers(&mut parts.headers);
    let route_name = cx.route_name.to_owned();
    let shutdown = cx.shutdown.clone();
    // The session keeps the route it started on (and its series) to the end.
    let route = Arc::clone(route);
    let session = async move {
        let _client = client;
        let Some(backend) = take_socket(backend_upgrade.await, "backend") else {
            return;
        };
        let Some(client) = take_socket(client_upgrade.await, "client") else {
            return;
        };
        let meters = route.meters.get();
        let started = Instant::now();
        let active = meters.map(WsMeters::session_started);
        let tally = meters.map(WsMeters::session_tally);
        let stats = relay::run(client, backend, policy, allowed_rsv, shutdown, tally).await;
        drop(active);
        if let Some(meters) = meters {
            let closing = stats.closing.unwrap_or(Closing {
                initiator: Initiator::Gateway,
                code: None,
            });
            meters.session_ended(started.elapsed(), closing.initiator.as_str(), closing.code);
        }
        tracing::debug!(route = %route_name, ?stats, "websocket session ended");
    };
    cx.sessions.spawn(session);
    // The spawned session is tracked now; the token would count it twice.
    drop(in_progress);
    Response::from_parts(parts, Body::empty())
}

/// The TCP socket under an upgraded connection, the TLS session over it if
/// there is one, and any bytes read past the handshake.
fn take_socket(upgraded: Result<Upgraded, hyper::Error>, side: &str) -> Option<Peer> {
    let upgraded = match upgraded {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(side, %error, "websocket upgrade did not complete");
            return None;
        }
    };
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            return Some(Peer {
                stream: parts.io.into_inner(),
                tls: None,
                leftover: parts.read_buf,
            })
        }
        Err(upgraded) => upgraded,
    };
    let upgraded = match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>()
    {
        Ok(parts) => {
            let (stream, tls) = parts.io.into_inner().into_inner();
            return Some(Peer {
                stream,
                tls: Some(Box::new(tls.into())),
                leftover: parts.read_buf,
            });
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>() {
        Ok(parts) => {
            let (stream, tls) = parts.io.into_inner().into_inner();
            Some(Peer {
                stream,
                tls: Some(Box::new(tls.into())),
                leftover: parts.read_buf,
            })
        }
        Err(_) => {
            tracing::warn!(side, "upgraded connection is neither TCP nor TLS over TCP");
            None
        }
    }
}

fn refuse(refusal: Refusal) -> Response<Body> {
    let mut response = response::status(refusal.status());
    if refusal == Refusal::Version {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    response
}

/// Tries the route's backends in turn until one answers the handshake.
async fn handshake_with_backends<'r, B>(
    req: &Request<B>,
    route: &'r WebSocketRoute,
    cx: &UpgradeContext<'_>,
) -> Result<(Response<hyper::body::Incoming>, &'r Backend), UpstreamError> {
    let mut last_error = UpstreamError::Connect(ConnectError::NoBackends);
    for backend in route.backends.order() {
        let request = backend_request(req, backend, route, cx);
        let within = route.connect_timeout;
        let answer = match (&route.backend_tls, backend.tls) {
            (Some(config), true) => match backend.connect_tls(within, config).await {
                Ok(stream) => ask(stream, request, backend, within).await,
                Err(error) => Err(error.into()),
            },
            (None, true) => Err(UpstreamError::Connect(ConnectError::Tls {
                backend: backend.url.clone(),
                source: std::io::Error::other("the route has no TLS settings for wss://"),
            })),
            (_, false) => match backend.connect(within).await {
                Ok(stream) => ask(stream, request, backend, within).await,
                Err(error) => Err(error.into()),
            },
        };
        let error = match answer {
            Ok(answer) => return Ok((answer, backend)),
            Err(error) => error,
        };
        if let Some(meters) = backend.meters.get() {
            meters.failed(error.kind());
        }
        if !matches!(error, UpstreamError::Connect(_)) {
            // Connect failures were logged where they happened.
            tracing::warn!(route = cx.route_name, %error, "backend handshake failed");
        }
        last_error = error;
    }
    Err(last_error)
}

/// The client's handshake as the backend gets it (RFC 9110 §7.6 forwarding rules).
fn backend_request<B>(
    req: &Request<B>,
    backend: &Backend,
    route: &WebSocketRoute,
    cx: &UpgradeContext<'_>,
) -> Request<Empty<Bytes>> {
    // The raw path goes on unchanged; a stripped one is re-encoded so the
    // backend decodes exactly what the router saw, once.
    let path = if route.strip_prefix {
        request_path::encode(cx.relative_path)
    } else {
        Cow::Borrowed(req.uri().path())
    };
    let target = handshake::backend_target(&backend.path, &path, req.uri().query());
    let mut headers = req.headers().clone();
    forwarding::strip_hop_by_hop(&mut headers);
    // RFC 9112 §3.2.2: with an absolute-form target, its authority is the
    // host (the one the request was routed on), whatever `Host` says.
    if let Some(authority) = req.uri().authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(http::header::HOST, host);
        }
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let scheme = cx.client.scheme();
    forwarding::add_forwarded(&mut headers, cx.client.addr, scheme, host.as_deref());
    handshake::set_upgrade_headers(&mut headers);
    if !headers.contains_key(http::header::HOST) {
        if let Ok(authority) = HeaderValue::from_str(&backend.authority()) {
            headers.insert(http::header::HOST, authority);
        }
    }
    let mut request = Request::new(Empty::new());
    // Cannot fail: the path is the request's own or encoded above, and the
    // backend's path was parsed from its URL when the config was loaded.
    *request.uri_mut() = target
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    *request.headers_mut() = headers;
    request
}

/// Sends the handshake on a fresh connection and waits (bounded) for the answer.
async fn ask<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
    backend: &Backend,
    within: Duration,
) -> Result<Response<hyper::body::Incoming>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handshake_error = |source| UpstreamError::Handshake {
        backend: backend.url.clone(),
        source,
    };
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(handshake_error)?;
        // The driver hands the socket over on 101, or streams a refusal's body.
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "backend connection ended with an error");
            }
        });
        sender.send_request(request).await.map_err(handshake_error)
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::AnswerTimeout {
                backend: backend.url.clone(),
                after: within,
            })
        })
}

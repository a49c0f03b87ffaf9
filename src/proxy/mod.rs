//! The HTTP reverse proxy: a route's `proxy = { ... }` action. Requests and
//! responses stream through hyper-util's pooled client, one client (and so
//! one bounded set of idle keep-alive connections) per backend. With
//! `http2`, each backend gets one HTTP/2 connection instead (see
//! [`multiplexed`]) that carries many requests at once, and trailers pass
//! both ways, as gRPC needs.
//!
//! Errors map here and only here: no backend to try or none reachable →
//! 502, no response head within `response_timeout` → 504, a response body
//! broken off or stalled past `body_timeout` → the client connection is
//! closed, so a truncated body never looks complete; a client whose request
//! body stalls gets 408.

mod multiplexed;

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{EXPECT, HOST, TE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::access_log::UpstreamFacts;
use crate::body::proxied::{ClientBodyError, ProxiedBody, RequestBody, UploadProgress};
use crate::body::Body;
use crate::connection::ClientConnection;
use crate::forwarding::{self, Origin, TrustedProxies};
use crate::header_rules::Rules;
use crate::metrics::UpstreamErrorKind;
use crate::model::ProxySettings;
use crate::response;
use crate::upstream::{warn_throttled, Backend, BackendPool, Busy, ConnectError, UpstreamStream};
use multiplexed::Multiplexed;

/// Idle keep-alive connections kept per backend.
pub const MAX_IDLE_PER_BACKEND: usize = 64;
/// How long an idle connection is kept. Below the 5 s keep-alive timeout of
/// Node's `http` server, so the gateway drops it before the app does and
/// does not send a request into a closing socket.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How one backend of a proxy route is spoken to.
#[derive(Debug)]
enum BackendClient {
    /// HTTP/1.1, on a pool of keep-alive connections. Boxed: the client is
    /// four times the size of the other kind.
    Pooled(Box<Client<Connector, RequestBody>>),
    /// HTTP/2, on one connection.
    Multiplexed(Multiplexed),
}

/// Why a request got no response from a backend.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error(transparent)]
    Multiplexed(#[from] multiplexed::SendError),
}

impl SendError {
    /// No connection to the backend was made, so nothing was sent.
    fn is_connect(&self) -> bool {
        match self {
            SendError::Pooled(error) => error.is_connect(),
            SendError::Multiplexed(error) => Multiplexed::is_connect(error),
        }
    }
}

impl BackendClient {
    async fn send(&self, request: Request<RequestBody>) -> Result<Response<Incoming>, SendError> {
        match self {
            BackendClient::Pooled(client) => Ok(client.request(request).await?),
            BackendClient::Multiplexed(connection) => Ok(connection.request(request).await?),
        }
    }
}

/// A route's `proxy = { ... }` action, compiled.
#[derive(Debug)]
pub struct ProxyRoute {
    pub backends: Arc<BackendPool>,
    /// One per backend, in the pool's order.
    clients: Vec<BackendClient>,
    pub settings: ProxySettings,
}

/// One pooled client per backend of `backends`, in its order, sending
/// bodies of type `B`: connections open through the pool (timed, counted,
/// feeding passive health) and stay for reuse a few seconds.
pub fn clients<B>(backends: &Arc<BackendPool>) -> Vec<Client<Connector, B>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    backends
        .backends()
        .iter()
        .map(|backend| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(IDLE_TIMEOUT)
                .pool_max_idle_per_host(MAX_IDLE_PER_BACKEND)
                .build(Connector::new(backends, backend, false))
        })
        .collect()
}

impl ProxyRoute {
    pub fn new(backends: Arc<BackendPool>, settings: ProxySettings) -> ProxyRoute {
        let clients = if settings.http2 {
            backends
                .backends()
                .iter()
                .map(|backend| {
                    let connector = Connector::new(&backends, backend, true);
                    BackendClient::Multiplexed(Multiplexed::new(connector))
                })
                .collect()
        } else {
            clients(&backends)
                .into_iter()
                .map(|client| BackendClient::Pooled(Box::new(client)))
                .collect()
        };
        ProxyRoute {
            clients,
            backends,
            settings,
        }
    }

    fn client(&self, backend: &Arc<Backend>) -> Option<&BackendClient> {
        let index = self
            .backends
            .backends()
            .iter()
            .position(|b| Arc::ptr_eq(b, backend))?;
        self.clients.get(index)
    }
}

/// What forwarding needs from the connection and the server.
pub struct ForwardContext<'a> {
    pub route_name: &'a str,
    pub client: &'a ClientConnection,
    /// The request path below the route's prefix, normalised.
    pub relative_path: &'a str,
    pub trusted: &'a TrustedProxies,
    /// The route's `request_headers`.
    pub request_rules: Option<&'a Rules>,
}

/// Sends the request to a backend and streams its response back.
pub async fn forward(
    req: Request<Incoming>,
    route: &ProxyRoute,
    cx: ForwardContext<'_>,
) -> Response<Body> {
    let mut facts = UpstreamFacts::default();
    let mut response = forward_to_backends(req, route, cx, &mut facts).await;
    // For the access log: which backend answered, after how many tries.
    response.extensions_mut().insert(facts);
    response
}

async fn forward_to_backends(
    req: Request<Incoming>,
    route: &ProxyRoute,
    cx: ForwardContext<'_>,
    facts: &mut UpstreamFacts,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let pool = &route.backends;
    let settings = &route.settings;
    let client_ip = cx.trusted.client_ip(cx.client.addr.ip(), &parts.headers);
    let order = pool.order(&parts.headers, client_ip);
    if order.is_empty() {
        let error = pool.none_healthy();
        facts.error = Some(error.kind().as_str());
        warn_throttled!(pool.warnings, route = cx.route_name, %error, "proxy request refused");
        return response::status(StatusCode::BAD_GATEWAY);
    }
    let origin = Origin {
        client: cx.client.addr,
        scheme: cx.client.scheme(),
        trusted: cx.trusted,
    };
    let body = Arc::new(Mutex::new(Some(body)));
    let attempts = order.len().min(settings.retries as usize + 1);
    for backend in order.into_iter().take(attempts) {
        let Some(client) = route.client(backend) else {
            continue;
        };
        facts.attempts += 1;
        facts.backend = Some(backend.url.clone());
        facts.error = None;
        let target = forwarding::backend_target(
            &backend.path,
            &parts.uri,
            cx.relative_path,
            settings.strip_prefix,
        );
        let authority = backend.authority();
        let mut headers = forwarding::backend_headers(
            &parts.headers,
            &parts.uri,
            &origin,
            settings.preserve_host,
            authority,
        );
        // The client's expectation was met by the gateway: hyper answers
        // 100 Continue when the proxy first reads the body.
        headers.remove(EXPECT);
        if let Some(rules) = cx.request_rules {
            rules.apply(&mut headers);
        }
        let (version, scheme, authority) = if settings.http2 {
            h2_target(&mut headers, &parts.headers, backend, authority)
        } else {
            (Version::HTTP_11, "http", authority.to_owned())
        };
        // The authority was parsed from the config (or is a `Host` the
        // router accepted) and the target is the request's own (or encoded)
        // path, so this holds; never guess a URI.
        let Ok(uri) = format!("{scheme}://{authority}{target}").parse::<Uri>() else {
            tracing::warn!(route = cx.route_name, %target, "cannot form the backend URI");
            return response::status(StatusCode::BAD_GATEWAY);
        };
        let upload = UploadProgress::start();
        let mut request = Request::new(RequestBody::new(&body, settings.body_timeout, &upload));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        let busy = backend.busy();
        let sent = response_head(client.send(request), settings.response_timeout, &upload).await;
        let error = match sent {
            // A 101 answers only an upgrade, which never comes this way (it
            // goes to the websocket action): forwarded, it would leave the
            // client's connection in a state nobody drives.
            Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                facts.status = Some(response.status().as_u16());
                facts.error = Some(UpstreamErrorKind::InvalidResponse.as_str());
                backend.failed(UpstreamErrorKind::InvalidResponse);
                warn_throttled!(
                    backend.warnings,
                    route = cx.route_name,
                    backend = %backend.url,
                    "backend switched protocols on a request that asked for none"
                );
                return response::status(StatusCode::BAD_GATEWAY);
            }
            Ok(Ok(response)) => {
                facts.status = Some(response.status().as_u16());
                return proxied(response, busy, settings.body_timeout, upload);
            }
            Ok(Err(error)) => error,
            Err(Silence::Client) => {
                facts.reason = Some("request body stalled");
                tracing::debug!(route = cx.route_name, after = ?settings.response_timeout, "the client's request body stopped coming");
                return response::status(StatusCode::REQUEST_TIMEOUT);
            }
            Err(Silence::Backend) => {
                facts.error = Some(UpstreamErrorKind::ResponseTimeout.as_str());
                backend.failed(UpstreamErrorKind::ResponseTimeout);
                warn_throttled!(
                    backend.warnings,
                    route = cx.route_name,
                    backend = %backend.url,
                    after = ?settings.response_timeout,
                    "backend gave no response in time"
                );
                return response::status(StatusCode::GATEWAY_TIMEOUT);
            }
        };
        if let Some(client_error) = ClientBodyError::find(&error) {
            facts.reason = Some("request body broken off");
            tracing::debug!(route = cx.route_name, error = %client_error, "request abandoned by the client");
            return response::status(client_error.status());
        }
        facts.error = Some(
            connect_error_kind(&error)
                .unwrap_or(UpstreamErrorKind::Protocol)
                .as_str(),
        );
        // Connect failures were counted and logged where they happened.
        if !error.is_connect() {
            backend.failed(UpstreamErrorKind::Protocol);
            warn_throttled!(
                backend.warnings,
                route = cx.route_name,
                backend = %backend.url,
                error = %chain(&error),
                "proxied request failed"
            );
        }
        if !may_retry(&error, &parts.method, &body) {
            break;
        }
    }
    response::status(StatusCode::BAD_GATEWAY)
}

/// How a request goes to an HTTP/2 backend: the host it is for travels as
/// `:authority` (from the `Host` forwarding chose, which then goes: RFC 9113
/// §8.3.1 lets no other value stand beside it), `:scheme` says whether the
/// hop is TLS, and `TE: trailers`, the one TE value HTTP/2 allows, passes
/// when the client sent it: gRPC servers ask for it.
fn h2_target(
    headers: &mut HeaderMap,
    client_headers: &HeaderMap,
    backend: &Backend,
    backend_authority: &str,
) -> (Version, &'static str, String) {
    let authority = headers
        .remove(HOST)
        .and_then(|host| host.to_str().map(str::to_owned).ok())
        .unwrap_or_else(|| backend_authority.to_owned());
    let wants_trailers = client_headers
        .get_all(TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"));
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    let scheme = if backend.tls { "https" } else { "http" };
    (Version::HTTP_2, scheme, authority)
}

/// Another backend may get the request only when no byte of its body can
/// have been sent (the body is still here), and either no connection was
/// made at all or the method is idempotent (RFC 9110 §9.2.2): a POST that a
/// backend may have seen is never sent twice.
fn may_retry(error: &SendError, method: &Method, body: &Mutex<Option<Incoming>>) -> bool {
    let body_unsent = body.lock().is_ok_and(|body| body.is_some());
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    body_unsent && (error.is_connect() || idempotent)
}

/// Who kept `response_timeout` waiting.
enum Silence {
    /// The whole request was sent and no answer came.
    Backend,
    /// hyper was still waiting for the client's request body (a stall that
    /// `body_timeout` did not catch first, or with `body_timeout` off).
    Client,
}

/// The backend's answer to `request`, or who was silent when no response
/// head came within `limit` of the later of the request's start and the
/// last piece of its body taken from the client.
async fn response_head<F: Future>(
    request: F,
    limit: Duration,
    upload: &UploadProgress,
) -> Result<F::Output, Silence> {
    tokio::pin!(request);
    loop {
        let deadline = upload.last_frame() + limit;
        match tokio::time::timeout_at(deadline, &mut request).await {
            Ok(answer) => return Ok(answer),
            Err(_) if upload.last_frame() + limit > deadline => continue,
            Err(_) if upload.waiting_on_client() => return Err(Silence::Client),
            Err(_) => return Err(Silence::Backend),
        }
    }
}

fn proxied(
    response: Response<Incoming>,
    busy: Busy,
    body_timeout: Duration,
    upload: Arc<UploadProgress>,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    forwarding::response_headers(&mut parts.headers);
    let body = ProxiedBody::new(body, busy, body_timeout, upload);
    Response::from_parts(parts, Body::Proxied(body))
}

/// The kind of the connect error behind a failed request, if one caused it.
fn connect_error_kind(error: &dyn StdError) -> Option<UpstreamErrorKind> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return Some(connect.kind());
        }
        source = cause.source();
    }
    None
}

/// An error and its causes, for one log line.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Opens connections for one backend's client, through the pool, so they
/// are timed, counted and feed the backend's passive health.
#[derive(Debug, Clone)]
pub struct Connector {
    pool: Arc<BackendPool>,
    backend: Arc<Backend>,
    /// The client speaks HTTP/2 only: a TLS backend must have chosen it.
    http2: bool,
}

impl Connector {
    fn new(pool: &Arc<BackendPool>, backend: &Arc<Backend>, http2: bool) -> Connector {
        Connector {
            pool: Arc::clone(pool),
            backend: Arc::clone(backend),
            http2,
        }
    }

    fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// A connection to the backend; with `http2`, over TLS only one where
    /// the backend chose `h2` by ALPN.
    async fn open(&self) -> Result<TokioIo<UpstreamStream>, ConnectError> {
        let backend = &self.backend;
        let stream = self.pool.connect(backend).await?;
        if let (true, UpstreamStream::Tls(tls)) = (self.http2, &stream) {
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                let error = ConnectError::Tls {
                    backend: backend.url.clone(),
                    source: std::io::Error::other(
                        "the backend did not choose HTTP/2 by ALPN, and the route's http2 needs it",
                    ),
                };
                // A misconfiguration, not a passing fault, but other
                // backends should get the requests meanwhile all the same.
                backend.health.connect_failed();
                backend.failed(error.kind());
                backend.show_health();
                warn_throttled!(backend.warnings, %error, "backend connection unusable");
                return Err(error);
            }
        }
        Ok(TokioIo::new(stream))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _destination: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.open().await })
    }
}

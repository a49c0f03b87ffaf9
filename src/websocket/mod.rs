//! The WebSocket gateway: handshake checks, the backend handshake, and the
//! frame-aware relay that follows.

mod backend_handshake;
pub mod frame;
mod h2_stream;
pub mod handshake;
pub mod relay;
mod throttle;
mod transport;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::Upgraded;

use crate::access_log::{self, AccessLog, Kind, Record, SessionFacts, UpstreamFacts};
use crate::auth::Recheck;
use crate::body::proxied::UploadProgress;
use crate::body::streams::SessionStream;
use crate::body::{Body, ProxiedBody};
use crate::client_limits::{Held, RateRule};
use crate::connection::{ClientConnection, ClientIo};
use crate::forwarding::{self, Origin, TrustedProxies};
use crate::header_rules::Rules;
use crate::metrics::{ClientProtocol, LimitMeters, UpgradeResult, UpstreamErrorKind, WsMeters};
use crate::model::Policy;
use crate::response;
use crate::sessions::{CloseRequest, GatewayClose, Sessions};
use crate::upstream::{warn_throttled, Backend, BackendPool, ConnectError, UpstreamStream};
use backend_handshake::{Answer, ExchangeError};
use h2_stream::H2Stream;
use handshake::Refusal;
use relay::{Closing, Initiator, Peer};

/// A route's `websocket = { ... }` action, compiled.
#[derive(Debug)]
pub struct WebSocketRoute {
    pub backends: Arc<BackendPool>,
    /// Allowed `Origin` values; empty allows every origin.
    pub origins: Vec<String>,
    pub require_origin: bool,
    /// Subprotocols a client must offer one of; empty skips the check.
    pub subprotocols: Vec<String>,
    pub policy: Policy,
    pub strip_prefix: bool,
    /// HTTP/2 clients may open sessions as streams (RFC 8441).
    pub over_http2: bool,
    /// `None` with metrics off.
    pub meters: Option<WsMeters>,
    /// Upgrade requests per client.
    pub handshake_rate: Option<RateRule>,
    /// Sessions one client may hold open on the route.
    pub max_sessions_per_client: Option<u32>,
    /// Names the route's sessions in the per-client counts.
    pub sessions_scope: u64,
    /// The route's limit series; `None` with metrics off.
    pub limit_meters: Option<LimitMeters>,
}

/// What an upgrade needs from the connection and the server.
pub struct UpgradeContext<'a> {
    pub route_name: &'a str,
    /// Its slot is kept by the session, which counts against
    /// `max_connections` until it ends.
    pub client: Arc<ClientConnection>,
    /// The request path below the route's prefix, normalised.
    pub relative_path: &'a str,
    pub sessions: &'a Arc<Sessions>,
    pub trusted: &'a TrustedProxies,
    /// When the request head arrived.
    pub started: Instant,
    /// The access log record of the upgrade request; a session takes it
    /// and writes it when it ends, a refusal leaves it to the log phase.
    pub record: &'a mut Option<Box<Record>>,
    /// Only sessions that did not end with a normal close are recorded.
    pub errors_only: bool,
    pub access_log: &'a AccessLog,
    /// The session's place under `max_sessions_per_client`, kept until it ends.
    pub held: Option<Held>,
    /// When the JWT the upgrade came with expires, and the session's close code then.
    pub token_expires: Option<(SystemTime, u16)>,
    /// Forward auth asked again while the session lasts; a no closes it.
    pub recheck: Option<Recheck>,
    /// The route's `request_headers`, for the backend's handshake.
    pub request_rules: Option<&'a Rules>,
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
        source: ExchangeError,
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
    let meters = route.meters.as_ref();
    let protocol = match req.version() {
        Version::HTTP_2 => ClientProtocol::H2,
        _ => ClientProtocol::H1,
    };
    let count = |result| {
        if let Some(meters) = meters {
            meters.upgrade(result, protocol);
        }
    };
    if let Err(refusal) = handshake::check_client(&req, route) {
        tracing::debug!(route = cx.route_name, %refusal, "refused websocket handshake");
        let result = match refusal {
            Refusal::Origin => UpgradeResult::OriginDenied,
            Refusal::Subprotocol => UpgradeResult::SubprotocolDenied,
            Refusal::NotGet
            | Refusal::Version
            | Refusal::Key
            | Refusal::Repeated
            | Refusal::Body => UpgradeResult::BadRequest,
        };
        count(result);
        let facts = UpstreamFacts {
            reason: Some(result.as_str()),
            ..UpstreamFacts::default()
        };
        return with_facts(refuse(refusal), facts);
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    // The HTTP/2 stream stays open, and its connection busy, for the session.
    let h2_stream = req.extensions_mut().remove::<SessionStream>();
    // Over HTTP/2 the client sends no key (RFC 8441 §5); the backend, an
    // HTTP/1.1 server, gets one of the gateway's and its answer is checked
    // against that.
    if protocol == ClientProtocol::H2 {
        req.headers_mut()
            .insert(SEC_WEBSOCKET_KEY, handshake::new_key());
    }
    // Counts as a session from here, so a drain that starts while the backend
    // handshake is under way still waits for this one and closes it with 1001.
    let in_progress = cx.sessions.starting();
    let connection_slot = cx.client.slot();
    let client_ip = cx.trusted.client_ip(cx.client.addr.ip(), req.headers());
    let (answer, backend) = match handshake_with_backends(&req, route, &cx, client_ip).await {
        Ok(answered) => answered,
        Err(error) => {
            warn_throttled!(
                route.backends.warnings,
                route = cx.route_name,
                %error,
                "no backend took the websocket"
            );
            count(UpgradeResult::BackendUnavailable);
            let facts = UpstreamFacts {
                error: Some(error.kind().as_str()),
                reason: Some(UpgradeResult::BackendUnavailable.as_str()),
                ..UpstreamFacts::default()
            };
            return with_facts(response::status(StatusCode::BAD_GATEWAY), facts);
        }
    };
    // Counts the session for `least_connections` until it ends.
    let busy = backend.busy();
    let (mut parts, backend_stream, leftover) = match answer {
        Answer::Switched {
            head,
            stream,
            leftover,
        } => (head, stream, leftover),
        // Over HTTP/2 a 2xx to the CONNECT means the WebSocket is open
        // (RFC 8441 §5): a backend that answered the upgrade with one did
        // not open it, and must not be taken for having done so.
        Answer::Refused(refusal)
            if protocol == ClientProtocol::H2 && refusal.status().is_success() =>
        {
            count(UpgradeResult::BackendInvalid);
            let reason = "a 2xx that is not 101 answered the upgrade";
            return invalid_answer(backend, cx.route_name, refusal.status(), reason);
        }
        Answer::Refused(mut refusal) => {
            count(UpgradeResult::BackendRejected);
            let facts = UpstreamFacts {
                backend: Some(backend.url.clone()),
                attempts: 1,
                status: Some(refusal.status().as_u16()),
                error: None,
                reason: Some(UpgradeResult::BackendRejected.as_str()),
            };
            refusal.extensions_mut().insert(facts);
            // The backend's refusal (403, 404, 500…) is the client's answer;
            // its body is cut off if it stalls, like a proxied one.
            forwarding::response_headers(refusal.headers_mut());
            let stall_after = route.backends.connect_timeout;
            return refusal
                .map(|body| ProxiedBody::new(body, busy, stall_after, UploadProgress::start()))
                .map(Body::Proxied);
        }
    };
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    if let Err(reason) = handshake::check_backend_answer(&parts.headers, &key) {
        count(UpgradeResult::BackendInvalid);
        return invalid_answer(backend, cx.route_name, parts.status, reason);
    }
    count(UpgradeResult::Ok);
    let record = cx.record.take().map(|mut record| {
        record.status = match protocol {
            ClientProtocol::H1 => StatusCode::SWITCHING_PROTOCOLS.as_u16(),
            ClientProtocol::H2 => StatusCode::OK.as_u16(),
        };
        record.ttfb = Some(cx.started.elapsed());
        record.backend = Some(backend.url.clone());
        record
    });
    // Read only for a session that will be logged.
    let negotiated = record.as_ref().map(|_| Negotiated::of(&parts.headers));
    let (access_log, errors_only) = (cx.access_log.clone(), cx.errors_only);
    let allowed_rsv = handshake::negotiated_rsv(&parts.headers);
    let (backend_socket, backend_tls) = backend_stream.into_parts();
    let backend_peer = Peer::new(backend_socket, backend_tls, leftover);
    forwarding::strip_hop_by_hop(&mut parts.headers);
    match protocol {
        ClientProtocol::H1 => handshake::set_upgrade_headers(&mut parts.headers),
        // RFC 8441 §5: a 2xx opens the stream; the accept key was the
        // backend's proof to the gateway, not to this client.
        ClientProtocol::H2 => {
            parts.status = StatusCode::OK;
            parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
        }
    }
    let route_name = cx.route_name.to_owned();
    // Listed before the 101 goes out, so a reload or drain from now on sees it.
    let placement = route.backends.placement_key(req.headers(), client_ip);
    let registration = cx
        .sessions
        .register(cx.route_name, &backend.url, client_ip, placement);
    let sessions = Arc::clone(cx.sessions);
    // The session keeps the route it started on (and its series) to the end.
    let route = Arc::clone(route);
    let held = cx.held;
    let token_expires = cx.token_expires;
    // Boxed: most routes have none, and every idle session would carry
    // room for one.
    let recheck = cx.recheck.map(Box::new);
    let session = async move {
        let _connection_slot = connection_slot;
        let _busy = busy;
        let _held = held;
        let Some(client) = client_peer(client_upgrade.await, protocol, h2_stream) else {
            // The 101 was answered but the connection never became a session.
            if let Some(mut record) = record {
                record.reason = Some("client upgrade failed");
                access_log.write(&record);
            }
            return;
        };
        let meters = route.meters.as_ref();
        let started = Instant::now();
        let active = meters.map(|meters| meters.session_started(protocol));
        let tally = meters.map(WsMeters::session_tally);
        let control = &registration.session;
        let bounds = relay::Bounds {
            limit_meters: route.limit_meters.as_ref(),
            token_end: token_expires.map(|(at, code)| relay::SessionEnd {
                at: at.duration_since(SystemTime::now()).unwrap_or_default(),
                code,
                reason: "token expired",
            }),
        };
        // Boxed: this block's own state would otherwise hold room for the
        // relay's future in each of the two branches below, for the
        // session's whole life (this block was 5,120 bytes; it is 512, and
        // the relay's future 1,144).
        // The policy is the route's, which the block holds anyway: a copy
        // would sit in this block's state and another in the relay's.
        let mut relay = Box::pin(relay::run(
            client,
            backend_peer,
            &route.policy,
            allowed_rsv,
            control,
            tally,
            bounds,
        ));
        let stats = match recheck {
            None => relay.await,
            Some(recheck) => {
                // Boxed for the same reason, and only on routes that recheck.
                let revoked = Box::pin(recheck.revoked());
                tokio::select! {
                    stats = &mut relay => stats,
                    () = revoked => {
                        control.ask_close(CloseRequest::AUTH_REVOKED);
                        relay.await
                    }
                }
            }
        };
        drop(active);
        let closing = stats.closing.unwrap_or(Closing {
            initiator: Initiator::Gateway,
            code: None,
            reason: None,
        });
        if let Some(meters) = meters {
            meters.session_ended(started.elapsed(), closing.initiator.as_str(), closing.code);
        }
        if let (Initiator::Gateway, Some(reason)) = (closing.initiator, closing.reason) {
            sessions.closed_by_gateway(GatewayClose {
                time: std::time::SystemTime::now(),
                route: route_name.clone(),
                backend: registration.session.backend.clone(),
                client: client_ip,
                code: closing.code,
                reason,
            });
        }
        if let Some(mut record) = record {
            let normal = matches!(closing.code, Some(1000 | 1001));
            if !errors_only || !normal {
                record.kind = Kind::Session;
                let negotiated = negotiated.unwrap_or_default();
                record.session = Some(SessionFacts {
                    duration: started.elapsed(),
                    client_messages: stats.client_to_backend.messages,
                    client_bytes: stats.client_to_backend.payload_bytes,
                    backend_messages: stats.backend_to_client.messages,
                    backend_bytes: stats.backend_to_client.payload_bytes,
                    close_code: closing.code,
                    closed_by: closing.initiator.as_str(),
                    close_reason: closing.reason,
                    ping_rtt: stats.ping_rtt,
                    subprotocol: negotiated.subprotocol,
                    extensions: negotiated.extensions,
                });
                record.duration = record.ttfb.unwrap_or_default() + started.elapsed();
                access_log.write(&record);
            }
        }
        tracing::debug!(route = %route_name, ?stats, "websocket session ended");
    };
    cx.sessions.spawn(session);
    // The spawned session is tracked now; the token would count it twice.
    drop(in_progress);
    Response::from_parts(parts, Body::empty())
}

/// The client's socket under its upgraded connection, the TLS session over
/// it if there is one, and any bytes read past the handshake; or the
/// HTTP/2 stream it opened.
fn client_peer(
    upgraded: Result<Upgraded, hyper::Error>,
    protocol: ClientProtocol,
    h2_stream: Option<SessionStream>,
) -> Option<Peer> {
    let upgraded = match (protocol, upgraded) {
        (ClientProtocol::H2, Ok(stream)) => {
            return Some(Peer::h2(H2Stream::new(stream, h2_stream)))
        }
        (_, upgraded) => upgraded,
    };
    let parts = upgraded_as::<ClientIo>(upgraded, "client")?;
    let (stream, tls) = parts.io.into_inner().into_inner().into_parts();
    Some(Peer::new(stream, tls, parts.read_buf))
}

/// The IO an upgraded connection was served over. `T` is the type the
/// server built (`ClientIo`), so a mismatch is a bug in this crate, never
/// the peer's doing.
fn upgraded_as<T>(
    upgraded: Result<Upgraded, hyper::Error>,
    side: &str,
) -> Option<hyper::upgrade::Parts<T>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    match upgraded {
        Ok(upgraded) => match upgraded.downcast::<T>() {
            Ok(parts) => Some(parts),
            Err(_) => {
                tracing::error!(
                    side,
                    "upgraded connection is not the stream type this side is served over"
                );
                None
            }
        },
        Err(error) => {
            tracing::debug!(side, %error, "websocket upgrade did not complete");
            None
        }
    }
}

/// The subprotocol and extensions the backend's 101 chose, for the log.
#[derive(Default)]
struct Negotiated {
    subprotocol: Option<String>,
    extensions: Option<String>,
}

impl Negotiated {
    fn of(headers: &HeaderMap) -> Negotiated {
        let text = |name: HeaderName| {
            headers
                .get(name)
                .map(|value| access_log::header_text(value.as_bytes()))
        };
        Negotiated {
            subprotocol: text(SEC_WEBSOCKET_PROTOCOL),
            extensions: text(SEC_WEBSOCKET_EXTENSIONS),
        }
    }
}

/// 502 for a backend's answer to the handshake that is not a valid one
/// (`status` it had, `reason` it is not), counted against the backend.
fn invalid_answer(
    backend: &Backend,
    route_name: &str,
    status: StatusCode,
    reason: &'static str,
) -> Response<Body> {
    let error = UpstreamError::BadAnswer {
        backend: backend.url.clone(),
        reason,
    };
    warn_throttled!(
        backend.warnings,
        route = route_name,
        %error,
        "backend answered the handshake wrongly"
    );
    backend.failed(error.kind());
    let facts = UpstreamFacts {
        backend: Some(backend.url.clone()),
        attempts: 1,
        status: Some(status.as_u16()),
        error: Some(error.kind().as_str()),
        reason: Some(UpgradeResult::BackendInvalid.as_str()),
    };
    with_facts(response::status(StatusCode::BAD_GATEWAY), facts)
}

/// `response` with what the log phase should know about the backends.
fn with_facts(mut response: Response<Body>, facts: UpstreamFacts) -> Response<Body> {
    response.extensions_mut().insert(facts);
    response
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
    client_ip: IpAddr,
) -> Result<(Answer, &'r Arc<Backend>), UpstreamError> {
    let pool = &route.backends;
    let order = pool.order(req.headers(), client_ip);
    if order.is_empty() {
        return Err(UpstreamError::Connect(pool.none_healthy()));
    }
    let mut last_error = None;
    for backend in order {
        let head = backend_request(req, backend, route, cx);
        let answer = match pool.connect(backend).await {
            Ok(stream) => ask(stream, &head, backend, pool.connect_timeout).await,
            Err(error) => Err(error.into()),
        };
        let error = match answer {
            Ok(answer) => return Ok((answer, backend)),
            Err(error) => error,
        };
        // Connect failures were counted and logged where they happened.
        if !matches!(error, UpstreamError::Connect(_)) {
            backend.failed(error.kind());
            warn_throttled!(
                backend.warnings,
                route = cx.route_name,
                %error,
                "backend handshake failed"
            );
        }
        last_error = Some(error);
    }
    Err(last_error.unwrap_or(UpstreamError::Connect(ConnectError::NoHealthyBackend)))
}

/// The head of the client's handshake as the backend gets it (RFC 9110
/// §7.6 forwarding rules).
fn backend_request<B>(
    req: &Request<B>,
    backend: &Backend,
    route: &WebSocketRoute,
    cx: &UpgradeContext<'_>,
) -> Vec<u8> {
    let target = forwarding::backend_target(
        &backend.path,
        req.uri(),
        cx.relative_path,
        route.strip_prefix,
    );
    let origin = Origin {
        client: cx.client.addr,
        scheme: cx.client.scheme(),
        trusted: cx.trusted,
    };
    let mut headers =
        forwarding::backend_headers(req.headers(), req.uri(), &origin, true, backend.authority());
    if let Some(rules) = cx.request_rules {
        rules.apply(&mut headers);
    }
    handshake::restore_handshake_fields(req.headers(), &mut headers);
    handshake::set_upgrade_headers(&mut headers);
    backend_handshake::request_head(&target, &headers)
}

/// Sends the handshake on a fresh connection and waits (bounded) for the answer.
async fn ask(
    stream: UpstreamStream,
    head: &[u8],
    backend: &Backend,
    within: Duration,
) -> Result<Answer, UpstreamError> {
    match tokio::time::timeout(within, backend_handshake::exchange(stream, head)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(ExchangeError::Malformed(reason))) => Err(UpstreamError::BadAnswer {
            backend: backend.url.clone(),
            reason,
        }),
        Ok(Err(source)) => Err(UpstreamError::Handshake {
            backend: backend.url.clone(),
            source,
        }),
        Err(_) => Err(UpstreamError::AnswerTimeout {
            backend: backend.url.clone(),
            after: within,
        }),
    }
}

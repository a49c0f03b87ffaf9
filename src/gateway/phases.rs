//! One request on a public listener, through named phases in this order:
//!
//! 0. [`acme_http_token`]: on plaintext listeners, the answer to a CA
//!    fetching an HTTP-01 token of an order in flight. This process's own
//!    tokens are answered before any limit, so a listener's `request_rate`
//!    never refuses the CA; a replica's, read from the shared state
//!    directory, after the listener's rate.
//! 1. [`route`]: the listener's `https://` redirect, path normalisation and
//!    `Host`, then (host, longest prefix) → the route (400, 404, 308).
//! 2. [`admit`]: what may refuse a routed request before its action runs:
//!    the drain's refusal of new upgrades (503), then the per-client limits,
//!    the listener's and route's request rates, and for upgrades the
//!    handshake rate and the cap on sessions per client (429). The listener's
//!    rate is taken before routing, so requests no route takes count too.
//!    Then the route's `auth` (401 with a challenge).
//! 3. [`act`]: the route's action: a WebSocket upgrade, a static file, an
//!    embedded page, a proxied request, or 426 on a WebSocket-only route.
//! 4. [`log`]: the request's record once its response is known: the route's
//!    metrics, counted as the body goes out, and the access log line,
//!    written when the body is done (see [`super::access`]). An upgrade
//!    that became a session takes its record along instead, and writes it
//!    when the session ends.
//!
//! The phases share a [`RequestContext`], as Pingora's `ProxyHttp` phases
//! share their `CTX`: each adds what it learnt and later ones read it. A
//! phase that answers the request itself skips to `log`.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::IpAddr;
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{ACCEPT_ENCODING, CONNECTION, HOST, ORIGIN, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::{access, Gateway};
use crate::access_log::{Record, UpstreamFacts};
use crate::acme::HTTP_CHALLENGE_PREFIX;
use crate::auth::{self, Granted};
use crate::body::{compressed, Body};
use crate::client_limits::{ClientKey, Held, RateRule};
use crate::connection::ClientConnection;
use crate::error_pages::PageSources;
use crate::header_rules::{CorsPolicy, CorsRequest};
use crate::metrics::{Limit, Metrics};
use crate::model::LogRequests;
use crate::proxy::{self, ForwardContext};
use crate::redirects::{self, Redirect, RequestParts};
use crate::router::{host_name, Content, Route};
use crate::snapshot::Snapshot;
use crate::static_files;
use crate::websocket::{self, handshake, UpgradeContext};
use crate::{request_ids, request_path, response};

/// The methods wsgate serves at all (a route may answer fewer: a static
/// route takes GET and HEAD), for the `Allow` of a 405 to a CONNECT tunnel,
/// which is refused before any route is looked at.
const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

/// What one request carries from phase to phase.
pub struct RequestContext<'s> {
    /// When the request head arrived.
    pub started: Instant,
    pub method: Method,
    pub client: Arc<ClientConnection>,
    /// The config the request is served with, loaded once.
    pub snapshot: &'s Snapshot,
    /// Set by `route`: `None` until then, and for requests no route took.
    pub route: Option<&'s Route>,
    /// The access log's record, while the log is on and the route logs;
    /// an upgrade that becomes a session takes it.
    pub record: Option<Box<Record>>,
    /// The route logs only errors (`access_log = "errors"`).
    pub errors_only: bool,
}

/// What `route` found: the route, and the request path as it was normalised.
struct Routed<'s> {
    route: &'s Route,
    /// `None` when the request's own path was already normal (the common
    /// case): then it is borrowed from the request again, not copied.
    normalised: Option<String>,
    /// The normalised path the client asked for, when a rewrite changed it:
    /// what redirects back to the client are built from.
    asked: Option<String>,
    upgrade: bool,
}

/// Answers one request from `client` on a public listener.
pub async fn handle(
    gateway: Arc<Gateway>,
    client: Arc<ClientConnection>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let snapshot = gateway.snapshot();
    let trusted = snapshot
        .model
        .trusted_proxies
        .trusts(client.addr.ip().to_canonical());
    let ids = request_ids::assign(req.headers_mut(), trusted, &gateway.ids);
    let record = gateway
        .access_log()
        .is_on()
        .then(|| access::capture(&req, &client, &snapshot, &ids));
    let mut cx = RequestContext {
        started,
        method: req.method().clone(),
        client,
        snapshot: &snapshot,
        route: None,
        record,
        errors_only: false,
    };
    // Kept for the answer's CORS fields; the request moves on.
    let preflight = CorsPolicy::is_preflight(req.method(), req.headers());
    let origin = req.headers().get(ORIGIN).cloned();
    let accept_encoding = req.headers().get(ACCEPT_ENCODING).cloned();
    let mut response = respond(&gateway, &mut cx, req).await;
    let pages = PageSources {
        route: cx
            .route
            .map(|route| (&route.error_pages, route.intercept_backend_errors)),
        global: &snapshot.error_pages,
    };
    response = pages.apply(response);
    if let Some(policy) = cx.route.and_then(|route| route.compress.as_deref()) {
        response = compressed::compress(policy, &cx.method, accept_encoding.as_ref(), response);
    }
    if let Some(route) = cx.route {
        // wsgate's own answers (401, 429, 502…) included, as operators
        // expect of security headers.
        let request = match (preflight, &route.headers.cors) {
            (true, Some(_)) => CorsRequest::Preflight,
            _ => CorsRequest::Actual(origin.as_ref()),
        };
        route
            .headers
            .apply_to_response(response.headers_mut(), request, cx.client.tls);
    }
    // The client can quote it in a report; the backend and the log have it too.
    response
        .headers_mut()
        .insert(request_ids::REQUEST_ID.clone(), ids.request_id);
    Ok(log(&gateway, &mut cx, response))
}

async fn respond(
    gateway: &Gateway,
    cx: &mut RequestContext<'_>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let token = acme_http_token(&req, cx);
    if let Some(answer) = token.and_then(|token| cx.snapshot.challenges.own_http_answer(token)) {
        return response::plain_text(answer);
    }
    let mut client = None;
    if let Some(rule) = &cx.client.request_rate {
        let who = *client.get_or_insert_with(|| who(cx, &req));
        if let Break(answer) = take(gateway, rule, who, cx.started, (None, Limit::RequestRate)) {
            return answer;
        }
    }
    if let Some(token) = token {
        let acme = &cx.snapshot.acme;
        if let Some(answer) = cx
            .snapshot
            .challenges
            .replica_http_answer(token, acme)
            .await
        {
            return response::plain_text(answer);
        }
    }
    let routed = match route(&mut req, cx) {
        Continue(routed) => routed,
        Break(answer) => return answer,
    };
    let held = match admit(gateway, cx, &req, &routed, client) {
        Continue(held) => held,
        Break(answer) => return answer,
    };
    // A preflight carries no credentials: it is answered before the auth
    // that the request it announces will meet.
    if let Some(cors) = &routed.route.headers.cors {
        if CorsPolicy::is_preflight(req.method(), req.headers()) {
            return preflight(cors, req.headers());
        }
    }
    // After the limits, so a flood of guesses is refused before it costs
    // a password check each.
    let mut granted = Granted::default();
    if let Some(auth) = &routed.route.auth {
        let model = &cx.snapshot.model;
        let client_ip = model
            .trusted_proxies
            .client_ip(cx.client.addr.ip(), req.headers());
        let cert = cx.client.client_cert.as_ref();
        match auth
            .check(&mut req, client_ip, cx.client.scheme(), cert)
            .await
        {
            Ok(passed) => granted = passed,
            Err(answer) => return answer,
        }
    }
    if let (Some(name), Some(record)) = (&granted.removed_query, cx.record.as_mut()) {
        // The token is never written to the log.
        record.path = auth::without_query_param(&record.path, name);
    }
    act(gateway, cx, req, routed, held, granted).await
}

/// `204` with the CORS fields that allow the preflight, or `403` without
/// them (the browser then tells the page the request is not allowed).
fn preflight(cors: &CorsPolicy, request: &http::HeaderMap) -> Response<Body> {
    let (status, headers) = match cors.preflight(request) {
        Ok(headers) => (StatusCode::NO_CONTENT, headers),
        Err(headers) => (StatusCode::FORBIDDEN, headers),
    };
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    if status == StatusCode::FORBIDDEN {
        answer.extensions_mut().insert(UpstreamFacts {
            reason: Some("cors_refused"),
            ..UpstreamFacts::default()
        });
    }
    answer
}

/// The client as per-client limits know it: its address after
/// `trusted_proxies`, and that address as a key (an IPv6 one cut to its network).
fn who<B>(cx: &RequestContext<'_>, req: &Request<B>) -> (IpAddr, ClientKey) {
    let model = &cx.snapshot.model;
    let ip = model
        .trusted_proxies
        .client_ip(cx.client.addr.ip(), req.headers());
    (ip, ClientKey::from_ip(ip, model.limits.client_ipv6_prefix))
}

/// Takes one request from the client's budget under `rule`, or the 429
/// that says when to come back, the refusal counted under `route` (none:
/// a listener's limit) and `limit`.
fn take(
    gateway: &Gateway,
    rule: &RateRule,
    (ip, key): (IpAddr, ClientKey),
    now: Instant,
    (route, limit): (Option<&Route>, Limit),
) -> ControlFlow<Response<Body>> {
    let Err(wait) = gateway.client_limits().take(rule, key, now) else {
        return Continue(());
    };
    gateway.limit_refused(
        route.map(|r| (r.name.as_str(), r.limit_meters.as_ref())),
        limit,
        ip,
    );
    Break(refused(limit, Some(wait)))
}

/// 429 for a request a limit refused, with the limit as the log's reason.
fn refused(limit: Limit, retry_after: Option<std::time::Duration>) -> Response<Body> {
    let mut answer = response::too_many_requests(retry_after);
    answer.extensions_mut().insert(UpstreamFacts {
        reason: Some(limit.as_str()),
        ..UpstreamFacts::default()
    });
    answer
}

/// Phase 1: the route for the request, or the answer when there is none.
fn route<'s>(
    req: &mut Request<Incoming>,
    cx: &mut RequestContext<'s>,
) -> ControlFlow<Response<Body>, Routed<'s>> {
    if let Some(port) = cx.client.redirect_https {
        return Break(redirect_to_https(req, port));
    }
    if req.method() == Method::CONNECT {
        match handshake::connect_protocol(req) {
            // A tunnel to somewhere else: what a forward proxy offers, not this one.
            None => return Break(response::method_not_allowed(ALLOWED_METHODS)),
            // RFC 8441 leaves other protocols to their own specs; none is served here.
            Some(protocol) if !protocol.eq_ignore_ascii_case("websocket") => {
                return Break(response::status(StatusCode::NOT_IMPLEMENTED));
            }
            Some(_) => {}
        }
    }
    // RFC 9112 §6.1: a transfer coding the server does not understand gets
    // 501; passed on without its header, the body would change meaning.
    if !only_chunked(req.headers()) {
        return Break(response::status(StatusCode::NOT_IMPLEMENTED));
    }
    let path = match request_path::normalize(req.uri().path()) {
        Ok(path) => path,
        Err(error) => {
            tracing::debug!(path = req.uri().path(), %error, "refused request path");
            return Break(response::status(StatusCode::BAD_REQUEST));
        }
    };
    let Ok(host) = request_host(req) else {
        return Break(response::status(StatusCode::BAD_REQUEST));
    };
    let Some(route) = cx.snapshot.router.route(host, &path) else {
        return Break(response::status(StatusCode::NOT_FOUND));
    };
    cx.route = Some(route);
    cx.record = cx
        .record
        .take()
        .and_then(|record| access::for_route(record, &route.name, route.logging));
    cx.errors_only = route.logging.requests == LogRequests::Errors;
    let upgrade = handshake::is_websocket_request(req);
    // WebSocket clients do not follow redirects: the handshake would fail.
    if let Some(rule) = route.trailing_slash.filter(|_| !upgrade) {
        if let Some(canonical) = redirects::canonical_slash(rule, &path) {
            let location = with_query(&request_path::encode(&canonical), req.uri().query());
            return Break(response::permanent_redirect(&location));
        }
    }
    let mut normalised = match path {
        Cow::Owned(path) => Some(path),
        Cow::Borrowed(_) => None,
    };
    let mut asked = None;
    if let Some(rewrite) = &route.rewrite {
        let path = normalised.as_deref().unwrap_or(req.uri().path());
        match rewrite.apply(path) {
            None => {}
            Some(Ok(rewritten)) => {
                asked = Some(path.to_owned());
                retarget(req, &rewritten)?;
                normalised = Some(rewritten);
            }
            Some(Err(error)) => {
                tracing::debug!(path, %error, route = %route.name, "rewrite made no valid path");
                return Break(response::status(StatusCode::BAD_REQUEST));
            }
        }
    }
    Continue(Routed {
        route,
        normalised,
        asked,
        upgrade,
    })
}

/// Points the request at `path` (decoded), keeping its query, so every
/// action (a proxy without `strip_prefix` forwards the target as it is)
/// sees the rewritten path.
fn retarget<B>(req: &mut Request<B>, path: &str) -> ControlFlow<Response<Body>> {
    let target = with_query(&request_path::encode(path), req.uri().query());
    let mut parts = req.uri().clone().into_parts();
    match target.parse() {
        Ok(path_and_query) => parts.path_and_query = Some(path_and_query),
        Err(_) => return Break(response::status(StatusCode::BAD_REQUEST)),
    }
    match http::Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Break(response::status(StatusCode::BAD_REQUEST)),
    }
    Continue(())
}

/// `path`, and `?query` when there is one.
fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

/// Phase 2: refusals that apply before any action runs. A new session
/// gets its place under the route's `max_sessions_per_client`, held until
/// it ends.
fn admit<B>(
    gateway: &Gateway,
    cx: &RequestContext<'_>,
    req: &Request<B>,
    routed: &Routed<'_>,
    mut client: Option<(IpAddr, ClientKey)>,
) -> ControlFlow<Response<Body>, Option<Held>> {
    let route = routed.route;
    let websocket = route.websocket.as_ref().filter(|_| routed.upgrade);
    // The load balancer has not noticed `/readyz` yet: send the client to
    // an instance that is staying.
    if websocket.is_some() && gateway.refusing_upgrades.load(Ordering::Acquire) {
        return Break(response::status(StatusCode::SERVICE_UNAVAILABLE));
    }
    if let Some(rule) = &route.request_rate {
        let who = *client.get_or_insert_with(|| who(cx, req));
        take(
            gateway,
            rule,
            who,
            cx.started,
            (Some(route), Limit::RequestRate),
        )?;
    }
    let Some(websocket) = websocket else {
        return Continue(None);
    };
    if let Some(rule) = &websocket.handshake_rate {
        let who = *client.get_or_insert_with(|| who(cx, req));
        take(
            gateway,
            rule,
            who,
            cx.started,
            (Some(route), Limit::HandshakeRate),
        )?;
    }
    let Some(cap) = websocket.max_sessions_per_client else {
        return Continue(None);
    };
    let (ip, key) = client.unwrap_or_else(|| who(cx, req));
    let open = &gateway.client_limits().open;
    match open.try_hold(websocket.sessions_scope, key, cap) {
        Some(held) => Continue(Some(held)),
        None => {
            let counted = Some((route.name.as_str(), route.limit_meters.as_ref()));
            gateway.limit_refused(counted, Limit::SessionsPerClient, ip);
            // No Retry-After: when one of its sessions ends is the client's doing.
            Break(refused(Limit::SessionsPerClient, None))
        }
    }
}

/// Phase 3: the route's action.
async fn act(
    gateway: &Gateway,
    cx: &mut RequestContext<'_>,
    req: Request<Incoming>,
    routed: Routed<'_>,
    held: Option<Held>,
    granted: Granted,
) -> Response<Body> {
    let Routed {
        route,
        normalised,
        asked,
        upgrade,
    } = routed;
    let path = normalised.as_deref().unwrap_or(req.uri().path());
    let relative = route.strip_prefix(path);
    let trusted = &cx.snapshot.model.trusted_proxies;
    if upgrade {
        let Some(websocket) = &route.websocket else {
            return match &route.content {
                // A client that follows redirects finds the new place.
                Some(Content::Redirect(redirect)) => redirect_answer(&req, redirect, path),
                _ => response::status(StatusCode::NOT_FOUND),
            };
        };
        if req.version() == Version::HTTP_2 && !websocket.over_http2 {
            // The client retries over HTTP/1.1 (RFC 9113 §8.7); the log
            // records it as the upgrade it should make instead.
            return response::reset_stream(
                h2::Reason::HTTP_1_1_REQUIRED,
                StatusCode::UPGRADE_REQUIRED,
            );
        }
        // The request moves into the action; the path outlives it.
        let relative = relative.to_owned();
        let cx = UpgradeContext {
            route_name: &route.name,
            client: Arc::clone(&cx.client),
            relative_path: &relative,
            sessions: gateway.sessions(),
            trusted,
            started: cx.started,
            record: &mut cx.record,
            errors_only: cx.errors_only,
            access_log: gateway.access_log(),
            held,
            token_expires: granted.token_expires,
            recheck: granted.recheck,
            request_rules: route.headers.request.as_ref(),
        };
        return websocket::upgrade(req, websocket, cx).await;
    }
    match &route.content {
        Some(Content::Static(dir)) => {
            let asked = asked.as_deref().unwrap_or(path);
            static_files::serve(&req, dir, asked, relative)
        }
        Some(Content::Embedded(page)) => static_files::serve_page(&req, page, relative),
        Some(Content::Redirect(redirect)) => redirect_answer(&req, redirect, path),
        Some(Content::Proxy(proxy)) => {
            let relative = relative.to_owned();
            let cx = ForwardContext {
                route_name: &route.name,
                client: &cx.client,
                relative_path: &relative,
                trusted,
                request_rules: route.headers.request.as_ref(),
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
    }
}

/// The route's redirect for a request whose (rewritten, normalised) path is `path`.
fn redirect_answer<B>(req: &Request<B>, redirect: &Redirect, path: &str) -> Response<Body> {
    let parts = RequestParts {
        host: request_host(req).ok().flatten(),
        path,
        query: req.uri().query(),
    };
    match redirect.location(&parts) {
        Some(location) => response::redirect(redirect.status, &location),
        // HTTP/1.0 without `Host`, for a target that names it.
        None => response::status(StatusCode::BAD_REQUEST),
    }
}

/// Phase 4: counts the response under its route (or `unmatched`), its body
/// bytes and duration as they go out, and attaches its access log record.
fn log(
    gateway: &Gateway,
    cx: &mut RequestContext<'_>,
    mut response: Response<Body>,
) -> Response<Body> {
    let meters = match cx.route {
        Some(route) => route.meters.as_ref(),
        None => gateway.metrics().map(Metrics::unmatched),
    };
    if let Some(meters) = meters {
        meters.request(&cx.method, response.status());
        let meter = meters.body_meter(cx.started);
        response = response.map(|body| body.metered(meter));
    }
    match cx.record.take() {
        Some(record) => access::attach(
            record,
            cx.errors_only,
            cx.started,
            gateway.access_log(),
            response,
        ),
        None => response,
    }
}

/// Whether `text` is `host[:port]` (RFC 9110 §7.2): a bracketed IPv6
/// literal or a reg-name, then an optional numeric port; no userinfo, no
/// spaces. Checked byte by byte, without building a `Uri` on every request.
fn is_host_port(text: &str) -> bool {
    let is_port = |port: &str| port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = text.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let ipv6 = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return ipv6 && (after.is_empty() || after.strip_prefix(':').is_some_and(is_port));
    }
    let (host, port) = text.rsplit_once(':').unwrap_or((text, ""));
    !host.is_empty()
        && is_port(port)
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
}

/// Whether every `Transfer-Encoding` coding is `chunked` (or there is none).
fn only_chunked(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
        .all(|coding| coding.eq_ignore_ascii_case(b"chunked"))
}

/// The token of a fetch that may be a CA validating HTTP-01 on a plaintext
/// listener: answered before any redirect or route could take it. Tokens
/// no order put up go on to the routes, which may proxy them to another
/// ACME client.
fn acme_http_token<'r, B>(req: &'r Request<B>, cx: &RequestContext<'_>) -> Option<&'r str> {
    let token = req.uri().path().strip_prefix(HTTP_CHALLENGE_PREFIX)?;
    let plaintext = cx.client.tls_facts.is_none();
    let fetch = matches!(*req.method(), Method::GET | Method::HEAD);
    (plaintext && fetch && !cx.snapshot.acme.is_empty()).then_some(token)
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
/// (RFC 9112 §3.2), even with an absolute-form target, so its absence or
/// repetition is an error; so is a value that is not `host[:port]`, an
/// authority with userinfo (RFC 9113 §8.3.1) and a scheme other than ours.
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, ()> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() || (first.is_none() && req.version() == Version::HTTP_11) {
        return Err(());
    }
    if let Some(authority) = req.uri().authority() {
        let scheme_ok = matches!(req.uri().scheme_str(), None | Some("http" | "https"));
        if !scheme_ok || authority.as_str().contains('@') {
            return Err(());
        }
        return Ok(Some(host_name(authority.as_str())));
    }
    match first {
        Some(host) => {
            let host = host.to_str().map_err(|_| ())?;
            if is_host_port(host) {
                Ok(Some(host_name(host)))
            } else {
                Err(())
            }
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_host_and_port() {
        for good in [
            "a",
            "a.example:8080",
            "[::1]",
            "[::1]:8080",
            "127.0.0.1:80",
            "a:",
        ] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "", "a b", "user@a", "a:80:80", "[::1", "[zz]", "[::1]x", "a:123456", ":80", "a/b",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}

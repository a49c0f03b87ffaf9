//! The access log's part of a request: what is captured from the request
//! before its action consumes it, and the record that is written when the
//! response body is done, or, for an upgrade that became a session, when
//! the session ends (`websocket::upgrade` takes the record then).

use std::time::{Instant, SystemTime};

use http::header::{HOST, REFERER, USER_AGENT};
use http::{Request, Response, Version};

use crate::access_log::{
    bounded, header_text, AccessLog, Kind, Pending, Record, UpstreamFacts, MAX_METHOD, MAX_PATH,
};
use crate::body::Body;
use crate::connection::ClientConnection;
use crate::model::{LogRequests, RouteLogging};
use crate::request_ids::Ids;
use crate::snapshot::Snapshot;

/// What the log records of a request, as far as the request tells.
pub(super) fn capture<B>(
    req: &Request<B>,
    client: &ClientConnection,
    snapshot: &Snapshot,
    ids: &Ids,
) -> Box<Record> {
    let headers = req.headers();
    let header = |name| headers.get(name).map(|value| header_text(value.as_bytes()));
    let host = match req.uri().authority() {
        Some(authority) => Some(bounded(authority.as_str(), MAX_PATH)),
        None => header(HOST),
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |target| target.as_str());
    let remote_addr = snapshot
        .model
        .trusted_proxies
        .client_ip(client.addr.ip(), headers);
    Box::new(Record {
        kind: Kind::Request,
        time: SystemTime::now(),
        remote_addr,
        remote_port: client.addr.port(),
        listener: client.local,
        tls: client.tls_facts.clone(),
        protocol: protocol_name(req.version()),
        // Extension methods are any token hyper accepted: bounded too.
        method: bounded(req.method().as_str(), MAX_METHOD),
        host,
        path: bounded(target, MAX_PATH),
        status: 0,
        bytes_sent: 0,
        duration: Default::default(),
        ttfb: None,
        route: None,
        backend: None,
        attempts: None,
        upstream_status: None,
        error: None,
        reason: None,
        request_id: ids.request_id.to_str().ok().map(str::to_owned),
        trace_id: Some(ids.trace_id().to_owned()),
        span_id: Some(ids.span_id().to_owned()),
        user_agent: header(USER_AGENT),
        referer: header(REFERER),
        session: None,
    })
}

/// Applies the route's `access_log` and `log_query` once the route is
/// known: `None` when the route logs nothing.
pub(super) fn for_route(
    mut record: Box<Record>,
    route: &str,
    logging: RouteLogging,
) -> Option<Box<Record>> {
    if logging.requests == LogRequests::Off {
        return None;
    }
    if !logging.query {
        if let Some(query) = record.path.find('?') {
            record.path.truncate(query);
        }
    }
    record.route = Some(route.to_owned());
    Some(record)
}

/// The response, with its record attached to the body: written when the
/// body is done. `errors_only` leaves out responses below 400.
pub(super) fn attach(
    mut record: Box<Record>,
    errors_only: bool,
    started: Instant,
    log: &AccessLog,
    mut response: Response<Body>,
) -> Response<Body> {
    let facts = response.extensions_mut().remove::<UpstreamFacts>();
    let status = response.status().as_u16();
    if errors_only && status < 400 {
        return response;
    }
    record.status = status;
    record.ttfb = Some(started.elapsed());
    if let Some(facts) = facts {
        record.backend = facts.backend;
        record.attempts = (facts.attempts > 0).then_some(facts.attempts);
        record.upstream_status = facts.status;
        record.error = facts.error;
        record.reason = facts.reason;
    }
    let pending = Pending::new(record, log.clone(), started);
    response.map(|body| body.logged(pending))
}

/// How the log names an HTTP version.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

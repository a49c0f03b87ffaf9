//! The handles the data path holds: resolved from the families once per
//! snapshot, then bumped without a label lookup, lock or allocation.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use super::Families;

/// Status codes 100–599 get a cached counter each; anything else (the http
/// crate allows up to 999) is looked up when it happens.
const CACHED_CODES: std::ops::RangeInclusive<u16> = 100..=599;

/// The methods with a label of their own; every other method is `other`, so
/// clients cannot grow the series count by inventing methods.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
];

fn method_slot(method: &Method) -> usize {
    let name = method.as_str();
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|known| *known == name)
        .unwrap_or(METHODS.len() - 1)
}

/// A route's HTTP series.
pub struct HttpMeters {
    route: String,
    requests: IntCounterVec,
    /// Per method, created on its first request: a counter per status code,
    /// each created on first use.
    by_method: [OnceLock<Box<[OnceLock<IntCounter>]>>; METHODS.len()],
    duration: Histogram,
    response_bytes: IntCounter,
}

impl HttpMeters {
    pub(crate) fn new(families: &Families, route: &str) -> HttpMeters {
        HttpMeters {
            route: route.to_owned(),
            requests: families.http_requests.clone(),
            by_method: Default::default(),
            duration: families.http_duration.with_label_values(&[route]),
            response_bytes: families.http_response_bytes.with_label_values(&[route]),
        }
    }

    /// Counts a response with `status` to a `method` request.
    pub fn request(&self, method: &Method, status: StatusCode) {
        let slot = method_slot(method);
        let label = |status: StatusCode| {
            self.requests
                .with_label_values(&[self.route.as_str(), METHODS[slot], status.as_str()])
        };
        if !CACHED_CODES.contains(&status.as_u16()) {
            return label(status).inc();
        }
        let codes = self.by_method[slot].get_or_init(|| {
            CACHED_CODES
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let index = usize::from(status.as_u16() - CACHED_CODES.start());
        codes[index].get_or_init(|| label(status)).inc();
    }

    /// Measures a response body from `started` (when the request arrived).
    pub fn body_meter(&self, started: Instant) -> BodyMeter {
        BodyMeter {
            duration: self.duration.clone(),
            bytes: self.response_bytes.clone(),
            started,
            sent: 0,
        }
    }
}

/// Counts a response body's bytes as they go out; when the body is done (or
/// abandoned) it adds them and the request's duration to the route's series.
#[derive(Debug)]
pub struct BodyMeter {
    duration: Histogram,
    bytes: IntCounter,
    started: Instant,
    sent: u64,
}

impl BodyMeter {
    pub fn sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }
}

impl Drop for BodyMeter {
    fn drop(&mut self) {
        self.bytes.inc_by(self.sent);
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

/// How a WebSocket upgrade request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeResult {
    Ok,
    /// Not a valid handshake: method, version or key.
    BadRequest,
    OriginDenied,
    SubprotocolDenied,
    /// No backend could be connected to or answered in time.
    BackendUnavailable,
    /// A backend answered with something other than 101.
    BackendRejected,
    /// A backend's 101 was not a valid WebSocket answer.
    BackendInvalid,
}

impl UpgradeResult {
    const ALL: [UpgradeResult; 7] = [
        UpgradeResult::Ok,
        UpgradeResult::BadRequest,
        UpgradeResult::OriginDenied,
        UpgradeResult::SubprotocolDenied,
        UpgradeResult::BackendUnavailable,
        UpgradeResult::BackendRejected,
        UpgradeResult::BackendInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeResult::Ok => "ok",
            UpgradeResult::BadRequest => "bad_request",
            UpgradeResult::OriginDenied => "origin_denied",
            UpgradeResult::SubprotocolDenied => "subprotocol_denied",
            UpgradeResult::BackendUnavailable => "backend_unavailable",
            UpgradeResult::BackendRejected => "backend_rejected",
            UpgradeResult::BackendInvalid => "backend_invalid",
        }
    }
}

/// How the client opened a WebSocket: an HTTP/1.1 upgrade, or a stream of
/// an HTTP/2 connection (RFC 8441).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    H1,
    H2,
}

impl ClientProtocol {
    const ALL: [ClientProtocol; 2] = [ClientProtocol::H1, ClientProtocol::H2];

    /// The `protocol` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientProtocol::H1 => "h1",
            ClientProtocol::H2 => "h2",
        }
    }
}

/// Which way relayed WebSocket traffic went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToBackend,
    BackendToClient,
}

impl Direction {
    const ALL: [Direction; 2] = [Direction::ClientToBackend, Direction::BackendToClient];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToBackend => "client_to_backend",
            Direction::BackendToClient => "backend_to_client",
        }
    }
}

/// A route's WebSocket series.
pub struct WsMeters {
    route: String,
    upgrades: [[IntCounter; UpgradeResult::ALL.len()]; ClientProtocol::ALL.len()],
    active: [IntGauge; ClientProtocol::ALL.len()],
    directions: [DirectionMeters; Direction::ALL.len()],
    closes: IntCounterVec,
    session_duration: Histogram,
    ping_rtt: Histogram,
}

#[derive(Clone, Debug)]
struct DirectionMeters {
    frames: IntCounter,
    messages: IntCounter,
    payload_bytes: IntCounter,
    message_size: Histogram,
}

impl WsMeters {
    pub(crate) fn new(families: &Families, route: &str) -> WsMeters {
        let direction = |direction: Direction| {
            let labels = [route, direction.as_str()];
            DirectionMeters {
                frames: families.ws_frames.with_label_values(&labels),
                messages: families.ws_messages.with_label_values(&labels),
                payload_bytes: families.ws_payload_bytes.with_label_values(&labels),
                message_size: families.ws_message_size.with_label_values(&labels),
            }
        };
        WsMeters {
            route: route.to_owned(),
            upgrades: ClientProtocol::ALL.map(|protocol| {
                UpgradeResult::ALL.map(|result| {
                    families.ws_upgrades.with_label_values(&[
                        route,
                        result.as_str(),
                        protocol.as_str(),
                    ])
                })
            }),
            active: ClientProtocol::ALL.map(|protocol| {
                families
                    .ws_active
                    .with_label_values(&[route, protocol.as_str()])
            }),
            directions: Direction::ALL.map(direction),
            closes: families.ws_closes.clone(),
            session_duration: families.ws_session_duration.with_label_values(&[route]),
            ping_rtt: families.ws_ping_rtt.with_label_values(&[route]),
        }
    }

    pub fn upgrade(&self, result: UpgradeResult, protocol: ClientProtocol) {
        self.upgrades[protocol as usize][result as usize].inc();
    }

    /// Counts a session as active until the returned guard is dropped.
    pub fn session_started(&self, protocol: ClientProtocol) -> Active {
        Active::new(&self.active[protocol as usize])
    }

    /// Counts a session's end: how long it lasted, who began the close
    /// (`client`, `backend`, `gateway`) and the close code (`None`: no close frame).
    pub fn session_ended(&self, lasted: Duration, initiator: &str, code: Option<u16>) {
        self.session_duration.observe(lasted.as_secs_f64());
        // One label lookup per session, never per message.
        let code = code.map_or(Cow::Borrowed("none"), |code| Cow::Owned(code.to_string()));
        self.closes
            .with_label_values(&[self.route.as_str(), initiator, &code])
            .inc();
    }

    /// Tallies for one session's relay, borrowing the route's series: the
    /// session holds its route to the end, and an idle session then holds
    /// no handles or local histograms of its own.
    pub fn session_tally(&self) -> SessionTally<'_> {
        let [to_backend, to_client] = &self.directions;
        SessionTally {
            to_backend: DirectionTally::new(to_backend),
            to_client: DirectionTally::new(to_client),
            ping_rtt: &self.ping_rtt,
        }
    }
}

/// What one session's relay counts: totals per direction, added to the
/// route's series once per read batch.
#[derive(Debug)]
pub struct SessionTally<'a> {
    pub to_backend: DirectionTally<'a>,
    pub to_client: DirectionTally<'a>,
    pub ping_rtt: &'a Histogram,
}

/// One direction of a session: totals flushed as differences from what was
/// flushed before.
#[derive(Debug)]
pub struct DirectionTally<'a> {
    meters: &'a DirectionMeters,
    flushed: [u64; 3],
}

impl<'a> DirectionTally<'a> {
    fn new(meters: &'a DirectionMeters) -> DirectionTally<'a> {
        DirectionTally {
            meters,
            flushed: [0; 3],
        }
    }

    /// Counts a complete data message of `size` payload bytes. Straight into
    /// the shared histogram: most read batches hold one message, and a
    /// local histogram's flush walks every bucket.
    pub fn message(&self, size: u64) {
        self.meters.message_size.observe(size as f64);
    }

    /// Brings the route's series up to these running totals.
    pub fn flush(&mut self, frames: u64, messages: u64, payload_bytes: u64) {
        let totals = [frames, messages, payload_bytes];
        let meters = self.meters;
        let counters = [&meters.frames, &meters.messages, &meters.payload_bytes];
        for ((counter, total), flushed) in counters.into_iter().zip(totals).zip(&mut self.flushed) {
            if total > *flushed {
                counter.inc_by(total - *flushed);
                *flushed = total;
            }
        }
    }
}

/// A listener's series.
#[derive(Clone)]
pub struct ListenerMeters {
    active: IntGauge,
    /// By [`AcceptError`].
    accept_errors: [IntCounter; AcceptError::ALL.len()],
    /// `None` on a plaintext listener, which has no handshake series.
    handshakes: Option<[IntCounter; TlsResult::ALL.len()]>,
}

/// How a TLS handshake with a client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsResult {
    Ok,
    Error,
    Timeout,
}

impl TlsResult {
    const ALL: [TlsResult; 3] = [TlsResult::Ok, TlsResult::Error, TlsResult::Timeout];

    fn as_str(self) -> &'static str {
        match self {
            TlsResult::Ok => "ok",
            TlsResult::Error => "error",
            TlsResult::Timeout => "timeout",
        }
    }
}

/// Why `accept` failed on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// EMFILE or ENFILE: the process or the system is out of file descriptors.
    OutOfFileDescriptors,
    Other,
}

impl AcceptError {
    const ALL: [AcceptError; 2] = [AcceptError::OutOfFileDescriptors, AcceptError::Other];

    fn as_str(self) -> &'static str {
        match self {
            AcceptError::OutOfFileDescriptors => "out_of_file_descriptors",
            AcceptError::Other => "other",
        }
    }
}

impl ListenerMeters {
    pub(crate) fn new(families: &Families, listener: &str, tls: bool) -> ListenerMeters {
        ListenerMeters {
            active: families.connections_active.with_label_values(&[listener]),
            accept_errors: AcceptError::ALL.map(|error| {
                families
                    .accept_errors
                    .with_label_values(&[listener, error.as_str()])
            }),
            handshakes: tls.then(|| {
                TlsResult::ALL.map(|result| {
                    families
                        .tls_handshakes
                        .with_label_values(&[listener, result.as_str()])
                })
            }),
        }
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> Active {
        Active::new(&self.active)
    }

    pub fn accept_failed(&self, error: AcceptError) {
        self.accept_errors[error as usize].inc();
    }

    pub fn handshake(&self, result: TlsResult) {
        if let Some(handshakes) = &self.handshakes {
            handshakes[result as usize].inc();
        }
    }
}

/// Why an attempt to use a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Refused, unreachable, or reset while connecting.
    Connect,
    ConnectTimeout,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// The backend broke HTTP.
    Protocol,
    /// No answer within the time allowed.
    ResponseTimeout,
    /// An answer the gateway cannot use (a 101 that is not WebSocket's).
    InvalidResponse,
    /// The backend broke off a response body; the client connection was closed.
    Aborted,
    /// The backend's response body stalled for `body_timeout`; the client
    /// connection was closed.
    BodyTimeout,
    /// Every backend of the route failed its health checks (`backend="none"`).
    NoHealthyBackend,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 8] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::ResponseTimeout,
        UpstreamErrorKind::InvalidResponse,
        UpstreamErrorKind::Aborted,
        UpstreamErrorKind::BodyTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::ResponseTimeout => "response_timeout",
            UpstreamErrorKind::InvalidResponse => "invalid_response",
            UpstreamErrorKind::Aborted => "aborted",
            UpstreamErrorKind::BodyTimeout => "body_timeout",
            UpstreamErrorKind::NoHealthyBackend => "no_healthy_backend",
        }
    }
}

/// One backend's series on one route.
pub struct BackendMeters {
    connect: Histogram,
    /// Every kind but `NoHealthyBackend`, which is counted per pool.
    errors: [IntCounter; UpstreamErrorKind::ALL.len()],
    healthy: IntGauge,
    drained: IntGauge,
}

impl BackendMeters {
    pub(crate) fn new(families: &Families, route: &str, backend: &str) -> BackendMeters {
        BackendMeters {
            connect: families
                .upstream_connect
                .with_label_values(&[route, backend]),
            errors: UpstreamErrorKind::ALL.map(|kind| {
                families
                    .upstream_errors
                    .with_label_values(&[route, backend, kind.as_str()])
            }),
            healthy: families
                .upstream_healthy
                .with_label_values(&[route, backend]),
            drained: families
                .upstream_drained
                .with_label_values(&[route, backend]),
        }
    }

    pub fn healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    pub fn drained(&self, drained: bool) {
        self.drained.set(i64::from(drained));
    }

    pub fn connected(&self, took: Duration) {
        self.connect.observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: UpstreamErrorKind) {
        match self.errors.get(kind as usize) {
            Some(counter) => counter.inc(),
            None => tracing::debug!(?kind, "not a per-backend error kind"),
        }
    }
}

/// Holds a gauge one higher while it lives.
#[derive(Debug)]
pub struct Active(IntGauge);

impl Active {
    fn new(gauge: &IntGauge) -> Active {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

macro_rules! opaque_debug {
    ($($name:ident),*) => {$(
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    )*};
}
opaque_debug!(HttpMeters, WsMeters, ListenerMeters, BackendMeters);

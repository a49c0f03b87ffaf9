//! One access log record and its fields: what a request or a WebSocket
//! session leaves behind, rendered as a JSON object, nginx's `combined`
//! line, or a template of `$field` names. Every format reads the same
//! [`Field`] list, so a field has one name and one value everywhere.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest path (with its query) a record keeps, in bytes; longer ones
/// are cut and end in `...`, so a hostile URL cannot grow a line without bound.
pub const MAX_PATH: usize = 2048;

/// The longest header value (user agent, referer) a record keeps, in bytes.
pub const MAX_HEADER: usize = 512;

/// The longest method a record keeps, in bytes.
pub const MAX_METHOD: usize = 32;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP request, including an upgrade that did not become a session.
    Request,
    /// A WebSocket session, written when it ends.
    Session,
}

/// The TLS facts of a client connection.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub version: Option<&'static str>,
    pub alpn: Option<String>,
    pub sni: Option<String>,
}

/// What a WebSocket session adds to its upgrade's record.
#[derive(Debug, Clone, Default)]
pub struct SessionFacts {
    pub duration: Duration,
    pub client_messages: u64,
    pub client_bytes: u64,
    pub backend_messages: u64,
    pub backend_bytes: u64,
    /// `None`: the session ended without a close frame.
    pub close_code: Option<u16>,
    pub closed_by: &'static str,
    /// Why the gateway closed it, when it did.
    pub close_reason: Option<&'static str>,
    pub ping_rtt: Option<Duration>,
    pub subprotocol: Option<String>,
    pub extensions: Option<String>,
}

/// What answering a request learnt about the backends, carried from the
/// action to the log phase in the response's extensions.
#[derive(Debug, Clone, Default)]
pub struct UpstreamFacts {
    /// The last backend tried.
    pub backend: Option<String>,
    pub attempts: u32,
    /// The status the backend answered with.
    pub status: Option<u16>,
    /// What went wrong with the last backend tried, as `wsgate_upstream_errors_total` names it.
    pub error: Option<&'static str>,
    /// Why the gateway refused or cut the request short itself.
    pub reason: Option<&'static str>,
}

impl UpstreamFacts {
    /// Whether an answer of `status` is the backend's own (passed on as it
    /// came), rather than one the gateway made about it.
    pub fn answered_by_backend(&self, status: u16) -> bool {
        self.status == Some(status) && self.error.is_none()
    }
}

/// One line of the access log. Fields that do not apply are `None` and left
/// out of the line (JSON) or written as `-` (text formats).
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    /// When the request arrived.
    pub time: SystemTime,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub listener: Option<SocketAddr>,
    pub tls: Option<TlsFacts>,
    pub protocol: &'static str,
    pub method: String,
    pub host: Option<String>,
    /// Bounded by [`MAX_PATH`]; with or without the query, as the route says.
    pub path: String,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration: Duration,
    /// Until the response head was ready.
    pub ttfb: Option<Duration>,
    pub route: Option<String>,
    pub backend: Option<String>,
    pub attempts: Option<u32>,
    pub upstream_status: Option<u16>,
    /// What went wrong with the backend: `connect_refused`, `timeout`…
    pub error: Option<&'static str>,
    /// Why the gateway itself refused or ended it.
    pub reason: Option<&'static str>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub session: Option<SessionFacts>,
}

/// The fields a format can name, in the order a JSON line lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Time,
    Type,
    RemoteAddr,
    RemotePort,
    Listener,
    TlsVersion,
    Alpn,
    Sni,
    Protocol,
    Method,
    Host,
    Path,
    Status,
    BytesSent,
    DurationMs,
    TtfbMs,
    Route,
    Backend,
    Attempts,
    UpstreamStatus,
    Error,
    Reason,
    RequestId,
    TraceId,
    SpanId,
    UserAgent,
    Referer,
    SessionMs,
    ClientMessages,
    ClientBytes,
    BackendMessages,
    BackendBytes,
    CloseCode,
    ClosedBy,
    CloseReason,
    PingRttMs,
    Subprotocol,
    Extensions,
    /// Text formats only: `METHOD path PROTOCOL`, as nginx's `$request`.
    Request,
    /// Text formats only: `04/Dec/2026:17:40:00 +0000`, as nginx's `$time_local`.
    TimeLocal,
}

impl Field {
    /// The fields of a JSON line, in order.
    pub const JSON: [Field; 38] = [
        Field::Time,
        Field::Type,
        Field::RemoteAddr,
        Field::RemotePort,
        Field::Listener,
        Field::TlsVersion,
        Field::Alpn,
        Field::Sni,
        Field::Protocol,
        Field::Method,
        Field::Host,
        Field::Path,
        Field::Status,
        Field::BytesSent,
        Field::DurationMs,
        Field::TtfbMs,
        Field::Route,
        Field::Backend,
        Field::Attempts,
        Field::UpstreamStatus,
        Field::Error,
        Field::Reason,
        Field::RequestId,
        Field::TraceId,
        Field::SpanId,
        Field::UserAgent,
        Field::Referer,
        Field::SessionMs,
        Field::ClientMessages,
        Field::ClientBytes,
        Field::BackendMessages,
        Field::BackendBytes,
        Field::CloseCode,
        Field::ClosedBy,
        Field::CloseReason,
        Field::PingRttMs,
        Field::Subprotocol,
        Field::Extensions,
    ];

    /// Its name: the JSON key, and `$name` in a template.
    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::Type => "type",
            Field::RemoteAddr => "remote_addr",
            Field::RemotePort => "remote_port",
            Field::Listener => "listener",
            Field::TlsVersion => "tls_version",
            Field::Alpn => "alpn",
            Field::Sni => "sni",
            Field::Protocol => "protocol",
            Field::Method => "method",
            Field::Host => "host",
            Field::Path => "path",
            Field::Status => "status",
            Field::BytesSent => "bytes_sent",
            Field::DurationMs => "duration_ms",
            Field::TtfbMs => "ttfb_ms",
            Field::Route => "route",
            Field::Backend => "backend",
            Field::Attempts => "attempts",
            Field::UpstreamStatus => "upstream_status",
            Field::Error => "error",
            Field::Reason => "reason",
            Field::RequestId => "request_id",
            Field::TraceId => "trace_id",
            Field::SpanId => "span_id",
            Field::UserAgent => "user_agent",
            Field::Referer => "referer",
            Field::SessionMs => "session_ms",
            Field::ClientMessages => "client_messages",
            Field::ClientBytes => "client_bytes",
            Field::BackendMessages => "backend_messages",
            Field::BackendBytes => "backend_bytes",
            Field::CloseCode => "close_code",
            Field::ClosedBy => "closed_by",
            Field::CloseReason => "close_reason",
            Field::PingRttMs => "ping_rtt_ms",
            Field::Subprotocol => "subprotocol",
            Field::Extensions => "extensions",
            Field::Request => "request",
            Field::TimeLocal => "time_local",
        }
    }

    /// The field a template's `$name` stands for.
    pub fn named(name: &str) -> Option<Field> {
        Field::JSON
            .into_iter()
            .chain([Field::Request, Field::TimeLocal])
            .find(|field| field.name() == name)
    }
}

/// A field's value in one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Text(Cow<'a, str>),
    Number(u64),
    /// Milliseconds, written with three decimals.
    Millis(Duration),
    /// RFC 3339 in UTC with milliseconds.
    Time(SystemTime),
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl Value<'_> {
    /// Writes a value that needs no escaping (all but `Text`) to `out`.
    pub fn write_plain(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match self {
            Value::Text(text) => out.write_str(text),
            Value::Number(n) => decimal(out, *n, 1),
            // Integer arithmetic: exact float formatting costs more than the rest of a line.
            Value::Millis(duration) => {
                let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
                decimal(out, micros / 1000, 1)?;
                out.write_char('.')?;
                decimal(out, micros % 1000, 3)
            }
            Value::Time(time) => write_rfc3339_millis(out, *time),
            Value::Ip(ip) => write!(out, "{ip}"),
            Value::Socket(addr) => write!(out, "{addr}"),
        }
    }
}

impl Record {
    /// `field`'s value, or `None` where it does not apply.
    pub fn value(&self, field: Field) -> Option<Value<'_>> {
        let text = |s: &'static str| Some(Value::Text(Cow::Borrowed(s)));
        let session = self.session.as_ref();
        let tls = self.tls.as_ref();
        match field {
            Field::Time => Some(Value::Time(self.time)),
            Field::TimeLocal => Some(Value::Text(Cow::Owned(common_log_time(self.time)))),
            Field::Type => text(match self.kind {
                Kind::Request => "request",
                Kind::Session => "session",
            }),
            Field::RemoteAddr => Some(Value::Ip(self.remote_addr)),
            Field::RemotePort => Some(Value::Number(self.remote_port.into())),
            Field::Listener => self.listener.map(Value::Socket),
            Field::TlsVersion => tls.and_then(|tls| tls.version).and_then(text),
            Field::Alpn => tls.and_then(|tls| owned_text(&tls.alpn)),
            Field::Sni => tls.and_then(|tls| owned_text(&tls.sni)),
            Field::Protocol => text(self.protocol),
            Field::Method => Some(Value::Text(Cow::Borrowed(&self.method))),
            Field::Host => owned_text(&self.host),
            Field::Path => Some(Value::Text(Cow::Borrowed(&self.path))),
            Field::Request => Some(Value::Text(Cow::Owned(format!(
                "{} {} {}",
                self.method, self.path, self.protocol
            )))),
            Field::Status => Some(Value::Number(self.status.into())),
            Field::BytesSent => Some(Value::Number(self.bytes_sent)),
            Field::DurationMs => Some(Value::Millis(self.duration)),
            Field::TtfbMs => self.ttfb.map(Value::Millis),
            Field::Route => owned_text(&self.route),
            Field::Backend => owned_text(&self.backend),
            Field::Attempts => self.attempts.map(|n| Value::Number(n.into())),
            Field::UpstreamStatus => self.upstream_status.map(|s| Value::Number(s.into())),
            Field::Error => self.error.and_then(text),
            Field::Reason => self.reason.and_then(text),
            Field::RequestId => owned_text(&self.request_id),
            Field::TraceId => owned_text(&self.trace_id),
            Field::SpanId => owned_text(&self.span_id),
            Field::UserAgent => owned_text(&self.user_agent),
            Field::Referer => owned_text(&self.referer),
            Field::SessionMs => session.map(|s| Value::Millis(s.duration)),
            Field::ClientMessages => session.map(|s| Value::Number(s.client_messages)),
            Field::ClientBytes => session.map(|s| Value::Number(s.client_bytes)),
            Field::BackendMessages => session.map(|s| Value::Number(s.backend_messages)),
            Field::BackendBytes => session.map(|s| Value::Number(s.backend_bytes)),
            Field::CloseCode => session
                .and_then(|s| s.close_code)
                .map(|code| Value::Number(code.into())),
            Field::ClosedBy => session.map(|s| s.closed_by).and_then(text),
            Field::CloseReason => session.and_then(|s| s.close_reason).and_then(text),
            Field::PingRttMs => session.and_then(|s| s.ping_rtt).map(Value::Millis),
            Field::Subprotocol => session.and_then(|s| owned_text(&s.subprotocol)),
            Field::Extensions => session.and_then(|s| owned_text(&s.extensions)),
        }
    }
}

fn owned_text(text: &Option<String>) -> Option<Value<'_>> {
    text.as_deref().map(|text| Value::Text(Cow::Borrowed(text)))
}

#[cfg(test)]
impl Record {
    /// A `GET /` answered 200, with nothing else known: for tests to vary.
    pub fn example() -> Record {
        Record {
            kind: Kind::Request,
            time: UNIX_EPOCH + Duration::from_millis(1_796_406_000_123),
            remote_addr: std::net::Ipv4Addr::LOCALHOST.into(),
            remote_port: 50000,
            listener: None,
            tls: None,
            protocol: "HTTP/1.1",
            method: "GET".into(),
            host: None,
            path: "/".into(),
            status: 200,
            bytes_sent: 0,
            duration: Duration::ZERO,
            ttfb: None,
            route: None,
            backend: None,
            attempts: None,
            upstream_status: None,
            error: None,
            reason: None,
            request_id: None,
            trace_id: None,
            span_id: None,
            user_agent: None,
            referer: None,
            session: None,
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked with
/// `...` when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// A header value as text: bytes that are not UTF-8 (obs-text) become
/// U+FFFD, and the result is bounded by [`MAX_HEADER`].
pub fn header_text(bytes: &[u8]) -> String {
    bounded(&String::from_utf8_lossy(bytes), MAX_HEADER)
}

/// `2026-12-04T17:40:00.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    let _ = write_rfc3339_millis(&mut out, time);
    out
}

fn write_rfc3339_millis(out: &mut impl std::fmt::Write, time: SystemTime) -> std::fmt::Result {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ((year, month, day), secs) = civil(since.as_secs());
    let parts = [
        (year, 4, '-'),
        (month.into(), 2, '-'),
        (day.into(), 2, 'T'),
        (secs / 3600, 2, ':'),
        (secs / 60 % 60, 2, ':'),
        (secs % 60, 2, '.'),
        (since.subsec_millis().into(), 3, 'Z'),
    ];
    for (value, width, after) in parts {
        decimal(out, value, width)?;
        out.write_char(after)?;
    }
    Ok(())
}

/// `value` in decimal, zero-padded to `width` digits: by hand, because the
/// formatting machinery costs a noticeable part of a log line.
fn decimal(out: &mut impl std::fmt::Write, mut value: u64, width: usize) -> std::fmt::Result {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let start = start.min(digits.len() - width.min(digits.len()));
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&digits[start..]).unwrap_or("0"))
}

/// `04/Dec/2026:17:40:00 +0000`: the common log format's time, in UTC.
fn common_log_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ((year, month, day), secs) = civil(since.as_secs());
    format!(
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[usize::from(month - 1)],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The UTC date (year, month, day) of a Unix time, and the seconds into that
/// day. Howard Hinnant's `civil_from_days`, valid for every date after 1970.
fn civil(unix_secs: u64) -> ((u64, u8, u8), u64) {
    let days = unix_secs / 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    ((year, month, day), unix_secs % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_millis(1_796_406_000_123);
        assert_eq!(rfc3339_millis(time), "2026-12-04T17:40:00.123Z");
        assert_eq!(common_log_time(time), "04/Dec/2026:17:40:00 +0000");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn decimals_are_padded_and_durations_have_three_places() {
        let text = |value: Value<'_>| {
            let mut out = String::new();
            value.write_plain(&mut out).expect("write");
            out
        };
        assert_eq!(text(Value::Number(0)), "0");
        assert_eq!(text(Value::Number(u64::MAX)), u64::MAX.to_string());
        assert_eq!(text(Value::Millis(Duration::from_micros(1500))), "1.500");
        assert_eq!(
            text(Value::Millis(Duration::from_micros(12_345_007))),
            "12345.007"
        );
        assert_eq!(text(Value::Millis(Duration::ZERO)), "0.000");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcdef", 5), "ab...");
        let cut = bounded(&"é".repeat(10), 8);
        assert_eq!(cut, "éé...");
        assert_eq!(header_text(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn every_json_field_has_a_distinct_name_that_finds_it() {
        for field in Field::JSON {
            assert_eq!(Field::named(field.name()), Some(field));
        }
        assert_eq!(Field::named("request"), Some(Field::Request));
        assert_eq!(Field::named("nope"), None);
    }
}

//! The series of per-client and per-session limits: what each refused or
//! closed, and how often sessions were slowed.

use prometheus::IntCounter;

use super::Families;

/// Which limit refused a connection, request or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ConnectionsPerClient,
    RequestRate,
    HandshakeRate,
    SessionsPerClient,
    /// A session closed with 1008 for its message rate (`rate_exceeded = "close"`).
    MessageRate,
    /// The same for its byte rate.
    ByteRate,
}

impl Limit {
    const ALL: [Limit; 6] = [
        Limit::ConnectionsPerClient,
        Limit::RequestRate,
        Limit::HandshakeRate,
        Limit::SessionsPerClient,
        Limit::MessageRate,
        Limit::ByteRate,
    ];

    /// The `limit` label, and the access log's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ConnectionsPerClient => "connections_per_client",
            Limit::RequestRate => "request_rate",
            Limit::HandshakeRate => "handshake_rate",
            Limit::SessionsPerClient => "sessions_per_client",
            Limit::MessageRate => "message_rate",
            Limit::ByteRate => "byte_rate",
        }
    }
}

/// One route's limit series (or, with an empty route, those of the limits
/// that apply before routing: per-client connections, listener rates).
#[derive(Debug, Clone)]
pub struct LimitMeters {
    rejections: [IntCounter; Limit::ALL.len()],
    /// Pauses of a session's reads: message rate, byte rate.
    throttled: [IntCounter; 2],
}

impl LimitMeters {
    pub(crate) fn new(families: &Families, route: &str) -> LimitMeters {
        LimitMeters {
            rejections: Limit::ALL.map(|limit| {
                families
                    .limit_rejections
                    .with_label_values(&[route, limit.as_str()])
            }),
            throttled: [Limit::MessageRate, Limit::ByteRate].map(|limit| {
                families
                    .limit_throttled
                    .with_label_values(&[route, limit.as_str()])
            }),
        }
    }

    pub fn rejected(&self, limit: Limit) {
        self.rejections[limit as usize].inc();
    }

    /// A session stopped reading for `limit` (the message or byte rate).
    pub fn throttled(&self, limit: Limit) {
        let slot = match limit {
            Limit::ByteRate => 1,
            _ => 0,
        };
        self.throttled[slot].inc();
    }
}

//! Per-client and per-session limits, as validated: rates with their
//! bursts, and what a WebSocket client gets when it sends too fast.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many client addresses the rate limits remember when the config does not say.
pub const DEFAULT_MAX_TRACKED_CLIENTS: usize = 100_000;

/// IPv6 clients are limited per network of this prefix when the config does not say.
pub const DEFAULT_CLIENT_IPV6_PREFIX: u8 = 64;

/// A rate (`"20/s"`: `amount` per `per`) and how much of it may be spent at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub amount: u64,
    pub per: Duration,
    pub burst: u64,
}

/// What a WebSocket client that sends over its message or byte rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateExceeded {
    /// The gateway stops reading until the budget allows more: TCP slows
    /// the client down and nothing is lost.
    Slow,
    /// Slowed as above, and closed with 1008 once it has kept sending over
    /// the rate for `grace`.
    Close { grace: Duration },
}

/// A WebSocket route's limits on each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Data messages from the client.
    pub client_message_rate: Option<RateLimit>,
    /// Bytes read from the client, frame headers included.
    pub client_byte_rate: Option<RateLimit>,
    pub rate_exceeded: RateExceeded,
    /// Sessions end with `max_duration_code` between 90 % and 100 % of this.
    pub max_duration: Option<Duration>,
    pub max_duration_code: u16,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            client_message_rate: None,
            client_byte_rate: None,
            rate_exceeded: RateExceeded::Slow,
            max_duration: None,
            max_duration_code: 1001,
        }
    }
}

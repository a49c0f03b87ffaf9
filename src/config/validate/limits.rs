//! Per-client and per-session limits: rates with their bursts, caps on
//! what a client holds open, session lifetimes, and the PROXY protocol's
//! need for a list of senders.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{parse_rate, parse_size, RawServer, RawWebSocket};
use crate::model::{self, RateExceeded, RateLimit, SessionLimits};

/// A request rate and its burst, `rate_key = "20/s"` and `burst_key = 40`.
/// The burst defaults to one period's amount.
pub(super) fn rate(
    check: &mut Checker,
    (rate_key, rate): (&'static str, &Option<Spanned<String>>),
    (burst_key, burst): (&'static str, &Option<Spanned<i64>>),
) -> Option<RateLimit> {
    let burst_span = burst.as_ref().map(Spanned::span);
    let (rate, amount, per) = parsed_rate(check, (rate_key, rate), (burst_key, burst_span), false)?;
    let burst = match burst {
        None => amount,
        Some(burst) => at_least_one(check, burst, burst_key).unwrap_or(amount),
    };
    limit(check, rate, rate_key, amount, per, burst)
}

/// A byte rate and its burst as a size, `"1MiB/s"` and `"2MiB"`.
fn byte_rate(
    check: &mut Checker,
    (rate_key, rate): (&'static str, &Option<Spanned<String>>),
    (burst_key, burst): (&'static str, &Option<Spanned<String>>),
) -> Option<RateLimit> {
    let burst_span = burst.as_ref().map(Spanned::span);
    let (rate, amount, per) = parsed_rate(check, (rate_key, rate), (burst_key, burst_span), true)?;
    let burst = match burst {
        None => amount,
        Some(text) => match parse_size(text.get_ref()) {
            Some(0) => {
                check.error(text.span(), ConfigError::ZeroSize(burst_key));
                amount
            }
            Some(size) => size,
            None => {
                check.error(text.span(), ConfigError::BadSize(text.get_ref().clone()));
                amount
            }
        },
    };
    limit(check, rate, rate_key, amount, per, burst)
}

/// The rate's text, amount and period; `None` when it is unset (then a
/// burst alone is an error) or does not parse (`sizes`: a byte rate).
fn parsed_rate<'r>(
    check: &mut Checker,
    (rate_key, rate): (&'static str, &'r Option<Spanned<String>>),
    (burst_key, burst_span): (&'static str, Option<Range<usize>>),
    sizes: bool,
) -> Option<(&'r Spanned<String>, u64, Duration)> {
    let Some(rate) = rate else {
        if let Some(span) = burst_span {
            let error = ConfigError::BurstWithoutRate {
                burst: burst_key,
                rate: rate_key,
            };
            check.error(span, error);
        }
        return None;
    };
    let Some((amount, per)) = parse_rate(rate.get_ref(), sizes) else {
        let text = rate.get_ref().clone();
        let error = if sizes {
            ConfigError::BadByteRate(text)
        } else {
            ConfigError::BadRate(text)
        };
        check.error(rate.span(), error);
        return None;
    };
    Some((rate, amount, per))
}

fn limit(
    check: &mut Checker,
    rate: &Spanned<String>,
    key: &'static str,
    amount: u64,
    per: Duration,
    burst: u64,
) -> Option<RateLimit> {
    if amount == 0 {
        check.error(rate.span(), ConfigError::ZeroRate(key));
        return None;
    }
    Some(RateLimit { amount, per, burst })
}

/// A count that must be at least 1 and fit a `u32`.
pub(super) fn at_least_one(
    check: &mut Checker,
    value: &Spanned<i64>,
    key: &'static str,
) -> Option<u64> {
    match u32::try_from(*value.get_ref()) {
        Ok(count) if count >= 1 => Some(u64::from(count)),
        _ => {
            check.error(value.span(), ConfigError::TooSmall(key));
            None
        }
    }
}

/// A cap on things held open: absent means none.
pub(super) fn cap(
    check: &mut Checker,
    value: &Option<Spanned<i64>>,
    key: &'static str,
) -> Option<u32> {
    let value = value.as_ref()?;
    at_least_one(check, value, key).and_then(|count| u32::try_from(count).ok())
}

/// The `[server]` keys for per-client limits: (per-client connection cap,
/// IPv6 prefix, rate-limit table size).
pub(super) fn server_limits(check: &mut Checker, raw: &RawServer) -> (Option<u32>, u8, usize) {
    let per_client = cap(
        check,
        &raw.max_connections_per_client,
        "max_connections_per_client",
    );
    let prefix = match &raw.client_ipv6_prefix {
        None => model::DEFAULT_CLIENT_IPV6_PREFIX,
        Some(prefix) => match u8::try_from(*prefix.get_ref()) {
            Ok(prefix) if prefix <= 128 => prefix,
            _ => {
                check.error(prefix.span(), ConfigError::BadIpv6Prefix);
                model::DEFAULT_CLIENT_IPV6_PREFIX
            }
        },
    };
    let tracked = match &raw.max_tracked_clients {
        None => model::DEFAULT_MAX_TRACKED_CLIENTS,
        Some(tracked) => at_least_one(check, tracked, "max_tracked_clients")
            .and_then(|count| usize::try_from(count).ok())
            .unwrap_or(model::DEFAULT_MAX_TRACKED_CLIENTS),
    };
    (per_client, prefix, tracked)
}

/// A WebSocket route's limits on each session.
pub(super) fn session_limits(check: &mut Checker, raw: &RawWebSocket) -> SessionLimits {
    let defaults = SessionLimits::default();
    let client_message_rate = rate(
        check,
        ("client_message_rate", &raw.client_message_rate),
        ("client_message_burst", &raw.client_message_burst),
    );
    let client_byte_rate = byte_rate(
        check,
        ("client_byte_rate", &raw.client_byte_rate),
        ("client_byte_burst", &raw.client_byte_burst),
    );
    let limited = raw.client_message_rate.is_some() || raw.client_byte_rate.is_some();
    let rate_exceeded = rate_exceeded(check, raw, limited);
    let max_duration = raw.max_session_duration.as_ref().map(|_| {
        check.positive(
            &raw.max_session_duration,
            Duration::ZERO,
            "max_session_duration",
        )
    });
    let max_duration_code = match &raw.max_session_duration_code {
        None => defaults.max_duration_code,
        Some(code) => {
            if raw.max_session_duration.is_none() {
                check.error(code.span(), ConfigError::CloseCodeWithoutDuration);
            }
            match u16::try_from(*code.get_ref()) {
                Ok(code @ (1000 | 1001 | 4000..=4999)) => code,
                _ => {
                    check.error(code.span(), ConfigError::BadCloseCode);
                    defaults.max_duration_code
                }
            }
        }
    };
    SessionLimits {
        client_message_rate,
        client_byte_rate,
        rate_exceeded,
        max_duration: max_duration.filter(|d| !d.is_zero()),
        max_duration_code,
    }
}

/// How long a client may keep sending over its rate before `"close"` closes it.
const DEFAULT_RATE_EXCEEDED_GRACE: Duration = Duration::from_secs(2);

fn rate_exceeded(check: &mut Checker, raw: &RawWebSocket, limited: bool) -> RateExceeded {
    let close = match &raw.rate_exceeded {
        None => false,
        Some(text) => {
            if !limited {
                check.error(text.span(), ConfigError::RateExceededWithoutRate);
            }
            match text.get_ref().as_str() {
                "slow" => false,
                "close" => true,
                other => {
                    check.error(text.span(), ConfigError::BadRateExceeded(other.to_owned()));
                    false
                }
            }
        }
    };
    match (&raw.rate_exceeded_grace, close) {
        (Some(grace), false) => {
            check.error(grace.span(), ConfigError::GraceWithoutClose);
            RateExceeded::Slow
        }
        (grace, true) => RateExceeded::Close {
            grace: check.duration(grace, DEFAULT_RATE_EXCEEDED_GRACE),
        },
        (None, false) => RateExceeded::Slow,
    }
}

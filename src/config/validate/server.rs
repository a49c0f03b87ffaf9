//! `[server]`: process-wide limits, the file cache, and how the server drains.

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{Diagnostic, RawServer};
use crate::model::{self, Drain, FileCache, Limits};

/// Far above what one process can hold open, and below the limits of the
/// semaphore and the descriptor arithmetic that size it.
const MAX_CONNECTIONS: usize = 1 << 24;

/// Below this, ordinary browser requests with a few cookies would get 431.
const MIN_REQUEST_HEAD: u64 = 8 * 1024;

pub(super) fn server_settings(check: &mut Checker, raw: &RawServer) -> (Limits, FileCache) {
    let head_default = model::DEFAULT_MAX_REQUEST_HEAD as u64;
    let mut max_request_head = check.size(&raw.max_request_head, head_default);
    if max_request_head < MIN_REQUEST_HEAD {
        if let Some(text) = &raw.max_request_head {
            check.error(text.span(), ConfigError::RequestHeadTooSmall);
        }
        max_request_head = head_default;
    }
    let (max_connections_per_client, client_ipv6_prefix, max_tracked_clients) =
        super::limits::server_limits(check, raw);
    let limits = Limits {
        header_read_timeout: check.positive(
            &raw.header_read_timeout,
            model::DEFAULT_HEADER_READ_TIMEOUT,
            "header_read_timeout",
        ),
        send_timeout: check.duration(&raw.send_timeout, model::DEFAULT_SEND_TIMEOUT),
        keepalive_timeout: check.duration(&raw.keepalive_timeout, model::DEFAULT_KEEPALIVE_TIMEOUT),
        max_request_head: usize::try_from(max_request_head).unwrap_or(usize::MAX),
        max_connections: max_connections(check, &raw.max_connections),
        max_connections_per_client,
        client_ipv6_prefix,
        max_tracked_clients,
        max_compressed_streams: raw
            .max_compressed_streams
            .as_ref()
            .and_then(|count| super::limits::at_least_one(check, count, "max_compressed_streams"))
            .and_then(|count| usize::try_from(count).ok())
            .unwrap_or(model::DEFAULT_MAX_COMPRESSED_STREAMS),
    };
    let file_cache = FileCache {
        size: check.size(&raw.file_cache_size, model::DEFAULT_FILE_CACHE_SIZE),
        max_file: check.size(&raw.file_cache_max_file, model::DEFAULT_FILE_CACHE_MAX_FILE),
    };
    (limits, file_cache)
}

pub(super) fn drain_settings(check: &mut Checker, raw: &RawServer) -> Drain {
    let defaults = Drain::default();
    let shutdown_timeout = check.duration(&raw.shutdown_timeout, defaults.shutdown_timeout);
    let shutdown_delay = check.duration(&raw.shutdown_delay, defaults.shutdown_delay);
    // Closes are spread inside the shutdown deadline: an unset spread fits
    // itself in; a set one that does not fit is a mistake.
    let room = shutdown_timeout.saturating_sub(shutdown_delay);
    let spread = match &raw.drain_spread {
        None => defaults.spread.min(room),
        Some(_) => check.duration(&raw.drain_spread, defaults.spread),
    };
    if shutdown_delay + spread > shutdown_timeout {
        let span = [
            &raw.drain_spread,
            &raw.shutdown_delay,
            &raw.shutdown_timeout,
        ]
        .into_iter()
        .flatten()
        .next()
        .map(Spanned::span);
        check.errors.push(Diagnostic::error(
            span,
            ConfigError::DrainLongerThanShutdown {
                delay: shutdown_delay,
                spread,
                timeout: shutdown_timeout,
            },
        ));
    }
    Drain {
        shutdown_timeout,
        shutdown_delay,
        spread,
        reload_grace: check.duration(&raw.reload_grace, defaults.reload_grace),
    }
}

fn max_connections(check: &mut Checker, raw: &Option<Spanned<u64>>) -> usize {
    let Some(raw) = raw else {
        return model::DEFAULT_MAX_CONNECTIONS;
    };
    match usize::try_from(*raw.get_ref()) {
        Ok(count) if count > MAX_CONNECTIONS => {
            check.error(raw.span(), ConfigError::TooManyConnections(MAX_CONNECTIONS));
            model::DEFAULT_MAX_CONNECTIONS
        }
        Ok(count) if count >= 1 => count,
        _ => {
            check.error(raw.span(), ConfigError::NoConnections);
            model::DEFAULT_MAX_CONNECTIONS
        }
    }
}

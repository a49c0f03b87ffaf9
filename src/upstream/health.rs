//! Whether a backend should get traffic.
//!
//! Passive: consecutive failed connects put a backend in back-off (3 s,
//! doubling up to 30 s); it is then tried only after every other backend.
//! A successful connect ends the back-off.
//!
//! Active (`health_check = { ... }`): a probe `GET` to each backend every
//! `interval`; after `unhealthy_after` failed probes in a row the backend
//! gets no traffic at all, after `healthy_after` good ones it is back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendPool};
use crate::model::HealthCheck;

/// The first back-off after a failed connect; each further failure in a row doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(3);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One backend's health, as both kinds of check see it.
#[derive(Debug)]
pub struct Health {
    /// Milliseconds (on the process clock) until which the backend is tried last.
    avoid_until_ms: AtomicU64,
    failed_connects: AtomicU32,
    /// What the active check last decided; true when there is none.
    probed_up: AtomicBool,
    /// Probe results in a row that disagree with `probed_up`.
    streak: AtomicU32,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            avoid_until_ms: AtomicU64::new(0),
            failed_connects: AtomicU32::new(0),
            probed_up: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

impl Health {
    /// Whether the backend is in a passive back-off at `now_ms`.
    pub fn backing_off(&self, now_ms: u64) -> bool {
        self.avoid_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// False once the active check found the backend down.
    pub fn probed_up(&self) -> bool {
        self.probed_up.load(Ordering::Relaxed)
    }

    /// Whether the backend counts as healthy for the `wsgate_upstream_healthy` gauge.
    pub fn is_healthy(&self) -> bool {
        self.probed_up() && self.failed_connects.load(Ordering::Relaxed) == 0
    }

    pub fn connect_succeeded(&self) {
        self.failed_connects.store(0, Ordering::Relaxed);
        self.avoid_until_ms.store(0, Ordering::Relaxed);
    }

    /// Starts or lengthens the back-off; returns how long it is.
    pub fn connect_failed(&self) -> Duration {
        let failures = self.failed_connects.fetch_add(1, Ordering::Relaxed) + 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (failures - 1).min(10))
            .min(MAX_BACKOFF);
        let until = now_ms() + backoff.as_millis() as u64;
        self.avoid_until_ms.store(until, Ordering::Relaxed);
        backoff
    }

    /// Counts one probe result; returns the new verdict when it changed.
    pub(super) fn probed(&self, up: bool, check: &HealthCheck) -> Option<bool> {
        if up {
            // A backend that answers probes is reachable: end any back-off.
            self.connect_succeeded();
        }
        if up == self.probed_up() {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if up {
            check.healthy_after
        } else {
            check.unhealthy_after
        };
        if streak < needed {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.probed_up.store(up, Ordering::Relaxed);
        Some(up)
    }
}

/// Milliseconds since the first call, plus one (0 means "never" above).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Probes the pool's backends until `retired` is cancelled (a reload replaced
/// the snapshot) or the pool is dropped. Needs a Tokio runtime.
pub fn spawn_checks(pool: &Arc<BackendPool>, route: &str, retired: &CancellationToken) {
    let Some(check) = pool.health_check.clone() else {
        return;
    };
    let pool = Arc::downgrade(pool);
    let route = route.to_owned();
    let retired = retired.clone();
    let checks = async move {
        let mut ticks = tokio::time::interval(check.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !probe_all(&pool, &check, &route).await {
                return;
            }
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            () = checks => {}
            () = retired.cancelled() => {}
        }
    });
}

/// One round of probes, all backends at once; false when the pool is gone.
async fn probe_all(pool: &Weak<BackendPool>, check: &HealthCheck, route: &str) -> bool {
    let Some(pool) = pool.upgrade() else {
        return false;
    };
    let probes = pool.backends().iter().map(|backend| {
        let pool = &pool;
        async move {
            let result = tokio::time::timeout(check.timeout, probe(pool, backend, check)).await;
            let outcome = result.unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)));
            if backend.health.probed(outcome.is_ok(), check).is_some() {
                match &outcome {
                    Ok(status) => {
                        tracing::info!(route, backend = %backend.url, %status, "backend is healthy again")
                    }
                    Err(reason) => {
                        tracing::warn!(route, backend = %backend.url, %reason, "backend failed its health checks; taking it out")
                    }
                }
            }
            backend.show_health();
        }
    });
    futures_util::future::join_all(probes).await;
    true
}

/// `GET path` on a fresh connection, in the protocol the pool speaks; a
/// 2xx or 3xx answer is healthy.
async fn probe(
    pool: &BackendPool,
    backend: &Backend,
    check: &HealthCheck,
) -> Result<StatusCode, String> {
    let stream = pool
        .open(backend)
        .await
        .map_err(|error| error.to_string())?;
    let io = TokioIo::new(stream);
    let response = if pool.http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        // HTTP/2 carries the host as :authority, from an absolute target.
        let scheme = if backend.tls { "https" } else { "http" };
        let target = format!("{scheme}://{}{}", backend.authority(), check.path);
        let request = Request::get(target)
            .header(header::USER_AGENT, "wsgate-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let request = Request::get(check.path.as_str())
            .header(header::HOST, backend.authority())
            .header(header::CONNECTION, "close")
            .header(header::USER_AGENT, "wsgate-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        sender.send_request(request).await
    };
    let status = response.map_err(|error| error.to_string())?.status();
    if status.is_success() || status.is_redirection() {
        Ok(status)
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheck {
        HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 2,
            healthy_after: 3,
        }
    }

    #[test]
    fn verdicts_need_a_streak() {
        let health = Health::default();
        let check = check();
        assert_eq!(health.probed(false, &check), None);
        // A good probe in between resets the count.
        assert_eq!(health.probed(true, &check), None);
        assert_eq!(health.probed(false, &check), None);
        assert_eq!(health.probed(false, &check), Some(false));
        assert!(!health.probed_up());
        assert_eq!(health.probed(true, &check), None);
        assert_eq!(health.probed(true, &check), None);
        assert_eq!(health.probed(true, &check), Some(true));
        assert!(health.is_healthy());
    }

    #[test]
    fn back_off_doubles_and_is_capped() {
        let health = Health::default();
        assert_eq!(health.connect_failed(), FIRST_BACKOFF);
        assert_eq!(health.connect_failed(), FIRST_BACKOFF * 2);
        for _ in 0..20 {
            health.connect_failed();
        }
        assert_eq!(health.connect_failed(), MAX_BACKOFF);
        assert!(health.backing_off(now_ms()));
        assert!(!health.is_healthy());
        health.connect_succeeded();
        assert!(!health.backing_off(now_ms()));
        assert!(health.is_healthy());
    }
}

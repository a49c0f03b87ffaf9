//! The state every connection of a running server shares: the current
//! snapshot (swapped by reloads), the drain flags, the live sessions, the
//! metrics registry and the health checks of the snapshot in service. What
//! one request goes through is in [`phases`].

mod access;
mod phases;
mod rebalance;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessLog, Format, Target};
use crate::client_limits::{ClientLimits, TableMeters};
use crate::metrics::{Limit, LimitMeters, Metrics};
use crate::model::{AccessLogSettings, LogTarget, Model};
use crate::request_ids::IdSource;
use crate::sessions::Sessions;
use crate::snapshot::{BuildError, Snapshot};
use crate::upstream::health;
use crate::upstream::{warn_throttled, LogThrottle};
pub use phases::{handle, RequestContext};
pub use rebalance::Drained;

/// State shared by every connection of a running server.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    draining: AtomicBool,
    /// Set while a draining server still accepts (`shutdown_delay`): new
    /// sessions should go to an instance that stays.
    refusing_upgrades: AtomicBool,
    sessions: Arc<Sessions>,
    /// Cancelled when the current snapshot is replaced: ends its health checks.
    checks: Mutex<CancellationToken>,
    /// `None` when the config turned metrics off.
    metrics: Option<Metrics>,
    access_log: AccessLog,
    /// Request and trace IDs for every request.
    ids: IdSource,
    reloads: Mutex<ReloadStatus>,
    /// Per-client budgets and counts; kept across reloads.
    client_limits: ClientLimits,
    /// The series of limits that apply before routing; `None` with metrics off.
    edge_meters: Option<LimitMeters>,
    /// A flood of refusals logs a line every few seconds, not one each.
    limit_warnings: LogThrottle,
}

/// Which config is serving, and how the last reload went.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReloadStatus {
    /// 0 for the config started with; one more for every config swapped in.
    pub generation: u64,
    /// When the last reload was tried, and whether it succeeded.
    pub last: Option<(SystemTime, bool)>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot start the access log: {0}")]
    AccessLog(#[source] std::io::Error),
}

impl Gateway {
    /// A gateway serving `model`, with a metrics registry of its own unless
    /// the model turns metrics off. Must be called inside a Tokio runtime
    /// when a pool has `health_check`, a listener `acme` or a certificate an
    /// OCSP responder (their tasks are spawned on it).
    pub fn new(model: Model) -> Result<Arc<Gateway>, GatewayError> {
        let metrics = model.metrics.then(Metrics::new);
        let access_log = AccessLog::start(
            log_output(&model.access_log),
            metrics.as_ref().map(Metrics::log_dropped),
        )
        .map_err(GatewayError::AccessLog)?;
        let table_meters = metrics.as_ref().map(|metrics| {
            let (entries, evicted) = metrics.rate_limit_table();
            TableMeters { entries, evicted }
        });
        let client_limits = ClientLimits::new(model.limits.max_tracked_clients, table_meters);
        let edge_meters = metrics.as_ref().map(|metrics| metrics.limits(""));
        let snapshot = Snapshot::build(model, metrics.as_ref(), None)?;
        let checks = CancellationToken::new();
        start_health_checks(&snapshot, &checks);
        start_certificate_tasks(&snapshot, metrics.as_ref());
        Ok(Arc::new(Gateway {
            checks: Mutex::new(checks),
            metrics,
            snapshot: ArcSwap::from_pointee(snapshot),
            draining: AtomicBool::new(false),
            refusing_upgrades: AtomicBool::new(false),
            sessions: Arc::default(),
            access_log,
            ids: IdSource::default(),
            reloads: Mutex::default(),
            client_limits,
            edge_meters,
            limit_warnings: LogThrottle::default(),
        }))
    }

    /// Per-client rate budgets and counts of what clients hold open.
    pub fn client_limits(&self) -> &ClientLimits {
        &self.client_limits
    }

    /// Counts a refusal by `limit` of something from `client`, under its
    /// route (its name and series) or, with none, under the limits that
    /// apply before routing; and says so in the log, throttled.
    pub fn limit_refused(
        &self,
        route: Option<(&str, Option<&LimitMeters>)>,
        limit: Limit,
        client: IpAddr,
    ) {
        let (name, meters) = route.unwrap_or(("", self.edge_meters.as_ref()));
        if let Some(meters) = meters {
            meters.rejected(limit);
        }
        warn_throttled!(
            self.limit_warnings,
            route = name,
            limit = limit.as_str(),
            %client,
            "refused by a per-client limit"
        );
    }

    /// Where requests and sessions are recorded.
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// The WebSocket sessions in progress.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The current config; callers keep it for the whole request or session.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether a graceful shutdown has begun (`/readyz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Puts `next` in service: requests and upgrades from now on use it,
    /// those under way keep the snapshot they started with. Its pools'
    /// health checks start and the replaced snapshot's stop.
    pub fn swap(&self, next: Arc<Snapshot>) {
        let checks = CancellationToken::new();
        start_health_checks(&next, &checks);
        start_certificate_tasks(&next, self.metrics.as_ref());
        if next.model.access_log != self.snapshot.load().model.access_log {
            self.access_log.retarget(log_output(&next.model.access_log));
        }
        self.snapshot.store(next);
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generation += 1;
        let replaced = std::mem::replace(
            &mut *self.checks.lock().unwrap_or_else(PoisonError::into_inner),
            checks,
        );
        replaced.cancel();
    }

    /// Notes a reload's outcome (a success has swapped its snapshot in).
    pub fn reloaded(&self, ok: bool) {
        let mut status = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        status.last = Some((SystemTime::now(), ok));
    }

    /// The config generation and the last reload's outcome.
    pub fn reload_status(&self) -> ReloadStatus {
        *self.reloads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// While set, upgrades get 503. Once the listeners have closed, an
    /// upgrade can only come from a client that connected before, and is
    /// let through: its session is closed with the others.
    pub fn refuse_upgrades(&self, refuse: bool) {
        self.refusing_upgrades.store(refuse, Ordering::Release);
    }
}

/// The access log's target and format, or `None` when it is off.
fn log_output(settings: &AccessLogSettings) -> Option<(Target, Format)> {
    let target = match settings.target.as_ref()? {
        LogTarget::Stdout => Target::Stdout,
        LogTarget::Stderr => Target::Stderr,
        LogTarget::File(path) => Target::File(path.clone()),
    };
    // Validation parsed the format already; a model read back from /config
    // that does not parse falls back to JSON rather than losing lines.
    let format = Format::parse(&settings.format).unwrap_or(Format::Json);
    Some((target, format))
}

/// Starts the renewal of each ACME certificate and the stapling of each
/// certificate with an OCSP responder that a snapshot brings in; those it
/// kept from the last one run already. A dropped certificate's task ends
/// with the last snapshot that held it.
fn start_certificate_tasks(snapshot: &Snapshot, metrics: Option<&Metrics>) {
    for managed in &snapshot.acme {
        managed.start(metrics.map(Metrics::acme));
    }
    if let Some(metrics) = metrics {
        // A block without a certificate yet dropped its names' series as it
        // started; a name no block lists goes here.
        let names = snapshot.acme.iter().flat_map(|m| &m.settings.domains);
        metrics
            .acme()
            .keep_only(&names.map(String::as_str).collect());
    }
    for stapler in &snapshot.staplers {
        stapler.start();
    }
}

/// Starts the active health checks of every pool in `snapshot`; they stop
/// when `retired` is cancelled. Runs inside the server's runtime.
fn start_health_checks(snapshot: &Snapshot, retired: &CancellationToken) {
    for route in snapshot.router.routes() {
        for pool in route.pools() {
            health::spawn_checks(pool, &route.name, retired);
        }
    }
}

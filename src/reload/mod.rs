//! Live reload: on `SIGHUP`, or when the config file or a certificate it
//! names changes, load → validate → diff against the running model →
//! build the next snapshot (reusing kept backends) → one atomic swap →
//! apply the diff (listeners, metric series, sessions to close). A config
//! that fails leaves the running one in place.
//!
//! Requests and sessions under way keep the snapshot they started with.
//! WebSocket sessions whose route or backend the new config dropped are
//! closed with 1012 after `reload_grace`, spread over `drain_spread`.

mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::model::diff::{self, Changes, SessionFate};
use crate::model::Model;
use crate::server::Server;
use crate::service_manager::ServiceManager;
use crate::sessions::{CloseRequest, Session};
use crate::snapshot::Snapshot;

/// The service manager's status line while the config in force is the latest.
pub const SERVING: &str = "serving";

/// What sets a reload off: `SIGHUP` and the file watch. Installed before any
/// port opens, because a `SIGHUP` that arrives before its handler ends the
/// process, and `systemctl reload` may follow `READY=1` at once.
pub struct Triggers {
    hangups: Signal,
    /// The config file and its watch; `None` for the demo, which has no file.
    config: Option<(PathBuf, watch::Watch)>,
}

impl Triggers {
    pub fn install(config: Option<PathBuf>) -> anyhow::Result<Triggers> {
        let hangups = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        let config = config.map(|path| {
            let watch = watch::Watch::start(&path, &config::referenced_files(&path));
            (path, watch)
        });
        Ok(Triggers { hangups, config })
    }

    /// Reloads on every trigger, one reload at a time, until the process ends.
    pub async fn run(
        self,
        server: Arc<Server>,
        gateway: Arc<Gateway>,
        service: Arc<ServiceManager>,
    ) {
        let Triggers {
            mut hangups,
            config,
        } = self;
        let Some((path, mut changes)) = config else {
            while hangups.recv().await.is_some() {
                tracing::warn!("SIGHUP: the demo has no config file to reload");
            }
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => tracing::info!("SIGHUP: reloading"),
                () = changes.changed() => tracing::info!(file = %path.display(), "config changed on disk: reloading"),
            }
            if gateway.is_draining() {
                tracing::info!("shutting down; reload skipped");
                continue;
            }
            service.reloading();
            if reload(&path, &server, &gateway) {
                changes.watch(&path, &config::referenced_files(&path));
                service.ready(SERVING);
            } else {
                service.ready("serving the previous config: the last reload failed (see the log)");
            }
        }
    }
}

/// One reload attempt; returns whether the new config is now serving.
pub fn reload(path: &Path, server: &Server, gateway: &Arc<Gateway>) -> bool {
    let ok = match try_reload(path, server, gateway) {
        Ok(()) => true,
        Err(why) => {
            for line in why.lines() {
                tracing::error!("{line}");
            }
            tracing::error!("reload failed; the running config stays in place");
            false
        }
    };
    if let Some(metrics) = gateway.metrics() {
        metrics.reloaded(ok);
    }
    gateway.reloaded(ok);
    ok
}

fn try_reload(path: &Path, server: &Server, gateway: &Arc<Gateway>) -> Result<(), String> {
    let loaded = config::load(path).map_err(|diagnostics| diagnostics.to_string())?;
    for line in loaded.warnings.to_string().lines() {
        tracing::warn!("{line}");
    }
    let current = gateway.snapshot();
    let changes = diff::diff(&current.model, &loaded.model);
    let added = server
        .bind_added(&loaded.model)
        .map_err(|error| format!("{error:#}"))?;
    let next = Snapshot::build(loaded.model, gateway.metrics(), Some(&current))
        .map_err(|error| error.to_string())?;
    // Nothing below can fail: from here on the new config goes in.
    for (key, running, configured) in &changes.restart_only {
        tracing::warn!(%running, %configured, "{key} changes at the next restart");
    }
    let next = Arc::new(next);
    gateway.swap(Arc::clone(&next));
    server.switch_listeners(&next, added);
    if let Some(metrics) = gateway.metrics() {
        forget_removed_series(metrics, &changes);
    }
    let for_closes = Arc::clone(gateway);
    let drain = next.model.drain;
    let closing = gateway.sessions().close_spread(
        move |session| cut_off(&for_closes.snapshot().model, session),
        drain.reload_grace,
        drain.spread,
    );
    let rebalancing: usize = joined_pools(&current.model, &next.model)
        .map(|route| gateway.rebalance(route))
        .sum();
    tracing::info!(
        routes = next.router.routes().len(),
        rebalancing,
        added = changes.routes_added.len(),
        removed = changes.routes_removed.len(),
        changed = changes.routes_changed.len(),
        sessions_to_close = closing,
        grace = ?drain.reload_grace,
        spread = ?drain.spread,
        "config reloaded"
    );
    Ok(())
}

/// The routes whose WebSocket pool in `next` has a backend that `current` lacks.
fn joined_pools<'m>(current: &'m Model, next: &'m Model) -> impl Iterator<Item = &'m str> {
    next.routes.iter().filter_map(move |route| {
        let pool = &route.websocket.as_ref()?.pool;
        let before = &current.route(&route.name)?.websocket.as_ref()?.pool;
        let joined = pool
            .backends
            .iter()
            .any(|b| !before.backends.iter().any(|old| old.url == b.url));
        joined.then_some(route.name.as_str())
    })
}

/// Why `session` can no longer run on `model`, if it cannot.
pub fn cut_off(model: &Model, session: &Session) -> Option<CloseRequest> {
    match diff::session_fate(model, &session.route, &session.backend) {
        SessionFate::Kept => None,
        SessionFate::RouteRemoved => Some(CloseRequest::ROUTE_REMOVED),
        SessionFate::BackendRemoved => Some(CloseRequest::BACKEND_REMOVED),
    }
}

/// Drops the series of routes, backends and listeners the reload removed.
fn forget_removed_series(metrics: &Metrics, changes: &Changes) {
    for route in &changes.routes_removed {
        metrics.remove_route(route);
    }
    for (route, backend) in &changes.backends_removed {
        metrics.remove_backend(route, backend);
    }
    for bind in &changes.listeners_removed {
        metrics.remove_listener(&bind.to_string());
    }
}

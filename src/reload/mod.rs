//! Live reload: on `SIGHUP`, or when the config file or a certificate it
//! names changes, load → validate → build a complete new snapshot → one
//! atomic swap. A config that fails leaves the running one in place.
//!
//! Requests and sessions under way keep the snapshot they started with.
//! WebSocket sessions whose route or backend the new config dropped are
//! closed with 1012 after `reload_grace`, spread over `drain_spread`.

pub mod diff;
mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config;
use crate::gateway::Gateway;
use crate::server::Server;
use crate::service_manager::ServiceManager;
use crate::sessions::{CloseRequest, Session};
use crate::snapshot::Snapshot;
use diff::SessionFate;

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
    ok
}

fn try_reload(path: &Path, server: &Server, gateway: &Arc<Gateway>) -> Result<(), String> {
    let loaded = config::load(path).map_err(|diagnostics| diagnostics.to_string())?;
    for line in loaded.warnings.to_string().lines() {
        tracing::warn!("{line}");
    }
    let next = loaded.snapshot;
    let current = gateway.snapshot();
    let added = server
        .bind_added(&next)
        .map_err(|error| format!("{error:#}"))?;
    // Nothing below can fail: from here on the new config goes in.
    note_restart_only_changes(&current, &next);
    inherit_health(&current, &next);
    if let Some(metrics) = gateway.metrics() {
        metrics.attach(&next);
    }
    let next = Arc::new(next);
    gateway.swap(Arc::clone(&next));
    let removed_listeners = server.switch_listeners(&next, added);
    if let Some(metrics) = gateway.metrics() {
        forget_removed_series(metrics, &current, &next, &removed_listeners);
    }
    let for_closes = Arc::clone(gateway);
    let closing = gateway.sessions().close_spread(
        move |session| cut_off(&for_closes.snapshot(), session),
        next.drain.reload_grace,
        next.drain.spread,
    );
    let (added_routes, removed_routes) = route_changes(&current, &next);
    tracing::info!(
        routes = next.router.routes().len(),
        added = added_routes,
        removed = removed_routes,
        sessions_to_close = closing,
        grace = ?next.drain.reload_grace,
        spread = ?next.drain.spread,
        "config reloaded"
    );
    Ok(())
}

/// Why `session` can no longer run on `snapshot`, if it cannot.
pub fn cut_off(snapshot: &Snapshot, session: &Session) -> Option<CloseRequest> {
    match diff::keeps_session(snapshot, &session.route, &session.backend) {
        SessionFate::Kept => None,
        SessionFate::RouteRemoved => Some(CloseRequest::ROUTE_REMOVED),
        SessionFate::BackendRemoved => Some(CloseRequest::BACKEND_REMOVED),
    }
}

/// Backends that stay in a route keep their health: a backend that was
/// down before the reload is not sent traffic again until it recovers.
fn inherit_health(current: &Snapshot, next: &Snapshot) {
    for route in next.router.routes() {
        let Some(earlier) = current
            .router
            .routes()
            .iter()
            .find(|r| r.name == route.name)
        else {
            continue;
        };
        for backend in route.pools().flat_map(|pool| pool.backends()) {
            let same = earlier
                .pools()
                .flat_map(|pool| pool.backends())
                .find(|b| b.url == backend.url);
            if let Some(same) = same {
                backend.health.inherit(&same.health);
            }
        }
    }
}

/// Settings a running process cannot change: say so rather than ignore them.
fn note_restart_only_changes(current: &Snapshot, next: &Snapshot) {
    if current.admin != next.admin {
        tracing::warn!(running = %current.admin, configured = %next.admin, "admin.bind changes at the next restart");
    }
    if current.metrics != next.metrics {
        tracing::warn!("admin.metrics changes at the next restart");
    }
    if current.limits.max_connections != next.limits.max_connections {
        tracing::warn!(
            running = current.limits.max_connections,
            configured = next.limits.max_connections,
            "server.max_connections changes at the next restart"
        );
    }
}

/// Drops the series of routes, backends and listeners the reload removed.
fn forget_removed_series(
    metrics: &crate::metrics::Metrics,
    current: &Snapshot,
    next: &Snapshot,
    removed_listeners: &[std::net::SocketAddr],
) {
    for route in current.router.routes() {
        let Some(kept) = next.router.routes().iter().find(|r| r.name == route.name) else {
            metrics.remove_route(&route.name);
            continue;
        };
        let kept_urls: HashSet<&str> = kept
            .pools()
            .flat_map(|pool| pool.backends())
            .map(|b| b.url.as_str())
            .collect();
        for backend in route.pools().flat_map(|pool| pool.backends()) {
            if !kept_urls.contains(backend.url.as_str()) {
                metrics.remove_backend(&route.name, &backend.url);
            }
        }
    }
    for bind in removed_listeners {
        // Several listeners may share a configured address (port 0).
        if !next.listeners.iter().any(|l| l.bind == *bind) {
            metrics.remove_listener(&bind.to_string());
        }
    }
}

/// How many routes `next` adds and removes, by name.
fn route_changes(current: &Snapshot, next: &Snapshot) -> (usize, usize) {
    let names = |s: &Snapshot| -> HashSet<String> {
        s.router.routes().iter().map(|r| r.name.clone()).collect()
    };
    let (before, after) = (names(current), names(next));
    (
        after.difference(&before).count(),
        before.difference(&after).count(),
    )
}

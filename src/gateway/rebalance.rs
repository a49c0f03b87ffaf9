//! Moving WebSocket sessions between backends: closing them with 1012 so
//! their clients reconnect and are placed again. On an operator's drain, a
//! backend's sessions all go; after a reload adds backends to a pool, the
//! sessions that the placement would now put elsewhere go: for a hashing
//! pool, those whose key now ranks another backend first; otherwise the
//! excess of every backend over an even share. Closes are spread over
//! `drain_spread`, so the clients do not reconnect in one herd.

use std::collections::HashMap;
use std::sync::Arc;

use super::Gateway;
use crate::sessions::{CloseRequest, Session};
use crate::upstream::{Backend, BackendPool};

/// What an operator's drain or undrain did.
#[derive(Debug, serde::Serialize)]
pub struct Drained {
    pub route: String,
    pub backend: String,
    pub drained: bool,
    /// Sessions asked to close (drain only).
    pub sessions_closing: usize,
}

impl Gateway {
    /// Takes `backend` (its URL, or `host:port`) of `route` out of new
    /// placements and closes its sessions, or (`drain == false`) puts it
    /// back. `None` when the route has no such backend.
    pub fn drain_backend(&self, route: &str, backend: &str, drain: bool) -> Option<Drained> {
        let snapshot = self.snapshot();
        let running = snapshot.router.routes().iter().find(|r| r.name == route)?;
        let matching: Vec<&Arc<Backend>> = running
            .pools()
            .flat_map(|pool| pool.backends())
            .filter(|b| b.url == backend || b.authority() == backend)
            .collect();
        if matching.is_empty() {
            return None;
        }
        for found in &matching {
            found.set_drained(drain);
        }
        let mut closing = Vec::new();
        if drain {
            closing = self.sessions().on_route(route);
            closing.retain(|session| matching.iter().any(|b| b.url == session.backend));
        }
        let sessions_closing = closing.len();
        let spread = snapshot.model.drain.spread;
        self.sessions()
            .close_chosen(closing, CloseRequest::BACKEND_DRAINED, spread);
        tracing::info!(
            route,
            backend,
            drain,
            sessions_closing,
            "backend drain changed by the operator"
        );
        Some(Drained {
            route: route.to_owned(),
            backend: matching[0].url.clone(),
            drained: drain,
            sessions_closing,
        })
    }

    /// Moves sessions of `route` onto its pool's current placement (after
    /// a reload added backends); returns how many were asked to close.
    pub fn rebalance(&self, route: &str) -> usize {
        let snapshot = self.snapshot();
        let Some(websocket) = snapshot
            .router
            .routes()
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| r.websocket.as_ref())
        else {
            return 0;
        };
        let sessions = self.sessions().on_route(route);
        let moving = misplaced(&websocket.backends, sessions);
        let count = moving.len();
        if count > 0 {
            tracing::info!(
                route,
                sessions = count,
                "rebalancing sessions onto the pool's new backends"
            );
        }
        self.sessions().close_chosen(
            moving,
            CloseRequest::REBALANCED,
            snapshot.model.drain.spread,
        );
        count
    }
}

/// The sessions the pool would place elsewhere now.
fn misplaced(pool: &BackendPool, sessions: Vec<Arc<Session>>) -> Vec<Arc<Session>> {
    let eligible: Vec<&Arc<Backend>> = pool
        .backends()
        .iter()
        .filter(|b| !b.is_drained() && b.health.probed_up())
        .collect();
    if eligible.is_empty() {
        return Vec::new();
    }
    let hashed: Vec<Arc<Session>> = sessions
        .iter()
        .filter(|s| s.placement.is_some())
        .cloned()
        .collect();
    if !hashed.is_empty() {
        return hashed
            .into_iter()
            .filter(|session| {
                let Some(key) = session.placement else {
                    return false;
                };
                let best = eligible.iter().max_by_key(|b| b.hash_score(key));
                best.is_some_and(|b| b.url != session.backend)
            })
            .collect();
    }
    over_even_share(&eligible, sessions)
}

/// The newest sessions of every backend past an even share (rounded up),
/// so that after they reconnect to the least busy backends each holds
/// about the same number.
fn over_even_share(eligible: &[&Arc<Backend>], sessions: Vec<Arc<Session>>) -> Vec<Arc<Session>> {
    let share = sessions.len().div_ceil(eligible.len());
    let mut per_backend: HashMap<&str, Vec<Arc<Session>>> = HashMap::new();
    for session in &sessions {
        per_backend
            .entry(session.backend.as_str())
            .or_default()
            .push(Arc::clone(session));
    }
    per_backend
        .into_values()
        .flat_map(|mut on_backend| {
            // Oldest first in, so the newest (the least settled) go.
            let keep = share.min(on_backend.len());
            on_backend.split_off(keep)
        })
        .collect()
}

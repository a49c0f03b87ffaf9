//! What a new model changes against a running one, computed once from plain
//! data: routes added, removed and changed, backends and listeners gone,
//! settings that wait for a restart, and which live sessions survive. A
//! reload applies it; `GET /config` serves a [`RunningConfig`] and
//! `wsgate check --diff` prints [`describe`] against it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Listener, Model, Route};

/// The differences between a running model and the next one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    /// Route names, each with the config keys that changed.
    pub routes_changed: Vec<(String, Vec<&'static str>)>,
    /// `(route, backend URL)` of backends that a kept route no longer lists.
    pub backends_removed: Vec<(String, String)>,
    /// Listener addresses no listener of the next model has.
    pub listeners_removed: Vec<SocketAddr>,
    /// Settings a running process keeps until it restarts, with what is
    /// running and what is configured.
    pub restart_only: Vec<(&'static str, String, String)>,
}

/// Compares `current` with `next`.
pub fn diff(current: &Model, next: &Model) -> Changes {
    let mut changes = Changes::default();
    for route in &next.routes {
        match current.route(&route.name) {
            None => changes.routes_added.push(route.name.clone()),
            Some(before) => {
                let keys = before.changed_keys(route);
                if !keys.is_empty() {
                    changes.routes_changed.push((route.name.clone(), keys));
                }
            }
        }
    }
    for route in &current.routes {
        let Some(kept) = next.route(&route.name) else {
            changes.routes_removed.push(route.name.clone());
            continue;
        };
        for backend in route.pools().flat_map(|pool| &pool.backends) {
            let listed = kept
                .pools()
                .flat_map(|pool| &pool.backends)
                .any(|b| b.url == backend.url);
            if !listed {
                changes
                    .backends_removed
                    .push((route.name.clone(), backend.url.clone()));
            }
        }
    }
    // Several listeners may share a configured address (port 0).
    let binds = |listeners: &[Listener]| listeners.iter().map(|l| l.bind).collect::<Vec<_>>();
    let next_binds = binds(&next.listeners);
    for bind in binds(&current.listeners) {
        if !next_binds.contains(&bind) && !changes.listeners_removed.contains(&bind) {
            changes.listeners_removed.push(bind);
        }
    }
    let mut restart_only = |key, running: String, configured: String| {
        if running != configured {
            changes.restart_only.push((key, running, configured));
        }
    };
    restart_only(
        "admin.bind",
        current.admin.to_string(),
        next.admin.to_string(),
    );
    restart_only(
        "admin.metrics",
        current.metrics.to_string(),
        next.metrics.to_string(),
    );
    restart_only(
        "server.max_connections",
        current.limits.max_connections.to_string(),
        next.limits.max_connections.to_string(),
    );
    restart_only(
        "server.max_tracked_clients",
        current.limits.max_tracked_clients.to_string(),
        next.limits.max_tracked_clients.to_string(),
    );
    changes
}

/// What a reload does to one live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFate {
    Kept,
    RouteRemoved,
    BackendRemoved,
}

/// Whether a session on route `route` to `backend` survives `model`: the
/// route still exists, still takes WebSockets, and still lists the backend.
pub fn session_fate(model: &Model, route: &str, backend: &str) -> SessionFate {
    match model.route(route).and_then(|r| r.websocket.as_ref()) {
        None => SessionFate::RouteRemoved,
        Some(ws) if ws.pool.backends.iter().any(|b| b.url == backend) => SessionFate::Kept,
        Some(_) => SessionFate::BackendRemoved,
    }
}

/// The running config, as `GET /config` reports it: the model, with each
/// route's live WebSocket sessions by backend URL.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningConfig {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RunningRoute>,
}

/// One running route.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningRoute {
    #[serde(flatten)]
    pub route: Route,
    /// Live WebSocket sessions by backend URL.
    #[serde(default)]
    pub sessions: BTreeMap<String, usize>,
    /// Backends the operator drained (`POST /backends/.../drain`), by URL.
    #[serde(default)]
    pub drained: Vec<String>,
}

impl RunningRoute {
    fn live(&self) -> usize {
        self.sessions.values().sum()
    }
}

/// The report `wsgate check --diff` prints: one line per route, then totals.
pub fn describe(next: &Model, running: &RunningConfig) -> String {
    let mut out = String::new();
    let (mut added, mut removed, mut changed, mut unchanged, mut closing) = (0, 0, 0, 0, 0);
    let mut names: Vec<&str> = next.routes.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    for name in &names {
        if !running.routes.iter().any(|r| r.route.name == *name) {
            added += 1;
            let _ = writeln!(out, "+ {name:<16} added");
        }
    }
    for running_route in &running.routes {
        let name = &running_route.route.name;
        let live = running_route.live();
        let Some(route) = next.route(name) else {
            removed += 1;
            closing += live;
            let _ = writeln!(out, "- {name:<16} removed; closes {}", sessions(live));
            continue;
        };
        let keys = running_route.route.changed_keys(route);
        if keys.is_empty() {
            unchanged += 1;
            let _ = writeln!(out, "  {name:<16} unchanged; {} kept", sessions(live));
            continue;
        }
        changed += 1;
        let closed: usize = running_route
            .sessions
            .iter()
            .filter(|(backend, _)| session_fate(next, name, backend) != SessionFate::Kept)
            .map(|(_, count)| count)
            .sum();
        closing += closed;
        let _ = writeln!(
            out,
            "~ {name:<16} changed ({}); closes {closed} of {live} live",
            keys.join(", "),
        );
    }
    let _ = writeln!(
        out,
        "\n{added} added, {removed} removed, {changed} changed, {unchanged} unchanged; \
         a reload would close {} (with 1012, after reload_grace)",
        sessions(closing)
    );
    out
}

fn sessions(count: usize) -> String {
    match count {
        1 => "1 live session".to_owned(),
        n => format!("{n} live sessions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        BackendAddress, Content, HostMatch, Page, Pool, WebSocketAction, WEBSOCKET,
    };

    fn websocket(urls: &[&str], max_message_size: u64) -> WebSocketAction {
        let backends = urls
            .iter()
            .map(|u| BackendAddress::parse(u, WEBSOCKET).expect(u))
            .collect();
        let mut action = WebSocketAction::new(Pool::new(backends));
        action.policy.max_message_size = max_message_size;
        action
    }

    fn route(name: &str, websocket: Option<WebSocketAction>) -> Route {
        Route {
            websocket,
            ..Route::new(name, &format!("/{name}"))
        }
    }

    fn model(routes: Vec<Route>) -> Model {
        Model {
            listeners: vec![Listener::plain(([127, 0, 0, 1], 8080).into())],
            admin: ([127, 0, 0, 1], 9090).into(),
            metrics: true,
            limits: Default::default(),
            drain: Default::default(),
            file_cache: Default::default(),
            trusted_proxies: Default::default(),
            access_log: Default::default(),
            error_pages: Default::default(),
            routes,
        }
    }

    #[test]
    fn changed_keys_name_what_differs() {
        let before = route("a", Some(websocket(&["ws://x:1"], 1024)));
        let mut after = route("a", Some(websocket(&["ws://y:1"], 1024)));
        after.host = HostMatch::parse("h").expect("host");
        assert_eq!(before.changed_keys(&after), ["host", "websocket"]);
        assert!(before.changed_keys(&before).is_empty());
        let mut page = before.clone();
        page.content = Some(Content::Page(Page::Demo));
        assert_eq!(before.changed_keys(&page), ["page"]);
        let mut edge = before.clone();
        edge.trailing_slash = Some(crate::model::TrailingSlash::Add);
        edge.headers.hsts = Some("max-age=1".into());
        assert_eq!(before.changed_keys(&edge), ["hsts", "trailing_slash"]);
    }

    #[test]
    fn a_diff_lists_routes_backends_and_listeners() {
        let current = model(vec![
            route("kept", Some(websocket(&["ws://a:1", "ws://b:1"], 1024))),
            route("gone", None),
        ]);
        let mut next = model(vec![
            route("kept", Some(websocket(&["ws://a:1"], 2048))),
            route("new", None),
        ]);
        next.listeners = vec![Listener::plain(([127, 0, 0, 1], 8081).into())];
        next.limits.max_connections = 10;
        let changes = diff(&current, &next);
        assert_eq!(changes.routes_added, ["new"]);
        assert_eq!(changes.routes_removed, ["gone"]);
        assert_eq!(
            changes.routes_changed,
            [("kept".to_owned(), vec!["websocket"])]
        );
        assert_eq!(
            changes.backends_removed,
            [("kept".to_owned(), "ws://b:1".to_owned())]
        );
        assert_eq!(
            changes.listeners_removed,
            [SocketAddr::from(([127, 0, 0, 1], 8080))]
        );
        assert_eq!(changes.restart_only.len(), 1);
        assert_eq!(session_fate(&next, "kept", "ws://a:1"), SessionFate::Kept);
        assert_eq!(
            session_fate(&next, "kept", "ws://b:1"),
            SessionFate::BackendRemoved
        );
        assert_eq!(
            session_fate(&next, "gone", "ws://a:1"),
            SessionFate::RouteRemoved
        );
        assert_eq!(diff(&next, &next), Changes::default());
    }
}

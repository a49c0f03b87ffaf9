//! What a new config would change on a running instance: routes added,
//! removed and changed, and the live sessions each change would close.
//! `GET /config` on the admin listener serves a [`RunningConfig`];
//! `wsgate check --diff` compares a file against it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::snapshot::Snapshot;

/// The running config, as `GET /config` reports it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningConfig {
    pub listeners: Vec<String>,
    pub routes: Vec<RunningRoute>,
}

/// One running route.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningRoute {
    pub name: String,
    pub host: String,
    pub path: String,
    /// The route's table as the config file wrote it.
    pub config: Option<toml::Table>,
    /// Live WebSocket sessions by backend URL.
    pub sessions: BTreeMap<String, usize>,
}

impl RunningRoute {
    fn live(&self) -> usize {
        self.sessions.values().sum()
    }
}

/// Whether a session on route `route` to `backend` survives `snapshot`:
/// the route still exists, still takes WebSockets, and still lists the backend.
pub fn keeps_session(snapshot: &Snapshot, route: &str, backend: &str) -> SessionFate {
    let websocket = snapshot
        .router
        .routes()
        .iter()
        .find(|r| r.name == route)
        .and_then(|r| r.websocket.as_ref());
    match websocket {
        None => SessionFate::RouteRemoved,
        Some(ws) if ws.backends.backends().iter().any(|b| b.url == backend) => SessionFate::Kept,
        Some(_) => SessionFate::BackendRemoved,
    }
}

/// What a reload does to one live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFate {
    Kept,
    RouteRemoved,
    BackendRemoved,
}

/// The report `wsgate check --diff` prints: one line per route, then totals.
pub fn describe(next: &Snapshot, running: &RunningConfig) -> String {
    let mut out = String::new();
    let (mut added, mut removed, mut changed, mut unchanged, mut closing) = (0, 0, 0, 0, 0);
    let mut names: Vec<&str> = next
        .router
        .routes()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    for name in &names {
        if !running.routes.iter().any(|r| r.name == *name) {
            added += 1;
            let _ = writeln!(out, "+ {name:<16} added");
        }
    }
    for route in &running.routes {
        let live = route.live();
        if !names.contains(&route.name.as_str()) {
            removed += 1;
            closing += live;
            let _ = writeln!(
                out,
                "- {:<16} removed; closes {}",
                route.name,
                sessions(live)
            );
            continue;
        }
        let keys = changed_keys(route.config.as_ref(), next.route_sources.get(&route.name));
        if keys.is_empty() {
            unchanged += 1;
            let _ = writeln!(
                out,
                "  {:<16} unchanged; {} kept",
                route.name,
                sessions(live)
            );
            continue;
        }
        changed += 1;
        let closed: usize = route
            .sessions
            .iter()
            .filter(|(backend, _)| keeps_session(next, &route.name, backend) != SessionFate::Kept)
            .map(|(_, count)| count)
            .sum();
        closing += closed;
        let _ = writeln!(
            out,
            "~ {:<16} changed ({}); closes {} of {} live",
            route.name,
            keys.join(", "),
            closed,
            live
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

/// The top-level keys of a route table whose values differ.
fn changed_keys(running: Option<&toml::Table>, next: Option<&toml::Table>) -> Vec<String> {
    let empty = toml::Table::new();
    let (running, next) = (running.unwrap_or(&empty), next.unwrap_or(&empty));
    let keys: BTreeSet<&String> = running.keys().chain(next.keys()).collect();
    keys.into_iter()
        .filter(|key| running.get(*key) != next.get(*key))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("toml")
    }

    #[test]
    fn changed_keys_name_what_differs() {
        let before =
            table("name = \"a\"\npath = \"/a\"\nwebsocket = { backends = [\"ws://x:1\"] }");
        let after = table(
            "name = \"a\"\npath = \"/a\"\nwebsocket = { backends = [\"ws://y:1\"] }\nhost = \"h\"",
        );
        assert_eq!(
            changed_keys(Some(&before), Some(&after)),
            ["host", "websocket"]
        );
        assert!(changed_keys(Some(&before), Some(&before)).is_empty());
    }
}

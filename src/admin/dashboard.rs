//! The live dashboard: `GET /` on the admin listener is a page (inline
//! script and SVG, nothing fetched from anywhere else) that follows
//! `GET /events`, a server-sent event stream carrying the gateway's state
//! as JSON once a second. The page turns the running totals into rates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::access_log::rfc3339_millis;
use crate::body::Body;
use crate::gateway::Gateway;

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// How often the stream sends the state.
const EVERY: Duration = Duration::from_secs(1);

/// Event streams open at once: each holds one of the admin listener's
/// connection slots for as long as its page is open, and `/healthz` must
/// keep a slot.
const MAX_STREAMS: usize = 8;

static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts an open stream until the stream's body is dropped.
struct StreamSlot;

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The event stream of the gateway's state, until the page goes away;
/// `None` when [`MAX_STREAMS`] are open already.
pub fn events(gateway: Arc<Gateway>) -> Option<Response<Body>> {
    if STREAMS.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let slot = StreamSlot;
    let body = Body::events(EVERY, move || {
        let _open = &slot;
        let state = serde_json::to_string(&state(&gateway)).unwrap_or_default();
        Bytes::from(format!("data: {state}\n\n"))
    });
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}

/// What the page shows, as running totals.
#[derive(Debug, Serialize)]
struct State {
    time_ms: u128,
    /// 0 for the config started with, one more per reload that swapped one in.
    generation: u64,
    last_reload: Option<Reload>,
    /// Whether the counters below are kept (`[admin] metrics`).
    metrics: bool,
    sessions: usize,
    routes: Vec<RouteState>,
    backends: Vec<BackendState>,
    recent_closes: Vec<Close>,
}

#[derive(Debug, Serialize)]
struct Reload {
    time: String,
    ok: bool,
}

#[derive(Debug, Default, Serialize)]
struct RouteState {
    name: String,
    /// Responses by status class (`2xx`…).
    requests: BTreeMap<String, f64>,
    sessions: f64,
    messages_in: f64,
    messages_out: f64,
    /// Session ends by close code (`none` for no close frame).
    closes: BTreeMap<String, f64>,
    /// Every ping's round trip since start, by bucket: upper bound (s) and cumulative count.
    ping_rtt: Vec<(f64, u64)>,
}

#[derive(Debug, Default, Serialize)]
struct BackendState {
    route: String,
    url: String,
    healthy: bool,
    /// Taken out of new placements by the operator.
    drained: bool,
    sessions: usize,
    errors: f64,
}

#[derive(Debug, Serialize)]
struct Close {
    time: String,
    route: String,
    backend: String,
    client: String,
    code: Option<u16>,
    reason: &'static str,
}

fn state(gateway: &Gateway) -> State {
    let snapshot = gateway.snapshot();
    let mut routes: Vec<RouteState> = snapshot
        .model
        .routes
        .iter()
        .map(|route| RouteState {
            name: route.name.clone(),
            ..RouteState::default()
        })
        .collect();
    let mut backends: Vec<BackendState> = snapshot
        .router
        .routes()
        .iter()
        .flat_map(|route| {
            route.pools().flat_map(|pool| {
                pool.backends().iter().map(|backend| BackendState {
                    route: route.name.clone(),
                    url: backend.url.clone(),
                    healthy: true,
                    drained: backend.is_drained(),
                    ..BackendState::default()
                })
            })
        })
        .collect();
    if let Some(metrics) = gateway.metrics() {
        for family in metrics.gather() {
            add_family(&family, &mut routes, &mut backends);
        }
    }
    let counts = gateway.sessions().counts();
    for backend in &mut backends {
        backend.sessions = counts
            .get(&(backend.route.clone(), backend.url.clone()))
            .copied()
            .unwrap_or(0);
    }
    let status = gateway.reload_status();
    State {
        time_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
        generation: status.generation,
        last_reload: status.last.map(|(time, ok)| Reload {
            time: rfc3339_millis(time),
            ok,
        }),
        metrics: gateway.metrics().is_some(),
        sessions: gateway.sessions().len(),
        routes,
        backends,
        recent_closes: gateway
            .sessions()
            .recent_closes()
            .into_iter()
            .rev()
            .map(|close| Close {
                time: rfc3339_millis(close.time),
                route: close.route,
                backend: close.backend,
                client: close.client.to_string(),
                code: close.code,
                reason: close.reason,
            })
            .collect(),
    }
}

/// Adds one metric family's samples to the routes and backends they label.
fn add_family(family: &MetricFamily, routes: &mut [RouteState], backends: &mut [BackendState]) {
    for metric in family.get_metric() {
        let label = |name: &str| {
            metric
                .get_label()
                .iter()
                .find(|pair| pair.name() == name)
                .map(|pair| pair.value())
                .unwrap_or("")
        };
        let route = routes.iter_mut().find(|r| r.name == label("route"));
        let backend = backends
            .iter_mut()
            .find(|b| b.route == label("route") && b.url == label("backend"));
        match (family.name(), route, backend) {
            ("wsgate_http_requests_total", Some(route), _) => {
                let class = format!("{}xx", label("code").chars().next().unwrap_or('?'));
                *route.requests.entry(class).or_default() += metric.get_counter().get_value();
            }
            ("wsgate_ws_connections_active", Some(route), _) => {
                route.sessions += metric.get_gauge().get_value();
            }
            ("wsgate_ws_messages_total", Some(route), _) => {
                let value = metric.get_counter().get_value();
                match label("direction") {
                    "client_to_backend" => route.messages_in = value,
                    _ => route.messages_out = value,
                }
            }
            ("wsgate_ws_closes_total", Some(route), _) => {
                *route.closes.entry(label("code").to_owned()).or_default() +=
                    metric.get_counter().get_value();
            }
            ("wsgate_ws_ping_rtt_seconds", Some(route), _) => {
                route.ping_rtt = metric
                    .get_histogram()
                    .get_bucket()
                    .iter()
                    .map(|bucket| (bucket.upper_bound(), bucket.cumulative_count()))
                    .collect();
            }
            ("wsgate_upstream_healthy", _, Some(backend)) => {
                backend.healthy = metric.get_gauge().get_value() > 0.0;
            }
            ("wsgate_upstream_errors_total", _, Some(backend)) => {
                backend.errors += metric.get_counter().get_value();
            }
            _ => {}
        }
    }
}

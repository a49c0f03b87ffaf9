//! Prometheus metrics on a registry the server owns. The families live here;
//! the handles the data path bumps (per route, listener and backend) are
//! handed out by constructors that whoever builds the runtime calls once per
//! snapshot and stores, so no request or message looks up a label. Nothing
//! here knows the rest of the crate.

mod acme;
mod auth;
mod handles;
mod limits;

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use acme::AcmeMeters;
pub use auth::{AuthMeters, AuthResult};
pub use handles::{
    AcceptError, Active, BackendMeters, BodyMeter, ClientProtocol, DirectionTally, HttpMeters,
    ListenerMeters, SessionTally, TlsResult, UpgradeResult, UpstreamErrorKind, WsMeters,
};
pub use limits::{Limit, LimitMeters};

/// What `/metrics` answers with (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Buckets, in seconds, for HTTP responses: static files answer in tens of
/// microseconds, proxied pages in milliseconds to seconds.
const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Buckets, in bytes, for WebSocket messages: powers of four from 16 B to
/// 16 MiB, around the 1 MiB default `max_message_size`.
const MESSAGE_SIZE_BUCKETS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];
/// Buckets, in seconds, for WebSocket sessions: from a page view to a day.
const SESSION_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
];
/// Buckets, in seconds, for round trips and connects: loopback to a
/// struggling mobile client, up to the default 10 s ping timeout.
const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every wsgate metric family, registered on one registry.
pub struct Metrics {
    registry: Registry,
    families: Families,
    /// HTTP handles for requests that matched no route.
    unmatched: HttpMeters,
}

/// The families the handles are resolved from.
#[derive(Clone)]
pub(crate) struct Families {
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_response_bytes: IntCounterVec,
    pub ws_upgrades: IntCounterVec,
    pub ws_active: IntGaugeVec,
    pub ws_messages: IntCounterVec,
    pub ws_frames: IntCounterVec,
    pub ws_payload_bytes: IntCounterVec,
    pub ws_message_size: HistogramVec,
    pub ws_closes: IntCounterVec,
    pub ws_session_duration: HistogramVec,
    pub ws_ping_rtt: HistogramVec,
    pub upstream_connect: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_drained: IntGaugeVec,
    pub tls_handshakes: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub accept_errors: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub log_dropped: IntCounter,
    pub limit_rejections: IntCounterVec,
    pub limit_throttled: IntCounterVec,
    pub rate_limit_clients: IntGauge,
    pub rate_limit_evictions: IntCounter,
    pub proxy_protocol_rejected: IntCounterVec,
    pub auth: IntCounterVec,
    pub acme_expiry: IntGaugeVec,
    pub acme_orders: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every family, `wsgate_build_info` and the process collector.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let families = Families {
            http_requests: counters(
                &registry,
                "wsgate_http_requests_total",
                "HTTP requests answered on public listeners, by route, method and status code.",
                &["route", "method", "code"],
            ),
            http_duration: histograms(
                &registry,
                "wsgate_http_request_duration_seconds",
                "Time from the request head to the last byte of the response body.",
                &["route"],
                HTTP_DURATION_BUCKETS,
            ),
            http_response_bytes: counters(
                &registry,
                "wsgate_http_response_bytes_total",
                "HTTP response body bytes sent.",
                &["route"],
            ),
            ws_upgrades: counters(
                &registry,
                "wsgate_ws_upgrades_total",
                "WebSocket upgrade requests, by outcome and the client's protocol (h1: an HTTP/1.1 upgrade, h2: an HTTP/2 extended CONNECT).",
                &["route", "result", "protocol"],
            ),
            ws_active: gauges(
                &registry,
                "wsgate_ws_connections_active",
                "WebSocket sessions being relayed, by the client's protocol (h1, h2).",
                &["route", "protocol"],
            ),
            ws_messages: counters(
                &registry,
                "wsgate_ws_messages_total",
                "WebSocket data messages relayed (a fragmented message counts once).",
                &["route", "direction"],
            ),
            ws_frames: counters(
                &registry,
                "wsgate_ws_frames_total",
                "WebSocket frames relayed, control frames included.",
                &["route", "direction"],
            ),
            ws_payload_bytes: counters(
                &registry,
                "wsgate_ws_payload_bytes_total",
                "WebSocket data frame payload bytes relayed.",
                &["route", "direction"],
            ),
            ws_message_size: histograms(
                &registry,
                "wsgate_ws_message_size_bytes",
                "Payload size of relayed WebSocket data messages.",
                &["route", "direction"],
                MESSAGE_SIZE_BUCKETS,
            ),
            ws_closes: counters(
                &registry,
                "wsgate_ws_closes_total",
                "WebSocket sessions ended, by who began the close and its code (none: no close frame).",
                &["route", "initiator", "code"],
            ),
            ws_session_duration: histograms(
                &registry,
                "wsgate_ws_session_duration_seconds",
                "How long WebSocket sessions lasted.",
                &["route"],
                SESSION_DURATION_BUCKETS,
            ),
            ws_ping_rtt: histograms(
                &registry,
                "wsgate_ws_ping_rtt_seconds",
                "Round trip of the gateway's pings to WebSocket clients.",
                &["route"],
                ROUND_TRIP_BUCKETS,
            ),
            upstream_connect: histograms(
                &registry,
                "wsgate_upstream_connect_duration_seconds",
                "Time to connect to a backend (TCP, plus TLS for wss:// and https://).",
                &["route", "backend"],
                ROUND_TRIP_BUCKETS,
            ),
            upstream_errors: counters(
                &registry,
                "wsgate_upstream_errors_total",
                "Failed attempts to use a backend, by kind.",
                &["route", "backend", "kind"],
            ),
            upstream_healthy: gauges(
                &registry,
                "wsgate_upstream_healthy",
                "1 while a backend gets traffic; 0 after failed health checks or connects.",
                &["route", "backend"],
            ),
            upstream_drained: gauges(
                &registry,
                "wsgate_upstream_drained",
                "1 while the operator has drained a backend (POST /backends/{route}/{backend}/drain): it gets no new requests or sessions.",
                &["route", "backend"],
            ),
            tls_handshakes: counters(
                &registry,
                "wsgate_tls_handshakes_total",
                "TLS handshakes with clients, by listener and result.",
                &["listener", "result"],
            ),
            accept_errors: counters(
                &registry,
                "wsgate_accept_errors_total",
                "Failed accepts on a listener, by error (out_of_file_descriptors: the open-file limit is reached).",
                &["listener", "error"],
            ),
            connections_active: gauges(
                &registry,
                "wsgate_connections_active",
                "Client connections open, WebSocket sessions included.",
                &["listener"],
            ),
            config_reloads: counters(
                &registry,
                "wsgate_config_reloads_total",
                "Config reloads, by result.",
                &["result"],
            ),
            log_dropped: counter(
                &registry,
                "wsgate_log_dropped_total",
                "Access log lines dropped because the log writer was behind.",
            ),
            limit_rejections: counters(
                &registry,
                "wsgate_limit_rejections_total",
                "Connections, requests and sessions refused or closed by a per-client or per-session limit, by route (empty for limits that apply before routing) and limit.",
                &["route", "limit"],
            ),
            limit_throttled: counters(
                &registry,
                "wsgate_limit_throttled_total",
                "Times a WebSocket session stopped reading from its client until its message or byte rate allowed more.",
                &["route", "limit"],
            ),
            rate_limit_clients: gauge(
                &registry,
                "wsgate_rate_limit_clients",
                "Client states the rate limits hold; at most max_tracked_clients.",
            ),
            rate_limit_evictions: counter(
                &registry,
                "wsgate_rate_limit_evictions_total",
                "Client states dropped from the full rate-limit table while still limiting their client; if this grows, raise max_tracked_clients.",
            ),
            auth: counters(
                &registry,
                "wsgate_auth_total",
                "Credential checks on routes with auth, by route, method and result (ok, missing, denied).",
                &["route", "method", "result"],
            ),
            proxy_protocol_rejected: counters(
                &registry,
                "wsgate_proxy_protocol_rejected_total",
                "Connections closed because of their PROXY protocol header (malformed, missing, timed out, or sent by a peer not in trusted_proxies), by listener and reason.",
                &["listener", "reason"],
            ),
            acme_expiry: gauges(
                &registry,
                "wsgate_acme_certificate_expiry_timestamp_seconds",
                "When the ACME certificate served for each name expires, in Unix seconds.",
                &["name"],
            ),
            acme_orders: counters(
                &registry,
                "wsgate_acme_orders_total",
                "ACME certificate orders, by result (issued, failed).",
                &["result"],
            ),
        };
        for result in ["success", "failure"] {
            families.config_reloads.with_label_values(&[result]);
        }
        let build_info = gauges(
            &registry,
            "wsgate_build_info",
            "Always 1; the version label says which wsgate is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        register(
            &registry,
            prometheus::process_collector::ProcessCollector::for_self(),
        );
        let unmatched = HttpMeters::new(&families, UNMATCHED);
        Metrics {
            registry,
            families,
            unmatched,
        }
    }

    /// A route's HTTP handles.
    pub fn route(&self, route: &str) -> HttpMeters {
        HttpMeters::new(&self.families, route)
    }

    /// A route's WebSocket handles.
    pub fn websocket(&self, route: &str) -> WsMeters {
        WsMeters::new(&self.families, route)
    }

    /// One backend's handles on one route.
    pub fn backend(&self, route: &str, backend: &str) -> BackendMeters {
        BackendMeters::new(&self.families, route, backend)
    }

    /// The counter of requests a route's pool refused because every
    /// backend failed its health checks (`backend="none"`).
    pub fn no_healthy_backend(&self, route: &str) -> IntCounter {
        self.families.upstream_errors.with_label_values(&[
            route,
            "none",
            UpstreamErrorKind::NoHealthyBackend.as_str(),
        ])
    }

    /// A listener's handles; `tls` adds its handshake series.
    pub fn listener(&self, bind: &str, tls: bool) -> ListenerMeters {
        ListenerMeters::new(&self.families, bind, tls)
    }

    /// A route's limit series; `""` for the limits that apply before routing.
    pub fn limits(&self, route: &str) -> LimitMeters {
        LimitMeters::new(&self.families, route)
    }

    /// A route's `wsgate_auth_total` series for `method`.
    pub fn auth(&self, route: &str, method: &str) -> AuthMeters {
        AuthMeters::new(&self.families, route, method)
    }

    /// The ACME series.
    pub fn acme(&self) -> AcmeMeters {
        AcmeMeters::new(&self.families)
    }

    /// The rate-limit table's series.
    pub fn rate_limit_table(&self) -> (IntGauge, IntCounter) {
        (
            self.families.rate_limit_clients.clone(),
            self.families.rate_limit_evictions.clone(),
        )
    }

    /// Counts a connection closed for its PROXY header on `listener`.
    pub fn proxy_protocol_rejected(&self, listener: &str, reason: &str) {
        self.families
            .proxy_protocol_rejected
            .with_label_values(&[listener, reason])
            .inc();
    }

    /// The counter of access log lines dropped while the writer was behind.
    pub fn log_dropped(&self) -> IntCounter {
        self.families.log_dropped.clone()
    }

    /// The handles for requests that matched no route.
    pub fn unmatched(&self) -> &HttpMeters {
        &self.unmatched
    }

    /// Drops every series labelled with `route`, for a route a reload removed.
    pub fn remove_route(&self, route: &str) {
        let f = &self.families;
        let route = &[("route", route)];
        remove_matching(&f.http_requests, route);
        remove_matching(&f.http_duration, route);
        remove_matching(&f.http_response_bytes, route);
        remove_matching(&f.ws_upgrades, route);
        remove_matching(&f.ws_active, route);
        remove_matching(&f.ws_messages, route);
        remove_matching(&f.ws_frames, route);
        remove_matching(&f.ws_payload_bytes, route);
        remove_matching(&f.ws_message_size, route);
        remove_matching(&f.ws_closes, route);
        remove_matching(&f.ws_session_duration, route);
        remove_matching(&f.ws_ping_rtt, route);
        remove_matching(&f.upstream_connect, route);
        remove_matching(&f.upstream_errors, route);
        remove_matching(&f.upstream_healthy, route);
        remove_matching(&f.upstream_drained, route);
        remove_matching(&f.limit_rejections, route);
        remove_matching(&f.limit_throttled, route);
        remove_matching(&f.auth, route);
    }

    /// Drops the series of one backend of a route, for a backend a reload
    /// took out of the route's pool.
    pub fn remove_backend(&self, route: &str, backend: &str) {
        let f = &self.families;
        let labels = &[("route", route), ("backend", backend)];
        remove_matching(&f.upstream_connect, labels);
        remove_matching(&f.upstream_errors, labels);
        remove_matching(&f.upstream_healthy, labels);
        remove_matching(&f.upstream_drained, labels);
    }

    /// Drops the series of a listener a reload removed.
    pub fn remove_listener(&self, bind: &str) {
        let f = &self.families;
        let labels = &[("listener", bind)];
        remove_matching(&f.tls_handshakes, labels);
        remove_matching(&f.connections_active, labels);
        remove_matching(&f.accept_errors, labels);
        remove_matching(&f.proxy_protocol_rejected, labels);
    }

    /// Counts one reload attempt in `wsgate_config_reloads_total`.
    pub fn reloaded(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.families
            .config_reloads
            .with_label_values(&[result])
            .inc();
    }

    /// Everything, in the text exposition format.
    /// Every family's current samples, for views other than the text format.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|error| format!("# encoding metrics failed: {error}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Removes every child of `family` whose `label` equals `value`. The
/// prometheus crate removes by complete label sets only, so the children are
/// read back from a collection.
/// Drops every series of `family` whose labels include all of `wanted`.
fn remove_matching<T: MetricVecBuilder>(family: &MetricVec<T>, wanted: &[(&str, &str)]) {
    for collected in family.collect() {
        for metric in collected.get_metric() {
            let labels = metric.get_label();
            let has = |(name, value): &(&str, &str)| {
                labels
                    .iter()
                    .any(|pair| pair.name() == *name && pair.value() == *value)
            };
            if !wanted.iter().all(has) {
                continue;
            }
            let map: HashMap<&str, &str> = labels
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            let _ = family.remove(&map);
        }
    }
}

// The names, help texts, label names and buckets below are literals of this
// module, checked by its tests; registering them cannot fail at run time.

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, family.clone());
    family
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, counter.clone());
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, gauge.clone());
    gauge
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let family = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, family.clone());
    family
}

fn histograms(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let family = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, family.clone());
    family
}

fn register(registry: &Registry, collector: impl Collector + 'static) {
    registry
        .register(Box::new(collector))
        .unwrap_or_else(|e| panic!("registering a metric family: {e}"));
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{Method, StatusCode};

    use super::*;

    fn lines_with<'t>(text: &'t str, needle: &str) -> Vec<&'t str> {
        text.lines()
            .filter(|line| !line.starts_with('#') && line.contains(needle))
            .collect()
    }

    #[test]
    fn a_fresh_registry_has_build_info_reloads_and_process_series() {
        let text = Metrics::new().encode();
        let version = format!(
            "wsgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        assert!(text.contains("wsgate_config_reloads_total{result=\"failure\"} 0"));
        assert!(text.contains("wsgate_config_reloads_total{result=\"success\"} 0"));
        assert!(text.contains("process_open_fds "));
    }

    #[test]
    fn invented_methods_share_one_label_and_odd_codes_still_count() {
        let metrics = Metrics::new();
        let http = HttpMeters::new(&metrics.families, "api");
        let brew = Method::from_bytes(b"BREW").expect("extension method");
        http.request(&brew, StatusCode::OK);
        http.request(
            &Method::from_bytes(b"SPILL").expect("method"),
            StatusCode::OK,
        );
        http.request(&Method::GET, StatusCode::from_u16(799).expect("code"));
        http.request(&Method::GET, StatusCode::from_u16(799).expect("code"));
        let text = metrics.encode();
        assert_eq!(
            lines_with(&text, "method=\"other\""),
            ["wsgate_http_requests_total{code=\"200\",method=\"other\",route=\"api\"} 2"]
        );
        assert_eq!(
            lines_with(&text, "code=\"799\""),
            ["wsgate_http_requests_total{code=\"799\",method=\"GET\",route=\"api\"} 2"]
        );
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn a_body_meter_adds_bytes_and_duration_when_dropped() {
        let metrics = Metrics::new();
        let http = HttpMeters::new(&metrics.families, "site");
        let mut meter = http.body_meter(Instant::now() - Duration::from_millis(3));
        meter.sent(100);
        meter.sent(23);
        assert!(metrics
            .encode()
            .contains("wsgate_http_response_bytes_total{route=\"site\"} 0"));
        drop(meter);
        let text = metrics.encode();
        assert!(text.contains("wsgate_http_response_bytes_total{route=\"site\"} 123"));
        assert!(text.contains("wsgate_http_request_duration_seconds_count{route=\"site\"} 1"));
        // 3 ms lands above the 2.5 ms bucket.
        assert!(text.contains(
            "wsgate_http_request_duration_seconds_bucket{route=\"site\",le=\"0.0025\"} 0"
        ));
    }

    #[test]
    fn session_tallies_flush_differences_and_message_sizes() {
        let metrics = Metrics::new();
        let ws = WsMeters::new(&metrics.families, "chat");
        let mut tally = ws.session_tally();
        tally.to_backend.message(10);
        tally.to_backend.message(5000);
        tally.to_backend.flush(3, 2, 5010);
        // Unchanged totals add nothing; larger ones add the difference.
        tally.to_backend.flush(3, 2, 5010);
        tally.to_backend.flush(4, 2, 5010);
        let text = metrics.encode();
        let c2b = "direction=\"client_to_backend\",route=\"chat\"";
        assert!(
            text.contains(&format!("wsgate_ws_frames_total{{{c2b}}} 4")),
            "{text}"
        );
        assert!(text.contains(&format!("wsgate_ws_messages_total{{{c2b}}} 2")));
        assert!(text.contains(&format!("wsgate_ws_payload_bytes_total{{{c2b}}} 5010")));
        assert!(text.contains(&format!("wsgate_ws_message_size_bytes_count{{{c2b}}} 2")));
        assert!(text.contains(&format!(
            "wsgate_ws_message_size_bytes_bucket{{{c2b},le=\"4096\"}} 1"
        )));
        ws.session_ended(Duration::from_secs(2), "client", None);
        ws.session_ended(Duration::from_secs(2), "backend", Some(4000));
        let text = metrics.encode();
        assert!(text.contains(
            "wsgate_ws_closes_total{code=\"none\",initiator=\"client\",route=\"chat\"} 1"
        ));
        assert!(text.contains(
            "wsgate_ws_closes_total{code=\"4000\",initiator=\"backend\",route=\"chat\"} 1"
        ));
    }

    #[test]
    fn removing_a_route_drops_its_series_only() {
        let metrics = Metrics::new();
        for route in ["gone", "kept"] {
            HttpMeters::new(&metrics.families, route).request(&Method::GET, StatusCode::OK);
            let ws = WsMeters::new(&metrics.families, route);
            ws.session_ended(Duration::from_secs(1), "client", Some(1000));
            BackendMeters::new(&metrics.families, route, "ws://b:1")
                .failed(UpstreamErrorKind::Connect);
        }
        metrics.remove_route("gone");
        let text = metrics.encode();
        assert!(!text.contains("route=\"gone\""), "{text}");
        assert!(text
            .contains("wsgate_http_requests_total{code=\"200\",method=\"GET\",route=\"kept\"} 1"));
        assert!(text.contains(
            "wsgate_ws_closes_total{code=\"1000\",initiator=\"client\",route=\"kept\"} 1"
        ));
        assert!(text.contains("backend=\"ws://b:1\",kind=\"connect\",route=\"kept\"} 1"));
    }

    #[test]
    fn active_guards_count_while_they_live() {
        let metrics = Metrics::new();
        let listener = ListenerMeters::new(&metrics.families, "0.0.0.0:443", true);
        let plain = ListenerMeters::new(&metrics.families, "0.0.0.0:80", false);
        plain.handshake(TlsResult::Ok);
        let first = listener.connection_opened();
        let second = listener.connection_opened();
        listener.handshake(TlsResult::Timeout);
        assert!(metrics
            .encode()
            .contains("wsgate_connections_active{listener=\"0.0.0.0:443\"} 2"));
        drop((first, second));
        let text = metrics.encode();
        assert!(text.contains("wsgate_connections_active{listener=\"0.0.0.0:443\"} 0"));
        assert!(text.contains(
            "wsgate_tls_handshakes_total{listener=\"0.0.0.0:443\",result=\"timeout\"} 1"
        ));
        assert!(
            text.contains("wsgate_tls_handshakes_total{listener=\"0.0.0.0:443\",result=\"ok\"} 0")
        );
        assert!(!text.contains("wsgate_tls_handshakes_total{listener=\"0.0.0.0:80\""));
    }
}

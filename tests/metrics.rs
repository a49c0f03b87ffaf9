//! `/metrics` on the admin listener after real traffic: exact counts, live
//! while sessions are open, accepted by promtool and scraped by a real
//! Prometheus server. Each test's gateway has its own registry.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use support::metrics::{prometheus_bin, scrape, Scrape};
use support::tls::{self as test_tls, TestCa};
use support::ws::{self, masked, raw_handshake, read_frame, Behaviour, RecordingBackend};
use support::{eventually, free_port, get, get_with, test_dir, try_get, write_file, TestServer};

const WITHIN: Duration = Duration::from_secs(10);

fn dir(c: &str, d: &str) -> [(&'static str, String); 2] {
    [("route", c.to_owned()), ("direction", d.to_owned())]
}

/// Scrapes until `check` holds for a scrape, and returns that scrape.
async fn scrape_until(admin: SocketAddr, check: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(WITHIN, || async {
        let scrape = scrape(admin).await;
        check(&scrape).then_some(scrape)
    })
    .await
}

fn labels<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn http_requests_are_counted_by_route_method_and_code() {
    let dir = test_dir();
    write_file(dir.path(), "public/hello.txt", "hello metrics\n");
    let server = TestServer::start_in(
        dir,
        "[[routes]]\nname = \"site\"\npath = \"/site\"\nstatic = { root = \"public\" }\n",
    )
    .await;
    let ok = get(server.addr, "/site/hello.txt").await;
    assert_eq!(ok.status, 200);
    let etag = ok.header("etag").expect("etag").to_owned();
    for _ in 0..2 {
        let not_modified =
            get_with(server.addr, "/site/hello.txt", &[("if-none-match", &etag)]).await;
        assert_eq!(not_modified.status, 304);
    }
    let missing = get(server.addr, "/site/missing.txt").await;
    assert_eq!(missing.status, 404);
    let unmatched = get(server.addr, "/elsewhere").await;
    assert_eq!(unmatched.status, 404);
    let head = support::send(
        server.addr,
        support::request("HEAD", "/site/hello.txt")
            .body(http_body_util::Empty::new())
            .expect("request"),
    )
    .await;
    assert_eq!(head.status, 200);

    let expected_bytes = (ok.body.len() + missing.body.len()) as f64;
    let metrics = scrape_until(server.admin, |m| {
        m.get(
            "wsgate_http_request_duration_seconds_count",
            &[("route", "site")],
        ) == Some(5.0)
            && m.get("wsgate_http_response_bytes_total", &[("route", "site")])
                == Some(expected_bytes)
    })
    .await;
    let requests = |route: &str, method: &str, code: &str| {
        metrics.get(
            "wsgate_http_requests_total",
            &[("route", route), ("method", method), ("code", code)],
        )
    };
    assert_eq!(requests("site", "GET", "200"), Some(1.0));
    assert_eq!(requests("site", "GET", "304"), Some(2.0));
    assert_eq!(requests("site", "GET", "404"), Some(1.0));
    assert_eq!(requests("site", "HEAD", "200"), Some(1.0));
    assert_eq!(requests("unmatched", "GET", "404"), Some(1.0));
    // Only what happened has a series; raw paths never become labels.
    assert_eq!(requests("site", "POST", "200"), None);
    assert!(!metrics.text.contains("/site/hello.txt"));
    assert!(!metrics.text.contains("/elsewhere"));
    assert_eq!(
        metrics.value(
            "wsgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(metrics.value("process_resident_memory_bytes", &[]) > 0.0);
    // Admin requests (these scrapes) are not counted as public traffic.
    assert_eq!(requests("unmatched", "GET", "200"), None);
    let listener = &[("listener", "127.0.0.1:0")];
    scrape_until(server.admin, |m| {
        m.get("wsgate_connections_active", listener) == Some(0.0)
    })
    .await;
}

/// Reads frames until one with `opcode` arrives; returns its payload.
async fn frame_of(stream: &mut tokio::net::TcpStream, opcode: u8) -> Vec<u8> {
    loop {
        let (got, payload) = read_frame(stream).await.expect("frame from the gateway");
        if got == opcode {
            return payload;
        }
    }
}

#[tokio::test]
async fn websocket_messages_are_counted_exactly_while_the_session_is_open() {
    let echo = RecordingBackend::start(Behaviour::Echo).await;
    let closer = RecordingBackend::start(Behaviour::CloseAfterFirstMessage).await;
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"], origins = [\"https://good.example\"] }}\n\
         [[routes]]\nname = \"bye\"\npath = \"/bye\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n\
         [[routes]]\nname = \"dead\"\npath = \"/dead\"\nwebsocket = {{ backends = [\"ws://127.0.0.1:9\"] }}\n",
        echo.addr, closer.addr
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let origin = [("Origin", "https://good.example")];

    // A text message, a message in two fragments and a ping from the client;
    // the backend echoes both messages and answers the ping.
    let (mut client, head) = raw_handshake(server.addr, "/chat", &origin).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut frames = masked(0x1, true, b"hello");
    frames.extend(masked(0x1, false, b"ab"));
    frames.extend(masked(0x0, true, b"cde"));
    frames.extend(masked(0x9, true, b"p"));
    client.write_all(&frames).await.expect("send frames");
    assert_eq!(frame_of(&mut client, 0x1).await, b"hello");
    assert_eq!(frame_of(&mut client, 0x1).await, b"abcde");
    assert_eq!(frame_of(&mut client, 0xA).await, b"p");

    let c2b = dir("chat", "client_to_backend");
    let b2c = dir("chat", "backend_to_client");
    let (c2b, b2c) = (labels(&c2b), labels(&b2c));
    // Live: the session is still open.
    let open = scrape_until(server.admin, |m| {
        m.get("wsgate_ws_frames_total", &b2c) == Some(3.0)
    })
    .await;
    assert_eq!(open.value("wsgate_ws_messages_total", &c2b), 2.0);
    assert_eq!(open.value("wsgate_ws_frames_total", &c2b), 4.0);
    assert_eq!(open.value("wsgate_ws_payload_bytes_total", &c2b), 10.0);
    assert_eq!(open.value("wsgate_ws_messages_total", &b2c), 2.0);
    assert_eq!(open.value("wsgate_ws_payload_bytes_total", &b2c), 10.0);
    assert_eq!(open.value("wsgate_ws_message_size_bytes_count", &c2b), 2.0);
    assert_eq!(open.value("wsgate_ws_message_size_bytes_sum", &c2b), 10.0);
    let mut small = c2b.clone();
    small.push(("le", "16"));
    assert_eq!(
        open.value("wsgate_ws_message_size_bytes_bucket", &small),
        2.0
    );
    assert_eq!(
        open.value(
            "wsgate_ws_connections_active",
            &[("route", "chat"), ("protocol", "h1")]
        ),
        1.0
    );
    assert_eq!(
        open.value("wsgate_connections_active", &[("listener", "127.0.0.1:0")]),
        1.0
    );

    // The client closes with 1000.
    client
        .write_all(&masked(0x8, true, &1000u16.to_be_bytes()))
        .await
        .expect("send close");
    frame_of(&mut client, 0x8).await;
    drop(client);

    // A second session on the same route ends without any close frame.
    let (mut vanishing, head) = raw_handshake(server.addr, "/chat", &origin).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    vanishing
        .write_all(&masked(0x2, true, &[0u8; 100]))
        .await
        .expect("send binary");
    frame_of(&mut vanishing, 0x2).await;
    drop(vanishing);

    // The backend of `bye` closes with 4000 after the first message.
    let mut bye = ws::connect(server.addr, "/bye").await;
    bye.send(Message::text("hi")).await.expect("send");
    match bye.next().await {
        Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
            assert_eq!(code, CloseCode::from(4000))
        }
        other => panic!("expected the backend's close, got {other:?}"),
    }
    let _ = bye.close(None).await;

    // Refused upgrades.
    let (_, head) =
        raw_handshake(server.addr, "/chat", &[("Origin", "https://evil.example")]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head) = raw_handshake(server.addr, "/dead", &[]).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");

    let closes = |route: &str, initiator: &str, code: &str| {
        [
            ("route", route.to_owned()),
            ("initiator", initiator.to_owned()),
            ("code", code.to_owned()),
        ]
    };
    let done = scrape_until(server.admin, |m| {
        m.get(
            "wsgate_ws_connections_active",
            &[("route", "chat"), ("protocol", "h1")],
        ) == Some(0.0)
            && m.get(
                "wsgate_ws_connections_active",
                &[("route", "bye"), ("protocol", "h1")],
            ) == Some(0.0)
            && m.get(
                "wsgate_ws_session_duration_seconds_count",
                &[("route", "chat")],
            ) == Some(2.0)
    })
    .await;
    assert_eq!(
        done.value(
            "wsgate_ws_closes_total",
            &labels(&closes("chat", "client", "1000"))
        ),
        1.0
    );
    assert_eq!(
        done.value(
            "wsgate_ws_closes_total",
            &labels(&closes("chat", "client", "none"))
        ),
        1.0
    );
    assert_eq!(
        done.value(
            "wsgate_ws_closes_total",
            &labels(&closes("bye", "backend", "4000"))
        ),
        1.0
    );
    // Close frames are frames, not messages: one more each way on `chat`,
    // and the second session's binary message each way.
    assert_eq!(done.value("wsgate_ws_frames_total", &c2b), 6.0);
    assert_eq!(done.value("wsgate_ws_messages_total", &c2b), 3.0);
    assert_eq!(done.value("wsgate_ws_messages_total", &b2c), 3.0);
    assert_eq!(done.value("wsgate_ws_payload_bytes_total", &c2b), 110.0);
    let upgrades = |route: &str, result: &str| {
        done.value(
            "wsgate_ws_upgrades_total",
            &[("route", route), ("result", result), ("protocol", "h1")],
        )
    };
    assert_eq!(upgrades("chat", "ok"), 2.0);
    assert_eq!(upgrades("chat", "origin_denied"), 1.0);
    assert_eq!(upgrades("bye", "ok"), 1.0);
    assert_eq!(upgrades("dead", "backend_unavailable"), 1.0);
    assert_eq!(upgrades("dead", "ok"), 0.0);
    let dead = [("route", "dead"), ("backend", "ws://127.0.0.1:9")];
    let mut refused = dead.to_vec();
    refused.push(("kind", "connect"));
    assert_eq!(done.value("wsgate_upstream_errors_total", &refused), 1.0);
    let echo_backend = format!("ws://{}", echo.addr);
    assert_eq!(
        done.value(
            "wsgate_upstream_connect_duration_seconds_count",
            &[("route", "chat"), ("backend", &echo_backend)]
        ),
        2.0
    );
    assert_eq!(
        done.value(
            "wsgate_http_requests_total",
            &[("route", "chat"), ("method", "GET"), ("code", "101")]
        ),
        2.0
    );
}

#[tokio::test]
async fn tls_handshakes_are_counted_per_listener() {
    let ca = TestCa::new();
    let server = test_tls::site_with_short_handshake(&ca).await;
    let stream = test_tls::connect(server.addr, "localhost", ca.client_config(&[])).await;
    drop(stream);
    let mut garbage = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let _silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let listener = "127.0.0.1:0";
    let result = |m: &Scrape, result: &str| {
        m.get(
            "wsgate_tls_handshakes_total",
            &[("listener", listener), ("result", result)],
        )
    };
    scrape_until(server.admin, |m| {
        result(m, "ok") == Some(1.0)
            && result(m, "error") == Some(1.0)
            && result(m, "timeout") == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hi");
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
        [admin]\nbind = \"127.0.0.1:0\"\nmetrics = false\n\
        [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_whole(dir, config).await;
    assert_eq!(get(server.addr, "/").await.status, 200);
    assert_eq!(get(server.admin, "/metrics").await.status, 404);
    assert_eq!(get(server.admin, "/healthz").await.status, 200);
    assert!(server.gateway.metrics().is_none());
}

#[tokio::test]
async fn the_public_listener_does_not_serve_metrics() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hi");
    let server = TestServer::start_in(
        dir,
        "[[routes]]\nname = \"api\"\npath = \"/api\"\nstatic = { root = \"public\" }\n",
    )
    .await;
    assert_eq!(get(server.addr, "/metrics").await.status, 404);
}

/// A gateway that has relayed `messages` messages each way on route `chat`.
async fn gateway_after_traffic(messages: usize) -> (TestServer, RecordingBackend) {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n",
        backend.addr
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let mut client = ws::connect(server.addr, "/chat").await;
    for i in 0..messages {
        client
            .send(Message::text(format!("message {i}")))
            .await
            .expect("send");
        ws::receive(&mut client).await;
    }
    let _ = client.close(None).await;
    (server, backend)
}

#[tokio::test]
async fn promtool_accepts_the_live_output() {
    let promtool = prometheus_bin("promtool");
    let (server, _backend) = gateway_after_traffic(3).await;
    let text = scrape(server.admin).await.text;
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    {
        use std::io::Write as _;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let output = check.wait_with_output().expect("promtool finished");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Prometheus server on loopback, killed when dropped.
struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: SocketAddr) -> PrometheusServer {
    let data = test_dir();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: wsgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    let config_path = write_file(data.path(), "prometheus.yml", config);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new(prometheus_bin("prometheus"))
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    PrometheusServer {
        child,
        addr,
        _data: data,
    }
}

#[tokio::test]
async fn a_prometheus_server_scrapes_the_per_route_message_counter() {
    let (server, _backend) = gateway_after_traffic(7).await;
    let prometheus = start_prometheus(server.admin);
    let query = "wsgate_ws_messages_total{route=\"chat\",direction=\"client_to_backend\"}";
    let url = format!("/api/v1/query?query={}", percent_encode(query));
    let value = eventually(Duration::from_secs(60), || async {
        // Until Prometheus listens, try again rather than let `get` fail.
        // Prometheus may accept and then reset while it starts up.
        let (_, reply) = try_get(prometheus.addr, &url).await.ok()?;
        let body: serde_json::Value = serde_json::from_slice(&reply).ok()?;
        let result = body["data"]["result"].as_array()?.first()?.clone();
        assert_eq!(result["metric"]["job"], "wsgate");
        result["value"][1].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(value, "7");
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every metric name `file` mentions (the dashboard's queries, the alerting
/// rules' expressions) is one a gateway exposes after traffic of every kind.
#[tokio::test]
async fn the_dashboard_and_alerts_use_metric_names_that_exist() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "public/index.html", "hi");
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
         [[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n",
        backend.addr
    );
    let server = TestServer::start_whole(dir, &config).await;
    drop(test_tls::connect(server.addrs[1], "localhost", ca.client_config(&[])).await);
    assert_eq!(get(server.addr, "/").await.status, 200);
    let mut client = ws::connect(server.addr, "/chat").await;
    client.send(Message::text("hi")).await.expect("send");
    ws::receive(&mut client).await;
    let _ = client.close(None).await;
    let scrape = scrape_until(server.admin, |m| {
        m.get(
            "wsgate_ws_session_duration_seconds_count",
            &[("route", "chat")],
        ) == Some(1.0)
    })
    .await;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "deploy/grafana/wsgate-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("read deploy file");
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file} names too few metrics: {names:?}");
        for name in names {
            // A histogram's own name is fine too (its samples are `_count`…).
            let histogram = format!("{name}_count");
            assert!(
                scrape.has_sample(&name) || scrape.has_sample(&histogram),
                "{file} uses {name}, which the gateway does not expose"
            );
        }
    }
}

/// `wsgate_…` and `process_…` identifiers in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["wsgate_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let preceded = text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if preceded {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

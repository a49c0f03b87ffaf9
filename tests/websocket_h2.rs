//! WebSockets over HTTP/2 (RFC 8441) through the real server, driven by
//! python-hyper's `h2` and `wsproto` (tests/h2ws/client.py, in a venv in
//! target/h2ws-venv made on first run) over TLS with ALPN h2, to backends
//! that speak HTTP/1.1: the setting that offers them, echoes, the answers
//! to CONNECTs that are not WebSockets, fifty sessions on one connection,
//! resets, a client that never opens its window, GOAWAY from either side,
//! and the per-route switch that sends clients back to HTTP/1.1.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::apps::python_venv;
use support::metrics::scrape;
use support::tls::TestCa;
use support::ws::{Behaviour, RecordingBackend, Seen};
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn h2ws_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2ws")
}

fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = h2ws_dir().join("requirements.txt");
        python_venv("h2ws-venv", &[requirements.as_path()], "h2, wsproto")
    })
}

/// A gateway with a TLS listener for `localhost` and `routes`; the CA's
/// PEM is `ca.pem` in its directory.
async fn h2_gateway(ca: &TestCa, routes: &str) -> TestServer {
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "ca.pem", &ca.pem);
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n{routes}"
    );
    TestServer::start_whole(dir, &config).await
}

/// A route `name` at `/name` to `backend`, with `extra` keys in its websocket table.
fn ws_route(name: &str, backend: &RecordingBackend, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\n\
         websocket = {{ backends = [\"ws://{}\"]{extra} }}\n",
        backend.addr
    )
}

/// Starts the h2 client on a scenario against the server's TLS listener;
/// `finish` reads its report.
fn start_client(server: &TestServer, args: &[&str]) -> tokio::process::Child {
    start_client_at(server.addr, &server.root().join("ca.pem"), args)
}

/// The same at `addr`, over TLS trusting `ca`, or by h2c when `ca` is `-`.
fn start_client_at(addr: std::net::SocketAddr, ca: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(python())
        .arg(h2ws_dir().join("client.py"))
        .arg(addr.to_string())
        .arg(ca)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the h2 client")
}

/// The client's last JSON line, once it has exited successfully.
async fn finish(client: tokio::process::Child) -> Value {
    let output = tokio::time::timeout(Duration::from_secs(90), client.wait_with_output())
        .await
        .expect("the h2 client finished in time")
        .expect("h2 client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "h2 client failed: {stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn h2_client(server: &TestServer, args: &[&str]) -> Value {
    finish(start_client(server, args)).await
}

/// The close codes the backend's next `sessions` sessions got, in the
/// order they ended (`None`: the connection ended without a close frame).
async fn backend_closes(backend: &mut RecordingBackend, sessions: usize) -> Vec<Option<u16>> {
    let mut codes = Vec::new();
    let mut ended = 0;
    while ended < sessions {
        match backend.next().await {
            Seen::Message(Message::Close(frame)) => codes.push(frame.map(|f| u16::from(f.code))),
            Seen::Ended => ended += 1,
            _ => {}
        }
    }
    codes
}

#[tokio::test]
async fn an_h2_session_echoes_through_an_http1_backend_and_is_counted_as_h2() {
    let ca = TestCa::new();
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = h2_gateway(&ca, &ws_route("chat", &backend, "")).await;
    let settings = h2_client(&server, &["settings"]).await;
    assert_eq!(settings["enable_connect_protocol"], 1);
    let echoed = h2_client(&server, &["echo", "/chat/room?x=1"]).await;
    assert_eq!(echoed["text"], true, "{echoed}");
    assert_eq!(echoed["binary"], true, "{echoed}");
    assert_eq!(echoed["close_code"], 4001, "{echoed}");
    // The backend got an HTTP/1.1 handshake with a key of the gateway's.
    let Seen::Handshake(headers, target) = backend.next().await else {
        panic!("the backend saw no handshake first");
    };
    assert_eq!(target, "/chat/room?x=1");
    assert_eq!(
        headers.get("host").map(|h| h.as_bytes()),
        Some(&b"localhost"[..])
    );
    let key = headers
        .get("sec-websocket-key")
        .expect("a key for the backend");
    assert_eq!(key.len(), 24, "{key:?}");
    assert_eq!(backend_closes(&mut backend, 1).await, [Some(4001)]);
    let metrics = scrape(server.admin).await;
    assert_eq!(metrics.sessions_by_protocol("chat"), (1.0, 0.0));
    let record = server.session_record("chat").await;
    assert_eq!(record["protocol"], "HTTP/2.0", "{record}");
    assert_eq!(record["method"], "CONNECT", "{record}");
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["close_code"], 4001, "{record}");
    assert_eq!(record["client_bytes"], 13 + (1 << 20), "{record}");
}

#[tokio::test]
async fn connects_that_cannot_be_served_get_the_right_answer() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let routes = format!(
        "{}{}[[routes]]\nname = \"site\"\npath = \"/site\"\nstatic = {{ root = \".\" }}\n",
        ws_route("chat", &backend, ", origins = [\"https://good.example\"]"),
        ws_route("legacy", &backend, ", over_http2 = false"),
    );
    let server = h2_gateway(&ca, &routes).await;
    let status = |args: &'static [&'static str]| {
        let server = &server;
        async move { h2_client(server, args).await }
    };
    // A tunnel (no :protocol) is not offered; nor is another protocol.
    let tunnel = status(&["status", "/chat", ":protocol="]).await;
    assert_eq!(tunnel["status"], 405, "{tunnel}");
    let other = status(&[
        "status",
        "/chat",
        ":protocol=chat",
        "origin=https://good.example",
    ])
    .await;
    assert_eq!(other["status"], 501, "{other}");
    let no_websocket = status(&["status", "/site"]).await;
    assert_eq!(no_websocket["status"], 404, "{no_websocket}");
    let version = status(&[
        "status",
        "/chat",
        "sec-websocket-version=12",
        "origin=https://good.example",
    ])
    .await;
    assert_eq!(version["status"], 426, "{version}");
    assert_eq!(version["headers"]["sec-websocket-version"], "13");
    let origin = status(&["status", "/chat", "origin=https://evil.example"]).await;
    assert_eq!(origin["status"], 403, "{origin}");
    let fine = status(&["status", "/chat", "origin=https://good.example"]).await;
    assert_eq!(fine["status"], 200, "{fine}");
    assert!(
        fine["headers"].get("sec-websocket-accept").is_none(),
        "{fine}"
    );
    // A route that keeps its sessions on HTTP/1.1 resets the stream with
    // HTTP_1_1_REQUIRED, which tells the client to retry there.
    let legacy = status(&["status", "/legacy"]).await;
    assert_eq!(legacy["reset"], "HTTP_1_1_REQUIRED", "{legacy}");
    let metrics = scrape(server.admin).await;
    let count = |result| {
        metrics.value(
            "wsgate_ws_upgrades_total",
            &[("route", "chat"), ("result", result), ("protocol", "h2")],
        )
    };
    assert_eq!(count("bad_request"), 1.0);
    assert_eq!(count("origin_denied"), 1.0);
    assert_eq!(count("ok"), 1.0);
}

#[tokio::test]
async fn without_a_route_that_takes_them_h2_connections_do_not_offer_websockets() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = h2_gateway(&ca, &ws_route("legacy", &backend, ", over_http2 = false")).await;
    let settings = h2_client(&server, &["settings"]).await;
    assert_eq!(settings["enable_connect_protocol"], 0, "{settings}");
    // Plain HTTP/1.1 upgrades still work on the route.
    let stream =
        support::tls::connect(server.addr, "localhost", ca.client_config(&["http/1.1"])).await;
    let (mut client, response) = tokio_tungstenite::client_async("wss://localhost/legacy", stream)
        .await
        .expect("an HTTP/1.1 upgrade");
    assert_eq!(response.status(), 101);
    futures_util::SinkExt::send(&mut client, Message::text("old way"))
        .await
        .expect("send");
    assert_eq!(
        support::ws::receive(&mut client).await,
        Message::text("old way")
    );
}

#[tokio::test]
async fn subprotocols_auth_cookies_and_per_client_caps_apply_to_h2_sessions_too() {
    let ca = TestCa::new();
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let route = ws_route(
        "chat",
        &backend,
        ", subprotocols = [\"chat.v2\"], max_sessions_per_client = 2",
    );
    // Basic auth for alice:wonderland: a line made by Python bcrypt (cost 4).
    let routes = format!("{route}auth = {{ basic = \"users.htpasswd\" }}\n");
    let server = {
        let dir = test_dir();
        write_file(
            dir.path(),
            "users.htpasswd",
            "alice:$2b$04$ZC8e5UN1MWNFzTfWCJzAtOnl2sNwrVKlPyQwrbFnSUEDRXvZHKVwu\n",
        );
        ca.leaf(&["localhost"]).write(dir.path(), "site");
        write_file(dir.path(), "ca.pem", &ca.pem);
        let config = format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
             [admin]\nbind = \"127.0.0.1:0\"\n{routes}"
        );
        TestServer::start_whole(dir, &config).await
    };
    let anonymous = h2_client(
        &server,
        &["status", "/chat", "sec-websocket-protocol=chat.v2"],
    )
    .await;
    assert_eq!(anonymous["status"], 401, "{anonymous}");
    let authorization = "authorization=Basic YWxpY2U6d29uZGVybGFuZA==";
    let wrong = h2_client(
        &server,
        &[
            "status",
            "/chat",
            authorization,
            "sec-websocket-protocol=irc",
        ],
    )
    .await;
    assert_eq!(wrong["status"], 400, "{wrong}");
    let report = h2_client(
        &server,
        &[
            "statuses",
            "/chat",
            "3",
            authorization,
            "sec-websocket-protocol=irc, chat.v2",
            // Split as browsers send cookies over HTTP/2 (RFC 9113 §8.2.3).
            "cookie=theme=dark",
            "cookie=sid=abc",
        ],
    )
    .await;
    let answers = report["answers"].as_array().expect("answers");
    let statuses: Vec<&Value> = answers.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [200, 200, 429], "{report}");
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("the backend saw no handshake first");
    };
    assert_eq!(headers["sec-websocket-protocol"], "irc, chat.v2");
    // The HTTP/1.1 backend gets them as one field.
    let cookies: Vec<_> = headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["theme=dark; sid=abc"]);
    assert!(
        headers.get("authorization").is_some(),
        "basic auth passes the header on"
    );
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_end_to_end_over_h2() {
    // Node's `ws` echo server with permessage-deflate as the backend.
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    support::apps::npm_ci(&interop, "ws/package.json");
    let backend = support::apps::ChildServer::start(
        std::process::Command::new("node")
            .arg(interop.join("echo-server.js"))
            .args(["0", "--deflate"]),
    );
    let ca = TestCa::new();
    let route = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"{}\"] }}\n",
        backend.url("ws")
    );
    let server = h2_gateway(&ca, &route).await;
    let report = h2_client(&server, &["deflate", "/chat"]).await;
    assert_eq!(report["status"], 200, "{report}");
    let extensions = report["extensions"].as_str().unwrap_or_default();
    assert!(extensions.starts_with("permessage-deflate"), "{report}");
    assert_eq!(report["echoed"], true, "{report}");
    // The repetitive text crossed the stream compressed.
    let received = report["received"].as_u64().expect("bytes");
    let text_len = report["text_len"].as_u64().expect("bytes");
    assert!(received * 10 < text_len, "{report}");
    let record = server.session_record("chat").await;
    let logged = record["extensions"].as_str().unwrap_or_default();
    assert!(logged.starts_with("permessage-deflate"), "{record}");
}

#[tokio::test]
async fn h2_clients_get_the_gateways_pings() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let route = ws_route("chat", &backend, ", ping_interval = \"1s\"");
    let server = h2_gateway(&ca, &route).await;
    let report = h2_client(&server, &["idle", "/chat", "3.5"]).await;
    let pings = report["pings"].as_u64().expect("a count");
    assert!((2..=4).contains(&pings), "{report}");
    assert_eq!(report["close_code"], 1000, "{report}");
    let metrics = scrape(server.admin).await;
    let answered = metrics.value("wsgate_ws_ping_rtt_seconds_count", &[("route", "chat")]);
    assert_eq!(answered, pings as f64, "every ping's pong was recognised");
}

#[tokio::test]
async fn a_plaintext_listener_with_h2c_takes_websockets_on_streams() {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nh2c = true\n\
         [admin]\nbind = \"127.0.0.1:0\"\n{}",
        ws_route("chat", &backend, "")
    );
    let server = TestServer::start_whole(test_dir(), &config).await;
    let plain = Path::new("-");
    let settings = finish(start_client_at(server.addr, plain, &["settings"])).await;
    assert_eq!(settings["enable_connect_protocol"], 1, "{settings}");
    let echoed = finish(start_client_at(server.addr, plain, &["echo", "/chat"])).await;
    assert_eq!(echoed["text"], true, "{echoed}");
    assert_eq!(echoed["binary"], true, "{echoed}");
    assert_eq!(echoed["close_code"], 4001, "{echoed}");
    let metrics = scrape(server.admin).await;
    assert_eq!(metrics.sessions_by_protocol("chat"), (1.0, 0.0));
}

#[tokio::test]
async fn fifty_sessions_share_one_connection() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = h2_gateway(&ca, &ws_route("chat", &backend, "")).await;
    let report = h2_client(&server, &["many", "/chat", "50"]).await;
    assert_eq!(report["ok"], 50, "{report}");
    assert_eq!(report["distinct_streams"], 50, "{report}");
    let metrics = scrape(server.admin).await;
    assert_eq!(metrics.sessions_by_protocol("chat"), (50.0, 0.0));
    // One TLS connection carried all of them.
    assert_eq!(
        metrics.value("wsgate_tls_handshakes_total", &[("result", "ok")]),
        1.0
    );
}

#[tokio::test]
async fn a_stream_reset_mid_message_ends_the_backend_side_with_1001() {
    let ca = TestCa::new();
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = h2_gateway(&ca, &ws_route("chat", &backend, "")).await;
    let report = h2_client(&server, &["reset", "/chat"]).await;
    assert_eq!(report["after_reset"], true, "{report}");
    // Mid-frame no close frame can follow: the first backend connection
    // just ends. The second session was reset between messages: 1001.
    let closes = backend_closes(&mut backend, 2).await;
    assert_eq!(
        closes,
        [Some(1001)],
        "a close frame cannot follow half a frame"
    );
    let record = server
        .access_record(|r| r["type"] == "session" && r["closed_by"] == "client")
        .await;
    assert_eq!(record["protocol"], "HTTP/2.0", "{record}");
}

#[tokio::test]
async fn goaway_from_the_client_ends_each_backend_side_with_1001() {
    let ca = TestCa::new();
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = h2_gateway(&ca, &ws_route("chat", &backend, "")).await;
    let report = h2_client(&server, &["goaway", "/chat", "3"]).await;
    assert_eq!(report["echoed"], 3, "{report}");
    assert_eq!(backend_closes(&mut backend, 3).await, [Some(1001); 3]);
    eventually(Duration::from_secs(5), || async {
        let metrics = scrape(server.admin).await;
        let open = metrics.value(
            "wsgate_ws_connections_active",
            &[("route", "chat"), ("protocol", "h2")],
        );
        (open == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_backend_that_vanishes_ends_the_stream_after_close_1014() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::VanishAfterFirstMessage).await;
    let server = h2_gateway(&ca, &ws_route("chat", &backend, "")).await;
    let report = h2_client(&server, &["first-close", "/chat"]).await;
    assert_eq!(report["code"], 1014, "{report}");
}

#[tokio::test]
async fn a_client_that_never_opens_its_window_is_cut_off_after_send_timeout() {
    let ca = TestCa::new();
    let mut backend = RecordingBackend::start(Behaviour::Flood).await;
    let routes = format!(
        "[server]\nsend_timeout = \"2s\"\n{}",
        ws_route("flood", &backend, "")
    );
    let server = h2_gateway(&ca, &routes).await;
    let before = rss_bytes();
    let report = h2_client(&server, &["stall", "/flood"]).await;
    let closed_after = report["closed_after"].as_f64().expect("seconds");
    assert!(
        (1.5..10.0).contains(&closed_after),
        "closed after {closed_after} s"
    );
    // The client never acknowledged: it got one initial window at most.
    let received = report["received"].as_u64().expect("bytes");
    assert!(received <= 65_535, "{received} bytes past a 64 KiB window");
    // The backend was held back, not buffered for: it managed only what
    // the socket buffers and the relay's one chunk take.
    let flooded = loop {
        if let Seen::Flooded(sent) = backend.next().await {
            break sent;
        }
    };
    assert!(flooded < 16 << 20, "the backend sent {flooded} bytes");
    let grew = rss_bytes().saturating_sub(before);
    assert!(grew < 32 << 20, "the test process grew by {grew} bytes");
}

/// A WebSocket backend that answers the handshake and then reads nothing.
async fn backend_that_never_reads() -> std::net::SocketAddr {
    raw_backend(|key| {
        let accept = wsgate::websocket::handshake::accept_key(key.as_bytes());
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
    })
    .await
}

/// A backend that reads a request head, writes what `answer` makes of its
/// `Sec-WebSocket-Key`, then holds the connection without reading.
async fn raw_backend(answer: fn(&str) -> String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|(_, value)| value.trim().to_owned())
                    .unwrap_or_default();
                let _ = socket.write_all(answer(&key).as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(120)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_that_answers_the_upgrade_with_200_is_a_502_not_an_open_session() {
    // Over HTTP/2 a 200 to the CONNECT would tell the client its WebSocket
    // is open.
    let backend = raw_backend(|_| {
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n"
            .to_owned()
    })
    .await;
    let ca = TestCa::new();
    let route = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{backend}\"] }}\n"
    );
    let server = h2_gateway(&ca, &route).await;
    let answer = h2_client(&server, &["status", "/chat"]).await;
    assert_eq!(answer["status"], 502, "{answer}");
    let metrics = scrape(server.admin).await;
    let invalid = metrics.value(
        "wsgate_ws_upgrades_total",
        &[
            ("route", "chat"),
            ("result", "backend_invalid"),
            ("protocol", "h2"),
        ],
    );
    assert_eq!(invalid, 1.0);
}

#[tokio::test]
async fn a_session_whose_backend_stops_reading_does_not_stall_its_connection() {
    let ca = TestCa::new();
    let echo = RecordingBackend::start(Behaviour::Echo).await;
    let stuck = backend_that_never_reads().await;
    let routes = format!(
        "{}[[routes]]\nname = \"stuck\"\npath = \"/stuck\"\n\
         websocket = {{ backends = [\"ws://{stuck}\"], max_message_size = \"1GiB\" }}\n",
        ws_route("chat", &echo, "")
    );
    let server = h2_gateway(&ca, &routes).await;
    let before = rss_bytes();
    let report = h2_client(&server, &["stuck", "/stuck", "/chat"]).await;
    let held = report["flood_held_at"].as_u64().expect("bytes");
    let total = report["flood_total"].as_u64().expect("bytes");
    // Held back by flow control, well short of what the client offered...
    assert!(held < total, "{report}");
    // ...and the other session on the same connection still echoes.
    assert_eq!(report["echoes"], 10, "{report}");
    let grew = rss_bytes().saturating_sub(before);
    assert!(grew < 32 << 20, "the test process grew by {grew} bytes");
}

#[tokio::test]
async fn a_drain_closes_h2_sessions_with_1001_then_sends_goaway() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let mut server = h2_gateway(&ca, &ws_route("chat", &backend, "")).await;
    let mut client = start_client(&server, &["hold", "/chat", "3"]);
    let stdout = client.stdout.take().expect("client stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("sessions ready in time")
        .expect("read client")
        .expect("a ready line");
    assert_eq!(ready, r#"{"ready": 3}"#);
    server.begin_shutdown();
    let report = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the client finished in time")
        .expect("read client")
        .expect("a report line");
    let report: Value = serde_json::from_str(&report).expect("json");
    assert_eq!(
        report["codes"],
        serde_json::json!([1001, 1001, 1001]),
        "{report}"
    );
    assert_eq!(report["goaway"], 0, "a GOAWAY with NO_ERROR: {report}");
    server.stopped(Duration::from_secs(15)).await;
}

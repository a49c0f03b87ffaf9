//! Live reload under load, the SIGTERM drain, and the overlapping restart
//! (SO_REUSEPORT), all against the real binary with real clients.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use support::metrics::{reloads, scrape};
use support::process::{Process, BIN};
use support::tls::TestCa;
use support::ws::{Behaviour, RecordingBackend, Seen};
use support::{
    assert_none_failed, eventually, free_port, replace_file, run, test_dir, try_get, write_file,
};

/// Starts an in-process WebSocket echo backend on a loopback port.
async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(wsgate::echo::serve(listener));
    addr
}

/// How one WebSocket session went.
#[derive(Debug, Default)]
struct SessionReport {
    exchanged: u64,
    /// The close code the gateway sent, and when it arrived.
    closed: Option<(u16, Instant)>,
    problem: Option<String>,
}

/// Opens a session on `path` and exchanges sequence-numbered messages in
/// lock-step until `stop` (then closes normally) or the gateway closes it.
/// Any lost, duplicated or reordered message is a problem.
async fn chatter(addr: SocketAddr, path: &'static str, stop: CancellationToken) -> SessionReport {
    let mut report = SessionReport::default();
    let (mut ws, _) = match tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await {
        Ok(connected) => connected,
        Err(error) => {
            report.problem = Some(format!("{path}: handshake failed: {error}"));
            return report;
        }
    };
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        if let Err(error) = ws.send(Message::text(seq.to_string())).await {
            report.problem = Some(format!("{path}: send {seq} failed: {error}"));
            return report;
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
            match next {
                Ok(Some(Ok(Message::Text(text)))) if text.as_str() == seq.to_string() => {
                    report.exchanged += 1;
                    break;
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    report.problem = Some(format!("{path}: sent {seq}, got {text}"));
                    return report;
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    report.closed = Some((code, Instant::now()));
                    while let Some(Ok(_)) = ws.next().await {}
                    return report;
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => {
                    report.problem = Some(format!("{path}: after {seq}: {error}"));
                    return report;
                }
                Ok(None) => {
                    report.problem = Some(format!("{path}: ended without a close after {seq}"));
                    return report;
                }
                Err(_) => {
                    report.problem = Some(format!("{path}: no echo of {seq} within 5s"));
                    return report;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(error) = ws.close(None).await {
        report.problem = Some(format!("{path}: close failed: {error}"));
    }
    while let Some(Ok(_)) = ws.next().await {}
    report
}

/// Requests `path` over and over until `stop`; returns (answered, failures).
async fn request_loop(
    addr: SocketAddr,
    path: &'static str,
    stop: CancellationToken,
) -> (u64, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    while !stop.is_cancelled() {
        match try_get(addr, path).await {
            Ok((200, _)) => answered += 1,
            Ok((status, _)) => failures.push(format!("{path}: status {status}")),
            Err(error) => failures.push(format!("{path}: {error}")),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (answered, failures)
}

/// Waits until the counters read `expected`, then a little longer to see
/// that no second reload follows (each change must reload exactly once).
async fn await_reloads(process: &Process, admin: SocketAddr, expected: (f64, f64)) -> Instant {
    eventually(Duration::from_secs(10), || async {
        (reloads(admin).await == expected).then_some(())
    })
    .await;
    let seen = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        reloads(admin).await,
        expected,
        "one change, one reload\n{}",
        process.log()
    );
    seen
}

/// A session a reload cut off got 1012 once the 1 s grace was over, within
/// the 1 s spread (and some slack for a busy machine).
fn assert_restarted_after_grace((code, at): (u16, Instant), reloaded: Option<Instant>) {
    assert_eq!(code, 1012);
    let after = at.duration_since(reloaded.expect("reload time"));
    assert!(
        after >= Duration::from_millis(700) && after <= Duration::from_millis(3500),
        "closed {after:?} after the reload (grace 1s, spread 1s)"
    );
}

/// Checks that a client loop saw no failure; returns how often it succeeded.
/// The certificate a new TLS handshake with `addr` gets.
async fn served_certificate(addr: SocketAddr, ca: &TestCa) -> Vec<u8> {
    let stream = support::tls::connect(addr, "localhost", ca.client_config(&["http/1.1"])).await;
    let certificates = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    certificates[0].to_vec()
}

/// The parts of the config the reload test changes.
#[derive(Clone)]
struct Version {
    extra_listener: Option<u16>,
    cert: &'static str,
    changed_max_message: &'static str,
    doomed: bool,
    pool: Vec<SocketAddr>,
    extra_route: bool,
}

impl Version {
    fn render(&self, echo: SocketAddr) -> String {
        let mut text = format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n\
             [[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{0}.pem\", key = \"{0}-key.pem\" }}\n\n",
            self.cert
        );
        if let Some(port) = self.extra_listener {
            text.push_str(&format!("[[listeners]]\nbind = \"127.0.0.1:{port}\"\n\n"));
        }
        text.push_str(
            "[admin]\nbind = \"127.0.0.1:0\"\n\n\
             [server]\nreload_grace = \"1s\"\ndrain_spread = \"1s\"\nshutdown_timeout = \"10s\"\n\n\
             [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\n",
        );
        text.push_str(&format!(
            "[[routes]]\nname = \"kept\"\npath = \"/kept\"\nwebsocket = {{ backends = [\"ws://{echo}\"] }}\n\n\
             [[routes]]\nname = \"changed\"\npath = \"/changed\"\n\
             websocket = {{ backends = [\"ws://{echo}\"], max_message_size = \"{}\" }}\n\n",
            self.changed_max_message
        ));
        if self.doomed {
            text.push_str(&format!(
                "[[routes]]\nname = \"doomed\"\npath = \"/doomed\"\nwebsocket = {{ backends = [\"ws://{echo}\"] }}\n\n"
            ));
        }
        let pool: Vec<String> = self.pool.iter().map(|b| format!("\"ws://{b}\"")).collect();
        text.push_str(&format!(
            "[[routes]]\nname = \"pool\"\npath = \"/pool\"\nwebsocket = {{ backends = [{}] }}\n\n",
            pool.join(", ")
        ));
        if self.extra_route {
            text.push_str(&format!(
                "[[routes]]\nname = \"extra\"\npath = \"/extra\"\nwebsocket = {{ backends = [\"ws://{echo}\"] }}\n\n"
            ));
        }
        text
    }
}

/// Mistakes an operator makes, each one breaking an otherwise good config,
/// with where `wsgate` must point (line of the mistake) and what it says.
fn break_config(good: &str, round: usize) -> (String, &'static str) {
    match round % 5 {
        0 => (
            good.replace("name = \"kept\"", "name = \"kept\"\ntimeout = \"5s\""),
            "unknown field `timeout`",
        ),
        1 => (
            good.replace("reload_grace = \"1s\"", "reload_grace = \"1 second\""),
            "is not a duration",
        ),
        2 => (
            good.replace("\"site.pem\"", "\"missing.pem\"")
                .replace("\"site2.pem\"", "\"missing.pem\""),
            "missing.pem",
        ),
        3 => (format!("{good}[[routes\n"), "wsgate.toml:"),
        _ => (good.replace("name = \"pool\"", "name = \"kept\""), "kept"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_keeps_sessions_and_requests() {
    let dir = test_dir();
    let ca = TestCa::new();
    let first_leaf = ca.leaf(&["localhost"]);
    first_leaf.write(dir.path(), "site");
    let second_leaf = ca.leaf(&["localhost"]);
    second_leaf.write(dir.path(), "site2");
    write_file(dir.path(), "public/index.html", "still here");
    let (echo, echo_b) = (echo_backend().await, echo_backend().await);
    let extra_port = free_port();
    let config_path = dir.path().join("wsgate.toml");
    let mut version = Version {
        extra_listener: None,
        cert: "site",
        changed_max_message: "1MiB",
        doomed: true,
        pool: vec![echo, echo_b],
        extra_route: false,
    };
    write_file(dir.path(), "wsgate.toml", version.render(echo));
    let process = Process::run_config(&config_path);
    let admin = process.admin().await;
    let addr = process.addr().await;
    let tls_addr = eventually(Duration::from_secs(5), || async {
        process.listening().get(1).copied()
    })
    .await;
    assert_eq!(
        served_certificate(tls_addr, &ca).await,
        first_leaf.der.to_vec()
    );

    let stop = CancellationToken::new();
    let mut sessions = Vec::new();
    for (path, count) in [("/kept", 3), ("/changed", 3), ("/doomed", 3), ("/pool", 4)] {
        for _ in 0..count {
            sessions.push((path, tokio::spawn(chatter(addr, path, stop.clone()))));
        }
    }
    let requests = tokio::spawn(request_loop(addr, "/index.html", stop.clone()));
    // Every session is open before the first reload.
    eventually(Duration::from_secs(10), || async {
        let scrape = scrape(admin).await;
        let open: f64 = ["kept", "changed", "doomed", "pool"]
            .iter()
            .map(|route| {
                scrape.value(
                    "wsgate_ws_connections_active",
                    &[("route", route), ("protocol", "h1")],
                )
            })
            .sum();
        (open == 13.0).then_some(())
    })
    .await;
    let on_b_before: usize = {
        let running: serde_json::Value =
            serde_json::from_slice(&try_get(admin, "/config").await.expect("GET /config").1)
                .expect("/config is JSON");
        let pool = running["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["name"] == "pool")
            .expect("pool route")
            .clone();
        pool["sessions"][format!("ws://{echo_b}")]
            .as_u64()
            .unwrap_or(0) as usize
    };
    assert!(
        (1..4).contains(&on_b_before),
        "round-robin put sessions on both backends"
    );

    let mut expected = (0.0, 0.0);
    let mut doomed_removed_at = None;
    let mut pool_shrunk_at = None;
    for round in 0..10 {
        // A good version: each round changes something else.
        match round {
            0 => {
                version.changed_max_message = "2MiB";
                version.extra_route = true;
                version.extra_listener = Some(extra_port);
            }
            1 => version.doomed = false,
            2 => version.pool = vec![echo],
            3 => version.cert = "site2",
            4 => {
                version.extra_route = false;
                version.extra_listener = None;
            }
            _ => {
                version.changed_max_message = if round % 2 == 0 { "1MiB" } else { "512KiB" };
            }
        }
        let good = version.render(echo);
        if round == 1 {
            // What the operator sees before applying it.
            let candidate = write_file(dir.path(), "next.toml", &good);
            let output = run(std::process::Command::new(BIN)
                .args(["check", "--diff", &admin.to_string()])
                .arg(&candidate));
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                stdout.contains("- doomed") && stdout.contains("removed; closes 3 live sessions"),
                "{stdout}"
            );
            assert!(
                stdout.contains("  kept ") && stdout.contains("unchanged; 3 live sessions kept"),
                "{stdout}"
            );
            assert!(
                stdout.contains("a reload would close 3 live sessions"),
                "{stdout}"
            );
        }
        replace_file(&config_path, &good);
        expected.0 += 1.0;
        let reloaded_at = await_reloads(&process, admin, expected).await;
        match round {
            0 => {
                let extra: SocketAddr = ([127, 0, 0, 1], extra_port).into();
                assert_eq!(
                    try_get(extra, "/index.html").await.map(|r| r.0),
                    Ok(200),
                    "the added listener serves"
                );
                let mut added = tokio_tungstenite::connect_async(format!("ws://{addr}/extra"))
                    .await
                    .expect("added route")
                    .0;
                added.send(Message::text("hello")).await.expect("send");
                assert_eq!(
                    support::ws::receive(&mut added).await,
                    Message::text("hello")
                );
            }
            1 => doomed_removed_at = Some(reloaded_at),
            2 => pool_shrunk_at = Some(reloaded_at),
            3 => assert_eq!(
                served_certificate(tls_addr, &ca).await,
                second_leaf.der.to_vec(),
                "a new handshake gets the new certificate"
            ),
            4 => {
                let extra: SocketAddr = ([127, 0, 0, 1], extra_port).into();
                assert!(
                    TcpStream::connect(extra).await.is_err(),
                    "the removed listener is closed"
                );
            }
            _ => {}
        }
        // A broken version: refused, counted, and the running config stays.
        let (broken, says) = break_config(&good, round);
        replace_file(&config_path, broken);
        expected.1 += 1.0;
        await_reloads(&process, admin, expected).await;
        let log = process.log();
        let complaint = log
            .lines()
            .rev()
            .find(|l| l.contains("wsgate.toml:"))
            .unwrap_or("");
        assert!(
            complaint.contains(says),
            "round {round}: expected `{says}` in the error:\n{log}"
        );
        assert_eq!(try_get(addr, "/index.html").await.map(|r| r.0), Ok(200));
    }
    // SIGHUP re-reads the file (and its certificates) too.
    replace_file(&config_path, version.render(echo));
    expected.0 += 1.0;
    await_reloads(&process, admin, expected).await;
    process.signal("HUP");
    expected.0 += 1.0;
    await_reloads(&process, admin, expected).await;

    // Grace and spread are a second each: the cut-off sessions are done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let answered = assert_none_failed("requests", requests.await.expect("request loop"));
    assert!(answered > 100, "the request loop ran ({answered})");
    let (mut doomed_closed, mut pool_closed, mut pool_kept) = (0, 0, 0);
    for (path, session) in sessions {
        let report = session.await.expect("session task");
        assert!(report.problem.is_none(), "{report:?}");
        assert!(
            report.exchanged > 10,
            "{path} exchanged messages: {report:?}"
        );
        match (path, report.closed) {
            ("/kept" | "/changed", closed) => {
                assert_eq!(closed, None, "{path} was never disturbed")
            }
            ("/doomed", Some(closed)) => {
                assert_restarted_after_grace(closed, doomed_removed_at);
                doomed_closed += 1;
            }
            ("/pool", Some(closed)) => {
                assert_restarted_after_grace(closed, pool_shrunk_at);
                pool_closed += 1;
            }
            ("/pool", None) => pool_kept += 1,
            (path, closed) => panic!("{path}: unexpected {closed:?}"),
        }
    }
    assert_eq!(doomed_closed, 3);
    assert_eq!(
        pool_closed, on_b_before,
        "exactly the sessions on the removed backend were closed"
    );
    assert_eq!(pool_kept, 4 - on_b_before);
    let scrape = scrape(admin).await;
    assert_eq!(
        scrape.get(
            "wsgate_ws_connections_active",
            &[("route", "doomed"), ("protocol", "h1")]
        ),
        None,
        "the removed route's series are gone"
    );
    assert_eq!(
        scrape.value(
            "wsgate_ws_closes_total",
            &[
                ("route", "pool"),
                ("code", "1012"),
                ("initiator", "gateway")
            ]
        ),
        pool_closed as f64
    );
}

/// Opens short sessions one after another until `stop`: handshake, one
/// echoed message, close. Returns (completed, failures).
async fn handshake_loop(addr: SocketAddr, stop: CancellationToken) -> (u64, Vec<String>) {
    let mut completed = 0;
    let mut failures = Vec::new();
    while !stop.is_cancelled() {
        let session = async {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            ws.send(Message::text("ping"))
                .await
                .map_err(|e| format!("send: {e}"))?;
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "ping" => {}
                other => return Err(format!("instead of the echo: {other:?}")),
            }
            ws.close(None).await.map_err(|e| format!("close: {e}"))?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<(), String>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), session).await {
            Ok(Ok(())) => completed += 1,
            Ok(Err(error)) => failures.push(error),
            Err(_) => failures.push("session did not finish within 5s".to_owned()),
        }
    }
    (completed, failures)
}

fn drain_config(bind: &str, backend: SocketAddr, server: &str) -> String {
    format!(
        "[[listeners]]\nbind = \"{bind}\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n[server]\n{server}\n\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{backend}\"] }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_session_with_1001_spread_and_exits_by_the_deadline() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "still here");
    write_file(dir.path(), "public/big.bin", vec![7u8; 32 << 20]);
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = "shutdown_delay = \"500ms\"\ndrain_spread = \"1s\"\nshutdown_timeout = \"4s\"";
    let path = write_file(
        dir.path(),
        "wsgate.toml",
        drain_config("127.0.0.1:0", backend.addr, server),
    );
    let mut process = Process::run_config(&path);
    let (addr, admin) = (process.addr().await, process.admin().await);
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut client = support::ws::connect(addr, "/chat").await;
        client
            .send(Message::text(format!("hello {i}")))
            .await
            .expect("send");
        assert_eq!(
            support::ws::receive(&mut client).await,
            Message::text(format!("hello {i}"))
        );
        clients.push(client);
    }
    // A download nobody reads: still in flight when the deadline comes.
    let mut stuck = TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stuck, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    process.signal("TERM");
    eventually(Duration::from_secs(1), || async {
        (try_get(admin, "/readyz").await.ok()?.0 == 503).then_some(())
    })
    .await;
    // During shutdown_delay: requests are served, new sessions sent elsewhere.
    assert_eq!(try_get(addr, "/index.html").await.map(|r| r.0), Ok(200));
    match tokio_tungstenite::connect_async(format!("ws://{addr}/chat")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!(
            "an upgrade during shutdown_delay: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // Each client waits for its own close, so arrival times are measured as they happen.
    let waits = clients.iter_mut().map(|client| async move {
        match support::ws::receive(client).await {
            Message::Close(Some(frame)) => (u16::from(frame.code), signalled.elapsed()),
            other => panic!("expected close 1001, got {other:?}"),
        }
    });
    let mut closes = Vec::new();
    for (code, at) in futures_util::future::join_all(waits).await {
        assert_eq!(code, 1001);
        closes.push(at);
    }
    closes.sort();
    let (first, last) = (closes[0], closes[closes.len() - 1]);
    assert!(
        first >= Duration::from_millis(450),
        "no close before shutdown_delay: {closes:?}"
    );
    assert!(
        last - first >= Duration::from_millis(600),
        "closes spread over drain_spread: {closes:?}"
    );
    assert!(
        last - first <= Duration::from_millis(1500),
        "closes spread over drain_spread: {closes:?}"
    );
    let mut backend_closes = 0;
    while backend_closes < 6 {
        if let Seen::Message(Message::Close(Some(frame))) = backend.next().await {
            assert_eq!(u16::from(frame.code), 1001, "the backend is told too");
            backend_closes += 1;
        }
    }
    assert_eq!(
        process.exit_code(Duration::from_secs(8)).await,
        Some(0),
        "{}",
        process.log()
    );
    let exited = signalled.elapsed();
    assert!(
        exited >= Duration::from_millis(3500) && exited <= Duration::from_secs(6),
        "exit at the 4s deadline, after {exited:?}"
    );
    assert!(
        process
            .log()
            .contains("drain deadline passed; closing the rest hard connections=1"),
        "{}",
        process.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_restart_loses_no_request_or_handshake() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "still here");
    let echo = echo_backend().await;
    let server = "drain_spread = \"1s\"\nshutdown_timeout = \"5s\"";
    let path_a = write_file(
        dir.path(),
        "a.toml",
        drain_config("127.0.0.1:0", echo, server),
    );
    let mut old = Process::run_config(&path_a);
    let addr = old.addr().await;
    let stop = CancellationToken::new();
    let long_sessions: Vec<_> = (0..3)
        .map(|_| tokio::spawn(chatter(addr, "/chat", stop.clone())))
        .collect();
    let requests = tokio::spawn(request_loop(addr, "/index.html", stop.clone()));
    let handshakes = tokio::spawn(handshake_loop(addr, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new instance binds the same port while the old one still serves.
    let path_b = write_file(
        dir.path(),
        "b.toml",
        drain_config(&addr.to_string(), echo, server),
    );
    let new = old.hand_over_to(&path_b).await;
    stop.cancel();

    let answered = assert_none_failed("requests", requests.await.expect("request loop"));
    let completed = assert_none_failed("sessions", handshakes.await.expect("handshake loop"));
    for session in long_sessions {
        let report = session.await.expect("session task");
        assert!(report.problem.is_none(), "{report:?}");
        assert_eq!(
            report.closed.map(|(code, _)| code),
            Some(1001),
            "the old instance's sessions end with 1001"
        );
    }
    let served_by_new = scrape(new.admin().await).await.value(
        "wsgate_http_requests_total",
        &[("route", "site"), ("code", "200"), ("method", "GET")],
    );
    assert!(served_by_new > 0.0, "the new instance took over");
    assert!(
        answered > 50 && completed > 20,
        "the loops ran: {answered} requests, {completed} sessions"
    );
}

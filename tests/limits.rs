//! Per-client limits through the real server, with many real client
//! addresses (loopback is a /8): connection caps, request rates and the
//! bounded table behind them, the PROXY protocol (from HAProxy too), and
//! moving sessions between backends.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use support::metrics::scrape;
use support::process::Process;
use support::ws::{Behaviour, RecordingBackend, Seen};
use support::{
    connect_from, eventually, loopback, raw_from, raw_status, test_dir, write_file, TestServer,
};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// A static route over a one-file site.
const SITE: &str = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";

fn site_dir() -> tempfile::TempDir {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello\n");
    dir
}

/// The count of `wsgate_limit_rejections_total` for `route` and `limit`.
async fn rejections(admin: SocketAddr, route: &str, limit: &str) -> f64 {
    scrape(admin)
        .await
        .get(
            "wsgate_limit_rejections_total",
            &[("route", route), ("limit", limit)],
        )
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_greedy_client_cannot_keep_others_out() {
    let config =
        format!("[server]\nmax_connections = 20\nmax_connections_per_client = 5\n\n{SITE}");
    let server = TestServer::start_in(site_dir(), &config).await;
    // One client opens 30 connections and sends nothing on them.
    let mut greedy = Vec::new();
    for _ in 0..30 {
        greedy.push(connect_from(loopback(2), server.addr).await);
    }
    // The ones over its cap are closed at once, not parked in the backlog.
    let closed = futures_util::future::join_all(greedy.iter_mut().map(|stream| async move {
        let mut byte = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    }))
    .await;
    assert_eq!(closed.iter().filter(|c| **c).count(), 25);
    // Everyone else still gets in, while the greedy client holds its five.
    for n in 3..13 {
        let answer = raw_from(loopback(n), server.addr, GET).await;
        assert_eq!(raw_status(&answer), 200, "client 127.0.0.{n}");
    }
    assert_eq!(
        rejections(server.admin, "", "connections_per_client").await,
        25.0
    );
    drop(greedy);
}

#[tokio::test]
async fn a_request_rate_holds_for_one_address_and_is_per_client() {
    let config = SITE.replace(
        "static =",
        "request_rate = \"10/s\"\nrequest_burst = 5\nstatic =",
    );
    let server = TestServer::start_in(site_dir(), &config).await;
    // A flood from one address: the burst passes, then the rate.
    let mut passed = 0;
    let mut refused = Vec::new();
    for _ in 0..30 {
        let answer = raw_from(loopback(2), server.addr, GET).await;
        match raw_status(&answer) {
            200 => passed += 1,
            429 => refused.push(answer),
            other => panic!("unexpected status {other}"),
        }
    }
    // 5 at once, and perhaps one more that the 100 ms per token let in.
    assert!((5..=7).contains(&passed), "{passed} passed");
    let retry_after = refused[0]
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .expect("a 429 says when to come back");
    assert_eq!(retry_after.trim(), "1");
    let logged = server.access_record(|r| r["status"] == 429).await;
    assert_eq!(logged["reason"], "request_rate");
    assert_eq!(logged["remote_addr"], "127.0.0.2");
    // 200 other addresses, two requests each: all within their own budgets.
    let others = (0..200u8).map(|n| async move {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, n));
        let first = raw_status(&raw_from(source, server.addr, GET).await);
        let second = raw_status(&raw_from(source, server.addr, GET).await);
        (first, second)
    });
    for statuses in futures_util::future::join_all(others).await {
        assert_eq!(statuses, (200, 200));
    }
    assert_eq!(
        rejections(server.admin, "site", "request_rate").await,
        refused.len() as f64
    );
}

/// A plain listener that takes PROXY headers from `senders`, with `extra`
/// listener keys, the admin listener, and `rest`.
fn proxied_config(senders: &str, extra: &str, rest: &str) -> String {
    format!(
        "trusted_proxies = [\"{senders}\"]\n\n[[listeners]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n{extra}\n[admin]\nbind = \"127.0.0.1:0\"\n\n{rest}"
    )
}

fn proxy_v1(source: Ipv4Addr) -> Vec<u8> {
    let mut bytes = format!("PROXY TCP4 {source} 127.0.0.1 40000 80\r\n").into_bytes();
    bytes.extend_from_slice(GET);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_table_stays_bounded_under_100000_addresses() {
    let config = proxied_config(
        "127.0.0.0/8",
        "request_rate = \"1/m\"\nrequest_burst = 1\n",
        &format!("[server]\nmax_tracked_clients = 1000\n\n{SITE}"),
    );
    let server = TestServer::start_whole(site_dir(), &config).await;
    let addr = server.addr;
    let started = std::time::Instant::now();
    // Each connection says it is another client; the source addresses of
    // the TCP connections vary too, so no one of them runs out of ports.
    let statuses = futures_util::stream::iter(0..100_000u32)
        .map(|n| async move {
            let client = Ipv4Addr::from(0x0a00_0000 + n);
            let source = loopback(2 + (n % 200) as u8);
            raw_status(&raw_from(source, addr, &proxy_v1(client)).await)
        })
        .buffer_unordered(64)
        .collect::<Vec<u16>>()
        .await;
    eprintln!("100000 clients in {:?}", started.elapsed());
    assert!(statuses.iter().all(|status| *status == 200));
    let scrape = scrape(server.admin).await;
    let held = scrape.value("wsgate_rate_limit_clients", &[]);
    let evicted = scrape.value("wsgate_rate_limit_evictions_total", &[]);
    eprintln!("table holds {held}, evicted {evicted}");
    assert!(held <= 1008.0, "the table grew to {held}");
    assert_eq!(held + evicted, 100_000.0);
    // A client still in the table is still limited.
    let last = Ipv4Addr::from(0x0a00_0000 + 99_999);
    let again = raw_from(loopback(2), addr, &proxy_v1(last)).await;
    assert_eq!(raw_status(&again), 429);
}

#[tokio::test]
async fn proxy_headers_name_the_client_and_only_trusted_peers_send_them() {
    let config = proxied_config("127.0.0.1/32", "", SITE);
    let server = TestServer::start_whole(site_dir(), &config).await;
    let addr = server.addr;
    let client = Ipv4Addr::new(203, 0, 113, 7);
    assert_eq!(
        raw_status(&raw_from(loopback(1), addr, &proxy_v1(client)).await),
        200
    );
    let record = server
        .access_record(|r| r["remote_addr"] == "203.0.113.7")
        .await;
    assert_eq!(record["status"], 200);
    // The balancer's own health check (v2 LOCAL) is served as itself.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(GET);
    assert_eq!(raw_status(&raw_from(loopback(1), addr, &local).await), 200);
    // A trusted sender that leaves the header out is refused.
    assert_eq!(raw_from(loopback(1), addr, GET).await, "");
    // A peer not in trusted_proxies may not choose its address...
    assert_eq!(raw_from(loopback(2), addr, &proxy_v1(client)).await, "");
    // ...and is served as itself when it does not try.
    assert_eq!(raw_status(&raw_from(loopback(2), addr, GET).await), 200);
    server
        .access_record(|r| r["remote_addr"] == "127.0.0.2")
        .await;
    let scrape = scrape(server.admin).await;
    let rejected = |reason| {
        scrape
            .get(
                "wsgate_proxy_protocol_rejected_total",
                &[("listener", "127.0.0.1:0"), ("reason", reason)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(rejected("missing"), 1.0);
    assert_eq!(rejected("untrusted_peer"), 1.0);
}

/// Where `haproxy` is, installing Debian's package (tests/haproxy/install.sh) on first use.
fn haproxy() -> PathBuf {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let find = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("haproxy"))
            .find(|candidate| candidate.is_file())
    };
    INSTALLED.get_or_init(|| {
        if find().is_none() {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/haproxy/install.sh");
            let status = Command::new("bash")
                .arg(&script)
                .status()
                .expect("run install.sh");
            assert!(
                status.success(),
                "installing haproxy failed ({status}); it needs apt-get and root or sudo"
            );
        }
    });
    find().expect("haproxy is installed")
}

#[tokio::test]
async fn behind_haproxy_the_client_address_is_the_one_limits_and_logs_use() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let routes = format!(
        "[server]\nmax_connections_per_client = 2\n\n{SITE}\n[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n",
        backend.addr
    );
    let config = proxied_config("127.0.0.1/32", "", &routes);
    let server = TestServer::start_whole(site_dir(), &config).await;
    let front = support::free_port();
    let haproxy_config = format!(
        "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend edge\n  bind 127.0.0.1:{front}\n  default_backend wsgate\n\
         backend wsgate\n  server gateway {} send-proxy-v2\n",
        server.addr
    );
    let dir = test_dir();
    let path = write_file(dir.path(), "haproxy.cfg", haproxy_config);
    let _haproxy = Process::spawn(Command::new(haproxy()).arg("-db").arg("-f").arg(&path));
    let front: SocketAddr = ([127, 0, 0, 1], front).into();
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(front).await.ok()
    })
    .await;
    // A request and a WebSocket session from 127.0.0.5, through HAProxy.
    assert_eq!(raw_status(&raw_from(loopback(5), front, GET).await), 200);
    server
        .access_record(|r| r["remote_addr"] == "127.0.0.5")
        .await;
    let stream = connect_from(loopback(5), front).await;
    let url = format!("ws://{front}/chat");
    let (mut chat, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("websocket through haproxy");
    chat.send(Message::text("hello")).await.expect("send");
    let echoed = chat.next().await.expect("an echo").expect("a message");
    assert_eq!(echoed, Message::text("hello"));
    // The backend is told the client's address, not HAProxy's.
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("the backend saw no handshake first");
    };
    assert_eq!(headers["x-forwarded-for"], "127.0.0.5");
    let sessions = support::get(server.admin, "/sessions").await.text();
    assert!(sessions.contains("127.0.0.5"), "{sessions}");
    // The session holds one of 127.0.0.5's two connections; a second is
    // let in, a third is refused, and 127.0.0.6 is not affected.
    let _second = connect_from(loopback(5), front).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(raw_from(loopback(5), front, GET).await, "");
    assert_eq!(raw_status(&raw_from(loopback(6), front, GET).await), 200);
    assert_eq!(
        rejections(server.admin, "", "connections_per_client").await,
        1.0
    );
}

/// The close code a session gets next, if it is closed within `within`.
async fn closed_with<S>(session: &mut S, within: Duration) -> Option<u16>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let next = tokio::time::timeout(within, session.next()).await.ok()??;
    let code = match next {
        Ok(Message::Close(Some(frame))) => frame.code.into(),
        other => panic!("expected a close frame, got {other:?}"),
    };
    // Polled on, the client sends its close reply and the session ends.
    while let Some(Ok(_)) = session.next().await {}
    Some(code)
}

/// The running `chat` route as `/config` reports it.
async fn chat_route(admin: SocketAddr) -> serde_json::Value {
    let config: serde_json::Value =
        serde_json::from_str(&support::get(admin, "/config").await.text()).expect("json");
    config["routes"][0].clone()
}

#[tokio::test]
async fn sessions_move_to_a_backend_a_reload_adds_and_off_a_drained_one() {
    let first = RecordingBackend::start(Behaviour::Echo).await;
    let second = RecordingBackend::start(Behaviour::Echo).await;
    let routes = |backends: &str| {
        format!(
            "[server]\ndrain_spread = \"1s\"\n\n[[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
             websocket = {{ backends = [{backends}], balance = \"least_connections\" }}\n"
        )
    };
    let dir = test_dir();
    let one = format!("\"ws://{}\"", first.addr);
    let process = Process::start(dir.path(), &routes(&one), "");
    let (addr, admin) = (process.addr().await, process.admin().await);
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(support::ws::connect(addr, "/chat").await);
    }
    // The second backend joins: half the sessions are moved, with 1012,
    // spread over drain_spread; the others stay.
    let both = format!("\"ws://{}\", \"ws://{}\"", first.addr, second.addr);
    write_file(
        dir.path(),
        "wsgate.toml",
        format!("{}{}", support::LISTENERS, routes(&both)),
    );
    process.signal("HUP");
    let outcomes = futures_util::future::join_all(
        sessions
            .iter_mut()
            .map(|session| closed_with(session, Duration::from_secs(4))),
    )
    .await;
    let moved = outcomes.iter().filter(|code| **code == Some(1012)).count();
    let kept = outcomes.iter().filter(|code| code.is_none()).count();
    assert_eq!((moved, kept), (10, 10), "{outcomes:?}");
    // Their clients reconnect and land on the new backend.
    for _ in 0..moved {
        sessions.push(support::ws::connect(addr, "/chat").await);
    }
    let second_url = format!("ws://{}", second.addr);
    assert_eq!(chat_route(admin).await["sessions"][&second_url], 10);
    // The operator drains the second backend: its ten sessions are closed,
    // and new sessions go to the first.
    let drain = format!("/backends/chat/{}/drain", second.addr);
    let reply = support::send(
        admin,
        support::request("POST", &drain)
            .body(Default::default())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let drained: serde_json::Value = serde_json::from_str(&reply.text()).expect("json");
    assert_eq!(drained["sessions_closing"], 10);
    let newest = sessions.split_off(20);
    for mut session in newest {
        assert_eq!(
            closed_with(&mut session, Duration::from_secs(4)).await,
            Some(1012)
        );
    }
    assert_eq!(
        chat_route(admin).await["drained"],
        serde_json::json!([second_url])
    );
    let drained = scrape(admin).await.value(
        "wsgate_upstream_drained",
        &[("route", "chat"), ("backend", &second_url)],
    );
    assert_eq!(drained, 1.0);
    let _late = support::ws::connect(addr, "/chat").await;
    assert!(chat_route(admin).await["sessions"][&second_url].is_null());
    // Undrained, it takes sessions again.
    let undrain = format!("/backends/chat/{}/undrain", second.addr);
    let reply = support::send(
        admin,
        support::request("POST", &undrain)
            .body(Default::default())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let _back = support::ws::connect(addr, "/chat").await;
    assert_eq!(chat_route(admin).await["sessions"][&second_url], 1);
}

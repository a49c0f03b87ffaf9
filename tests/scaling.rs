//! Replicas that share nothing but the config: several real wsgate
//! processes in front of real Node backends (tests/proxy/app.js), as a
//! deployment on several machines or pods would run them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use support::apps::{node_app, ChildServer};
use support::metrics::{reloads, scrape};
use support::process::Process;
use support::{assert_none_failed, eventually, get_with, replace_file, test_dir, write_file};

/// `api` proxies HTTP hashed on the `x-user` header; `live` relays
/// WebSocket sessions hashed on the `sid` cookie.
fn config(bind: &str, apps: &[&ChildServer]) -> String {
    let list = |scheme| {
        let urls: Vec<String> = apps
            .iter()
            .map(|app| format!("\"{}\"", app.url(scheme)))
            .collect();
        urls.join(", ")
    };
    format!(
        "[[listeners]]\nbind = \"{bind}\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [server]\ndrain_spread = \"1s\"\nshutdown_timeout = \"5s\"\n\n\
         [[routes]]\nname = \"api\"\npath = \"/\"\n\
         proxy = {{ backends = [{}], balance = \"hash\", hash_key = \"header:x-user\" }}\n\n\
         [[routes]]\nname = \"live\"\npath = \"/live\"\n\
         websocket = {{ backends = [{}], balance = \"hash\", hash_key = \"cookie:sid\" }}\n",
        list("http"),
        list("ws"),
    )
}

/// The backend that answered a request carrying `x-user: user`.
async fn http_backend_for(addr: SocketAddr, user: &str) -> String {
    let reply = get_with(addr, "/whoami", &[("x-user", user)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON from app.js");
    body["name"].as_str().expect("name").to_owned()
}

type Session =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket session with cookie `sid`, and the backend that greeted it.
async fn open_session(addr: SocketAddr, sid: &str) -> Result<(Session, String), String> {
    let mut request = format!("ws://{addr}/live")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let cookie = format!("theme=dark; sid={sid}")
        .parse()
        .map_err(|_| "cookie")?;
    request.headers_mut().insert("cookie", cookie);
    let (mut session, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    match session.next().await {
        Some(Ok(Message::Text(name))) => Ok((session, name.to_string())),
        other => Err(format!("instead of a greeting: {other:?}")),
    }
}

async fn ws_backend_for(addr: SocketAddr, sid: &str) -> String {
    let (mut session, name) = open_session(addr, sid).await.expect("session");
    let _ = session.close(None).await;
    name
}

/// Which backend each key reaches through `addr`.
async fn placements(addr: SocketAddr, http_keys: usize, ws_keys: usize) -> Placement {
    let mut placement = Placement::default();
    for key in 0..http_keys {
        let user = format!("user-{key}");
        placement
            .http
            .insert(key, http_backend_for(addr, &user).await);
    }
    for key in 0..ws_keys {
        let sid = format!("session-{key}");
        placement.ws.insert(key, ws_backend_for(addr, &sid).await);
    }
    placement
}

#[derive(Debug, Default, PartialEq)]
struct Placement {
    http: BTreeMap<usize, String>,
    ws: BTreeMap<usize, String>,
}

fn reversed<'a>(list: &[&'a ChildServer]) -> Vec<&'a ChildServer> {
    list.iter().rev().copied().collect()
}

/// Keys whose backend differs between two placements of one map.
fn moved(before: &BTreeMap<usize, String>, after: &BTreeMap<usize, String>) -> BTreeSet<usize> {
    before
        .iter()
        .filter(|(key, backend)| after.get(key) != Some(backend))
        .map(|(key, _)| *key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_on_every_key_and_move_the_same_keys_when_a_backend_joins() {
    let apps: Vec<ChildServer> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(node_app)
        .collect();
    let four: Vec<&ChildServer> = apps[..4].iter().collect();
    let five: Vec<&ChildServer> = apps.iter().collect();

    // Three replicas with the same config on ports of their own; the third
    // lists the backends in the opposite order, as a hand-edited file might.
    let dir = test_dir();
    let shared = write_file(dir.path(), "wsgate.toml", config("127.0.0.1:0", &four));
    let other = write_file(
        dir.path(),
        "other.toml",
        config("127.0.0.1:0", &reversed(&four)),
    );
    let replicas = [
        Process::run_config(&shared),
        Process::run_config(&shared),
        Process::run_config(&other),
    ];
    const HTTP_KEYS: usize = 200;
    const WS_KEYS: usize = 40;
    let mut before = Vec::new();
    for replica in &replicas {
        before.push(placements(replica.addr().await, HTTP_KEYS, WS_KEYS).await);
    }
    assert_eq!(before[0], before[1], "replicas 1 and 2 disagree");
    assert_eq!(
        before[0], before[2],
        "a replica with the list reversed disagrees"
    );
    let used: BTreeSet<&String> = before[0].http.values().collect();
    assert_eq!(used.len(), 4, "every backend gets keys: {used:?}");

    // Backend e joins: the operator edits the config of every replica.
    replace_file(&shared, config("127.0.0.1:0", &five));
    replace_file(&other, config("127.0.0.1:0", &reversed(&five)));
    for replica in &replicas {
        let admin = replica.admin().await;
        eventually(Duration::from_secs(10), || async {
            (reloads(admin).await == (1.0, 0.0)).then_some(())
        })
        .await;
    }
    let mut after = Vec::new();
    for replica in &replicas {
        after.push(placements(replica.addr().await, HTTP_KEYS, WS_KEYS).await);
    }
    assert_eq!(after[0], after[1]);
    assert_eq!(after[0], after[2]);

    let moved_http = moved(&before[0].http, &after[0].http);
    let moved_ws = moved(&before[0].ws, &after[0].ws);
    for key in &moved_http {
        assert_eq!(
            after[0].http[key], "e",
            "key {key} moved between old backends"
        );
    }
    for key in &moved_ws {
        assert_eq!(
            after[0].ws[key], "e",
            "session key {key} moved between old backends"
        );
    }
    let share = moved_http.len() as f64 / HTTP_KEYS as f64;
    println!(
        "backend e took {} of {HTTP_KEYS} header keys ({share:.2}) and {} of {WS_KEYS} cookie keys, \
         the same keys on all three replicas",
        moved_http.len(),
        moved_ws.len()
    );
    // One backend in five should take a fifth of the keys.
    assert!((0.1..0.32).contains(&share), "moved {share}");
    assert!(!moved_ws.is_empty(), "no session key moved to e");
}

/// Opens sessions with rotating cookies until `stop`; each must be greeted
/// by the backend `expected` names for its cookie, echo, and close cleanly.
async fn sticky_handshake_loop(
    addr: SocketAddr,
    expected: BTreeMap<usize, String>,
    stop: CancellationToken,
) -> (u64, Vec<String>) {
    let (mut completed, mut failures) = (0, Vec::new());
    for key in (0..expected.len()).cycle() {
        if stop.is_cancelled() {
            break;
        }
        let sid = format!("session-{key}");
        let session = async {
            let (mut session, name) = open_session(addr, &sid).await?;
            if name != expected[&key] {
                return Err(format!("{sid} reached {name}, not {}", expected[&key]));
            }
            session
                .send(Message::text("ping"))
                .await
                .map_err(|e| format!("send: {e}"))?;
            match session.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "ping" => {}
                other => return Err(format!("instead of the echo: {other:?}")),
            }
            session
                .close(None)
                .await
                .map_err(|e| format!("close: {e}"))?;
            while let Some(Ok(_)) = session.next().await {}
            Ok::<(), String>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), session).await {
            Ok(Ok(())) => completed += 1,
            Ok(Err(error)) => failures.push(error),
            Err(_) => failures.push(format!("{sid} did not finish within 5s")),
        }
    }
    (completed, failures)
}

/// Reads a session until the gateway closes it; returns the close code.
async fn close_code(mut session: Session) -> Option<u16> {
    while let Some(message) = session.next().await {
        match message {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_every_key_on_its_backend_and_loses_no_handshake() {
    let apps: Vec<ChildServer> = ["a", "b", "c"].into_iter().map(node_app).collect();
    let backends: Vec<&ChildServer> = apps.iter().collect();
    let dir = test_dir();
    let old_config = write_file(dir.path(), "old.toml", config("127.0.0.1:0", &backends));
    let mut old = Process::run_config(&old_config);
    let addr = old.addr().await;
    let expected = placements(addr, 0, 12).await.ws;

    let mut long_lived = Vec::new();
    for key in 0..3 {
        let (session, _) = open_session(addr, &format!("session-{key}"))
            .await
            .expect("session");
        long_lived.push(tokio::spawn(close_code(session)));
    }
    let stop = CancellationToken::new();
    let handshakes = tokio::spawn(sticky_handshake_loop(addr, expected, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new version binds the same port (SO_REUSEPORT) while the old one
    // serves, then the old one drains.
    let new_config = write_file(dir.path(), "new.toml", config(&addr.to_string(), &backends));
    let new = old.hand_over_to(&new_config).await;
    stop.cancel();

    let completed = assert_none_failed("sessions", handshakes.await.expect("handshake loop"));
    for session in long_lived {
        assert_eq!(
            session.await.expect("session task"),
            Some(1001),
            "the old instance's sessions end with 1001 (going away)"
        );
    }
    let through_new = scrape(new.admin().await).await.value(
        "wsgate_ws_upgrades_total",
        &[("route", "live"), ("result", "ok"), ("protocol", "h1")],
    );
    println!(
        "{completed} sessions during the update, {through_new} of them through the new instance"
    );
    assert!(through_new > 0.0, "the new instance took over");
    assert!(completed > 20, "the loop ran: {completed} sessions");
}

//! Interoperability with WebSocket peers nobody here wrote: Node's `ws`
//! (its classic echo server) as the backend, Python's `websockets` and
//! tokio-tungstenite as clients, all through the real gateway.
//!
//! The first test to run installs the peers: `npm ci` in tests/interop and a
//! Python venv in target/interop-venv with tests/interop/requirements.txt and
//! tests/autobahn/requirements.txt (kosoku, which runs the Autobahn
//! TestSuite's case files on Python 3).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use futures_util::SinkExt;
use support::apps::{npm_ci, python_venv, ChildServer};
use support::tls::TestCa;
use support::ws::{connect, receive};
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The venv's Python, after installing everything the peers need (once per test binary).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = interop_dir();
        npm_ci(&dir, "ws/package.json");
        let requirements = [
            dir.join("requirements.txt"),
            dir.join("../autobahn/requirements.txt"),
        ];
        let requirements: Vec<&Path> = requirements.iter().map(PathBuf::as_path).collect();
        python_venv("interop-venv", &requirements, "websockets, kosoku")
    })
}

/// Node's `ws` echo server on a free loopback port.
struct NodeEcho;

impl NodeEcho {
    fn start(deflate: bool) -> ChildServer {
        Self::start_with(deflate, None)
    }

    /// With `tls`, the directory holding `backend.pem` and `backend-key.pem`: a wss:// server.
    fn start_with(deflate: bool, tls: Option<&Path>) -> ChildServer {
        python();
        let mut command = Command::new("node");
        command.arg(interop_dir().join("echo-server.js")).arg("0");
        if deflate {
            command.arg("--deflate");
        }
        if let Some(dir) = tls {
            command
                .arg("--tls")
                .arg(dir.join("backend.pem"))
                .arg(dir.join("backend-key.pem"));
        }
        ChildServer::start(&mut command)
    }
}

async fn gateway_to(node: &ChildServer) -> TestServer {
    let config = format!(
        "[[routes]]\nname = \"echo\"\npath = \"/\"\n\
         websocket = {{ backends = [\"ws://127.0.0.1:{}\"], max_message_size = \"2MiB\" }}\n",
        node.port
    );
    TestServer::start_in(test_dir(), &config).await
}

fn python_client(url: &str, extra: &[&str]) {
    run(Command::new(python())
        .arg(interop_dir().join("client.py"))
        .arg(url)
        .args(extra));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_through_the_gateway_to_node_ws() {
    let node = NodeEcho::start(false);
    let server = gateway_to(&node).await;
    let url = format!("ws://{}/chat", server.addr);
    tokio::task::spawn_blocking(move || python_client(&url, &[]))
        .await
        .expect("client thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_is_negotiated_end_to_end() {
    let node = NodeEcho::start(true);
    let server = gateway_to(&node).await;
    let url = format!("ws://{}/chat", server.addr);
    tokio::task::spawn_blocking(move || python_client(&url, &["--expect-deflate"]))
        .await
        .expect("client thread");
}

/// wss:// on both sides: Python's client verifies the gateway against the
/// test CA, and the gateway verifies Node's https server against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_over_wss_through_the_gateway_to_node_ws_over_wss() {
    let ca = TestCa::new();
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    ca.leaf(&["127.0.0.1"]).write(dir.path(), "backend");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write CA");
    let node = NodeEcho::start_with(false, Some(dir.path()));
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"echo\"\npath = \"/\"\n\
         websocket = {{ backends = [\"wss://127.0.0.1:{}\"], backend_ca = \"ca.pem\", max_message_size = \"2MiB\" }}\n",
        node.port
    );
    let ca_file = dir.path().join("ca.pem");
    let server = TestServer::start_whole(dir, &config).await;
    let url = format!("wss://localhost:{}/chat", server.addr.port());
    tokio::task::spawn_blocking(move || {
        python_client(&url, &["--ca", ca_file.to_str().expect("utf-8 path")])
    })
    .await
    .expect("client thread");
}

#[tokio::test]
async fn tungstenite_through_the_gateway_to_node_ws() {
    let node = NodeEcho::start(false);
    let server = gateway_to(&node).await;
    let mut client = connect(server.addr, "/").await;
    for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        client
            .send(Message::binary(payload.clone()))
            .await
            .expect("send");
        assert_eq!(
            receive(&mut client).await,
            Message::binary(payload),
            "{len} bytes"
        );
    }
    let bye = CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    };
    client.send(Message::Close(Some(bye))).await.expect("close");
    // Node's ws answers with the code it received: 4000 went there and back.
    let Message::Close(Some(reply)) = receive(&mut client).await else {
        panic!("close reply expected")
    };
    assert_eq!(u16::from(reply.code), 4000);
}

/// Autobahn TestSuite sections 1–7 and 10 (247 cases), run by kosoku against
/// Node's `ws` directly and through the gateway: every verdict must match.
#[test]
fn autobahn_cases_get_the_same_verdict_through_the_gateway() {
    autobahn(&[]);
}

/// The same cases through the gateway's wss:// listener (kosoku reaches it
/// through run.py's relay, which verifies the gateway against the test CA).
#[test]
fn autobahn_cases_get_the_same_verdict_through_the_gateway_over_tls() {
    let ca = TestCa::new();
    let certs = test_dir();
    ca.leaf(&["localhost"]).write(certs.path(), "site");
    std::fs::write(certs.path().join("ca.pem"), &ca.pem).expect("write CA");
    let dir = certs.path().to_str().expect("utf-8 path");
    autobahn(&["--tls-dir", dir]);
}

fn autobahn(extra: &[&str]) {
    let logs = test_dir();
    let output = run(Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/autobahn/run.py"))
        .args([
            "--wsgate",
            env!("CARGO_BIN_EXE_wsgate"),
            "--rust-log",
            "info",
        ])
        .args(extra)
        .arg("--log-dir")
        .arg(logs.path()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("247 cases"), "{stdout}");
}

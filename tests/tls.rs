//! TLS through the real server: https over HTTP/2 and HTTP/1.1 chosen by
//! ALPN, SNI, refused protocol versions, clients that do not speak TLS,
//! wss:// on either side of the gateway, and the https redirect. Every
//! certificate is made here by a test CA and every client verifies it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{Request, Version};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::process::Process;
use support::tls::{self, TestCa};
use support::ws::{self, Behaviour, RecordingBackend, Seen};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A TLS listener with one certificate for `localhost`, a static site and
/// a WebSocket route to `backend` (with `backend_extra` added to its action).
fn tls_config(websocket: &str) -> String {
    format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\n\
         [[routes]]\nname = \"chat\"\npath = \"/ws\"\nwebsocket = {{ {websocket} }}\n"
    )
}

/// Starts a gateway whose TLS listener presents a `localhost` leaf from `ca`.
async fn tls_gateway(ca: &TestCa, websocket: &str) -> TestServer {
    tls_gateway_with(ca, websocket, &[]).await
}

/// Like [`tls_gateway`], with extra files in the config's directory.
async fn tls_gateway_with(ca: &TestCa, websocket: &str, files: &[(&str, &str)]) -> TestServer {
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "public/hello.txt", "hello over TLS\n");
    for (name, contents) in files {
        write_file(dir.path(), name, contents);
    }
    TestServer::start_whole(dir, &tls_config(websocket)).await
}

/// GET `path` over TLS to `localhost`, offering `alpn`; returns the
/// negotiated HTTP version and the body.
async fn https_get(
    server: &TestServer,
    ca: &TestCa,
    alpn: &[&str],
    path: &str,
) -> (Version, String) {
    let stream = tls::connect(server.addr, "localhost", ca.client_config(alpn)).await;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        let request = Request::get(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender.send_request(request).await.expect("h2 response")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(connection);
        let request = request("GET", path).body(Empty::new()).expect("request");
        sender
            .send_request(request)
            .await
            .expect("http/1.1 response")
    };
    let version = response.version();
    let body = read_body(response).await;
    (version, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_serves_static_files_over_h2_and_http1() {
    let ca = TestCa::new();
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = tls_gateway(&ca, &format!("backends = [\"ws://{}\"]", backend.addr)).await;
    let (version, body) = https_get(&server, &ca, &["h2", "http/1.1"], "/hello.txt").await;
    assert_eq!(
        (version, body.as_str()),
        (Version::HTTP_2, "hello over TLS\n")
    );
    let (version, body) = https_get(&server, &ca, &["http/1.1"], "/hello.txt").await;
    assert_eq!(
        (version, body.as_str()),
        (Version::HTTP_11, "hello over TLS\n")
    );
    // No ALPN at all is HTTP/1.1 too.
    let (version, _) = https_get(&server, &ca, &[], "/hello.txt").await;
    assert_eq!(version, Version::HTTP_11);
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name() {
    let ca = TestCa::new();
    let dir = test_dir();
    let (a, b, wild) = (
        ca.leaf(&["a.test"]),
        ca.leaf(&["b.test"]),
        ca.leaf(&["*.w.test"]),
    );
    a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    wild.write(dir.path(), "wild");
    write_file(dir.path(), "public/index.html", "hi");
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
        tls = { certificates = [ { cert = \"a.pem\", key = \"a-key.pem\" }, \
        { cert = \"b.pem\", key = \"b-key.pem\" }, { cert = \"wild.pem\", key = \"wild-key.pem\" } ] }\n\
        [admin]\nbind = \"127.0.0.1:0\"\n\
        [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_whole(dir, config).await;
    for (name, expected) in [("a.test", &a), ("b.test", &b), ("x.w.test", &wild)] {
        let stream = tls::connect(server.addr, name, ca.client_config(&[])).await;
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("certificates");
        assert_eq!(presented[0], expected.der, "certificate for {name}");
    }
    // Without SNI the first certificate is the default.
    let mut config = (*ca.client_config(&[])).clone();
    config.enable_sni = false;
    let stream = tls::connect(server.addr, "a.test", Arc::new(config)).await;
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("certificates");
    assert_eq!(presented[0], a.der);
}

#[tokio::test]
async fn the_server_prefers_aes_128_gcm_with_sha256_whatever_the_client_lists_first() {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    use rustls::CipherSuite;
    let ca = TestCa::new();
    let server = tls::site_with_short_handshake(&ca).await;
    // rustls (like OpenSSL) lists AES-256-GCM-SHA384 first.
    let client = |versions: &[&'static rustls::SupportedProtocolVersion], suites| {
        let mut provider = default_provider();
        if let Some(suites) = suites {
            provider.cipher_suites = suites;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
        Arc::new(config)
    };
    let negotiated = |config| async move {
        let stream = tls::connect(server.addr, "localhost", config).await;
        stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .expect("a suite")
            .suite()
    };
    assert_eq!(
        negotiated(client(&[&rustls::version::TLS13], None)).await,
        CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    assert_eq!(
        negotiated(client(&[&rustls::version::TLS12], None)).await,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    // A client that offers only AES-256 still gets it.
    let only_256 = vec![cipher_suite::TLS13_AES_256_GCM_SHA384];
    assert_eq!(
        negotiated(client(&[&rustls::version::TLS13], Some(only_256))).await,
        CipherSuite::TLS13_AES_256_GCM_SHA384
    );
}

/// A TLS 1.1 ClientHello, as an old client sends it: version 3.2 and no
/// supported_versions extension, but suites, groups and signature schemes
/// that a TLS 1.2 server could use, so only the version is wrong.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
                  // Suites rustls has, so that only the version is wrong: ECDHE-ECDSA and
                  // ECDHE-RSA with AES-128-GCM.
    body.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    body.extend([0x01, 0x00]); // null compression only
    let extensions = [
        [0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17], // supported_groups: secp256r1
        [0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03], // signature_algorithms: ecdsa_secp256r1_sha256
    ]
    .concat();
    body.extend([0x00, extensions.len() as u8]);
    body.extend(extensions);
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// Reads until the server closes the connection (bounded), returning what came.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let closed = matches!(read, Ok(Ok(_)) | Ok(Err(_)));
    assert!(closed, "server kept the connection open");
    out
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_protocol_version_alert() {
    let ca = TestCa::new();
    let server = tls_gateway(&ca, "backends = [\"ws://127.0.0.1:9\"]").await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(&tls11_client_hello())
        .await
        .expect("write hello");
    let answer = read_until_closed(&mut stream).await;
    // An alert record (21), fatal (2), protocol_version (70).
    assert_eq!(answer.first(), Some(&21), "{answer:?}");
    assert_eq!(&answer[5..7], &[2, 70], "{answer:?}");
    // The listener carries on.
    let (_, body) = https_get(&server, &ca, &["http/1.1"], "/hello.txt").await;
    assert_eq!(body, "hello over TLS\n");
}

#[tokio::test]
async fn plaintext_and_garbage_on_the_tls_port_disturb_nobody() {
    let ca = TestCa::new();
    let server = tls_gateway(&ca, "backends = [\"ws://127.0.0.1:9\"]").await;
    // A client in the middle of a keep-alive connection.
    let stream = tls::connect(server.addr, "localhost", ca.client_config(&["http/1.1"])).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let hello = || {
        request("GET", "/hello.txt")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let first = sender.send_request(hello()).await.expect("first response");
    assert_eq!(first.status(), 200);
    read_body(first).await;

    for bytes in [
        &b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x16, 0x03][..],
    ] {
        let mut intruder = TcpStream::connect(server.addr).await.expect("connect");
        intruder.write_all(bytes).await.expect("write");
        let answer = read_until_closed(&mut intruder).await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "answered in plaintext: {answer:?}"
        );
    }

    let second = sender.send_request(hello()).await.expect("second response");
    assert_eq!(second.status(), 200);
    let (_, body) = https_get(&server, &ca, &["h2"], "/hello.txt").await;
    assert_eq!(body, "hello over TLS\n");
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_cut_off() {
    let ca = TestCa::new();
    let server = tls::site_with_short_handshake(&ca).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let answer = read_until_closed(&mut silent).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
}

/// Opens `wss://localhost/ws…` through the gateway with tungstenite over a verified TLS stream.
async fn wss_connect(
    server: &TestServer,
    ca: &TestCa,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = tls::connect(server.addr, "localhost", ca.client_config(&["http/1.1"])).await;
    let (client, response) =
        tokio_tungstenite::client_async(format!("wss://localhost{path}"), stream)
            .await
            .expect("wss handshake through the gateway");
    assert_eq!(response.status(), 101);
    client
}

/// Sends text, a 300 KiB binary message (many TLS records) and 200 small
/// messages back to back, and expects them echoed in order.
async fn echo_round<S>(client: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client.send(Message::text("hello")).await.expect("send");
    assert_eq!(ws::receive(client).await, Message::text("hello"));
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    client
        .send(Message::binary(big.clone()))
        .await
        .expect("send big");
    assert_eq!(ws::receive(client).await, Message::binary(big));
    for i in 0..200 {
        client
            .feed(Message::text(format!("m{i}")))
            .await
            .expect("feed");
    }
    client.flush().await.expect("flush");
    for i in 0..200 {
        assert_eq!(ws::receive(client).await, Message::text(format!("m{i}")));
    }
}

#[tokio::test]
async fn wss_through_the_gateway_to_a_ws_backend() {
    let ca = TestCa::new();
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = tls_gateway(&ca, &format!("backends = [\"ws://{}\"]", backend.addr)).await;
    let mut client = wss_connect(&server, &ca, "/ws").await;
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("expected the handshake first");
    };
    assert_eq!(headers["x-forwarded-proto"], "https");
    echo_round(&mut client).await;
    client.close(None).await.expect("close");
    assert_eq!(
        backend
            .next_message()
            .await
            .map(|m| matches!(m, Message::Text(_))),
        Some(true)
    );
}

#[tokio::test]
async fn ws_through_the_gateway_to_a_wss_backend() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let backend = RecordingBackend::start_with(Behaviour::Echo, Some(leaf.acceptor())).await;
    let dir = test_dir();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write CA");
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/ws\"\n\
         websocket = {{ backends = [\"wss://{}\"], backend_ca = \"ca.pem\" }}\n",
        backend.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let mut client = ws::connect(server.addr, "/ws").await;
    echo_round(&mut client).await;
}

#[tokio::test]
async fn wss_to_wss() {
    let ca = TestCa::new();
    let backend_ca = TestCa::new();
    let leaf = backend_ca.leaf(&["127.0.0.1"]);
    let backend = RecordingBackend::start_with(Behaviour::Echo, Some(leaf.acceptor())).await;
    // The backend's CA is not the one that signed the gateway's certificate.
    let server = tls_gateway_with(
        &ca,
        &format!(
            "backends = [\"wss://{}\"], backend_ca = \"backend-ca.pem\"",
            backend.addr
        ),
        &[("backend-ca.pem", &backend_ca.pem)],
    )
    .await;
    let mut client = wss_connect(&server, &ca, "/ws").await;
    echo_round(&mut client).await;
}

#[tokio::test]
async fn a_backend_certificate_that_does_not_verify_is_a_502() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let untrusted = RecordingBackend::start_with(
        Behaviour::Echo,
        Some(stranger.leaf(&["127.0.0.1"]).acceptor()),
    )
    .await;
    let wrong_name =
        RecordingBackend::start_with(Behaviour::Echo, Some(ca.leaf(&["other.test"]).acceptor()))
            .await;
    for backend in [untrusted.addr, wrong_name.addr] {
        let dir = test_dir();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write CA");
        let config = format!(
            "[[routes]]\nname = \"chat\"\npath = \"/ws\"\n\
             websocket = {{ backends = [\"wss://{backend}\"], backend_ca = \"ca.pem\" }}\n"
        );
        let server = TestServer::start_in(dir, &config).await;
        let (_, head) = ws::raw_handshake(server.addr, "/ws", &[]).await;
        assert_eq!(raw_status(&head), 502, "{head}");
    }
}

#[tokio::test]
async fn redirect_https_sends_everything_to_the_https_url() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hi");
    let config =
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nredirect_https = true\nhttps_port = 8443\n\
        [[listeners]]\nbind = \"127.0.0.1:0\"\nredirect_https = true\n\
        [admin]\nbind = \"127.0.0.1:0\"\n\
        [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_whole(dir, config).await;
    let with_host = |path: &str, host: &str| {
        Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .expect("request")
    };
    let reply = send(server.addrs[0], with_host("/a/b?x=1", "example.com:8080")).await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some("https://example.com:8443/a/b?x=1")
    );
    let reply = send(server.addrs[1], with_host("/", "example.com")).await;
    assert_eq!(reply.header("location"), Some("https://example.com/"));
    // An upgrade is redirected too, without switching protocols.
    let (_, head) = ws::raw_handshake(server.addrs[1], "/chat", &[]).await;
    assert_eq!(raw_status(&head), 308, "{head}");
    assert!(head.contains("location: https://localhost/chat"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade:"), "{head}");
}

/// Starts the binary on a TLS listener of its own port serving `public/`,
/// with `extra` in its `tls` table; returns it and its port and admin port.
fn resuming_gateway(dir: &std::path::Path, name: &str, extra: &str) -> (Process, u16, SocketAddr) {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\n\
         tls = {{ cert = \"site.pem\", key = \"site-key.pem\"{extra} }}\n\
         [admin]\nbind = \"127.0.0.1:{admin}\"\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n"
    );
    let file = write_file(dir, &format!("{name}.toml"), config);
    (
        Process::run_config(&file),
        port,
        ([127, 0, 0, 1], admin).into(),
    )
}

/// tests/tls/resume.py with the CA, the TLS version and `targets`.
fn resume_py(ca: &std::path::Path, version: &str, targets: &[&str]) -> tokio::process::Command {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/resume.py");
    let mut command = tokio::process::Command::new("python3");
    command.arg(script).arg(ca).arg(version).args(targets);
    command
}

/// Whether each connection to `targets` resumed the session of the one before.
async fn resumed(ca: &std::path::Path, version: &str, targets: &[String]) -> Vec<bool> {
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let output = resume_py(ca, version, &targets)
        .output()
        .await
        .expect("python3 runs");
    assert!(output.status.success(), "resume.py: {output:?}");
    serde_json::from_slice(&output.stdout).expect("resume.py prints JSON")
}

/// A directory with a `localhost` certificate from a new CA (`site.pem`),
/// the CA's file, and `public/index.html`.
fn resume_site() -> (tempfile::TempDir, std::path::PathBuf) {
    let ca = TestCa::new();
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    let ca_file = write_file(dir.path(), "ca.pem", &ca.pem);
    write_file(dir.path(), "public/index.html", "home\n");
    (dir, ca_file)
}

async fn ready(port: u16) {
    eventually(Duration::from_secs(10), || async {
        TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
}

#[tokio::test]
async fn sessions_resume_and_survive_a_reload() {
    let (dir, ca_file) = resume_site();
    let (gateway, port, admin) = resuming_gateway(dir.path(), "wsgate", "");
    ready(port).await;
    let target = format!("127.0.0.1:{port}");
    for version in ["1.3", "1.2"] {
        let targets = [target.clone(), target.clone(), target.clone()];
        assert_eq!(
            resumed(&ca_file, version, &targets).await,
            [false, true, true],
            "TLS {version}"
        );
    }

    // A session from before a reload resumes after it.
    let mut client = resume_py(&ca_file, "1.3", &[&target, "wait", &target])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdout = tokio::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .expect("resume.py says it waits");
    assert_eq!(line.trim(), "waiting");
    let before = support::metrics::reloads(admin).await.0;
    gateway.signal("HUP");
    eventually(Duration::from_secs(10), || async {
        (support::metrics::reloads(admin).await.0 > before).then_some(())
    })
    .await;
    let mut stdin = client.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"go\n")
        .await
        .expect("write");
    let output = client.wait_with_output().await.expect("resume.py ends");
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest)
        .await
        .expect("read");
    assert!(output.status.success(), "{output:?}");
    let across: Vec<bool> = serde_json::from_str(rest.trim()).expect("JSON");
    assert_eq!(across, [false, true], "a ticket from before the reload");
}

#[tokio::test]
async fn replicas_sharing_ticket_keys_resume_each_others_sessions() {
    let (dir, ca_file) = resume_site();
    // What `openssl rand -base64 48` writes, twice: the second opens old tickets.
    let key = |seed: u8| base64::engine::general_purpose::STANDARD.encode([seed; 48]);
    write_file(
        dir.path(),
        "tickets.key",
        format!("{}\n{}\n", key(1), key(2)),
    );
    write_file(dir.path(), "old.key", format!("{}\n", key(2)));
    let shared = ", ticket_keys = \"tickets.key\"";
    let (_a, a, _) = resuming_gateway(dir.path(), "a", shared);
    let (_b, b, _) = resuming_gateway(dir.path(), "b", shared);
    let (_old, old, _) = resuming_gateway(dir.path(), "old", ", ticket_keys = \"old.key\"");
    let (_own, own, _) = resuming_gateway(dir.path(), "own", "");
    for port in [a, b, old, own] {
        ready(port).await;
    }
    let at = |port: u16| format!("127.0.0.1:{port}");
    for version in ["1.3", "1.2"] {
        // A's ticket opens on B, which shares the file.
        assert_eq!(
            resumed(&ca_file, version, &[at(a), at(b)]).await,
            [false, true],
            "TLS {version}"
        );
        // A replica still on the previous key seals tickets the rotated
        // file still opens.
        assert_eq!(
            resumed(&ca_file, version, &[at(old), at(a)]).await,
            [false, true],
            "TLS {version}"
        );
        // A process with keys of its own opens none of them.
        assert_eq!(
            resumed(&ca_file, version, &[at(a), at(own)]).await,
            [false, false],
            "TLS {version}"
        );
    }
}

#[tokio::test]
async fn a_listener_that_checks_client_certificates_resumes_only_its_own_sessions() {
    let (dir, ca_file) = resume_site();
    let (plain, checking, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{plain}\"\n\
         tls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [[listeners]]\nbind = \"127.0.0.1:{checking}\"\n\
         tls = {{ cert = \"site.pem\", key = \"site-key.pem\", client_auth = {{ ca = \"ca.pem\", required = false }} }}\n\
         [admin]\nbind = \"127.0.0.1:{admin}\"\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n"
    );
    let file = write_file(dir.path(), "wsgate.toml", config);
    let _gateway = Process::run_config(&file);
    ready(plain).await;
    ready(checking).await;
    let at = |port: u16| format!("127.0.0.1:{port}");
    for version in ["1.3", "1.2"] {
        // A session made without a certificate check cannot skip one.
        let across = resumed(&ca_file, version, &[at(plain), at(checking)]).await;
        assert_eq!(across, [false, false], "TLS {version}");
        let own = resumed(&ca_file, version, &[at(checking), at(checking)]).await;
        assert_eq!(own, [false, true], "TLS {version}");
    }
}

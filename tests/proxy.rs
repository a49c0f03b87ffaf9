//! The HTTP reverse proxy against app servers nobody here wrote: Node's
//! `http` module and Python's `http.server` (tests/proxy/app.js, app.py),
//! and two Socket.IO servers with `socket.io-client` through one route.
//!
//! The first test to run installs the Node packages (`npm ci` in tests/proxy).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::apps::{node_app, npm_ci, ChildServer};
use support::metrics::scrape;
use support::process::Process;
use support::ws;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proxy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy")
}

/// tests/proxy/app.py: a Python `http.server` app server named `name`.
fn python_app(name: &str) -> ChildServer {
    ChildServer::start(
        Command::new("python3")
            .arg(proxy_dir().join("app.py"))
            .args([name, "0"]),
    )
}

/// A gateway with one route `app` at `/` proxying to `backends`, plus `extra` keys.
async fn gateway(backends: &[String], extra: &str) -> TestServer {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let config = format!(
        "[[routes]]\nname = \"app\"\npath = \"/\"\nproxy = {{ backends = [{}]{extra} }}\n",
        list.join(", ")
    );
    TestServer::start_in(test_dir(), &config).await
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.text()))
}

/// The byte pattern app.js and app.py stream: byte i is i % 251.
fn pattern(offset: u64, len: usize) -> &'static [u8] {
    static CYCLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    // Periodic, so any window of up to 1 MiB is a slice of one buffer.
    let cycle = CYCLE.get_or_init(|| (0..251 + (1 << 20)).map(|i| (i % 251) as u8).collect());
    let start = (offset % 251) as usize;
    &cycle[start..start + len]
}

#[tokio::test]
async fn requests_reach_node_and_python_apps_with_forwarding_headers() {
    let node = node_app("node");
    let python = python_app("python");
    for app in [&node, &python] {
        let server = gateway(&[app.url("http")], "").await;
        let reply = get_with(
            server.addr,
            "/whoami?x=1",
            &[
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "hop"),
                ("x-forwarded-for", "6.6.6.6"),
                ("cookie", "a=b"),
            ],
        )
        .await;
        assert_eq!(reply.status, 200);
        let seen = json(&reply);
        let headers = &seen["headers"];
        assert_eq!(seen["url"], "/whoami?x=1");
        assert_eq!(headers["host"], "localhost");
        // An untrusted client's claimed address is replaced, not extended.
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "localhost");
        assert_eq!(
            headers["forwarded"],
            "for=127.0.0.1;proto=http;host=\"localhost\""
        );
        assert_eq!(headers["cookie"], "a=b");
        assert!(headers.get("x-secret").is_none(), "{headers}");
    }
}

#[tokio::test]
async fn host_prefix_and_trusted_proxies_follow_the_config() {
    let node = node_app("node");
    let config = format!(
        "trusted_proxies = [\"127.0.0.0/8\"]\n{LISTENERS}[[routes]]\nname = \"api\"\npath = \"/api\"\n\
         proxy = {{ backends = [\"{}/base\"], preserve_host = false, strip_prefix = true }}\n",
        node.url("http")
    );
    let server = TestServer::start_whole(test_dir(), &config).await;
    let reply = get_with(
        server.addr,
        "/api/whoami",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let seen = json(&reply);
    assert_eq!(seen["url"], "/base/whoami");
    assert_eq!(seen["headers"]["host"], format!("127.0.0.1:{}", node.port));
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn head_204_304_and_chunked_answers_pass_through() {
    let node = node_app("node");
    let server = gateway(&[node.url("http")], "").await;
    let head = send(
        server.addr,
        request("HEAD", "/etag")
            .body(Empty::new())
            .expect("request"),
    )
    .await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    assert_eq!(head.header("etag"), Some("\"v1\""));
    let revalidated = get_with(server.addr, "/etag", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    let empty = get(server.addr, "/status?code=204").await;
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());
    // A chunked download: the gateway re-frames it; the bytes are the app's.
    let download = get(server.addr, "/download?bytes=300000").await;
    assert_eq!(download.status, 200);
    assert!(download.header("transfer-encoding").is_some());
    // Node's hop-by-hop `Keep-Alive: timeout=5` stays between it and the gateway.
    assert_eq!(download.header("keep-alive"), None);
    assert_eq!(download.body.as_ref(), pattern(0, 300_000));
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_answer() {
    let node = node_app("node");
    let server = gateway(&[node.url("http")], "").await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write head");
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut interim))
        .await
        .expect("100 Continue in time")
        .expect("read");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.expect("write body");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("read answer");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("hello"), "{rest}");
}

/// Sends `len` bytes of the pattern in 64 KiB chunks, as a chunked upload.
fn streamed_pattern(
    len: u64,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        let size = CHUNK.min(len - start) as usize;
        Ok(Frame::data(Bytes::from_static(pattern(start, size))))
    });
    StreamBody::new(stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_up_and_down_in_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    let node = node_app("node");
    // The real binary, so its memory is the gateway's alone.
    let dir = test_dir();
    let config = format!(
        "[[routes]]\nname = \"app\"\npath = \"/\"\nproxy = {{ backends = [\"{}\"] }}\n",
        node.url("http")
    );
    let gateway = Process::start(dir.path(), &config, "");
    let addr = gateway.addr().await;
    assert_eq!(get(addr, "/whoami").await.status, 200);
    let before = gateway.memory_kib("VmRSS");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let upload = Request::post("/upload")
        .header("host", "localhost")
        .body(streamed_pattern(SIZE))
        .expect("request");
    let answer = sender.send_request(upload).await.expect("upload answer");
    assert_eq!(answer.status(), 200);
    let body = answer.into_body().collect().await.expect("body").to_bytes();
    let seen: Value = serde_json::from_slice(&body).expect("JSON");
    let mut expected = Sha256::new();
    let mut offset = 0;
    while offset < SIZE {
        let size = (64 * 1024).min(SIZE - offset) as usize;
        expected.update(pattern(offset, size));
        offset += size as u64;
    }
    let expected: String = expected
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(seen["bytes"], SIZE);
    assert_eq!(seen["sha256"], expected);
    let download = request("GET", &format!("/download?bytes={SIZE}"))
        .body(Empty::new())
        .expect("request");
    let mut body = open(addr, download).await.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("download frame");
        if let Some(data) = frame.data_ref() {
            assert_eq!(data.as_ref(), pattern(received, data.len()));
            received += data.len() as u64;
        }
    }
    assert_eq!(received, SIZE);
    let peak = gateway.memory_kib("VmHWM");
    let grown = peak.saturating_sub(before);
    println!("gateway RSS before {before} KiB, peak {peak} KiB (+{grown} KiB) for 1 GiB each way");
    assert!(
        grown < 64 * 1024,
        "memory grew by {grown} KiB streaming 1 GiB"
    );
}

#[tokio::test]
async fn a_slow_backend_gets_504_and_is_counted() {
    let node = node_app("node");
    let server = gateway(&[node.url("http")], ", response_timeout = \"300ms\"").await;
    let reply = get(server.addr, "/slow?ms=3000").await;
    assert_eq!(reply.status, 504);
    let fast = get(server.addr, "/slow?ms=10").await;
    assert_eq!(fast.status, 200);
    let metrics = scrape(server.admin).await;
    let backend = node.url("http");
    let labels = [("route", "app"), ("backend", backend.as_str())];
    let kind = |kind| {
        let mut labels = labels.to_vec();
        labels.push(("kind", kind));
        metrics.value("wsgate_upstream_errors_total", &labels)
    };
    assert_eq!(kind("response_timeout"), 1.0);
    assert_eq!(
        metrics.value(
            "wsgate_http_requests_total",
            &[("route", "app"), ("code", "504")]
        ),
        1.0
    );
}

/// A port nothing listens on.
fn dead_backend() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_dead_backend_fails_over_and_alone_gives_502() {
    let node = node_app("node");
    let dead = dead_backend();
    let server = gateway(&[dead.clone(), node.url("http")], "").await;
    for _ in 0..6 {
        assert_eq!(get(server.addr, "/whoami").await.status, 200);
    }
    // A POST that never reached a backend may go to the next one.
    let post = send_bytes(server.addr, "POST", "/echo", b"data").await;
    assert_eq!(
        (post.status, post.body.as_ref()),
        (StatusCode::OK, &b"data"[..])
    );
    let metrics = scrape(server.admin).await;
    let connect_errors = metrics.value(
        "wsgate_upstream_errors_total",
        &[("backend", dead.as_str()), ("kind", "connect")],
    );
    // The first failure puts it in back-off, so it is tried last after that.
    assert!(connect_errors >= 1.0, "{connect_errors}");
    assert_eq!(
        metrics.value("wsgate_upstream_healthy", &[("backend", dead.as_str())]),
        0.0
    );

    let alone = gateway(&[dead_backend()], "").await;
    assert_eq!(get(alone.addr, "/whoami").await.status, 502);
}

/// How many log lines contain `message`, and the `suppressed=` count of each.
fn warnings(log: &str, message: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains(message))
        .map(|line| {
            let (_, after) = line
                .split_once("suppressed=")
                .unwrap_or_else(|| panic!("no suppressed= in {line}"));
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a count")
        })
        .collect()
}

#[tokio::test]
async fn a_dead_backend_logs_one_warning_every_few_seconds_while_metrics_count_every_failure() {
    let (api, socket) = (dead_backend(), dead_backend().replace("http", "ws"));
    let dir = test_dir();
    let config = format!(
        "[[routes]]\nname = \"api\"\npath = \"/api\"\nproxy = {{ backends = [\"{api}\"] }}\n\n\
         [[routes]]\nname = \"live\"\npath = \"/live\"\nwebsocket = {{ backends = [\"{socket}\"] }}\n"
    );
    let process = Process::start(dir.path(), &config, "");
    let addr = process.addr().await;
    let attempts = 30;
    for _ in 0..attempts {
        assert_eq!(get(addr, "/api/x").await.status, 502);
        let (_, head) = ws::raw_handshake(addr, "/live", &[]).await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    }
    // One line per backend, and one for the WebSocket route that had none
    // left, however many requests failed.
    let log = process
        .logged("no backend took the websocket", Duration::from_secs(5))
        .await;
    assert_eq!(warnings(&log, "backend connection failed"), [0, 0], "{log}");
    assert_eq!(
        warnings(&log, "no backend took the websocket"),
        [0],
        "{log}"
    );

    // Once the interval has passed, the next failure is logged with the
    // count of those left out.
    tokio::time::sleep(wsgate::upstream::LogThrottle::INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(get(addr, "/api/x").await.status, 502);
    // The line reaches the captured log a moment after the 502.
    let logged = eventually(Duration::from_secs(5), || async {
        let lines = warnings(&process.log(), "backend connection failed");
        (lines.len() == 3).then_some(lines)
    })
    .await;
    assert_eq!(logged, [0, 0, attempts - 1], "{}", process.log());

    let metrics = scrape(process.admin().await).await;
    let failures = |backend: &str| {
        metrics.value(
            "wsgate_upstream_errors_total",
            &[("backend", backend), ("kind", "connect")],
        )
    };
    assert_eq!(failures(&api), (attempts + 1) as f64);
    assert_eq!(failures(&socket), attempts as f64);
}

/// A backend that reads each request and hangs up without answering, as a
/// crashing app would; counts the connections it took.
async fn hang_up_backend() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&taken);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
        }
    });
    (url, taken)
}

async fn requests_seen(app: &ChildServer) -> u64 {
    let addr: SocketAddr = format!("127.0.0.1:{}", app.port).parse().expect("addr");
    json(&get(addr, "/count").await)["requests"]
        .as_u64()
        .expect("count")
}

#[tokio::test]
async fn a_post_the_backend_may_have_seen_is_never_sent_twice() {
    let node = node_app("node");
    let (crashing, taken) = hang_up_backend().await;
    let backends = [crashing, node.url("http")];
    // Round-robin starts with the first backend on a fresh gateway.
    let posting = gateway(&backends, "").await;
    let post = send_bytes(posting.addr, "POST", "/echo", b"pay once").await;
    assert_eq!(post.status, 502);
    assert_eq!(taken.load(Ordering::SeqCst), 1);
    assert_eq!(
        requests_seen(&node).await,
        1,
        "only the /count request itself"
    );
    // The same failure on a GET moves on to the next backend.
    let getting = gateway(&backends, "").await;
    assert_eq!(get(getting.addr, "/whoami").await.status, 200);
    assert_eq!(taken.load(Ordering::SeqCst), 2);
    let metrics = scrape(getting.admin).await;
    assert_eq!(
        metrics.value(
            "wsgate_upstream_errors_total",
            &[("backend", backends[0].as_str()), ("kind", "protocol")]
        ),
        1.0
    );
}

async fn send_bytes(addr: SocketAddr, method: &str, path: &str, body: &'static [u8]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = request(method, path)
        .body(http_body_util::Full::new(Bytes::from_static(body)))
        .expect("request");
    let (parts, body) = sender
        .send_request(request)
        .await
        .expect("answer")
        .into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// GETs `path`, which starts a 200 answer and breaks it off; returns its
/// headers once the body has failed, as a truncated body must.
async fn truncated_get(addr: SocketAddr, path: &str) -> http::HeaderMap {
    let response = open(
        addr,
        request("GET", path).body(Empty::new()).expect("request"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the gateway ends the body");
    assert!(body.is_err(), "a truncated body must not look complete");
    parts.headers
}

#[tokio::test]
async fn a_backend_dying_mid_response_closes_the_client_connection() {
    let node = node_app("node");
    let server = gateway(&[node.url("http")], "").await;
    let headers = truncated_get(server.addr, "/abort?bytes=100000").await;
    assert_eq!(headers["content-length"], "200000");
    let metrics = eventually(Duration::from_secs(5), || async {
        let metrics = scrape(server.admin).await;
        let aborted = metrics.get("wsgate_upstream_errors_total", &[("kind", "aborted")]);
        (aborted == Some(1.0)).then_some(metrics)
    })
    .await;
    assert!(metrics.has_sample("wsgate_upstream_errors_total"));
}

/// The upstream errors of one `kind` counted against `backend`.
fn upstream_errors(metrics: &support::metrics::Scrape, backend: &str, kind: &str) -> f64 {
    metrics.value(
        "wsgate_upstream_errors_total",
        &[("backend", backend), ("kind", kind)],
    )
}

/// Sends a request head promising a 100-byte body and 10 bytes of it.
async fn partial_upload(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .expect("send");
    stream
}

#[tokio::test]
async fn request_bodies_that_stall_get_408_and_slow_moving_uploads_go_through() {
    let node = node_app("node");
    let backend = node.url("http");
    let server = gateway(
        std::slice::from_ref(&backend),
        ", body_timeout = \"1s\", response_timeout = \"1500ms\"",
    )
    .await;

    // A client that stops sending its body halfway.
    assert_stalled_upload_gets_408(server.addr).await;

    // A client that hangs up halfway through its body.
    drop(partial_upload(server.addr).await);

    // An upload that takes longer than response_timeout but never pauses for
    // body_timeout: the wait for the answer counts from its last byte.
    let chunks = stream::unfold(0u8, |sent| async move {
        if sent == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
            sent + 1,
        ))
    });
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let upload = request("POST", "/upload")
        .body(StreamBody::new(chunks))
        .expect("request");
    let answer = sender.send_request(upload).await.expect("upload answer");
    assert_eq!(answer.status(), 200);
    let seen: Value =
        serde_json::from_slice(&answer.into_body().collect().await.expect("body").to_bytes())
            .expect("JSON");
    assert_eq!(seen["bytes"], 10);

    // The client's failures are not the backend's.
    let metrics = eventually(Duration::from_secs(5), || async {
        let metrics = scrape(server.admin).await;
        let bad_request = metrics.get(
            "wsgate_http_requests_total",
            &[("route", "app"), ("code", "400")],
        );
        (bad_request == Some(1.0)).then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.value(
            "wsgate_http_requests_total",
            &[("route", "app"), ("code", "408")]
        ),
        1.0
    );
    for kind in ["protocol", "response_timeout", "aborted", "body_timeout"] {
        assert_eq!(upstream_errors(&metrics, &backend, kind), 0.0, "{kind}");
    }

    // With body_timeout off (or not shorter than response_timeout), the wait
    // for the answer runs out while the client owes the rest of its body:
    // still the client's 408, not a backend timeout.
    let without = gateway(
        std::slice::from_ref(&backend),
        ", body_timeout = \"0s\", response_timeout = \"1s\"",
    )
    .await;
    assert_stalled_upload_gets_408(without.addr).await;
    let metrics = scrape(without.admin).await;
    assert_eq!(upstream_errors(&metrics, &backend, "response_timeout"), 0.0);
}

async fn assert_stalled_upload_gets_408(addr: SocketAddr) {
    let mut stalled = partial_upload(addr).await;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_string(&mut answer))
        .await
        .expect("the gateway answers and closes")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_response_body_that_stalls_closes_the_client_connection_and_is_counted() {
    let node = node_app("node");
    let backend = node.url("http");
    let server = gateway(std::slice::from_ref(&backend), ", body_timeout = \"1s\"").await;
    truncated_get(server.addr, "/stall?bytes=1000").await;
    let metrics = scrape(server.admin).await;
    assert_eq!(upstream_errors(&metrics, &backend, "body_timeout"), 1.0);
}

/// Four requests in a row reach both backend `a` and backend `b`.
async fn assert_both_serve(addr: SocketAddr) {
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(served_by(addr, &[]).await);
    }
    assert!(
        names.contains(&"a".into()) && names.contains(&"b".into()),
        "{names:?}"
    );
}

async fn served_by(addr: SocketAddr, headers: &[(&str, &str)]) -> String {
    let reply = get_with(addr, "/whoami", headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    json(&reply)["name"].as_str().expect("name").to_owned()
}

async fn post_to(app: &ChildServer, path: &str) {
    let addr: SocketAddr = format!("127.0.0.1:{}", app.port).parse().expect("addr");
    assert_eq!(send_bytes(addr, "POST", path, b"").await.status, 200);
}

#[tokio::test]
async fn health_checks_take_a_flapping_backend_out_and_back() {
    let (a, b) = (node_app("a"), node_app("b"));
    let health = ", health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", unhealthy_after = 2, healthy_after = 2 }";
    let server = gateway(&[a.url("http"), b.url("http")], health).await;
    let b_url = b.url("http");
    let gauge = |admin| {
        let b_url = b_url.clone();
        async move {
            scrape(admin)
                .await
                .value("wsgate_upstream_healthy", &[("backend", b_url.as_str())])
        }
    };
    assert_both_serve(server.addr).await;
    for round in 0..3 {
        post_to(&b, "/health/down").await;
        eventually(Duration::from_secs(5), || async {
            (gauge(server.admin).await == 0.0).then_some(())
        })
        .await;
        for _ in 0..10 {
            assert_eq!(served_by(server.addr, &[]).await, "a", "round {round}");
        }
        post_to(&b, "/health/up").await;
        eventually(Duration::from_secs(5), || async {
            (gauge(server.admin).await == 1.0).then_some(())
        })
        .await;
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(served_by(server.addr, &[]).await);
        }
        assert!(names.contains(&"b".into()), "round {round}: {names:?}");
    }
    // Every backend down: 502 without trying, counted once per request.
    post_to(&a, "/health/down").await;
    post_to(&b, "/health/down").await;
    let reply = eventually(Duration::from_secs(5), || async {
        let reply = get(server.addr, "/whoami").await;
        (reply.status == 502).then_some(reply)
    })
    .await;
    assert_eq!(reply.status, 502);
    let metrics = scrape(server.admin).await;
    assert!(
        metrics.value(
            "wsgate_upstream_errors_total",
            &[("backend", "none"), ("kind", "no_healthy_backend")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_requests_past_a_busy_backend() {
    let (a, b) = (node_app("a"), node_app("b"));
    let server = gateway(
        &[a.url("http"), b.url("http")],
        ", balance = \"least_connections\"",
    )
    .await;
    // Round-robin's first turn is `a`: hold a request there.
    let addr = server.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    eventually(Duration::from_secs(5), || async {
        (requests_seen(&a).await >= 2).then_some(())
    })
    .await;
    for _ in 0..6 {
        assert_eq!(served_by(server.addr, &[]).await, "b");
    }
    assert_eq!(slow.await.expect("slow request").status, 200);
    // Idle again: both take turns.
    assert_both_serve(server.addr).await;
}

#[tokio::test]
async fn websocket_backends_get_the_same_health_checks_and_hashing() {
    let (a, b) = (node_app("a"), node_app("b"));
    let config = format!(
        "[[routes]]\nname = \"live\"\npath = \"/\"\n\
         websocket = {{ backends = [\"{}\", \"{}\"], balance = \"hash\", hash_key = \"client_ip\", \
         health_check = {{ path = \"/healthz\", interval = \"100ms\", unhealthy_after = 1, healthy_after = 1 }} }}\n",
        a.url("ws"),
        b.url("ws")
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let greeting = || async {
        let mut client = ws::connect(server.addr, "/").await;
        match ws::receive(&mut client).await {
            tokio_tungstenite::tungstenite::Message::Text(name) => name.to_string(),
            other => panic!("expected the server's name, got {other:?}"),
        }
    };
    // One client address: every session sticks to one backend.
    let first = greeting().await;
    for _ in 0..3 {
        assert_eq!(greeting().await, first);
    }
    let (chosen, other) = if first == "a" { (&a, "b") } else { (&b, "a") };
    post_to(chosen, "/health/down").await;
    let backend = chosen.url("ws");
    eventually(Duration::from_secs(5), || async {
        let metrics = scrape(server.admin).await;
        let up = metrics.value("wsgate_upstream_healthy", &[("backend", backend.as_str())]);
        (up == 0.0).then_some(())
    })
    .await;
    for _ in 0..3 {
        assert_eq!(greeting().await, other);
    }
    post_to(chosen, "/health/up").await;
    eventually(Duration::from_secs(5), || async {
        (greeting().await == first).then_some(())
    })
    .await;
}

#[tokio::test]
async fn consistent_hashing_sticks_and_moves_a_fifth_when_a_backend_joins() {
    let apps: Vec<ChildServer> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|name| node_app(name))
        .collect();
    let urls: Vec<String> = apps.iter().map(|app| app.url("http")).collect();
    let hash = ", balance = \"hash\", hash_key = \"header:x-user\"";
    let four = gateway(&urls[..4], hash).await;
    // A second replica, with the backends listed in another order.
    let reversed: Vec<String> = urls[..4].iter().rev().cloned().collect();
    let replica = gateway(&reversed, hash).await;
    let five = gateway(&urls, hash).await;
    const KEYS: usize = 200;
    let (mut moved, mut per_backend) = (0, std::collections::HashMap::new());
    for key in 0..KEYS {
        let user = format!("user-{key}");
        let header = [("x-user", user.as_str())];
        let before = served_by(four.addr, &header).await;
        assert_eq!(served_by(four.addr, &header).await, before, "sticky");
        assert_eq!(
            served_by(replica.addr, &header).await,
            before,
            "replicas agree"
        );
        let after = served_by(five.addr, &header).await;
        if after != before {
            assert_eq!(after, "e", "a key moved between old backends");
            moved += 1;
        }
        *per_backend.entry(before).or_insert(0) += 1;
    }
    let share = moved as f64 / KEYS as f64;
    println!("moved {moved} of {KEYS} keys ({share:.2}); spread over four: {per_backend:?}");
    assert!((0.1..0.32).contains(&share), "moved {share}");
    assert_eq!(per_backend.len(), 4, "{per_backend:?}");
}

/// Runs tests/proxy/socketio-clients.js against `url`; returns its summary and success.
fn socketio_clients(url: &str, count: usize) -> (Value, bool) {
    let output = Command::new("node")
        .arg(proxy_dir().join("socketio-clients.js"))
        .args([url, &count.to_string()])
        .output()
        .expect("run socketio-clients.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary from the clients:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (summary, output.status.success())
}

async fn socketio_gateway(servers: &[ChildServer], balance: &str) -> TestServer {
    let list = |scheme: &str| {
        let urls: Vec<String> = servers
            .iter()
            .map(|s| format!("\"{}\"", s.url(scheme)))
            .collect();
        urls.join(", ")
    };
    let config = format!(
        "[[routes]]\nname = \"socketio\"\npath = \"/socket.io\"\n\
         proxy = {{ backends = [{}]{balance} }}\n\
         websocket = {{ backends = [{}]{balance} }}\n",
        list("http"),
        list("ws"),
    );
    TestServer::start_in(test_dir(), &config).await
}

fn socketio_server(name: &str) -> ChildServer {
    npm_ci(&proxy_dir(), "socket.io/package.json");
    ChildServer::start(
        Command::new("node")
            .arg(proxy_dir().join("socketio-server.js"))
            .args([name, "0"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_needs_and_gets_stickiness_across_polling_and_upgrade() {
    let servers = [socketio_server("a"), socketio_server("b")];
    const CLIENTS: usize = 12;

    let sticky = socketio_gateway(
        &servers,
        ", balance = \"hash\", hash_key = \"header:x-client-id\"",
    )
    .await;
    let url = format!("http://{}", sticky.addr);
    let (summary, ok) = tokio::task::spawn_blocking(move || socketio_clients(&url, CLIENTS))
        .await
        .expect("clients");
    println!("sticky: {summary}");
    assert!(ok, "{summary}");
    assert_eq!(summary["ok"], CLIENTS);
    assert_eq!(summary["upgraded"], CLIENTS);
    // Both servers took clients: stickiness, not everyone on one backend.
    assert!(summary["servers"]["a"].as_u64() > Some(0), "{summary}");
    assert!(summary["servers"]["b"].as_u64() > Some(0), "{summary}");

    // The control: round-robin splits a client's requests over both servers.
    let naive = socketio_gateway(&servers, "").await;
    let url = format!("http://{}", naive.addr);
    let (summary, ok) = tokio::task::spawn_blocking(move || socketio_clients(&url, CLIENTS))
        .await
        .expect("clients");
    println!("round-robin: {summary}");
    assert!(!ok, "Socket.IO should fail without stickiness: {summary}");
    assert!(summary["failed"].as_u64() > Some(0), "{summary}");
}

/// A backend that answers every request with `answer`, then holds the connection.
async fn scripted_backend(answer: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn framing_a_backend_gets_wrong_is_fixed_or_refused() {
    // RFC 9112 §6.3: with both, Transfer-Encoding wins and Content-Length must go.
    let both = scripted_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let server = gateway(&[both], "").await;
    let reply = tokio::time::timeout(Duration::from_secs(5), get(server.addr, "/"))
        .await
        .expect("the body ends where its chunks do");
    assert_eq!(reply.text(), "hello");
    assert_ne!(reply.header("content-length"), Some("100"));
    // A 101 to a request that asked for no upgrade is the backend's fault.
    let switching = scripted_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: other\r\n\r\n",
    )
    .await;
    let server = gateway(&[switching], ", retries = 0").await;
    let reply = tokio::time::timeout(Duration::from_secs(5), get(server.addr, "/"))
        .await
        .expect("answered");
    assert_eq!(reply.status, 502);
    // A request coding other than chunked is not silently dropped.
    let plain = scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let server = gateway(&[plain], "").await;
    let answer = raw(
        server.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 501, "{answer}");
}

#[tokio::test]
async fn request_ids_and_trace_context_reach_the_backend_the_client_and_the_log() {
    let app = python_app("ids");
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let claimed = [
        ("x-request-id", "client-chosen"),
        ("traceparent", parent),
        ("tracestate", "vendor=x"),
    ];
    for trusted in [false, true] {
        let proxies = if trusted { "[\"127.0.0.0/8\"]" } else { "[]" };
        let config = format!(
            "trusted_proxies = {proxies}\n{LISTENERS}[[routes]]\nname = \"app\"\npath = \"/\"\n\
             proxy = {{ backends = [\"{}\"] }}\n",
            app.url("http")
        );
        let server = TestServer::start_whole(test_dir(), &config).await;
        let reply = get_with(server.addr, "/whoami", &claimed).await;
        assert_eq!(reply.status, 200);
        let headers = &json(&reply)["headers"];
        let id = reply.header("x-request-id").expect("an ID for the client");
        assert_eq!(headers["x-request-id"], id, "the backend sees the same ID");
        let traceparent = headers["traceparent"].as_str().expect("a traceparent");
        let fields: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(fields.len(), 4, "{traceparent}");
        assert_eq!(
            (fields[0], fields[1].len(), fields[2].len()),
            ("00", 32, 16)
        );
        assert_ne!(fields[2], "00f067aa0ba902b7", "the gateway's own span");
        let record = server.access_record(|r| r["route"] == "app").await;
        assert_eq!(record["request_id"], id);
        assert_eq!(record["trace_id"], fields[1]);
        assert_eq!(record["span_id"], fields[2]);
        if trusted {
            assert_eq!(id, "client-chosen");
            assert_eq!(
                fields[1], "4bf92f3577b34da6a3ce929d0e0e4736",
                "the trace goes on"
            );
            assert_eq!(fields[3], "01");
            assert_eq!(headers["tracestate"], "vendor=x");
        } else {
            assert_ne!(id, "client-chosen");
            assert_ne!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736", "a new trace");
            assert!(headers.get("tracestate").is_none(), "{headers}");
        }
    }
}

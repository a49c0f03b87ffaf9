//! HTTP/2 to backends (`proxy = { ..., http2 = true }`) with gRPC end to
//! end: a grpcio server (gRPC's C-core, tests/grpc/service.py, in a venv in
//! target/grpc-venv made on first run) behind the gateway, called by a
//! grpcio client over TLS: unary calls with trailers and error statuses,
//! streaming both ways, a deadline that reaches the server and cancels it,
//! and a hundred calls on one backend connection; an `https://` backend
//! reached by ALPN, and one that does not speak HTTP/2 refused clearly.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::apps::{python_venv, ChildServer};
use support::metrics::scrape;
use support::tls::TestCa;
use support::ws::{Behaviour, RecordingBackend};
use support::*;

fn grpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc")
}

fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = grpc_dir().join("requirements.txt");
        python_venv("grpc-venv", &[requirements.as_path()], "grpc")
    })
}

/// The grpcio service, on h2c or (with a leaf's files) TLS.
fn grpc_server(tls: Option<(&Path, &Path)>) -> ChildServer {
    let mut command = Command::new(python());
    command.arg(grpc_dir().join("service.py")).arg("serve");
    if let Some((cert, key)) = tls {
        command.arg("--tls").arg(cert).arg(key);
    }
    ChildServer::start(&mut command)
}

/// A gateway with a TLS listener for `localhost` whose one route proxies to
/// `backend` over HTTP/2; `ca.pem` in its directory signed everything.
async fn gateway(ca: &TestCa, dir: tempfile::TempDir, backend: &str) -> TestServer {
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "ca.pem", &ca.pem);
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"grpc\"\npath = \"/\"\n\
         proxy = {{ backends = [\"{backend}\"], http2 = true, backend_ca = \"ca.pem\" }}\n"
    );
    TestServer::start_whole(dir, &config).await
}

/// Runs the grpcio client through the gateway's TLS listener and returns its report.
async fn call_everything(server: &TestServer) -> Value {
    call_everything_at(server.addr, &server.root().join("ca.pem")).await
}

/// Runs the grpcio client at `addr`, over TLS trusting `ca`, or by h2c
/// when `ca` is `-`.
async fn call_everything_at(addr: std::net::SocketAddr, ca: &Path) -> Value {
    let output = tokio::process::Command::new(python())
        .arg(grpc_dir().join("service.py"))
        .arg("client")
        .arg(addr.to_string())
        .arg(ca)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("the gRPC client finished in time")
        .expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "gRPC client failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn grpc_calls_of_every_kind_pass_through_to_an_h2c_backend() {
    let backend = grpc_server(None);
    let ca = TestCa::new();
    let server = gateway(&ca, test_dir(), &backend.url("http")).await;
    let report = call_everything(&server).await;
    assert_eq!(report["unary"], "hello grpc", "{report}");
    assert_eq!(report["code"], "OK", "{report}");
    // Trailers (grpc-status and the service's own) come through.
    assert_eq!(report["trailer"], "yes", "{report}");
    assert_eq!(report["big"], true, "a 1 MiB message: {report}");
    assert_eq!(
        report["not_found"],
        serde_json::json!(["NOT_FOUND", "no such thing"]),
        "{report}"
    );
    assert_eq!(report["collect"], "a+b+c", "{report}");
    let turns: Vec<String> = (0..5).map(|i| format!("re: m{i}")).collect();
    assert_eq!(report["chat"], serde_json::json!(turns), "{report}");
    // The client's deadline reached the server as grpc-timeout, and the
    // cancellation when it passed.
    assert_eq!(report["slow"], "DEADLINE_EXCEEDED", "{report}");
    let seen = &report["slow_seen"];
    let deadline = seen["deadline"].as_f64().expect("a deadline");
    // 0.5 s as the client's grpc-timeout said it, give or take its rounding.
    assert!(deadline > 0.0 && deadline <= 0.6, "{report}");
    assert_eq!(seen["cancelled"], true, "{report}");
    assert!(seen["waited"].as_f64().expect("seconds") < 2.0, "{report}");
    assert_eq!(report["concurrent_ok"], 100, "{report}");
    // All of it on one connection to the backend.
    let metrics = scrape(server.admin).await;
    let connects = metrics.value(
        "wsgate_upstream_connect_duration_seconds_count",
        &[("route", "grpc")],
    );
    assert_eq!(connects, 1.0, "backend connections opened");
    let record = server
        .access_record(|r| r["path"] == "/echo.Echo/Collect")
        .await;
    assert_eq!(record["protocol"], "HTTP/2.0", "{record}");
    assert_eq!(record["status"], 200, "{record}");
}

#[tokio::test]
async fn a_plaintext_listener_with_h2c_takes_grpc_clients_and_http1_alike() {
    let backend = grpc_server(None);
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "still HTTP/1.1\n");
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nh2c = true\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"page\"\npath = \"/static\"\nstatic = {{ root = \"public\" }}\n\
         [[routes]]\nname = \"grpc\"\npath = \"/\"\n\
         proxy = {{ backends = [\"{}\"], http2 = true }}\n",
        backend.url("http")
    );
    let server = TestServer::start_whole(dir, &config).await;
    let report = call_everything_at(server.addr, Path::new("-")).await;
    assert_eq!(report["unary"], "hello grpc", "{report}");
    assert_eq!(report["trailer"], "yes", "{report}");
    assert_eq!(report["collect"], "a+b+c", "{report}");
    assert_eq!(report["concurrent_ok"], 100, "{report}");
    let page = get(server.addr, "/static/index.html").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), "still HTTP/1.1\n");
    // Requests for other hosts (the backend sees each as :authority) still
    // share the backend's one connection.
    for host in ["localhost:1", "localhost:2", "a.example", "b.example:8080"] {
        let answer = get_with(server.addr, "/echo.Echo/Unary", &[("host", host)]).await;
        assert_ne!(answer.status, 502, "{host}");
    }
    let metrics = scrape(server.admin).await;
    let connects = metrics.value(
        "wsgate_upstream_connect_duration_seconds_count",
        &[("route", "grpc")],
    );
    assert_eq!(connects, 1.0, "backend connections opened");
}

#[tokio::test]
async fn an_https_backend_is_spoken_to_in_h2_chosen_by_alpn() {
    let ca = TestCa::new();
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "backend");
    let backend = grpc_server(Some((
        &dir.path().join("backend.pem"),
        &dir.path().join("backend-key.pem"),
    )));
    let url = format!("https://localhost:{}", backend.port);
    let server = gateway(&ca, dir, &url).await;
    let report = call_everything(&server).await;
    assert_eq!(report["unary"], "hello grpc", "{report}");
    assert_eq!(report["trailer"], "yes", "{report}");
    assert_eq!(report["chat"].as_array().map(Vec::len), Some(5), "{report}");
    assert_eq!(report["concurrent_ok"], 100, "{report}");
}

#[tokio::test]
async fn an_https_backend_that_does_not_choose_h2_is_a_tls_error() {
    let ca = TestCa::new();
    // An HTTP/1.1-only TLS server: its ALPN offers http/1.1 alone.
    let leaf = ca.leaf(&["localhost"]);
    let backend = RecordingBackend::start_with(Behaviour::Echo, Some(leaf.acceptor())).await;
    let url = format!("https://localhost:{}", backend.addr.port());
    let server = gateway(&ca, test_dir(), &url).await;
    let stream =
        support::tls::connect(server.addr, "localhost", ca.client_config(&["http/1.1"])).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 to the gateway");
    tokio::spawn(connection);
    let request = http::Request::get("/anything")
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 502);
    let metrics = scrape(server.admin).await;
    assert_eq!(
        metrics.value(
            "wsgate_upstream_errors_total",
            &[("route", "grpc"), ("kind", "tls")]
        ),
        1.0
    );
}

#[tokio::test]
async fn health_checks_on_an_http2_pool_speak_http2() {
    // The backend: another gateway serving a file over TLS, where the
    // pool's ALPN offer (h2 alone) makes it speak HTTP/2.
    let ca = TestCa::new();
    let backend_dir = test_dir();
    ca.leaf(&["localhost"]).write(backend_dir.path(), "site");
    write_file(backend_dir.path(), "public/ok.txt", "fine\n");
    let backend = TestServer::start_whole(
        backend_dir,
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = { cert = \"site.pem\", key = \"site-key.pem\" }\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"files\"\npath = \"/\"\nstatic = { root = \"public\" }\n",
    )
    .await;
    let dir = test_dir();
    write_file(dir.path(), "ca.pem", &ca.pem);
    let url = format!("https://localhost:{}", backend.addr.port());
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"files\"\npath = \"/\"\n\
         proxy = {{ backends = [\"{url}\"], http2 = true, backend_ca = \"ca.pem\", \
         health_check = {{ path = \"/ok.txt\", interval = \"200ms\", unhealthy_after = 1, healthy_after = 1 }} }}\n"
    );
    let server = TestServer::start_whole(dir, &config).await;
    // Several probes later the backend is still in.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let metrics = scrape(server.admin).await;
    let healthy = metrics.value(
        "wsgate_upstream_healthy",
        &[("route", "files"), ("backend", url.as_str())],
    );
    assert_eq!(healthy, 1.0, "the HTTP/2 probe found the backend healthy");
    let reply = get(server.addr, "/ok.txt").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "fine\n");
    let served = scrape(backend.admin).await;
    let probes = served.value(
        "wsgate_http_requests_total",
        &[("route", "files"), ("code", "200"), ("method", "GET")],
    );
    assert!(probes >= 3.0, "{probes} requests reached the backend");
}

//! The test harness: the real server on 127.0.0.1:0 with a config file from
//! the test, a real HTTP/1.1 client (hyper's), and a raw TCP client for
//! requests no well-behaved client would send.
#![allow(dead_code)]

pub mod apps;
pub mod metrics;
pub mod process;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use wsgate::gateway::Gateway;
use wsgate::model::{LogTarget, Model};

/// A running server with its own temporary directory.
pub struct TestServer {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in the config's order.
    pub addrs: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Runs `command`, panicking with its output unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// A fresh directory for a test's config and files.
pub fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Writes `contents` to `dir/relative`, creating parent directories.
pub fn write_file(dir: &Path, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent directories");
    }
    std::fs::write(&path, contents).expect("write test file");
    path
}

/// A loopback port nobody listens on right now (TCP), for a server a test
/// starts later. It lies below the kernel's ephemeral range: a port the
/// kernel handed out could be taken, before the server binds it, by the
/// source port of any connection a concurrent test opens. Within one test
/// binary this function never picks a port twice; test binaries run one
/// after another, each from an offset of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_start <= LOWEST + 1_000 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        return listener.local_addr().expect("addr").port();
    }
    let span = ephemeral_start - LOWEST;
    // Test binaries run one after another, but a server one of them left
    // behind may still hold its ports: each binary starts somewhere else.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7_919) % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_start}")
}

/// Replaces `path` the way editors and config tools do: write a temporary
/// file next to it, then rename it over the old one.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) {
    let temporary = path.with_extension("tmp-write");
    std::fs::write(&temporary, contents).expect("write temporary file");
    std::fs::rename(&temporary, path).expect("rename into place");
}

/// Fails the test with every failure a load loop collected; returns how many
/// of `what` succeeded.
pub fn assert_none_failed(what: &str, (succeeded, failures): (u64, Vec<String>)) -> u64 {
    assert!(
        failures.is_empty(),
        "{} of {} {what} failed: {failures:?}",
        failures.len(),
        succeeded + failures.len() as u64
    );
    succeeded
}

/// Where a test server's access log goes unless its config says otherwise.
pub const ACCESS_LOG: &str = "access.log";

/// The listener and admin sections every test config starts with.
pub const LISTENERS: &str =
    "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n";

impl TestServer {
    /// Starts the server on `dir` with `config` (routes and settings; the
    /// listener sections are added) loaded from a real file.
    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> TestServer {
        Self::start_whole(dir, &format!("{LISTENERS}{config}")).await
    }

    /// Starts the server on `dir` with `config` as the whole file. Each
    /// listener gets a fresh port on 127.0.0.1 whatever its `bind` says.
    pub async fn start_whole(dir: tempfile::TempDir, config: &str) -> TestServer {
        let path = write_file(dir.path(), "wsgate.toml", config);
        let loaded =
            wsgate::config::load(&path).unwrap_or_else(|d| panic!("config rejected:\n{d}"));
        Self::start_model(dir, loaded.model).await
    }

    /// Starts the server with an already validated model. An access log
    /// left at its default (stdout, which the test harness does not
    /// capture) goes to `access.log` in `dir` instead: see `access_log`.
    pub async fn start_model(dir: tempfile::TempDir, mut model: Model) -> TestServer {
        if model.access_log.target == Some(LogTarget::Stdout) {
            model.access_log.target = Some(LogTarget::File(dir.path().join(ACCESS_LOG)));
        }
        let mut listeners = Vec::new();
        for _ in &model.listeners {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr"))
            .collect();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin = admin_listener.local_addr().expect("admin addr");
        let gateway = Gateway::new(model).expect("the model builds");
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(wsgate::server::run(
            listeners,
            admin_listener,
            wsgate::admin::handler(&gateway),
            Arc::clone(&gateway),
            async move {
                let _ = signal.await;
            },
        ));
        TestServer {
            addr: addrs[0],
            addrs,
            admin,
            dir,
            gateway,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The access log's lines so far, when it went to the default file.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(ACCESS_LOG))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the access log has a line `matching`, and returns it
    /// parsed (the default JSON format).
    pub async fn access_record(
        &self,
        matching: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(Duration::from_secs(10), || async {
            self.access_log()
                .iter()
                .filter_map(|line| serde_json::from_str(line).ok())
                .find(|record| matching(record))
        })
        .await
    }

    /// The access log's record of a session on `route`, once it ended.
    pub async fn session_record(&self, route: &str) -> serde_json::Value {
        self.access_record(|r| r["type"] == "session" && r["route"] == route)
            .await
    }

    /// Begins a graceful shutdown; `stopped` waits for it to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits until `run` has returned (propagating a panic in it).
    pub async fn stopped(&mut self, within: Duration) {
        let task = self.task.take().expect("server task");
        tokio::time::timeout(within, task)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked");
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with hyper's HTTP/1.1 client on a new connection and
/// returns the response as soon as its head arrives; the body streams.
pub async fn open(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender.send_request(request).await.expect("response")
}

/// Reads a response body to its end.
pub async fn read_body(response: Response<Incoming>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

/// Sends one request on a new connection and reads the whole response.
pub async fn send(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Reply {
    let (parts, body) = open(addr, request).await.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A request builder with `Host: localhost`.
pub fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
}

/// GET `path` with extra headers.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = request("GET", path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(addr, builder.body(Empty::new()).expect("request")).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

/// Writes raw bytes and reads until the server closes or `Connection: close`
/// semantics end the reply; returns everything read.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    match read {
        Ok(Ok(_)) => {}
        // A reset after the response was written still leaves the response readable.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("read failed: {e}"),
        Err(_) => panic!("server did not close the connection"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Retries `check` until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's resident set size in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmRSS in /proc/self/status")
}

/// GET `path` on a new connection; `Err` says what went wrong.
pub async fn try_get(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 5s".to_owned()))
}

/// A TCP connection to `addr` from `source` (any 127.0.0.0/8 address works
/// on loopback), so one test can play many clients.
pub async fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    socket.connect(addr).await.expect("connect")
}

/// Like [`raw`], from `source`; a connection the server closes without an
/// answer gives an empty string.
pub async fn raw_from(source: std::net::IpAddr, addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect_from(source, addr).await;
    // The server may have closed already (a refused connection): then the
    // write fails or the read finds nothing.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "server did not close the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// `127.0.0.<n>`, a distinct client on loopback.
pub fn loopback(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
}

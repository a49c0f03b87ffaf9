//! The HTTP server through real sockets: routing by host, malformed and
//! oversized requests, slow headers, keep-alive, the admin listener, and the
//! graceful drain.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn two_sites(dir: &std::path::Path) {
    write_file(dir, "a/index.html", "site a");
    write_file(dir, "b/index.html", "site b");
    write_file(dir, "any/index.html", "any host");
}

const HOSTS: &str = "[[routes]]\nname = \"a\"\nhost = \"a.example.com\"\npath = \"/\"\nstatic = { root = \"a\" }\n\
                     [[routes]]\nname = \"b\"\nhost = \"*.b.example\"\npath = \"/\"\nstatic = { root = \"b\" }\n\
                     [[routes]]\nname = \"any\"\npath = \"/\"\nstatic = { root = \"any\" }\n";

async fn get_host(addr: std::net::SocketAddr, host: &str) -> Reply {
    let request = http::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    send(addr, request).await
}

#[tokio::test]
async fn routes_by_host_case_insensitively_ignoring_the_port() {
    let dir = test_dir();
    two_sites(dir.path());
    let server = TestServer::start_in(dir, HOSTS).await;
    assert_eq!(
        get_host(server.addr, "a.example.com").await.text(),
        "site a"
    );
    assert_eq!(
        get_host(server.addr, "A.Example.COM:8080").await.text(),
        "site a"
    );
    assert_eq!(get_host(server.addr, "x.b.example").await.text(), "site b");
    assert_eq!(
        get_host(server.addr, "deep.x.b.example").await.text(),
        "site b"
    );
    assert_eq!(get_host(server.addr, "b.example").await.text(), "any host");
    assert_eq!(get_host(server.addr, "other.org").await.text(), "any host");
}

#[tokio::test]
async fn no_matching_route_is_404() {
    let dir = test_dir();
    write_file(dir.path(), "app/index.html", "app");
    let server = TestServer::start_in(
        dir,
        "[[routes]]\nname = \"app\"\npath = \"/app\"\nstatic = { root = \"app\" }\n",
    )
    .await;
    assert_eq!(get(server.addr, "/").await.status, 404);
    assert_eq!(get(server.addr, "/application").await.status, 404);
    assert_eq!(get(server.addr, "/app/").await.text(), "app");
}

async fn plain_site() -> TestServer {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "home");
    write_file(dir.path(), "public/big.bin", vec![7u8; 4 * 1024 * 1024]);
    let config = "[server]\nheader_read_timeout = \"300ms\"\nshutdown_timeout = \"500ms\"\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    TestServer::start_in(dir, config).await
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let server = plain_site().await;
    let no_host = raw(server.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&no_host), 400);
    let two_hosts = raw(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&two_hosts), 400);
    let garbage = raw(server.addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(
        garbage.is_empty() || raw_status(&garbage) == 400,
        "{garbage:?}"
    );
    // HTTP/1.0 needs no Host.
    let old = raw(server.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(raw_status(&old), 200);
}

#[tokio::test]
async fn hosts_and_authorities_that_are_not_host_port_get_400() {
    let server = plain_site().await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: user@a\r\nConnection: close\r\n\r\n",
        // RFC 9112 §3.2: Host is required with an absolute-form target too.
        b"GET http://a/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(server.addr, request).await;
        assert_eq!(
            raw_status(&answer),
            400,
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    let fine = raw(
        server.addr,
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&fine), 200);
    let with_port = raw(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&with_port), 200);
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let server = plain_site().await;
    let huge = "x".repeat(70 * 1024);
    let response = raw(
        server.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&response), 431);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let server = plain_site().await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    // The configured header read timeout is 300 ms; the bound here only
    // keeps a broken server from hanging the test.
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the server kept a slow-header connection open"
    );
    // Others are still served.
    assert_eq!(get(server.addr, "/").await.text(), "home");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_send_timeout() {
    const SIZE: usize = 64 << 20;
    let dir = test_dir();
    // Far more than the socket buffers on both ends hold, so the gateway's
    // writes stop once the client stops reading.
    write_file(dir.path(), "public/big.bin", vec![7u8; SIZE]);
    let server = TestServer::start_in(
        dir,
        "[server]\nsend_timeout = \"1s\"\n\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n",
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut reader = socket.connect(server.addr).await.expect("connect");
    reader
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    let open = |count: f64| async move {
        let metrics = support::metrics::scrape(server.admin).await;
        let open = metrics.get("wsgate_connections_active", &[("listener", "127.0.0.1:0")]);
        (open == Some(count)).then_some(())
    };
    // The connection is served first, so its end below is the timeout's.
    eventually(Duration::from_secs(10), || open(1.0)).await;
    // The gateway gives the connection up while the client reads nothing.
    eventually(Duration::from_secs(10), || open(0.0)).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut received))
        .await
        .expect("the connection is closed");
    assert!(
        received.len() < SIZE,
        "{} bytes arrived; the response was cut off",
        received.len()
    );
    assert_eq!(get(server.addr, "/big.bin").await.body.len(), SIZE);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = plain_site().await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    for _ in 0..3 {
        let response = sender
            .send_request(request("GET", "/").body(Empty::new()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        let body = read_body(response).await;
        assert_eq!(&body[..], b"home");
    }
}

#[tokio::test]
async fn an_upgrade_to_a_route_without_websocket_is_404() {
    let server = plain_site().await;
    let reply = get_with(
        server.addr,
        "/",
        &[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_a_slot_frees() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "home");
    let config = "[server]\nmax_connections = 2\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_in(dir, config).await;
    let first = TcpStream::connect(server.addr).await.expect("first");
    let second = TcpStream::connect(server.addr).await.expect("second");
    // Both slots are taken by idle connections: a third request is not served...
    let waiting = tokio::spawn(get(server.addr, "/"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served past max_connections");
    // ...until one of them goes away. The admin listener is not limited by it.
    assert_eq!(get(server.admin, "/healthz").await.status, 200);
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot freed")
        .expect("request task");
    assert_eq!(reply.text(), "home");
    drop(second);
}

#[tokio::test]
async fn admin_health_and_readiness() {
    let server = plain_site().await;
    let healthz = get(server.admin, "/healthz").await;
    assert_eq!(
        (healthz.status.as_u16(), healthz.text().as_str()),
        (200, "ok\n")
    );
    assert_eq!(get(server.admin, "/readyz").await.status, 200);
    assert_eq!(get(server.admin, "/nope").await.status, 404);
    // The admin endpoints are not on the public listener.
    assert_eq!(get(server.addr, "/healthz").await.status, 404);
}

/// Starts a GET of the 4 MiB file and returns its response without reading the body.
async fn start_big_download(addr: std::net::SocketAddr) -> hyper::Response<hyper::body::Incoming> {
    open(
        addr,
        request("GET", "/big.bin")
            .body(Empty::new())
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn draining_finishes_in_flight_requests_and_reports_not_ready() {
    let mut server = plain_site().await;
    let in_flight = start_big_download(server.addr).await;
    let idle = TcpStream::connect(server.addr)
        .await
        .expect("an idle keep-alive connection");
    server.begin_shutdown();
    eventually(Duration::from_secs(5), || async {
        (get(server.admin, "/readyz").await.status == 503).then_some(())
    })
    .await;
    assert_eq!(
        get(server.admin, "/healthz").await.status,
        200,
        "alive while draining"
    );
    let body = in_flight
        .into_body()
        .collect()
        .await
        .expect("the in-flight body completes")
        .to_bytes();
    assert_eq!(body.len(), 4 * 1024 * 1024);
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
    server.stopped(Duration::from_secs(10)).await;
    drop(idle);
}

#[tokio::test]
async fn the_drain_deadline_bounds_a_stuck_client() {
    let mut server = plain_site().await;
    // A client that never reads its response keeps the request in flight.
    let _stuck = start_big_download(server.addr).await;
    server.begin_shutdown();
    // shutdown_timeout is 500 ms; the bound only keeps a broken drain from hanging the test.
    server.stopped(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_demo_page_uses_the_browser_websocket_api() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = TestServer::start_model(test_dir(), wsgate::demo::model(any, any, any)).await;
    let page = get(server.addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    for api in [
        "new WebSocket(",
        "readyState",
        "onopen",
        "onmessage",
        "onclose",
        "onerror",
        ".send(",
        ".close(1000",
        "/echo",
    ] {
        assert!(html.contains(api), "the demo page should use {api}");
    }
    assert!(html.contains("echo route is not available"));
    assert_eq!(get(server.addr, "/other").await.status, 404);
}

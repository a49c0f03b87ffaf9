//! HTTP/2 connections through the real server, over TLS with ALPN `h2`:
//! a client that stops reading is closed after `send_timeout` (its bytes
//! wait in stream buffers, not at the socket), an idle connection gets a
//! GOAWAY after `keepalive_timeout`, and listeners share `max_connections`
//! without holding slots while they wait for clients.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::metrics::scrape;
use support::tls::{self, TestCa};
use support::*;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A gateway with a TLS listener for `localhost` (from `ca`), `server`
/// settings, and a static site holding a 4 MiB `big.bin`.
async fn h2_site(ca: &TestCa, server: &str) -> TestServer {
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "public/big.bin", vec![7u8; 4 << 20]);
    write_file(dir.path(), "public/small.txt", "small");
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n[server]\n{server}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n"
    );
    TestServer::start_whole(dir, &config).await
}

/// An HTTP/2 connection to `server`, and the task driving it (it ends when
/// the connection does).
async fn h2_connect(
    server: &TestServer,
    ca: &TestCa,
) -> (SendRequest<Empty<Bytes>>, JoinHandle<()>) {
    let stream = tls::connect(server.addr, "localhost", ca.client_config(&["h2"])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, driver)
}

fn get_request(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .body(Empty::new())
        .expect("request")
}

async fn open_connections(server: &TestServer) -> f64 {
    scrape(server.admin)
        .await
        .value("wsgate_connections_active", &[])
}

#[tokio::test]
async fn an_h2_client_that_stops_reading_is_closed_after_send_timeout() {
    let ca = TestCa::new();
    let server = h2_site(&ca, "send_timeout = \"1s\"").await;
    let (mut sender, driver) = h2_connect(&server, &ca).await;
    // Ten streams of a file far larger than the flow-control window, none
    // of them read: the client never sends a WINDOW_UPDATE.
    let mut unread = Vec::new();
    for _ in 0..10 {
        let response = sender
            .send_request(get_request("/big.bin"))
            .await
            .expect("response head");
        assert_eq!(response.status(), 200);
        unread.push(response);
    }
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the gateway closed the connection")
        .expect("driver task");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed before send_timeout: {took:?}"
    );
    eventually(Duration::from_secs(5), || async {
        (open_connections(&server).await == 0.0).then_some(())
    })
    .await;
    // A client that reads gets the whole file.
    let (mut reader, _driver) = h2_connect(&server, &ca).await;
    let response = reader
        .send_request(get_request("/big.bin"))
        .await
        .expect("response");
    assert_eq!(read_body(response).await.len(), 4 << 20);
}

#[tokio::test]
async fn an_idle_h2_connection_gets_a_goaway_after_keepalive_timeout() {
    let ca = TestCa::new();
    let server = h2_site(&ca, "keepalive_timeout = \"1s\"").await;
    let (mut sender, driver) = h2_connect(&server, &ca).await;
    // Requests every 300 ms keep it open past the timeout...
    for _ in 0..6 {
        let response = sender
            .send_request(get_request("/small.txt"))
            .await
            .expect("response");
        assert_eq!(read_body(response).await, "small");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!driver.is_finished(), "closed while in use");
    // ...and once nothing is asked for, the gateway ends it.
    let idle_since = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), driver)
        .await
        .expect("the gateway closed the idle connection")
        .expect("driver task");
    assert!(idle_since.elapsed() >= Duration::from_millis(600));
    eventually(Duration::from_secs(5), || async {
        (open_connections(&server).await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn listeners_waiting_for_clients_hold_no_connection_slot() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "home");
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\n\
                  [admin]\nbind = \"127.0.0.1:0\"\n[server]\nmax_connections = 4\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_whole(dir, config).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addrs[0]).await.expect("connect"));
    }
    eventually(Duration::from_secs(5), || async {
        (open_connections(&server).await == 3.0).then_some(())
    })
    .await;
    // The fourth slot is free although the second listener is waiting too.
    let reply = tokio::time::timeout(Duration::from_secs(5), get(server.addrs[0], "/"))
        .await
        .expect("the fourth connection is served");
    assert_eq!(reply.text(), "home");
    drop(idle);
}

/// One request written by hand (hyper's client will not send these), as
/// HPACK literals without indexing; returns the `:status` the gateway
/// answered, or `None` when it reset the stream or the connection instead.
async fn raw_h2_status(server: &TestServer, ca: &TestCa, headers: &[(&str, &str)]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tls::connect(server.addr, "localhost", ca.client_config(&["h2"])).await;
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00);
        block.push(u8::try_from(name.len()).expect("short name"));
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).expect("short value"));
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let len = u32::try_from(block.len())
        .expect("short block")
        .to_be_bytes();
    // HEADERS on stream 1 with END_STREAM | END_HEADERS.
    out.extend_from_slice(&[len[1], len[2], len[3], 0x1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    stream.write_all(&out).await.expect("write request");
    let read = async {
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.ok()?;
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.ok()?;
            let on_stream_1 = head[5..9] == [0, 0, 0, 1];
            match head[3] {
                // HEADERS: `:status` comes first, indexed (RFC 7541 Appendix A).
                0x1 if on_stream_1 => {
                    let status = match payload.first()? {
                        0x88 => 200,
                        0x8c => 400,
                        0x8d => 404,
                        other => u16::from(*other),
                    };
                    return Some(status);
                }
                0x3 if on_stream_1 => return None, // RST_STREAM
                0x7 => return None,                // GOAWAY
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer")
}

#[tokio::test]
async fn h2_authorities_with_userinfo_and_foreign_schemes_are_refused() {
    let ca = TestCa::new();
    let server = h2_site(&ca, "").await;
    let request = |scheme: &'static str, authority: &'static str| {
        [
            (":method", "GET"),
            (":scheme", scheme),
            (":path", "/small.txt"),
            (":authority", authority),
        ]
    };
    assert_eq!(
        raw_h2_status(&server, &ca, &request("https", "localhost")).await,
        Some(200)
    );
    for (scheme, authority) in [("https", "user@localhost"), ("ftp", "localhost")] {
        let status = raw_h2_status(&server, &ca, &request(scheme, authority)).await;
        assert!(
            status.is_none() || status == Some(400),
            "{scheme}://{authority} got {status:?}"
        );
    }
}

//! The access log: a line per request and per WebSocket session, through
//! the real server (records read back as JSON) and the real binary
//! (formats, files reopened on SIGUSR1, a stalled reader, `check`).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use support::metrics::scrape;
use support::process::{Process, BIN};
use support::ws::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A backend that answers every request on its connections with `200 ok`.
async fn ok_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    head.clear();
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    &record[name]
}

#[tokio::test]
async fn requests_get_a_line_with_what_applies_and_nothing_else() {
    let backend = ok_backend().await;
    let dir = test_dir();
    write_file(dir.path(), "site/index.html", "hello");
    let config = format!(
        "[[routes]]\nname = \"api\"\npath = \"/api\"\nlog_query = false\n\
         proxy = {{ backends = [\"http://{backend}\"] }}\n\
         [[routes]]\nname = \"quiet\"\npath = \"/quiet\"\naccess_log = \"errors\"\n\
         static = {{ root = \"site\" }}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"site\" }}\n"
    );
    let server = TestServer::start_in(dir, &config).await;

    let reply = get_with(
        server.addr,
        "/index.html?x=1",
        &[("referer", "https://r.example/")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let site = server
        .access_record(|r| r["route"] == "site" && r["status"] == 200)
        .await;
    assert_eq!(field(&site, "type"), "request");
    assert_eq!(field(&site, "method"), "GET");
    assert_eq!(field(&site, "path"), "/index.html?x=1");
    assert_eq!(field(&site, "protocol"), "HTTP/1.1");
    assert_eq!(field(&site, "bytes_sent"), 5);
    assert_eq!(field(&site, "remote_addr"), "127.0.0.1");
    assert_eq!(field(&site, "referer"), "https://r.example/");
    assert!(field(&site, "duration_ms").as_f64().is_some());
    assert!(field(&site, "time")
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    for absent in ["backend", "attempts", "error", "tls_version", "session_ms"] {
        assert!(
            site.get(absent).is_none(),
            "{absent} does not apply: {site}"
        );
    }

    let reply = get(server.addr, "/api/items?token=secret").await;
    assert_eq!(reply.status, 200);
    let api = server.access_record(|r| r["route"] == "api").await;
    assert_eq!(field(&api, "path"), "/api/items", "log_query = false");
    assert_eq!(field(&api, "backend"), &format!("http://{backend}"));
    assert_eq!(field(&api, "attempts"), 1);
    assert_eq!(field(&api, "upstream_status"), 200);

    assert_eq!(get(server.addr, "/quiet/index.html").await.status, 200);
    assert_eq!(get(server.addr, "/quiet/missing").await.status, 404);
    let quiet = server.access_record(|r| r["route"] == "quiet").await;
    assert_eq!(field(&quiet, "status"), 404);
    let quiet_lines = server
        .access_log()
        .iter()
        .filter(|line| line.contains("\"quiet\""))
        .count();
    assert_eq!(quiet_lines, 1, "access_log = \"errors\" leaves out the 200");
}

#[tokio::test]
async fn hostile_requests_still_give_valid_json() {
    let server = TestServer::start_in(
        test_dir(),
        "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \".\" }\n",
    )
    .await;
    let answer = raw(
        server.addr,
        b"GET /a%22b%0A?q=%7B'x'%7D HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
          User-Agent: evil\xff\xfe\"}{\t\\\r\nReferer: \"\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 404, "{answer}");
    let record = server.access_record(|r| r["status"] == 404).await;
    assert_eq!(field(&record, "path"), "/a%22b%0A?q=%7B'x'%7D");
    assert_eq!(field(&record, "user_agent"), "evil\u{fffd}\u{fffd}\"}{\t\\");
    assert_eq!(field(&record, "referer"), "\"");
    assert_eq!(
        server.access_log().len(),
        1,
        "one line, not split by the input"
    );
}

#[tokio::test]
async fn sessions_get_a_line_when_they_end_and_refusals_get_theirs() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"], max_message_size = \"1KiB\", origins = [\"https://ok.example\"] }}\n",
        backend.addr
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let (mut client, _) = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/chat?room=1",
            server.addr
        ))
        .map(|mut request| {
            request.headers_mut().insert(
                "origin",
                http::HeaderValue::from_static("https://ok.example"),
            );
            request
        })
        .expect("request"),
    )
    .await
    .expect("connect");
    let _ = backend.next().await; // the handshake
    client.send(Message::text("hello")).await.expect("send");
    assert_eq!(receive(&mut client).await, Message::text("hello"));
    client
        .send(Message::binary(vec![0u8; 2048]))
        .await
        .expect("send too much");
    let Message::Close(Some(close)) = receive(&mut client).await else {
        panic!("a close")
    };
    assert_eq!(u16::from(close.code), 1009);
    drop(client);

    let session = server.access_record(|r| r["type"] == "session").await;
    assert_eq!(field(&session, "status"), 101);
    assert_eq!(field(&session, "route"), "chat");
    assert_eq!(field(&session, "path"), "/chat?room=1");
    assert_eq!(
        field(&session, "backend"),
        &format!("ws://{}", backend.addr)
    );
    assert_eq!(field(&session, "close_code"), 1009);
    assert_eq!(field(&session, "closed_by"), "gateway");
    assert_eq!(field(&session, "close_reason"), "message too big");
    assert_eq!(field(&session, "client_messages"), 1);
    assert_eq!(field(&session, "client_bytes"), 5);
    assert_eq!(field(&session, "backend_messages"), 1);
    assert!(field(&session, "session_ms").as_f64().is_some());

    let (_raw, head) =
        raw_handshake(server.addr, "/chat", &[("Origin", "https://evil.example")]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let refused = server.access_record(|r| r["status"] == 403).await;
    assert_eq!(field(&refused, "type"), "request");
    assert_eq!(field(&refused, "reason"), "origin_denied");
}

/// Requests `path` on a fresh connection and drops the answer.
async fn hit(addr: std::net::SocketAddr, path: &str) -> u16 {
    get(addr, path).await.status.as_u16()
}

#[tokio::test]
async fn the_binary_writes_combined_lines_and_reopens_its_file_on_sigusr1() {
    let dir = test_dir();
    write_file(dir.path(), "site/a.txt", "abc");
    let config = "[log]\naccess = \"logs/access.log\"\nformat = \"combined\"\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"site\" }\n";
    std::fs::create_dir(dir.path().join("logs")).expect("logs dir");
    let process = Process::start(dir.path(), config, "");
    let addr = process.addr().await;
    let log = dir.path().join("logs/access.log");
    let rotated = dir.path().join("logs/access.log.1");
    assert_eq!(hit(addr, "/a.txt").await, 200);
    let first = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| !text.is_empty())
    })
    .await;
    // nginx's combined: address, user, time, request, status, bytes, referer, agent.
    let line = first.lines().next().expect("a line");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("] \"GET /a.txt HTTP/1.1\" 200 3 \"-\" \"-\""),
        "{line}"
    );
    std::fs::rename(&log, &rotated).expect("rotate");
    process.signal("USR1");
    eventually(Duration::from_secs(10), || async {
        process
            .log()
            .contains("reopening the access log")
            .then_some(())
    })
    .await;
    assert_eq!(hit(addr, "/missing").await, 404);
    let second = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| !text.is_empty())
    })
    .await;
    assert!(second.contains("\"GET /missing HTTP/1.1\" 404"), "{second}");
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    assert_eq!(
        old.lines().count(),
        1,
        "nothing more went to the renamed file: {old}"
    );
}

#[tokio::test]
async fn the_binary_writes_a_template_line_per_request_and_per_session() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    let config = format!(
        "[log]\naccess = \"access.log\"\n\
         format = \"$type $status $route $close_code $closed_by $client_messages [$request]\"\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"] }}\n",
        backend.addr
    );
    let process = Process::start(dir.path(), &config, "");
    let addr = process.addr().await;
    assert_eq!(hit(addr, "/nowhere").await, 404);
    let mut client = connect(addr, "/chat").await;
    let _ = backend.next().await; // the handshake
    client.send(Message::text("one")).await.expect("send");
    assert_eq!(receive(&mut client).await, Message::text("one"));
    // A close frame without a code: the record says 1005, as RFC 6455 §7.1.5 reports it.
    client.close(None).await.expect("close");
    let log = dir.path().join("access.log");
    let text = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| text.lines().count() == 2)
    })
    .await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "request 404 - - - - [GET /nowhere HTTP/1.1]");
    assert_eq!(
        lines[1],
        "session 101 chat 1005 client 1 [GET /chat HTTP/1.1]"
    );
}

#[tokio::test]
async fn a_reader_that_stalls_costs_log_lines_never_requests() {
    let dir = test_dir();
    let config = format!(
        "{LISTENERS}[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \".\" }}\n"
    );
    let path = write_file(dir.path(), "wsgate.toml", config);
    // Standard output is a pipe nobody reads: once its 64 KiB and the
    // log's queue are full, lines must be dropped, not waited for.
    let process =
        Process::spawn_with_stdout(Command::new(BIN).arg("--config").arg(&path), Stdio::piped());
    let addr = process.addr().await;
    let admin = process.admin().await;
    let requests = 20_000;
    let per_client = requests / 4;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let started = std::time::Instant::now();
                for _ in 0..per_client {
                    let request = request("GET", "/nothing-here")
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .expect("request");
                    let response = sender.send_request(request).await.expect("answered");
                    assert_eq!(response.status(), 404);
                }
                started.elapsed()
            })
        })
        .collect();
    for client in clients {
        let took = client.await.expect("client");
        assert!(
            took < Duration::from_secs(120),
            "requests were held up: {took:?}"
        );
    }
    let dropped = eventually(Duration::from_secs(10), || async {
        let value = scrape(admin).await.value("wsgate_log_dropped_total", &[]);
        (value > 0.0).then_some(value)
    })
    .await;
    assert!(dropped < f64::from(requests), "{dropped}");
    drop(process);
}

#[test]
fn check_names_an_unwritable_log_file_and_an_unknown_field() {
    let dir = test_dir();
    let config = "[[listeners]]\nbind = \"127.0.0.1:8080\"\n\
                  [log]\naccess = \"no/such/dir/access.log\"\nformat = \"$status $stauts\"\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\naccess_log = \"some\"\n\
                  static = { root = \".\" }\n";
    let file = write_file(dir.path(), "wsgate.toml", config);
    let file = file.to_str().expect("utf-8 path");
    let output = Command::new(BIN)
        .args(["check", file])
        .output()
        .expect("run wsgate");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = [
        ":4:10: access log file",
        ":5:10: unknown log field `$stauts`; known fields: time,",
        ":9:14: access_log must be \"all\", \"errors\" or \"off\", not `some`",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{file}{expected}")),
            "{line}\n{stderr}"
        );
    }
    assert!(
        lines[0].contains("cannot be opened for appending"),
        "{stderr}"
    );
}

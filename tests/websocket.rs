//! The WebSocket gateway through the real server: tungstenite clients and
//! backends on loopback, raw frames where a rule must be broken on purpose.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::ws::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A gateway whose `/chat` route goes to `backend`, with extra route settings.
async fn gateway(backend: std::net::SocketAddr, settings: &str) -> TestServer {
    let config = format!(
        "[server]\nshutdown_timeout = \"5s\"\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{backend}\"]{settings} }}\n"
    );
    TestServer::start_in(test_dir(), &config).await
}

#[tokio::test]
async fn messages_of_every_size_pass_both_ways() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let mut client = connect(server.addr, "/chat/room?user=1").await;
    let Seen::Handshake(headers, target) = backend.next().await else {
        panic!("handshake first")
    };
    assert_eq!(
        target, "/chat/room?user=1",
        "the full path and query are forwarded"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(headers["forwarded"]
        .to_str()
        .expect("ascii")
        .starts_with("for=127.0.0.1;proto=http"));
    for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
        let text = "é".repeat(len / 2);
        client
            .send(Message::text(text.clone()))
            .await
            .expect("send text");
        assert_eq!(
            receive(&mut client).await,
            Message::text(text),
            "text of {len} bytes"
        );
        let binary: Vec<u8> = (0..len).map(|i| i as u8).collect();
        client
            .send(Message::binary(binary.clone()))
            .await
            .expect("send binary");
        assert_eq!(
            receive(&mut client).await,
            Message::binary(binary),
            "binary of {len} bytes"
        );
    }
    client.close(None).await.expect("close");
}

#[tokio::test]
async fn close_codes_pass_through_both_ways() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let mut client = connect(server.addr, "/chat").await;
    let bye = CloseFrame {
        code: CloseCode::from(4000),
        reason: "client bye".into(),
    };
    client.close(Some(bye.clone())).await.expect("close");
    assert_eq!(
        backend.next_message().await,
        Some(Message::Close(Some(bye)))
    );
    // The backend's reply completes the handshake at the client.
    let end = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("closed in time");
    assert!(matches!(end, None | Some(Ok(Message::Close(_)))), "{end:?}");

    let mut backend = RecordingBackend::start(Behaviour::CloseAfterFirstMessage).await;
    let server = gateway(backend.addr, "").await;
    let mut client = connect(server.addr, "/chat").await;
    client.send(Message::text("hi")).await.expect("send");
    let Message::Close(Some(frame)) = receive(&mut client).await else {
        panic!("close expected")
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, "backend bye")
    );
    let _ = backend.next().await;
}

#[tokio::test]
async fn fragmented_messages_and_pings_pass_unchanged() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // "é" split across two fragments, a ping between them.
    let text = "aé".as_bytes();
    let mut frames = masked(0x1, false, &text[..2]);
    frames.extend(masked(0x9, true, b"are you there"));
    frames.extend(masked(0x0, true, &text[2..]));
    raw.write_all(&frames).await.expect("write fragments");
    assert_eq!(
        backend.next_message().await,
        Some(Message::Ping("are you there".into()))
    );
    assert_eq!(backend.next_message().await, Some(Message::text("aé")));
    // The backend's pong and echo come back.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (opcode, payload) = read_frame(&mut raw).await.expect("frame");
        seen.push((opcode, payload));
    }
    assert!(seen.contains(&(0xA, b"are you there".to_vec())), "{seen:?}");
    assert!(seen.contains(&(0x1, text.to_vec())), "{seen:?}");
}

#[tokio::test]
async fn handshake_refusals() {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(
        backend.addr,
        ", origins = [\"https://good.example\"], subprotocols = [\"chat.v1\"]",
    )
    .await;
    let good = [
        ("Origin", "https://good.example"),
        ("Sec-WebSocket-Protocol", "chat.v1"),
    ];

    let (_, head) = raw_handshake(
        server.addr,
        "/chat",
        &[good[0], good[1], ("Sec-WebSocket-Version", "8")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    let (_, head) = raw_handshake(
        server.addr,
        "/chat",
        &[good[0], good[1], ("Sec-WebSocket-Key", "short")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (_, head) = raw_handshake(
        server.addr,
        "/chat",
        &[("Origin", "https://evil.example"), good[1]],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_, head) = raw_handshake(
        server.addr,
        "/chat",
        &[good[0], ("Sec-WebSocket-Protocol", "other")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (_, head) = raw_handshake(server.addr, "/chat", &[good[1]]).await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "no Origin (a non-browser client) is allowed: {head}"
    );
    let (_, head) = raw_handshake(server.addr, "/chat", &good).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let plain = get(server.addr, "/chat").await;
    assert_eq!(plain.status, 426);
    assert_eq!(plain.header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn backends_that_are_down_or_refuse() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let server = gateway(dead, "").await;
    let (_, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");

    // A backend that answers the handshake with 403 has its answer passed back.
    let refusing = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refusing_addr = refusing.local_addr().expect("addr");
    let refuser = tokio::spawn(async move {
        let (mut stream, _) = refusing.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        let answer =
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nX-Reason: banned\r\n\r\nforbidden";
        stream.write_all(answer.as_bytes()).await.expect("answer");
    });
    let server = gateway(refusing_addr, "").await;
    let (_, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-reason: banned"),
        "{head}"
    );
    refuser.await.expect("refusing backend");

    // With a dead backend first in the list, the next one takes the session.
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{dead}\", \"ws://{}\"] }}\n",
        backend.addr
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    for _ in 0..3 {
        let mut client = connect(server.addr, "/chat").await;
        client.send(Message::text("x")).await.expect("send");
        assert_eq!(receive(&mut client).await, Message::text("x"));
    }
}

#[tokio::test]
async fn the_handshake_reaches_the_backend_with_end_to_end_headers_only() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, ", strip_prefix = true").await;
    let headers = [
        ("Connection", "Upgrade, X-Hop"),
        ("X-Hop", "for the gateway only"),
        ("Keep-Alive", "timeout=5"),
        ("Cookie", "session=abc"),
        ("Authorization", "Bearer token"),
        ("Origin", "https://app.example"),
        ("Sec-WebSocket-Protocol", "chat.v1"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    let (_raw, head) = raw_handshake(server.addr, "/chat/room%20one%252e?x=1", &headers).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let Seen::Handshake(seen, target) = backend.next().await else {
        panic!("handshake first")
    };
    // The prefix is removed and the rest re-encoded: the backend decodes
    // exactly once what the router saw ("/room one%2e").
    assert_eq!(target, "/room%20one%252e?x=1");
    for (name, value) in [
        ("cookie", "session=abc"),
        ("authorization", "Bearer token"),
        ("origin", "https://app.example"),
        ("sec-websocket-protocol", "chat.v1"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("host", "localhost"),
        ("upgrade", "websocket"),
        // Without trusted_proxies the client's claim is replaced, not extended.
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-host", "localhost"),
    ] {
        assert_eq!(
            seen.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}"
        );
    }
    assert!(
        seen.get("x-hop").is_none() && seen.get("keep-alive").is_none(),
        "{seen:?}"
    );

    // An absolute-form target names the host it was routed on; that is the
    // backend's Host, not a Host header the client added.
    let (_raw, head) = raw_handshake(server.addr, "http://public.example/chat/x", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let Seen::Handshake(seen, _) = backend.next().await else {
        panic!("handshake first")
    };
    assert_eq!(seen["host"], "public.example");
    assert_eq!(seen["x-forwarded-host"], "public.example");
}

/// Reads a request head byte by byte, up to its blank line (or the end).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    head
}

/// A hand-written backend on 127.0.0.1:0: reads one request head, then
/// writes `pieces` with a pause between them, then holds the connection.
async fn scripted_backend(pieces: Vec<Vec<u8>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        for piece in pieces {
            stream.write_all(&piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    addr
}

#[tokio::test]
async fn a_101_in_pieces_with_a_frame_right_behind_it_starts_the_session() {
    // The key raw_handshake sends is RFC 6455's sample; this is its accept.
    let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let (first, rest) = answer.as_bytes().split_at(20);
    let (middle, last) = rest.split_at(40);
    let mut last_and_frame = last.to_vec();
    last_and_frame.extend_from_slice(b"\x81\x05early");
    let backend = scripted_backend(vec![first.to_vec(), middle.to_vec(), last_and_frame]).await;
    let server = gateway(backend, "").await;
    let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw)).await;
    assert_eq!(
        frame.expect("frame in time"),
        Some((0x1, b"early".to_vec()))
    );
}

#[tokio::test]
async fn a_chunked_refusal_reaches_the_client_whole() {
    let refusal = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-Why: no room\r\n\r\n\
                    5\r\nno ro\r\n"
        .to_vec();
    let backend = scripted_backend(vec![refusal, b"3\r\nom!\r\n0\r\n\r\n".to_vec()]).await;
    let server = gateway(backend, "").await;
    let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-why: no room"),
        "{head}"
    );
    // Re-framed by the gateway: read up to the last chunk and take the framing out.
    let mut body = Vec::new();
    while !body.ends_with(b"0\r\n\r\n") {
        let mut chunk = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut chunk)).await;
        match read.expect("body in time") {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&body);
    let payload: String = text
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, part)| part)
        .collect();
    assert_eq!(payload, "no room!", "{text:?}");
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_a_502() {
    let backend = scripted_backend(vec![b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()]).await;
    let server = gateway(backend, "").await;
    let (_, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
}

#[tokio::test]
async fn a_malformed_101_from_the_backend_is_a_502() {
    let liar = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let liar_addr = liar.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = liar.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n";
        let _ = stream.write_all(answer.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let server = gateway(liar_addr, "").await;
    let (_, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
}

#[tokio::test]
async fn a_message_over_the_limit_gets_1009_and_the_backend_1001() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, ", max_message_size = \"1KiB\"").await;
    let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    raw.write_all(&masked(0x2, true, &[1u8; 1024]))
        .await
        .expect("exactly the limit");
    assert_eq!(
        backend.next_message().await,
        Some(Message::binary(vec![1u8; 1024]))
    );
    // Only the header of the oversized frame is needed for the verdict.
    raw.write_all(&masked(0x2, true, &[2u8; 1025])[..8])
        .await
        .expect("oversized header");
    assert_eq!(close_code(&mut raw).await, Some(1009));
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("backend close")
    };
    assert_eq!(u16::from(frame.code), 1001);
}

#[tokio::test]
async fn an_unmasked_client_frame_gets_1002() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let (mut raw, _) = raw_handshake(server.addr, "/chat", &[]).await;
    raw.write_all(&[0x81, 0x02, b'h', b'i'])
        .await
        .expect("unmasked frame");
    assert_eq!(close_code(&mut raw).await, Some(1002));
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("backend close")
    };
    assert_eq!(u16::from(frame.code), 1001);
}

#[tokio::test]
async fn a_backend_that_vanishes_mid_session_gives_the_client_1014() {
    let backend = RecordingBackend::start(Behaviour::VanishAfterFirstMessage).await;
    let server = gateway(backend.addr, "").await;
    // A raw client: tungstenite 0.30 predates the IANA registration of 1014
    // and would call it a protocol error (Node's ws and browsers accept it).
    let (mut raw, _) = raw_handshake(server.addr, "/chat", &[]).await;
    raw.write_all(&masked(0x1, true, b"hello"))
        .await
        .expect("send");
    assert_eq!(close_code(&mut raw).await, Some(1014));
}

#[tokio::test]
async fn a_client_that_vanishes_gives_the_backend_1001() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let (raw, _) = raw_handshake(server.addr, "/chat", &[]).await;
    drop(raw);
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("backend close")
    };
    assert_eq!(u16::from(frame.code), 1001);
}

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed_as_dead() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(
        backend.addr,
        ", ping_interval = \"200ms\", ping_timeout = \"200ms\"",
    )
    .await;
    // A raw socket that never answers: the gateway's ping goes unanswered.
    let (mut raw, _) = raw_handshake(server.addr, "/chat", &[]).await;
    let (opcode, payload) = read_frame(&mut raw).await.expect("the gateway's ping");
    assert_eq!((opcode, payload.len()), (0x9, 8));
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("backend close")
    };
    assert_eq!(u16::from(frame.code), 1001);
    // Counted as a dead peer: closed by the gateway, no close frame.
    let dead = [
        ("route", "chat"),
        ("initiator", "gateway"),
        ("code", "none"),
    ];
    eventually(Duration::from_secs(10), || async {
        let metrics = support::metrics::scrape(server.admin).await;
        (metrics.get("wsgate_ws_closes_total", &dead) == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_live_client_answers_pings_and_its_pongs_stay_at_the_gateway() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(
        backend.addr,
        ", ping_interval = \"100ms\", ping_timeout = \"2s\"",
    )
    .await;
    let mut client = connect(server.addr, "/chat").await;
    // tungstenite answers pings while it reads; read for several intervals.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, client.next()).await {
        pings += usize::from(matches!(message, Message::Ping(_)));
    }
    assert!(
        pings >= 2,
        "the gateway pinged a silent client ({pings} pings)"
    );
    client
        .send(Message::text("still here"))
        .await
        .expect("send");
    assert_eq!(receive(&mut client).await, Message::text("still here"));
    // The backend saw the text, and no pong.
    assert_eq!(
        backend.next_message().await,
        Some(Message::text("still here"))
    );
}

#[tokio::test]
async fn only_the_pong_answering_the_gateway_stays_at_the_gateway() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(
        backend.addr,
        ", ping_interval = \"100ms\", ping_timeout = \"5s\"",
    )
    .await;
    let (mut raw, _) = raw_handshake(server.addr, "/chat", &[]).await;
    let (opcode, ours) = read_frame(&mut raw).await.expect("the gateway's ping");
    assert_eq!((opcode, ours.len()), (0x9, 8));
    // A pong of the same length that answers something else goes through;
    // the one carrying the gateway's payload does not.
    let mut frames = masked(0xA, true, b"12345678");
    frames.extend(masked(0xA, true, &ours));
    frames.extend(masked(0x1, true, b"after"));
    raw.write_all(&frames).await.expect("write");
    assert_eq!(
        backend.next_message().await,
        Some(Message::Pong(b"12345678".to_vec().into()))
    );
    assert_eq!(backend.next_message().await, Some(Message::text("after")));
}

#[tokio::test]
async fn an_idle_session_is_closed_with_1001() {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(
        backend.addr,
        ", idle_timeout = \"300ms\", ping_interval = \"0s\"",
    )
    .await;
    let mut client = connect(server.addr, "/chat").await;
    let Message::Close(Some(frame)) = receive(&mut client).await else {
        panic!("close expected")
    };
    assert_eq!(u16::from(frame.code), 1001);
}

#[tokio::test]
async fn sixteen_sessions_at_once() {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let sessions = (0..16).map(|i| {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut client = connect(addr, "/chat").await;
            for n in 0..20 {
                let text = format!("session {i} message {n}");
                client
                    .send(Message::text(text.clone()))
                    .await
                    .expect("send");
                assert_eq!(receive(&mut client).await, Message::text(text));
            }
            client.close(None).await.expect("close");
        })
    });
    for session in sessions.collect::<Vec<_>>() {
        session.await.expect("session task");
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_back_the_backend() {
    let mut backend = RecordingBackend::start(Behaviour::Flood).await;
    let server = gateway(backend.addr, "").await;
    let (_raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let _ = backend.next().await; // the handshake
    let Seen::Flooded(sent) = backend.next().await else {
        panic!("flood report")
    };
    // Without backpressure the gateway would accept gigabytes in 2 s; with it,
    // only the sockets' kernel buffers and one chunk fill up.
    assert!(
        sent < 64 * 1024 * 1024,
        "the backend pushed {sent} bytes past a client that reads nothing"
    );
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_on_both_sides() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let mut server = gateway(backend.addr, "").await;
    let mut client = connect(server.addr, "/chat").await;
    client.send(Message::text("before")).await.expect("send");
    assert_eq!(receive(&mut client).await, Message::text("before"));
    server.begin_shutdown();
    let Message::Close(Some(frame)) = receive(&mut client).await else {
        panic!("close expected")
    };
    assert_eq!(u16::from(frame.code), 1001);
    let mut backend_close = None;
    while let Some(message) = backend.next_message().await {
        if let Message::Close(frame) = message {
            backend_close = frame;
            break;
        }
    }
    assert_eq!(backend_close.map(|f| u16::from(f.code)), Some(1001));
    drop(client);
    server.stopped(Duration::from_secs(10)).await;
}

/// A backend on 127.0.0.1:0 that answers one upgrade (the key
/// `raw_handshake` sends) and keeps every byte the gateway sends after it,
/// readable while they arrive.
async fn recording_raw_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&received);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        stream.write_all(answer.as_bytes()).await.expect("101");
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(read @ 1..) = stream.read(&mut chunk).await {
            keep.lock().expect("lock").extend_from_slice(&chunk[..read]);
        }
    });
    (addr, received)
}

#[tokio::test]
async fn a_large_frame_in_flight_is_finished_before_the_drain_close() {
    // Past its first read, the frame's payload goes from socket to socket
    // in the kernel (splice) while the parser only counts it; the close must
    // still wait for the frame's last byte, even when one splice takes the
    // whole rest of the frame (the last 20 KiB, sent in one write).
    let (backend, received) = recording_raw_backend().await;
    let mut server = gateway(backend, "").await;
    let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let frame = masked(0x2, true, &payload);
    let (first, rest) = frame.split_at(frame.len() - 20 * 1024);
    raw.write_all(first).await.expect("most of the frame");
    eventually(Duration::from_secs(10), || async {
        (received.lock().expect("lock").len() == first.len()).then_some(())
    })
    .await;
    server.begin_shutdown();
    assert_eq!(close_code(&mut raw).await, Some(1001), "the client's close");
    raw.write_all(rest).await.expect("the frame's last bytes");
    let after = eventually(Duration::from_secs(10), || async {
        let received = received.lock().expect("lock");
        // The close: opcode, masked length, key, then the masked code.
        (received.len() >= frame.len() + 8).then(|| received.clone())
    })
    .await;
    assert!(
        after[..frame.len()] == frame[..],
        "the frame arrives unchanged"
    );
    let close = &after[frame.len()..];
    assert_eq!(close[0], 0x88, "a close frame follows the frame");
    let key = &close[2..6];
    let code = u16::from_be_bytes([close[6] ^ key[0], close[7] ^ key[1]]);
    assert_eq!(code, 1001);
}

#[tokio::test]
async fn the_demo_echo_route_works() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(wsgate::echo::serve(echo));
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server =
        TestServer::start_model(test_dir(), wsgate::demo::model(any, any, echo_addr)).await;
    let mut client = connect(server.addr, "/echo").await;
    client
        .send(Message::text("hello demo"))
        .await
        .expect("send");
    assert_eq!(receive(&mut client).await, Message::text("hello demo"));
}

#[tokio::test]
async fn handshake_fields_that_an_intermediary_must_check() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    let other_key = ("Sec-WebSocket-Key", "AQIDBAUGBwgJCgsMDQ4PEA==");
    // RFC 6455 §11.3.1: the key (and the version) appear once.
    let (_, head) = raw_handshake(server.addr, "/chat", &[key, other_key]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let version = ("Sec-WebSocket-Version", "13");
    let (_, head) = raw_handshake(server.addr, "/chat", &[version, version]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // A body behind a GET handshake would be read by whoever takes the stream next.
    let (_, head) = raw_handshake(server.addr, "/chat", &[("Content-Length", "5")]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (_, head) = raw_handshake(server.addr, "/chat", &[("Transfer-Encoding", "chunked")]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // A client that names the key as hop-by-hop still gets its session:
    // the gateway forwards what it validated.
    let (_, head) = raw_handshake(
        server.addr,
        "/chat",
        &[(
            "Connection",
            "Upgrade, Sec-WebSocket-Key, Sec-WebSocket-Version",
        )],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("the backend got no handshake");
    };
    assert_eq!(headers["sec-websocket-key"], key.1);
    assert_eq!(headers["sec-websocket-version"], "13");
}

#[tokio::test]
async fn a_backend_refusal_whose_body_stalls_is_cut_off() {
    let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend_addr = backend.local_addr().expect("addr");
    let stalling = tokio::spawn(async move {
        let (mut stream, _) = backend.accept().await.expect("accept");
        read_head(&mut stream).await;
        let refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nnot all of it";
        stream.write_all(refusal).await.expect("write refusal");
        // Never the rest: hold the connection open.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let server = gateway(backend_addr, ", connect_timeout = \"500ms\"").await;
    let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut body = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut body)).await;
    assert!(read.is_ok(), "the stalled body was not cut off");
    assert!(body.len() < 100, "a truncated body looked complete");
    stalling.abort();
}

#[tokio::test]
async fn client_ip_headers_from_untrusted_clients_are_removed() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let forged = [
        ("X-Real-IP", "6.6.6.6"),
        ("True-Client-IP", "6.6.6.6"),
        ("X-App", "kept"),
    ];
    let server = gateway(backend.addr, "").await;
    let (_, head) = raw_handshake(server.addr, "/chat", &forged).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("no handshake");
    };
    assert!(headers.get("x-real-ip").is_none(), "{headers:?}");
    assert!(headers.get("true-client-ip").is_none(), "{headers:?}");
    assert_eq!(headers["x-app"], "kept");
    // From a trusted proxy they are the proxy's to set, and pass.
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let config = format!(
        "trusted_proxies = [\"127.0.0.0/8\"]\nclient_ip_headers = [\"X-Real-IP\"]\n{LISTENERS}\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n",
        backend.addr
    );
    let trusting = TestServer::start_whole(test_dir(), &config).await;
    let (_, head) = raw_handshake(trusting.addr, "/chat", &forged).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("no handshake");
    };
    assert_eq!(headers["x-real-ip"], "6.6.6.6");
}

#[tokio::test]
async fn close_frames_with_codes_or_reasons_no_peer_may_send_are_refused() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = gateway(backend.addr, "").await;
    // 1005 and 1006 only report what happened locally; 1016 is unassigned.
    for (payload, expected) in [
        (1005u16.to_be_bytes().to_vec(), 1002),
        (1016u16.to_be_bytes().to_vec(), 1002),
        ([&1000u16.to_be_bytes()[..], &[0xff, 0xfe]].concat(), 1007),
    ] {
        let (mut raw, head) = raw_handshake(server.addr, "/chat", &[]).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.write_all(&masked(0x8, true, &payload))
            .await
            .expect("close frame");
        assert_eq!(close_code(&mut raw).await, Some(expected), "{payload:?}");
        let seen = backend.next_message().await;
        let Some(Message::Close(Some(frame))) = seen else {
            panic!("backend close, not {seen:?} ({payload:?})")
        };
        assert_eq!(
            u16::from(frame.code),
            1001,
            "the backend never sees the bad close"
        );
        assert_eq!(backend.next_message().await, None, "the session ended");
    }
    // A valid close passes as it was sent.
    let (mut raw, _) = raw_handshake(server.addr, "/chat", &[]).await;
    raw.write_all(&masked(
        0x8,
        true,
        &[&4000u16.to_be_bytes()[..], b"bye"].concat(),
    ))
    .await
    .expect("close frame");
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("backend close")
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, "bye")
    );
    assert_eq!(close_code(&mut raw).await, Some(4000));
}

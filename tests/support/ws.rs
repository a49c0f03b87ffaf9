//! WebSocket peers for tests: a recording backend built on tungstenite, a
//! tungstenite client, and a raw client for frames no library would send.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What a recording backend does with each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Echo data messages; record everything.
    Echo,
    /// Close the TCP connection without a close frame after the first message.
    VanishAfterFirstMessage,
    /// Send binary messages of 64 KiB as fast as the socket takes them, counting bytes.
    Flood,
    /// Close with 4000 "backend bye" after the first message.
    CloseAfterFirstMessage,
}

/// Something a backend session saw.
#[derive(Debug)]
pub enum Seen {
    Handshake(HeaderMap, String),
    Message(Message),
    /// The TCP connection ended; the close frame received before, if any.
    Ended,
    Flooded(u64),
}

/// A backend on 127.0.0.1:0 reporting what its sessions see.
pub struct RecordingBackend {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

impl RecordingBackend {
    pub async fn start(behaviour: Behaviour) -> RecordingBackend {
        Self::start_with(behaviour, None).await
    }

    /// A backend that speaks TLS (a `wss://` backend) when given an acceptor.
    pub async fn start_with(behaviour: Behaviour, tls: Option<TlsAcceptor>) -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let (report, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let report = report.clone();
                match &tls {
                    None => drop(tokio::spawn(session(stream, behaviour, report))),
                    Some(acceptor) => {
                        let accepting = acceptor.accept(stream);
                        tokio::spawn(async move {
                            if let Ok(stream) = accepting.await {
                                session(stream, behaviour, report).await;
                            }
                        });
                    }
                }
            }
        });
        RecordingBackend { addr, seen }
    }

    /// The next thing seen, within a generous bound.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("backend saw nothing in time")
            .expect("backend gone")
    }

    /// Skips to the next message (or end) seen.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            match self.next().await {
                Seen::Message(message) => return Some(message),
                Seen::Ended => return None,
                _ => {}
            }
        }
    }
}

async fn session<S>(stream: S, behaviour: Behaviour, report: mpsc::UnboundedSender<Seen>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake_report = report.clone();
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let callback = move |request: &WsRequest, response: WsResponse| {
        let target = request.uri().to_string();
        let _ = handshake_report.send(Seen::Handshake(request.headers().clone(), target));
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    if behaviour == Behaviour::Flood {
        let mut sent = 0u64;
        let chunk = vec![0u8; 64 * 1024];
        let flood = async {
            while socket.send(Message::binary(chunk.clone())).await.is_ok() {
                sent += chunk.len() as u64;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), flood).await;
        let _ = report.send(Seen::Flooded(sent));
        return;
    }
    while let Some(message) = socket.next().await {
        let Ok(message) = message else { break };
        let _ = report.send(Seen::Message(message.clone()));
        match (behaviour, &message) {
            (Behaviour::VanishAfterFirstMessage, Message::Text(_) | Message::Binary(_)) => {
                let _ = report.send(Seen::Ended);
                return;
            }
            (Behaviour::CloseAfterFirstMessage, Message::Text(_) | Message::Binary(_)) => {
                let frame = CloseFrame {
                    code: CloseCode::from(4000),
                    reason: "backend bye".into(),
                };
                let _ = socket.close(Some(frame)).await;
            }
            (_, Message::Text(_) | Message::Binary(_))
                if socket.send(message.clone()).await.is_err() =>
            {
                break;
            }
            _ => {}
        }
    }
    let _ = report.send(Seen::Ended);
}

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A tungstenite client connected through the gateway.
pub async fn connect(addr: SocketAddr, path: &str) -> Client {
    let (client, response) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("websocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    client
}

/// The next message that is not a ping or pong, within a generous bound.
pub async fn receive<S>(client: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("no message in time")
            .expect("stream ended")
            .expect("websocket error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// A raw handshake through the gateway: the socket and the response head.
pub async fn raw_handshake(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    let defaults = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for (name, value) in defaults {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
        match read.expect("handshake answer in time") {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Reads one unmasked frame (as a server or the gateway sends): opcode and payload.
/// `None` when the connection ends first.
pub async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.ok()?;
    let len = match head[1] & 0x7F {
        126 => u64::from(stream.read_u16().await.ok()?),
        127 => stream.read_u64().await.ok()?,
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0F, payload))
}

/// The close code of the next close frame on a raw socket, skipping other frames.
pub async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    let wait = async {
        while let Some((opcode, payload)) = read_frame(stream).await {
            if opcode == 0x8 {
                return payload
                    .get(..2)
                    .map(|code| u16::from_be_bytes([code[0], code[1]]));
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("close frame in time")
}

/// A client frame: masked with a fixed key.
pub fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

//! Faults across a real network path: the client sits in a network
//! namespace of its own, joined to the gateway by a veth pair this test
//! makes (and removes), with `tc tbf` shaping the link. Messages keep their
//! order and arrive whole through a slow link, and a link cut mid-session
//! (both ends half-open) is found by the gateway's pings within
//! `ping_interval + ping_timeout`, and the backend gets its close. (This
//! kernel has no `netem`.) A fault-injecting relay on loopback adds what a
//! link cannot: a fixed delay per chunk, a stall in the middle of a frame,
//! and a reset.
//!
//! The namespace test needs root and `ip netns`; where either is missing it
//! says so on stderr and passes without running (`-- --nocapture` shows it).

mod support;

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::time::{Duration, Instant};

use support::process::Process;
use support::ws::{masked, Behaviour, RecordingBackend};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A namespace with one end of a veth pair; the other end stays here.
struct Link {
    namespace: String,
    host_side: String,
    host_ip: &'static str,
    client_ip: &'static str,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

impl Link {
    /// `None` (and a line on stderr) when namespaces cannot be made here.
    fn create() -> Option<Link> {
        let id = std::process::id() % 10_000;
        let link = Link {
            namespace: format!("wsgate-test-{id}"),
            host_side: format!("wsgh{id}"),
            host_ip: "10.203.7.1",
            client_ip: "10.203.7.2",
        };
        let peer = format!("wsgc{id}");
        let ns = link.namespace.as_str();
        let made = ip(&["netns", "add", ns])
            && ip(&[
                "link",
                "add",
                &link.host_side,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])
            && ip(&["link", "set", &peer, "netns", ns])
            && ip(&["addr", "add", "10.203.7.1/30", "dev", &link.host_side])
            && ip(&["link", "set", &link.host_side, "up"])
            && ip(&[
                "netns",
                "exec",
                ns,
                "ip",
                "addr",
                "add",
                "10.203.7.2/30",
                "dev",
                &peer,
            ])
            && ip(&["netns", "exec", ns, "ip", "link", "set", &peer, "up"])
            && ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        if !made {
            eprintln!("SKIPPED: cannot make network namespaces here (needs root and iproute2)");
            drop(link);
            return None;
        }
        Some(link)
    }

    /// Shapes the gateway → client direction: `rate`, queueing up to `latency`.
    fn shape(&self, rate: &str, latency: &str) {
        let shaped = Command::new("tc")
            .args([
                "qdisc",
                "add",
                "dev",
                &self.host_side,
                "root",
                "tbf",
                "rate",
                rate,
            ])
            .args(["burst", "16kb", "latency", latency])
            .status()
            .is_ok_and(|s| s.success());
        assert!(shaped, "tc tbf on {}", self.host_side);
    }

    fn cut(&self) {
        assert!(ip(&["link", "set", &self.host_side, "down"]), "link down");
    }

    /// A TCP connection to `addr` made from inside the namespace: the
    /// socket keeps its namespace when handed back to this thread's runtime.
    fn connect_from_inside(&self, addr: std::net::SocketAddr) -> TcpStream {
        let path = format!("/var/run/netns/{}", self.namespace);
        let stream = std::thread::spawn(move || {
            let namespace = File::open(&path).expect("open the namespace");
            // SAFETY: setns on this short-lived thread only; the fd is valid
            // for the call and the thread ends right after connecting.
            let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
        })
        .join()
        .expect("connecting thread");
        stream.set_nonblocking(true).expect("nonblocking");
        TcpStream::from_std(stream).expect("tokio stream")
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the pair, and so the pair.
        ip(&["netns", "del", &self.namespace]);
        ip(&["link", "del", &self.host_side]);
    }
}

/// The opening handshake on `stream`; returns the response head.
async fn handshake(stream: &mut TcpStream) -> String {
    let request = "GET /chat HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream
        .write_all(request.as_bytes())
        .await
        .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("handshake answer in time");
        if read.expect("read") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn sessions_survive_a_slow_link_and_a_cut_one_is_found_by_pings() {
    let Some(link) = Link::create() else { return };
    link.shape("4mbit", "400ms");
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    let config = format!(
        "[[listeners]]\nbind = \"{}:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"], ping_interval = \"1s\", ping_timeout = \"1s\" }}\n",
        link.host_ip, backend.addr
    );
    let file = write_file(dir.path(), "wsgate.toml", config);
    let process = Process::run_config(&file);
    let addr = process.addr().await;
    assert_eq!(addr.ip().to_string(), link.host_ip);

    let gateway_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", process.child.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };
    let fds_before = gateway_fds();
    let mut client = link.connect_from_inside(addr);
    assert_eq!(
        client.local_addr().expect("local").ip().to_string(),
        link.client_ip
    );
    let head = handshake(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // 200 numbered 4 KiB messages through a 4 Mbit/s link, both ways.
    let started = Instant::now();
    let (mut reader, mut writer) = client.into_split();
    let sending = tokio::spawn(async move {
        for n in 0..200u32 {
            let mut payload = n.to_be_bytes().to_vec();
            payload.resize(4096, (n % 251) as u8);
            writer
                .write_all(&masked(0x2, true, &payload))
                .await
                .expect("send");
        }
        writer
    });
    for n in 0..200u32 {
        let frame = tokio::time::timeout(Duration::from_secs(20), read_frame_from(&mut reader))
            .await
            .expect("echo in time")
            .expect("an echo, not the end");
        assert_eq!(frame.0, 0x2);
        assert_eq!(frame.1.len(), 4096, "message {n} whole");
        assert_eq!(frame.1[..4], n.to_be_bytes(), "message {n} in order");
    }
    let writer = sending.await.expect("sender");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "the link was not shaped: {took:?}"
    );
    // Drain what the backend recorded so far.
    let mut seen = 0;
    while seen < 200 {
        if let Some(Message::Binary(_)) = backend.next_message().await {
            seen += 1;
        }
    }
    // Cut the link: neither end hears of it; the gateway's unanswered ping does.
    let cut_at = Instant::now();
    link.cut();
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("the backend got no close:\n{}", process.log());
    };
    let noticed = cut_at.elapsed();
    assert_eq!(u16::from(frame.code), 1001);
    assert!(
        noticed <= Duration::from_millis(2000 + 1500),
        "found after {noticed:?}, not within ping_interval + ping_timeout"
    );
    // The dead session's client and backend sockets are gone, not leaked.
    eventually(Duration::from_secs(5), || async {
        (gateway_fds() <= fds_before).then_some(())
    })
    .await;
    drop((reader, writer));
}

/// `read_frame` on the read half of a split stream.
async fn read_frame_from(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).await.ok()?;
            u64::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext).await.ok()?;
            u64::from_be_bytes(ext)
        }
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0f, payload))
}

/// What the fault-injecting relay does to the client → gateway direction.
#[derive(Clone, Copy)]
enum Fault {
    /// Every chunk waits this long before it goes on.
    Delay(Duration),
    /// After this many bytes, nothing for the given time, then the rest.
    Stall(usize, Duration),
    /// After this many bytes, the connection is reset (RST, not FIN).
    Reset(usize),
}

/// A TCP relay on 127.0.0.1 in front of `target`, applying `fault` to what
/// the client sends; the other direction passes unchanged.
async fn faulty_relay(target: std::net::SocketAddr, fault: Fault) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let upstream = TcpStream::connect(target).await.expect("relay to gateway");
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_gateway, mut to_gateway) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_gateway, &mut to_client).await;
        });
        let mut sent = 0usize;
        let mut buf = vec![0u8; 1024];
        loop {
            let Ok(read) = from_client.read(&mut buf).await else {
                return;
            };
            if read == 0 {
                return;
            }
            let mut chunk = &buf[..read];
            match fault {
                Fault::Delay(wait) => tokio::time::sleep(wait).await,
                Fault::Stall(at, wait) if sent < at && sent + chunk.len() >= at => {
                    let (before, after) = chunk.split_at(at - sent);
                    to_gateway.write_all(before).await.expect("relay");
                    sent += before.len();
                    tokio::time::sleep(wait).await;
                    chunk = after;
                }
                Fault::Reset(at) if sent + chunk.len() >= at => {
                    // Linger 0: closing sends RST, as a crashed client's kernel would.
                    let socket = socket2::SockRef::from(to_gateway.as_ref());
                    socket.set_linger(Some(Duration::ZERO)).expect("linger");
                    return;
                }
                _ => {}
            }
            to_gateway.write_all(chunk).await.expect("relay");
            sent += chunk.len();
        }
    });
    addr
}

/// A gateway for the relay tests: `/chat` to `backend`, pings as `pings` says.
async fn relay_gateway(backend: std::net::SocketAddr, pings: &str) -> TestServer {
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{backend}\"]{pings} }}\n"
    );
    TestServer::start_in(test_dir(), &config).await
}

/// Sends `count` numbered text messages on `stream` and checks that the
/// backend gets each, whole and in order.
async fn numbered_messages_pass(
    stream: &mut TcpStream,
    backend: &mut RecordingBackend,
    count: u32,
) {
    for n in 0..count {
        let text = format!("{n:04}{}", "x".repeat(300));
        stream
            .write_all(&masked(0x1, true, text.as_bytes()))
            .await
            .expect("send");
    }
    for n in 0..count {
        let expected = format!("{n:04}{}", "x".repeat(300));
        assert_eq!(
            backend.next_message().await,
            Some(Message::text(expected)),
            "message {n}"
        );
    }
}

#[tokio::test]
async fn a_slow_or_stalling_client_loses_nothing_and_a_reset_one_is_closed() {
    // Every chunk 5 ms late: order and content hold.
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = relay_gateway(backend.addr, "").await;
    let relay = faulty_relay(server.addr, Fault::Delay(Duration::from_millis(5))).await;
    let mut stream = TcpStream::connect(relay).await.expect("connect");
    assert!(handshake(&mut stream).await.starts_with("HTTP/1.1 101"));
    numbered_messages_pass(&mut stream, &mut backend, 50).await;

    // A stall in the middle of a frame, shorter than the ping deadline:
    // the frame is completed later and the session goes on.
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = relay_gateway(
        backend.addr,
        ", ping_interval = \"1s\", ping_timeout = \"2s\"",
    )
    .await;
    // The handshake request is 150 bytes; the first frame (310 bytes) follows.
    let head_len = 150;
    let relay = faulty_relay(
        server.addr,
        Fault::Stall(head_len + 100, Duration::from_millis(1500)),
    )
    .await;
    let mut stream = TcpStream::connect(relay).await.expect("connect");
    assert!(handshake(&mut stream).await.starts_with("HTTP/1.1 101"));
    numbered_messages_pass(&mut stream, &mut backend, 10).await;

    // A client whose connection is reset mid-session: the backend gets a close.
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let server = relay_gateway(backend.addr, "").await;
    let relay = faulty_relay(server.addr, Fault::Reset(400)).await;
    let mut stream = TcpStream::connect(relay).await.expect("connect");
    assert!(handshake(&mut stream).await.starts_with("HTTP/1.1 101"));
    let _ = stream.write_all(&masked(0x1, true, &[b'a'; 500])).await;
    let Some(Message::Close(Some(frame))) = backend.next_message().await else {
        panic!("the backend got no close after the client's reset");
    };
    assert_eq!(u16::from(frame.code), 1001);
}

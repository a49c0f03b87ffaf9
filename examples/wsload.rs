//! wsload: the WebSocket load generator behind `bench/websocket.sh`.
//!
//! ```text
//! wsload echo       --url ws://127.0.0.1:PORT/path [--connections 100] [--size 64] [--seconds 5]
//! wsload bulk       --url ... [--size 1048576] [--count 200] [--window 4] [--connections 1]
//! wsload idle       --url ... [--connections 5000] [--hold-seconds 10] [--open-concurrency 100]
//! wsload handshakes --url ... [--connections 50] [--seconds 5]
//! common:           [--threads N]  (runtime worker threads; default: all cores)
//!                   [--ca FILE]    (PEM roots for wss:// URLs)
//!                   [--h2]         (wss:// only: every session a stream of
//!                                   one HTTP/2 connection, RFC 8441)
//!                   [--resume 1]   (wss:// only: resume TLS sessions)
//! ```
//!
//! `wss://` URLs work for echo, idle and handshakes (bulk measures relaying
//! large frames and stays on plaintext); each wss session is a full TLS
//! handshake, no resumption, like a fresh browser tab. With `--resume 1`,
//! connections resume the sessions earlier ones got (TLS 1.3 tickets, as a
//! returning browser does), and `resumed=` says how many did. With `--h2`, one TLS
//! connection is made (ALPN h2) and each session is an extended CONNECT on
//! it, as a browser that already has the page's connection does: echo
//! measures relaying on streams, handshakes measures what opening and
//! closing a session costs without a new connection.
//!
//! It has to cost far less CPU than the gateway it measures, because on a
//! benchmark machine it shares the cores with the gateway and the backend.
//! So it uses no WebSocket library: raw tokio `TcpStream`s, a hand-written
//! upgrade request, data frames encoded (and masked, as RFC 6455 §5.3 wants
//! of clients) once at startup and then only written, and a minimal reader
//! for the server's unmasked frames that compares each echo with what was
//! sent without copying it anywhere.
//!
//! Output is for scripts: lines of `key=value`, plus bare marker lines.
//! `start` and `done` bracket the measured window (after every connection is
//! open, before any is closed), so a script can read the server's CPU time
//! at those moments; `idle` prints `ready` once all its sessions are open.
//! Problems go to stderr (the first few of each run) and into `errors=`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_rustls::TlsConnector;
use wsgate::websocket::frame::{encode, encode_close, OpCode};

const USAGE: &str = "usage: wsload echo|bulk|idle|handshakes --url ws://HOST:PORT/PATH [options]
  echo        --connections 100 --size 64 --seconds 5
  bulk        --connections 1 --size 1048576 --count 200 --window 4
  idle        --connections 5000 --hold-seconds 10 --open-concurrency 100
  handshakes  --connections 50 --seconds 5
  any         --threads N (tokio worker threads; default: number of cores)
              --ca FILE (PEM certificates trusted for wss:// URLs)
              --h2 1 (wss:// only: sessions are streams of one HTTP/2 connection)
              --resume 1 (wss:// only: resume TLS sessions with tickets)";

/// Connections whose TLS handshake resumed a session.
static RESUMED: AtomicUsize = AtomicUsize::new(0);

/// The key from RFC 6455 §1.3 and its accept value. One fixed key is fine for
/// load: servers only hash it, and checking a known answer needs no SHA-1.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Bound on the closing handshake at the end of a session.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Bound on connecting plus the upgrade answer.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// How many problems are described on stderr before the rest are only counted.
const MAX_REPORTED: usize = 5;

// ---------------------------------------------------------------------------
// arguments

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Echo,
    Bulk,
    Idle,
    Handshakes,
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    /// `Host` header value: the URL's authority as written.
    host: String,
    path: String,
    /// For `wss://`: the TLS client and the name to verify.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// With `--h2`: the HTTP/2 connection whose streams the sessions are.
    h2: Option<h2::client::SendRequest<bytes::Bytes>>,
}

struct Args {
    mode: Mode,
    target: Target,
    connections: usize,
    size: usize,
    seconds: f64,
    count: u64,
    window: usize,
    hold_seconds: f64,
    open_concurrency: usize,
    threads: usize,
    ca: Option<String>,
    h2: bool,
    resume: bool,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("wsload: {msg}\n{USAGE}");
    std::process::exit(64);
}

fn parse_args() -> Args {
    let mut argv = std::env::args().skip(1);
    let mode = match argv.next().as_deref() {
        Some("echo") => Mode::Echo,
        Some("bulk") => Mode::Bulk,
        Some("idle") => Mode::Idle,
        Some("handshakes") => Mode::Handshakes,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        other => usage_exit(&format!("unknown subcommand {other:?}")),
    };
    // Defaults per mode follow the benchmark's usual figures.
    let mut args = Args {
        mode,
        target: Target {
            addr: ([127, 0, 0, 1], 80).into(),
            host: String::new(),
            path: String::new(),
            tls: None,
            h2: None,
        },
        connections: match mode {
            Mode::Echo => 100,
            Mode::Bulk => 1,
            Mode::Idle => 5000,
            Mode::Handshakes => 50,
        },
        size: if mode == Mode::Bulk { 1 << 20 } else { 64 },
        seconds: 5.0,
        count: 200,
        window: 4,
        hold_seconds: 10.0,
        open_concurrency: 100,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        ca: None,
        h2: false,
        resume: false,
    };
    let mut url = None;
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .unwrap_or_else(|| usage_exit(&format!("{flag} needs a value")));
        let num = |v: &str| -> f64 {
            v.parse()
                .unwrap_or_else(|_| usage_exit(&format!("{flag}: not a number: {v}")))
        };
        match flag.as_str() {
            "--url" => url = Some(value),
            "--connections" => args.connections = num(&value) as usize,
            "--size" => args.size = num(&value) as usize,
            "--seconds" => args.seconds = num(&value),
            "--count" => args.count = num(&value) as u64,
            "--window" => args.window = num(&value) as usize,
            "--hold-seconds" => args.hold_seconds = num(&value),
            "--open-concurrency" => args.open_concurrency = num(&value) as usize,
            "--threads" => args.threads = num(&value) as usize,
            "--ca" => args.ca = Some(value),
            "--h2" => args.h2 = num(&value) != 0.0,
            "--resume" => args.resume = num(&value) != 0.0,
            _ => usage_exit(&format!("unknown option {flag}")),
        }
    }
    let url = url.unwrap_or_else(|| usage_exit("--url is required"));
    args.target = parse_url(&url, args.ca.as_deref(), args.h2, args.resume)
        .unwrap_or_else(|e| usage_exit(&e));
    if args.resume && args.target.tls.is_none() {
        usage_exit("--resume is for wss:// URLs");
    }
    if args.h2 && (args.target.tls.is_none() || matches!(args.mode, Mode::Bulk | Mode::Idle)) {
        usage_exit("--h2 is for echo and handshakes with a wss:// URL");
    }
    if args.mode == Mode::Bulk && args.target.tls.is_some() {
        usage_exit("bulk measures plaintext relaying: give it a ws:// URL");
    }
    if args.connections == 0 || args.window == 0 || args.threads == 0 || args.open_concurrency == 0
    {
        usage_exit("--connections, --window, --threads and --open-concurrency must be at least 1");
    }
    args
}

/// `ws[s]://host[:port][/path]`, resolved once here so that the handshakes
/// mode measures connections, not name lookups.
fn parse_url(url: &str, ca: Option<&str>, h2: bool, resume: bool) -> Result<Target, String> {
    let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, with_port) = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => (host, authority.to_owned()),
        _ => (
            authority,
            format!("{authority}:{}", if secure { 443 } else { 80 }),
        ),
    };
    let tls = if secure {
        let ca = ca.ok_or_else(|| format!("{url}: wss:// needs --ca FILE"))?;
        Some((
            tls_connector(ca, h2, resume)?,
            ServerName::try_from(host.to_owned()).map_err(|e| format!("{url}: {e}"))?,
        ))
    } else {
        None
    };
    use std::net::ToSocketAddrs;
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
        tls,
        h2: None,
    })
}

/// A TLS client trusting the certificates in the PEM file `ca`, offering
/// only HTTP/2 by ALPN with `h2`, resuming sessions with `resume`.
fn tls_connector(ca: &str, h2: bool, resume: bool) -> Result<TlsConnector, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        let cert = cert.map_err(|e| format!("{ca}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{ca}: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every session pays a full handshake, as a first visit does, unless
    // resumption is what is measured (each loop then gets a cache of its
    // own in `handshakes`, as each returning browser has).
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A session's byte stream: plaintext, TLS over it, or a stream of an
/// HTTP/2 connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    H2(Box<H2Session>),
}

/// A WebSocket on an HTTP/2 stream: writes become DATA frames at once (a
/// closed loop keeps a message or two in flight, far inside any window);
/// reads hand back the window as they take bytes.
struct H2Session {
    send: h2::SendStream<bytes::Bytes>,
    recv: h2::RecvStream,
    pending: bytes::Bytes,
}

impl H2Session {
    fn poll_read(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        while self.pending.is_empty() {
            match self.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }

    fn write(&mut self, bytes: &[u8], end: bool) -> io::Result<usize> {
        self.send
            .send_data(bytes::Bytes::copy_from_slice(bytes), end)
            .map_err(io::Error::other)?;
        Ok(bytes.len())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::H2(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::H2(s) => std::task::Poll::Ready(s.write(buf, false)),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Stream::H2(_) => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::H2(s) => std::task::Poll::Ready(s.write(&[], true).map(|_| ())),
        }
    }
}

/// Writes all of `bytes` and pushes them out: a TLS stream may hold
/// ciphertext until flushed.
async fn send(stream: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

// ---------------------------------------------------------------------------
// opening a session

/// An open WebSocket client session: the socket and a reader holding any
/// bytes that arrived with the server's 101.
struct Session {
    stream: Stream,
    reader: FrameReader,
}

/// Connects, sends the upgrade request and checks the 101 answer.
async fn open(target: &Target, read_buf: usize) -> io::Result<Session> {
    tokio::time::timeout(OPEN_WAIT, open_inner(target, read_buf))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "upgrade timed out")))
}

async fn open_inner(target: &Target, read_buf: usize) -> io::Result<Session> {
    if let Some(connection) = &target.h2 {
        return open_stream(connection.clone(), target, read_buf).await;
    }
    let tcp = TcpStream::connect(target.addr).await?;
    // Small messages go out as one write each; do not let Nagle hold the
    // close frame that follows an echo, nor add delay to any round trip.
    tcp.set_nodelay(true)?;
    let mut stream = match &target.tls {
        None => Stream::Plain(tcp),
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), tcp).await?;
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                RESUMED.fetch_add(1, Ordering::Relaxed);
            }
            Stream::Tls(Box::new(tls))
        }
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, target.host
    );
    send(&mut stream, request.as_bytes()).await?;

    // Read until the end of the answer's head; whatever follows it is the
    // first bytes of the frame stream.
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid(
                "server closed the connection before answering the upgrade",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 * 1024 {
            return Err(invalid("upgrade answer head larger than 16 KiB"));
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let status = text.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        return Err(invalid(&format!("upgrade answered {status:?}")));
    }
    let accept_ok = text.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == WS_ACCEPT
        })
    });
    if !accept_ok {
        return Err(invalid("101 without the right Sec-WebSocket-Accept"));
    }
    Ok(Session {
        stream,
        reader: FrameReader::new(read_buf, &head[end..]),
    })
}

/// The HTTP/2 connection (TLS, ALPN h2) the `--h2` sessions share, once
/// the server has said it takes WebSockets on streams.
async fn h2_connection(target: &Target) -> io::Result<h2::client::SendRequest<bytes::Bytes>> {
    let Some((connector, name)) = &target.tls else {
        return Err(invalid("--h2 needs a wss:// URL"));
    };
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(name.clone(), tcp).await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(invalid("the server did not choose h2 by ALPN"));
    }
    let (client, connection) = h2::client::Builder::new()
        .handshake(tls)
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("wsload: h2 connection: {e}");
        }
    });
    let mut client = client.ready().await.map_err(io::Error::other)?;
    // The server's SETTINGS arrive with the connection's first turns.
    let waited = Instant::now();
    while !client.is_extended_connect_protocol_enabled() {
        if waited.elapsed() > OPEN_WAIT {
            return Err(invalid("the server does not offer extended CONNECT"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        client = client.ready().await.map_err(io::Error::other)?;
    }
    Ok(client)
}

/// Opens a session as an extended CONNECT (RFC 8441 §4) on `connection`.
async fn open_stream(
    connection: h2::client::SendRequest<bytes::Bytes>,
    target: &Target,
    read_buf: usize,
) -> io::Result<Session> {
    let mut connection = connection.ready().await.map_err(io::Error::other)?;
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{}{}", target.host, target.path))
        .header("sec-websocket-version", "13")
        .body(())
        .map_err(io::Error::other)?;
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = connection
        .send_request(request, false)
        .map_err(io::Error::other)?;
    let response = response.await.map_err(io::Error::other)?;
    if response.status() != http::StatusCode::OK {
        return Err(invalid(&format!("CONNECT answered {}", response.status())));
    }
    Ok(Session {
        stream: Stream::H2(Box::new(H2Session {
            send,
            recv: response.into_body(),
            pending: bytes::Bytes::new(),
        })),
        reader: FrameReader::new(read_buf, &[]),
    })
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

// ---------------------------------------------------------------------------
// frames

/// A deterministic payload of `size` bytes starting with `tag` (little
/// endian), so echoes of different messages differ from the first byte on.
fn payload(size: usize, tag: u64) -> Vec<u8> {
    let mut state = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<u8> = (0..size)
        .map(|_| {
            // xorshift64: cheap bytes that no layer can compress or mistake for text.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let n = size.min(8);
    out[..n].copy_from_slice(&tag.to_le_bytes()[..n]);
    out
}

/// A masking key that is never all zero, so a relay that forgot to keep
/// the client's mask (or unmasked twice) would corrupt the echo.
fn mask_key(i: u64) -> [u8; 4] {
    let k = (i as u32).wrapping_add(1).wrapping_mul(0x9E37_79B9) | 0x0101_0101;
    k.to_be_bytes()
}

/// A message as sent (a masked binary frame) and the payload its echo must carry.
struct Prepared {
    frame: Vec<u8>,
    payload: Vec<u8>,
}

/// `n` distinct messages of `size` bytes, encoded once so the send path is
/// only a `write`.
fn prepare(n: usize, size: usize, salt: u64) -> Vec<Prepared> {
    (0..n as u64)
        .map(|i| {
            let payload = payload(size, salt.wrapping_mul(1_000_003).wrapping_add(i));
            Prepared {
                frame: encode(OpCode::Binary, &payload, Some(mask_key(salt + i))),
                payload,
            }
        })
        .collect()
}

fn close_frame() -> Vec<u8> {
    encode_close(1000, "", Some(mask_key(7)))
}

/// What the server sent next.
#[derive(Debug)]
enum Incoming {
    /// A whole data message (all its frames); `matches` when its payload
    /// equals the expected one byte for byte.
    Message {
        len: u64,
        matches: bool,
    },
    Ping(Vec<u8>),
    Pong,
    Close,
    /// The server closed the connection at a frame boundary.
    Eof,
}

/// Reads server frames (unmasked, RFC 6455 §5.1) from a socket with one
/// fixed buffer. Data payloads are compared with the expected bytes in
/// place, chunk by chunk, so a 1 MiB echo never needs a 1 MiB buffer.
///
/// All parsing state lives in the struct and is updated only between
/// awaits, so `next` is cancel-safe: the idle mode can `select!` on it.
struct FrameReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// A data frame whose payload is being consumed: its FIN bit.
    data_frame: Option<bool>,
    payload_left: u64,
    /// The data message in progress (it may span frames and calls).
    in_message: bool,
    msg_len: u64,
    msg_matches: bool,
}

impl FrameReader {
    fn new(capacity: usize, leftover: &[u8]) -> FrameReader {
        // A frame header (at most 14 bytes) with a control payload (at most
        // 125) must fit whole; leftover bytes must too.
        let capacity = capacity.max(256).max(leftover.len());
        let mut buf = vec![0u8; capacity].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        FrameReader {
            buf,
            start: 0,
            end: leftover.len(),
            data_frame: None,
            payload_left: 0,
            in_message: false,
            msg_len: 0,
            msg_matches: true,
        }
    }

    /// Makes at least `need` bytes available at `start`. `Ok(false)` on EOF.
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R, need: usize) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        while self.end - self.start < need {
            if self.start + need > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = r.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(false);
            }
            self.end += n;
        }
        Ok(true)
    }

    /// The next message or control frame; a data message is compared with
    /// `expected`.
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        expected: &[u8],
    ) -> io::Result<Incoming> {
        loop {
            if let Some(fin) = self.data_frame {
                self.consume_payload(r, expected).await?;
                self.data_frame = None;
                if fin {
                    self.in_message = false;
                    return Ok(Incoming::Message {
                        len: self.msg_len,
                        matches: self.msg_matches && self.msg_len == expected.len() as u64,
                    });
                }
                continue;
            }
            if !self.fill(r, 2).await? {
                if self.start == self.end && !self.in_message {
                    return Ok(Incoming::Eof);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (b0, b1) = (self.buf[self.start], self.buf[self.start + 1]);
            if b1 & 0x80 != 0 {
                return Err(invalid("server sent a masked frame"));
            }
            let header_len = match b1 & 0x7F {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            if !self.fill(r, header_len).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let h = &self.buf[self.start..self.start + header_len];
            let len = match header_len {
                4 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                10 => u64::from_be_bytes(h[2..10].try_into().unwrap()),
                _ => u64::from(b1 & 0x7F),
            };
            let fin = b0 & 0x80 != 0;
            match b0 & 0x0F {
                opcode @ 0x8..=0xA => {
                    if len > 125 || !fin {
                        return Err(invalid("bad control frame"));
                    }
                    // Header and payload are consumed together, once both are here.
                    let total = header_len + len as usize;
                    if !self.fill(r, total).await? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let body = self.buf[self.start + header_len..self.start + total].to_vec();
                    self.start += total;
                    return Ok(match opcode {
                        0x8 => Incoming::Close,
                        0x9 => Incoming::Ping(body),
                        _ => Incoming::Pong,
                    });
                }
                opcode @ 0x0..=0x2 => {
                    match (opcode, self.in_message) {
                        (0x0, false) => return Err(invalid("continuation without a message")),
                        (0x0, true) => {}
                        (_, true) => return Err(invalid("new message inside a fragmented one")),
                        (_, false) => {
                            self.in_message = true;
                            self.msg_len = 0;
                            self.msg_matches = true;
                        }
                    }
                    self.start += header_len;
                    self.data_frame = Some(fin);
                    self.payload_left = len;
                }
                other => return Err(invalid(&format!("reserved opcode {other:#x}"))),
            }
        }
    }

    /// Consumes the current data frame's payload, comparing it with
    /// `expected` at the message's current offset.
    async fn consume_payload<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        expected: &[u8],
    ) -> io::Result<()> {
        while self.payload_left > 0 {
            if !self.fill(r, 1).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = (self.end - self.start)
                .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
            if self.msg_matches {
                let offset = self.msg_len as usize;
                let chunk = &self.buf[self.start..self.start + n];
                self.msg_matches = expected.get(offset..offset + n) == Some(chunk);
            }
            self.start += n;
            self.msg_len += n as u64;
            self.payload_left -= n as u64;
        }
        Ok(())
    }
}

/// Sends a close frame and waits for the server's close and then its EOF
/// (RFC 6455 §7.1.1: the server closes the TCP connection first).
async fn close_session(session: &mut Session) -> io::Result<()> {
    send(&mut session.stream, &close_frame()).await?;
    let wait = async {
        let mut got_close = false;
        loop {
            match session.reader.next(&mut session.stream, &[]).await? {
                Incoming::Close => got_close = true,
                Incoming::Eof if got_close => return Ok(()),
                Incoming::Eof => return Err(invalid("EOF without a close frame")),
                // Late data or pings while closing are allowed; ignore them.
                Incoming::Message { .. } | Incoming::Ping(_) | Incoming::Pong => {}
            }
        }
    };
    tokio::time::timeout(CLOSE_WAIT, wait)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no close reply")))
}

// ---------------------------------------------------------------------------
// reporting helpers

/// Counts problems and describes the first few on stderr.
#[derive(Default)]
struct Errors {
    count: AtomicUsize,
}

impl Errors {
    fn report(&self, what: &str, error: &dyn std::fmt::Display) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if n < MAX_REPORTED {
            eprintln!("wsload: {what}: {error}");
        } else if n == MAX_REPORTED {
            eprintln!("wsload: more errors; only counting them now");
        }
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// Quantile of sorted nanoseconds, in microseconds.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

fn marker(word: &str) {
    // stdout is line-buffered, so the script sees the marker at once.
    println!("{word}");
}

/// Reads this process's open-file limit (no libc crate here, so /proc).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Holds every task until the measured window opens, so all start together.
fn start_gate() -> (
    watch::Sender<Option<Instant>>,
    watch::Receiver<Option<Instant>>,
) {
    watch::channel(None)
}

async fn wait_start(gate: &mut watch::Receiver<Option<Instant>>) -> Option<Instant> {
    match gate.wait_for(|s| s.is_some()).await {
        Ok(start) => *start,
        Err(_) => None, // main gave up: too many connections failed to open
    }
}

// ---------------------------------------------------------------------------
// echo: closed-loop round trips

/// What one echo connection did in the window.
struct EchoResult {
    latencies_ns: Vec<u64>,
    sent: u64,
}

async fn echo(args: &Args) {
    let errors = Arc::new(Errors::default());
    let (gate_tx, gate_rx) = start_gate();
    let (opened_tx, mut opened_rx) = mpsc::channel::<bool>(args.connections);
    let (done_tx, mut done_rx) = mpsc::channel::<EchoResult>(args.connections);
    let window = Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::with_capacity(args.connections);
    for c in 0..args.connections {
        let target = args.target.clone();
        let (errors, mut gate, opened, done) = (
            errors.clone(),
            gate_rx.clone(),
            opened_tx.clone(),
            done_tx.clone(),
        );
        // Two distinct messages, alternated: a duplicated or stale echo is
        // caught because it carries the other message's bytes.
        let messages = prepare(2, args.size, c as u64);
        let read_buf = (args.size + 14).clamp(4096, 256 * 1024);
        tasks.push(tokio::spawn(async move {
            let mut session = match open(&target, read_buf).await {
                Ok(s) => {
                    let _ = opened.send(true).await;
                    s
                }
                Err(e) => {
                    errors.report("open", &e);
                    let _ = opened.send(false).await;
                    return;
                }
            };
            let Some(start) = wait_start(&mut gate).await else {
                return;
            };
            let deadline = start + window;
            let mut result = EchoResult {
                latencies_ns: Vec::with_capacity(4096),
                sent: 0,
            };
            let mut healthy = true;
            while healthy && Instant::now() < deadline {
                let m = &messages[(result.sent & 1) as usize];
                let t0 = Instant::now();
                result.sent += 1;
                if let Err(e) = send(&mut session.stream, &m.frame).await {
                    errors.report("write", &e);
                    healthy = false;
                    break;
                }
                loop {
                    match session.reader.next(&mut session.stream, &m.payload).await {
                        Ok(Incoming::Message { matches: true, .. }) => {
                            result.latencies_ns.push(t0.elapsed().as_nanos() as u64);
                            break;
                        }
                        Ok(Incoming::Message {
                            len,
                            matches: false,
                        }) => {
                            errors.report(
                                "echo",
                                &format!("{len}-byte echo differs from the message sent"),
                            );
                            healthy = false;
                            break;
                        }
                        Ok(Incoming::Ping(body)) => {
                            let pong = encode(OpCode::Pong, &body, Some(mask_key(9)));
                            if let Err(e) = send(&mut session.stream, &pong).await {
                                errors.report("pong", &e);
                                healthy = false;
                                break;
                            }
                        }
                        Ok(Incoming::Pong) => {}
                        Ok(other) => {
                            errors.report("echo", &format!("server ended the session: {other:?}"));
                            healthy = false;
                            break;
                        }
                        Err(e) => {
                            errors.report("read", &e);
                            healthy = false;
                            break;
                        }
                    }
                }
            }
            let _ = done.send(result).await;
            if healthy {
                if let Err(e) = close_session(&mut session).await {
                    errors.report("close", &e);
                }
            }
        }));
    }
    drop((opened_tx, done_tx));

    let opened = collect_opened(&mut opened_rx, args.connections).await;
    let start = Instant::now();
    marker("start");
    let _ = gate_tx.send(Some(start));

    let mut latencies = Vec::new();
    let mut sent = 0;
    while let Some(r) = done_rx.recv().await {
        sent += r.sent;
        latencies.extend_from_slice(&r.latencies_ns);
    }
    let elapsed = start.elapsed().as_secs_f64();
    marker("done");
    for t in tasks {
        let _ = t.await;
    }
    latencies.sort_unstable();
    let received = latencies.len() as u64;
    println!("mode=echo");
    println!("connections={}", args.connections);
    println!("connections_open={opened}");
    println!("size={}", args.size);
    println!("seconds={elapsed:.3}");
    println!("sent={sent}");
    println!("messages={received}");
    println!("msgs_per_sec={:.0}", received as f64 / elapsed);
    println!("p50_us={:.1}", quantile_us(&latencies, 0.50));
    println!("p99_us={:.1}", quantile_us(&latencies, 0.99));
    println!("max_us={:.1}", quantile_us(&latencies, 1.0));
    println!("errors={}", errors.get());
}

/// Waits for every connection's open result; returns how many opened.
async fn collect_opened(rx: &mut mpsc::Receiver<bool>, n: usize) -> usize {
    let mut opened = 0;
    for _ in 0..n {
        match rx.recv().await {
            Some(true) => opened += 1,
            Some(false) => {}
            None => break,
        }
    }
    opened
}

// ---------------------------------------------------------------------------
// bulk: big messages back to back, a few in flight

struct BulkResult {
    messages: u64,
    bytes: u64,
    finished: Instant,
}

async fn bulk(args: &Args) {
    let errors = Arc::new(Errors::default());
    let (gate_tx, gate_rx) = start_gate();
    let (opened_tx, mut opened_rx) = mpsc::channel::<bool>(args.connections);
    let (done_tx, mut done_rx) = mpsc::channel::<BulkResult>(args.connections);
    // window + 1 distinct messages: every message in flight differs from the
    // others, so a lost, repeated or reordered echo shows as a mismatch.
    let messages = Arc::new(prepare(args.window + 1, args.size, 0));
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (target, errors, mut gate, opened, done, messages) = (
            args.target.clone(),
            errors.clone(),
            gate_rx.clone(),
            opened_tx.clone(),
            done_tx.clone(),
            messages.clone(),
        );
        let (count, window) = (args.count, args.window);
        tasks.push(tokio::spawn(async move {
            let session = match open(&target, 256 * 1024).await {
                Ok(s) => {
                    let _ = opened.send(true).await;
                    s
                }
                Err(e) => {
                    errors.report("open", &e);
                    let _ = opened.send(false).await;
                    return;
                }
            };
            if wait_start(&mut gate).await.is_none() {
                return;
            }
            let Session { stream, mut reader } = session;
            // parse_args keeps bulk on plaintext.
            let Stream::Plain(stream) = stream else {
                return;
            };
            let (mut rd, mut wr) = stream.into_split();
            // The writer may run `window` messages ahead of the echoes.
            let credit = Arc::new(Semaphore::new(window));
            let writer = {
                let (credit, messages, errors) = (credit.clone(), messages.clone(), errors.clone());
                tokio::spawn(async move {
                    for i in 0..count {
                        let Ok(permit) = credit.acquire().await else {
                            break;
                        };
                        permit.forget();
                        let m = &messages[(i % messages.len() as u64) as usize];
                        if let Err(e) = wr.write_all(&m.frame).await {
                            errors.report("write", &e);
                            break;
                        }
                    }
                    wr
                })
            };
            let mut result = BulkResult {
                messages: 0,
                bytes: 0,
                finished: Instant::now(),
            };
            let mut healthy = true;
            'messages: for i in 0..count {
                let m = &messages[(i % messages.len() as u64) as usize];
                loop {
                    match reader.next(&mut rd, &m.payload).await {
                        Ok(Incoming::Message { len, matches }) => {
                            if !matches {
                                errors.report(
                                    "echo",
                                    &format!("echo {i} ({len} bytes) differs from message {i}"),
                                );
                                healthy = false;
                                break 'messages;
                            }
                            result.messages += 1;
                            result.bytes += len;
                            credit.add_permits(1);
                            break;
                        }
                        // The benchmark's gateways are set not to ping; a
                        // ping here would go unanswered but is harmless.
                        Ok(Incoming::Ping(_) | Incoming::Pong) => {}
                        Ok(other) => {
                            errors.report("bulk", &format!("server ended the session: {other:?}"));
                            healthy = false;
                            break 'messages;
                        }
                        Err(e) => {
                            errors.report("read", &e);
                            healthy = false;
                            break 'messages;
                        }
                    }
                }
            }
            result.finished = Instant::now();
            let _ = done.send(result).await;
            credit.close(); // a writer stopped short of `count` must not wait forever
            let Ok(wr) = writer.await else { return };
            if healthy {
                let Ok(stream) = rd.reunite(wr) else { return };
                let mut session = Session {
                    stream: Stream::Plain(stream),
                    reader,
                };
                if let Err(e) = close_session(&mut session).await {
                    errors.report("close", &e);
                }
            }
        }));
    }
    drop((opened_tx, done_tx));
    let opened = collect_opened(&mut opened_rx, args.connections).await;
    let start = Instant::now();
    marker("start");
    let _ = gate_tx.send(Some(start));
    let mut results = Vec::new();
    while let Some(r) = done_rx.recv().await {
        results.push(r);
    }
    // The window ends at the last echo; the closing handshakes are outside it.
    marker("done");
    for t in tasks {
        let _ = t.await;
    }
    let end = results.iter().map(|r| r.finished).max().unwrap_or(start);
    let elapsed = end.duration_since(start).as_secs_f64();
    let messages: u64 = results.iter().map(|r| r.messages).sum();
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    println!("mode=bulk");
    println!("connections={}", args.connections);
    println!("connections_open={opened}");
    println!("size={}", args.size);
    println!("window={}", args.window);
    println!("seconds={elapsed:.3}");
    println!("sent={}", args.count * opened as u64);
    println!("messages={messages}");
    println!("bytes={bytes}");
    println!("mb_per_sec={:.1}", bytes as f64 / elapsed / 1e6);
    println!("errors={}", errors.get());
}

// ---------------------------------------------------------------------------
// idle: many open sessions doing nothing

async fn idle(args: &Args) {
    // The client holds one fd per session; a proxy in front of a backend
    // holds two, the backend one. Refuse what this process cannot hold and
    // warn when a proxy with the same limit could not either.
    if let Some(limit) = open_file_limit() {
        let n = args.connections as u64;
        if n + 64 > limit {
            eprintln!(
                "wsload: {n} sessions need {} fds here but the open-file limit is {limit}",
                n + 64
            );
            std::process::exit(1);
        }
        if 2 * n + 64 > limit {
            eprintln!(
                "wsload: warning: a proxy with this machine's limit ({limit}) cannot hold {n} sessions (2 fds each)"
            );
        }
    }
    let errors = Arc::new(Errors::default());
    let lost = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = watch::channel(false);
    let (opened_tx, mut opened_rx) = mpsc::channel::<bool>(args.connections);
    // Bounded parallel opens: thousands of simultaneous SYNs would overflow
    // the servers' accept queues and stall on SYN retransmits.
    let open_slots = Arc::new(Semaphore::new(args.open_concurrency));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (target, errors, lost, mut release, opened, slots) = (
            args.target.clone(),
            errors.clone(),
            lost.clone(),
            release_rx.clone(),
            opened_tx.clone(),
            open_slots.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = slots.acquire_owned().await;
            let mut session = match open(&target, 512).await {
                Ok(s) => s,
                Err(e) => {
                    errors.report("open", &e);
                    let _ = opened.send(false).await;
                    return;
                }
            };
            drop(permit);
            let _ = opened.send(true).await;
            loop {
                tokio::select! {
                    // An idle server sends nothing; anything it does send
                    // (a ping, a close) is handled here. `next` is cancel-safe.
                    incoming = session.reader.next(&mut session.stream, &[]) => {
                        match incoming {
                            Ok(Incoming::Ping(body)) => {
                                let pong = encode(OpCode::Pong, &body, Some(mask_key(9)));
                                if let Err(e) = send(&mut session.stream, &pong).await {
                                    errors.report("pong", &e);
                                }
                            }
                            Ok(Incoming::Pong) => {}
                            Ok(Incoming::Close) => {
                                // Answer the server's close as the RFC asks, then stop.
                                lost.fetch_add(1, Ordering::Relaxed);
                                errors.report("idle", &"server closed an idle session");
                                let _ = send(&mut session.stream, &close_frame()).await;
                                return;
                            }
                            other => {
                                lost.fetch_add(1, Ordering::Relaxed);
                                errors.report("idle", &format!("unexpected {other:?}"));
                                return;
                            }
                        }
                    }
                    // The only change ever sent is the release itself.
                    _ = release.changed() => {
                        if let Err(e) = close_session(&mut session).await {
                            errors.report("close", &e);
                        }
                        return;
                    }
                }
            }
        }));
    }
    drop(opened_tx);
    let opened = collect_opened(&mut opened_rx, args.connections).await;
    let open_seconds = t0.elapsed().as_secs_f64();
    println!("mode=idle");
    println!("connections={}", args.connections);
    println!("connections_open={opened}");
    println!("open_seconds={open_seconds:.3}");
    marker("ready");
    tokio::time::sleep(Duration::from_secs_f64(args.hold_seconds)).await;
    println!(
        "still_open={}",
        opened - lost.load(Ordering::Relaxed).min(opened)
    );
    let _ = release_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    println!("errors={}", errors.get());
}

// ---------------------------------------------------------------------------
// handshakes: connect, upgrade, close, repeat

async fn handshakes(args: &Args) {
    let errors = Arc::new(Errors::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    marker("start");
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (mut target, errors) = (args.target.clone(), errors.clone());
        if let (true, Some((connector, _))) = (args.resume, target.tls.as_mut()) {
            let mut config = (**connector.config()).clone();
            config.resumption = rustls::client::Resumption::in_memory_sessions(1);
            *connector = TlsConnector::from(Arc::new(config));
        }
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1024);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let outcome = async {
                    let mut session = open(&target, 512).await?;
                    close_session(&mut session).await
                }
                .await;
                match outcome {
                    Ok(()) => latencies.push(t0.elapsed().as_nanos() as u64),
                    Err(e) => {
                        errors.report("handshake", &e);
                        // Do not spin on a server that refuses outright.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            latencies.extend(l);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    marker("done");
    latencies.sort_unstable();
    println!("mode=handshakes");
    println!("connections={}", args.connections);
    println!("seconds={elapsed:.3}");
    println!("handshakes={}", latencies.len());
    println!("handshakes_per_sec={:.0}", latencies.len() as f64 / elapsed);
    println!("resumed={}", RESUMED.load(Ordering::Relaxed));
    println!("p50_us={:.1}", quantile_us(&latencies, 0.50));
    println!("p99_us={:.1}", quantile_us(&latencies, 0.99));
    println!("errors={}", errors.get());
}

// ---------------------------------------------------------------------------

fn main() {
    let mut args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        if args.h2 {
            match h2_connection(&args.target).await {
                Ok(connection) => args.target.h2 = Some(connection),
                Err(e) => {
                    eprintln!("wsload: {e}");
                    std::process::exit(1);
                }
            }
        }
        match args.mode {
            Mode::Echo => echo(&args).await,
            Mode::Bulk => bulk(&args).await,
            Mode::Idle => idle(&args).await,
            Mode::Handshakes => handshakes(&args).await,
        }
    });
}

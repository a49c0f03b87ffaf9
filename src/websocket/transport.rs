//! Non-blocking byte I/O for one side of a relayed session: straight on the
//! socket, through the TLS session that the handshake ran on, or on an
//! HTTP/2 stream (RFC 8441). All three answer the same readiness questions,
//! so the relay's single loop drives any of them.

use std::io::{self, Read, Write};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::Connection;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::h2_stream::H2Stream;

/// How long a finished session may spend closing each side: sending its TLS
/// `close_notify`, or ending its HTTP/2 stream and waiting for the client's end.
const SIDE_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One side's connection as the relay drives it.
#[derive(Debug)]
pub enum Link {
    /// A TCP socket, and the TLS session over it if that side speaks TLS.
    Socket { stream: TcpStream, io: Transport },
    /// A WebSocket stream of an HTTP/2 connection that hyper keeps driving.
    H2(Box<H2Stream>),
}

impl Link {
    /// The socket, when bytes can go straight to and from it (no TLS, no
    /// HTTP/2 framing): only then can the kernel splice them.
    pub fn plain_socket(&self) -> Option<&TcpStream> {
        match self {
            Link::Socket { stream, io } if io.is_plain() => Some(stream),
            _ => None,
        }
    }

    /// Ready when a read may make progress: at once if bytes already wait
    /// (decrypted by TLS, or taken off the HTTP/2 stream), else when the
    /// socket or stream has some.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Link::Socket { io, .. } if io.is_buffered() => Poll::Ready(Ok(())),
            Link::Socket { stream, .. } => stream.poll_read_ready(cx),
            Link::H2(stream) => stream.poll_read_ready(cx),
        }
    }

    /// Ready when a write may take bytes.
    pub fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Link::Socket { stream, .. } => stream.poll_write_ready(cx),
            Link::H2(stream) => stream.poll_write_ready(cx),
        }
    }

    /// Reads into `buffer`'s spare capacity. `Ok(0)` is the end of the
    /// stream; `WouldBlock` means wait for readiness.
    pub fn read(&mut self, buffer: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Link::Socket { stream, io } => io.read(stream, buffer),
            Link::H2(stream) => stream.read(buffer),
        }
    }

    /// Writes some of `bytes`; returns how many were taken.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Link::Socket { stream, io } => io.write(stream, bytes),
            Link::H2(stream) => stream.write(bytes),
        }
    }

    /// Writes bytes a lower layer still holds; `WouldBlock` if it cannot yet.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Socket { stream, io } => io.flush(stream),
            Link::H2(_) => Ok(()),
        }
    }

    /// Whether the end of what the peer sends leaves the other direction
    /// open: true of an HTTP/2 stream (END_STREAM closes one side).
    pub fn half_closes(&self) -> bool {
        matches!(self, Link::H2(_))
    }

    /// Whether encrypted bytes are waiting for the socket.
    pub fn has_pending_output(&self) -> bool {
        match self {
            Link::Socket { io, .. } => io.has_pending_output(),
            Link::H2(_) => false,
        }
    }

    /// Ends the stream: TLS `close_notify` and a TCP shutdown, or the HTTP/2
    /// stream's END_STREAM; bounded in time either way.
    pub async fn close(&mut self) {
        match self {
            Link::Socket { stream, io } => io.close(stream).await,
            Link::H2(stream) => {
                let _ = tokio::time::timeout(SIDE_CLOSE_TIMEOUT, stream.close()).await;
            }
        }
    }

    /// hyper's connection task, the one that ran the handshake, left its
    /// waker in the socket's read and write slots when it last waited. The
    /// relay puts its own in a slot only when it waits on that direction
    /// (the write slot perhaps never), so the old waker would keep the
    /// finished task's memory (8.5 KiB, measured with massif) alive until
    /// the socket next became ready: for an idle session, perhaps never. A
    /// no-op waker takes its place. An HTTP/2 stream's connection task
    /// lives on and keeps its own wakers.
    pub fn release_previous_wakers(&self) {
        if let Link::Socket { stream, .. } = self {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            // Ready means the slot was already emptied when readiness arrived.
            let _ = stream.poll_read_ready(&mut cx);
            let _ = stream.poll_write_ready(&mut cx);
        }
    }
}

/// The TLS layer (if any) over one side's socket.
#[derive(Debug, Default)]
pub struct Transport {
    tls: Option<Box<Connection>>,
    /// Decrypted bytes (or the peer's `close_notify`) wait inside the TLS
    /// session: a read can make progress without the socket being readable.
    buffered: bool,
}

impl Transport {
    pub fn new(tls: Option<Box<Connection>>) -> Transport {
        Transport {
            buffered: tls.is_some(),
            tls,
        }
    }

    /// Whether bytes go straight to and from the socket, with no TLS layer.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none()
    }

    /// Whether a read can make progress without waiting for the socket.
    pub fn is_buffered(&self) -> bool {
        self.buffered
    }

    /// Whether encrypted bytes are waiting for the socket.
    pub fn has_pending_output(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Reads into `buffer`'s spare capacity. `Ok(0)` is the end of the
    /// stream; `WouldBlock` means wait for readiness.
    pub fn read(&mut self, stream: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
        match &mut self.tls {
            None => read_plain(stream, buffer),
            Some(tls) => {
                let result = read_tls(tls, stream, buffer);
                self.buffered = tls.process_new_packets().is_ok_and(|state| {
                    state.plaintext_bytes_to_read() > 0 || state.peer_has_closed()
                });
                // Reading may have produced bytes to send (alerts, key updates).
                if tls.wants_write() {
                    let _ = flush_tls(tls, stream);
                }
                result
            }
        }
    }

    /// Writes some of `bytes`; returns how many were taken (and, over TLS,
    /// encrypted: they go out with later writes or `flush` if the socket is full).
    pub fn write(&mut self, stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return stream.try_write(bytes);
        };
        // Send what is already encrypted first, so the session buffers at
        // most one chunk of ciphertext.
        flush_tls(tls, stream)?;
        let taken = tls.writer().write(bytes)?;
        match flush_tls(tls, stream) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    /// Writes encrypted bytes still waiting; `WouldBlock` if the socket is full.
    pub fn flush(&mut self, stream: &TcpStream) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => flush_tls(tls, stream),
            None => Ok(()),
        }
    }

    /// Ends the stream: TLS `close_notify` (bounded in time), then a TCP shutdown.
    pub async fn close(&mut self, stream: &mut TcpStream) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let sent = async {
                loop {
                    match flush_tls(tls, stream) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if stream.writable().await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(SIDE_CLOSE_TIMEOUT, sent).await;
        }
        let _ = stream.shutdown().await;
    }
}

/// One read from the socket into `buffer`'s spare capacity.
fn read_plain(stream: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    read_draining(stream, || {
        let read = stream.try_read_buf(buffer)?;
        Ok((read, buffer.len() < buffer.capacity()))
    })
}

/// One read by `read`, which says how many bytes it got and whether it
/// left room. A read that leaves room drained the socket: report "would
/// block" to tokio so it clears the readiness now, instead of paying for a
/// second read that would only say so. Edge-triggered epoll wakes the task
/// again when more bytes arrive, and a closed socket stays readable.
fn read_draining(
    stream: &TcpStream,
    mut read: impl FnMut() -> io::Result<(usize, bool)>,
) -> io::Result<usize> {
    let mut got = 0;
    let outcome = stream.try_io(Interest::READABLE, || {
        let (read, room_left) = read()?;
        got = read;
        if read > 0 && room_left {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match outcome {
        _ if got > 0 => Ok(got),
        Ok(()) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Decrypted bytes already buffered, else one read of ciphertext and what
/// it decrypts to. Only as many bytes of `buffer` are initialised as are read.
fn read_tls(tls: &mut Connection, stream: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        let state = match tls.process_new_packets() {
            Ok(state) => state,
            Err(error) => {
                // rustls has queued an alert that tells the peer why.
                let _ = flush_tls(tls, stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        };
        let available = state.plaintext_bytes_to_read();
        if available > 0 {
            let filled = buffer.len();
            let take = available.min(buffer.capacity() - filled);
            buffer.resize(filled + take, 0);
            let read = tls.reader().read(&mut buffer[filled..])?;
            buffer.truncate(filled + read);
            return Ok(read);
        }
        if state.peer_has_closed() {
            return Ok(0);
        }
        // A TCP end without close_notify ends the stream all the same: the
        // WebSocket layer above tells a clean close from a vanished peer.
        if tls.read_tls(&mut SocketIo(stream))? == 0 {
            return Ok(0);
        }
    }
}

fn flush_tls(tls: &mut Connection, stream: &TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(&mut SocketIo(stream))? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// `std::io` over a tokio socket's non-blocking calls, for rustls; an empty
/// socket is `WouldBlock`, which also clears tokio's readiness flag.
struct SocketIo<'a>(&'a TcpStream);

impl Read for SocketIo<'_> {
    /// As [`read_plain`]: a read that leaves room in rustls' buffer drained
    /// the socket, so tokio's readiness is cleared now instead of by one
    /// more `recv` per message that would only say "empty".
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = self.0;
        read_draining(stream, || {
            let read = stream.try_read(buf)?;
            Ok((read, read < buf.len()))
        })
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

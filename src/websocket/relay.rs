//! The frame-aware relay: bytes move between client and backend unchanged
//! (client frames keep the client's mask) while a header-only parser per
//! direction tracks frame and message boundaries.
//!
//! Each direction is a [`Pump`]: it reads a chunk from its source only when
//! everything it read before has been written (backpressure, and at most one
//! chunk buffered), into a pooled buffer taken only once the socket is
//! readable (an idle session holds no buffer). The gateway's own frames
//! (pings, closes) are inserted only at frame boundaries.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use prometheus::Histogram;
use rustls::Connection;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::frame::{self, Event, FrameParser, OpCode, Rules, Violation};
use super::h2_stream::H2Stream;
use super::throttle::{Throttle, Verdict};
use super::transport::{Link, Transport};
use crate::buffer_pool;
use crate::metrics::{DirectionTally, Limit, LimitMeters, SessionTally};
use crate::model::Policy;
use crate::sessions;
use crate::splice;

/// How long the gateway waits for the far end of a closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's pings carry an 8-byte counter, so their pongs can be recognised.
const PING_PAYLOAD_LEN: u64 = 8;

/// Data payload left in a frame from which on the kernel forwards it
/// (`splice(2)`) instead of a copy through user space; below it, a pipe's
/// two system calls buy little over the copy.
const SPLICE_MIN: u64 = 16 * 1024;

/// The most one splice is asked to move: the kernel stops at the pipe's
/// capacity (64 KiB by default) anyway.
const SPLICE_MAX: usize = 1 << 20;

/// One end of a session: its connection, and any (decrypted) bytes read
/// past the handshake.
#[derive(Debug)]
pub struct Peer {
    link: Link,
    leftover: Bytes,
}

impl Peer {
    /// A socket, with the TLS session over it if that side speaks TLS.
    pub fn new(stream: TcpStream, tls: Option<Connection>, leftover: Bytes) -> Peer {
        Peer {
            link: Link::Socket {
                stream,
                io: Transport::new(tls.map(Box::new)),
            },
            leftover,
        }
    }

    /// A WebSocket on an HTTP/2 stream (RFC 8441).
    pub fn h2(stream: H2Stream) -> Peer {
        Peer {
            link: Link::H2(Box::new(stream)),
            leftover: Bytes::new(),
        }
    }
}

/// Frames, messages and payload bytes that passed in one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub frames: u64,
    pub messages: u64,
    pub payload_bytes: u64,
}

/// Who began the closing of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Backend,
    Gateway,
}

impl Initiator {
    /// The `initiator` label of `wsgate_ws_closes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Gateway => "gateway",
        }
    }
}

/// The first close of a session: who, and the code (`None`: no close frame,
/// what the API calls 1006; a close frame without a code is 1005).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub initiator: Initiator,
    pub code: Option<u16>,
    /// Why the gateway closed, when it was the gateway.
    pub reason: Option<&'static str>,
}

/// What a session did, for logs and metrics.
#[derive(Debug, Default, Clone)]
pub struct SessionStats {
    pub client_to_backend: Traffic,
    pub backend_to_client: Traffic,
    pub closing: Option<Closing>,
    pub ping_rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

/// What a scan of one chunk found that the session must act on.
#[derive(Debug, Default)]
struct Scan {
    violation: Option<Violation>,
    /// A close frame from the source, with its code if it had one.
    close: Option<Option<u16>>,
    pong: Option<[u8; 8]>,
}

/// One direction of a session: reads its source, writes its destination.
#[derive(Debug)]
struct Pump<'a> {
    parser: FrameParser,
    out: VecDeque<Bytes>,
    traffic: Traffic,
    /// Payload bytes of the data message in progress, for its size.
    message_len: u64,
    /// The route's series this direction's traffic is added to.
    tally: Option<DirectionTally<'a>>,
    /// Payload bytes the kernel moved from the source into a pipe (see
    /// [`Session::splice_len`]); they go to the destination before `out`.
    pipe: Option<splice::Pipe>,
    piped: usize,
    /// Source bytes are dropped from here on: a close passed, or the gateway cut the stream.
    discarding: bool,
    /// Inside a frame that is not forwarded (a pong answering the gateway's ping).
    skipping: bool,
    /// A gateway frame for the next frame boundary, and whether the stream ends after it.
    inject: Option<(Bytes, bool)>,
    /// The gateway's close frame to send in place of the source's close reply.
    replace_close: Option<Bytes>,
    source_done: bool,
    close_from_source: bool,
    close_to_destination: bool,
    destination_failed: bool,
}

impl<'a> Pump<'a> {
    fn new(rules: Rules, tally: Option<DirectionTally<'a>>) -> Pump<'a> {
        Pump {
            parser: FrameParser::new(rules),
            out: VecDeque::new(),
            traffic: Traffic::default(),
            message_len: 0,
            tally,
            pipe: None,
            piped: 0,
            discarding: false,
            skipping: false,
            inject: None,
            replace_close: None,
            source_done: false,
            close_from_source: false,
            close_to_destination: false,
            destination_failed: false,
        }
    }

    fn wants_read(&self) -> bool {
        self.out.is_empty() && self.piped == 0 && !self.source_done
    }

    /// Whether bytes wait for the destination: queued frames, or ciphertext
    /// its TLS layer could not write yet.
    fn wants_write(&self, destination: &Link) -> bool {
        !self.destination_failed
            && (!self.out.is_empty() || self.piped > 0 || destination.has_pending_output())
    }

    /// Whether the bytes forwarded so far end at a frame boundary: partial
    /// headers are held back and skipped frames are not forwarded.
    fn forwarded_at_boundary(&self) -> bool {
        !self.parser.in_payload() || self.skipping
    }

    fn is_done(&self) -> bool {
        (self.out.is_empty() && self.piped == 0 || self.destination_failed)
            && (self.source_done || self.close_from_source)
            && (self.close_to_destination || self.destination_failed)
    }

    /// Queues a gateway frame now if the stream is at a boundary, else at the next one.
    fn insert(&mut self, frame: Bytes, ends_stream: bool) {
        if self.close_to_destination || self.destination_failed {
            return;
        }
        if self.forwarded_at_boundary() {
            self.out.push_back(frame);
            if ends_stream {
                self.end_stream();
            }
        } else if ends_stream || self.inject.is_none() {
            self.inject = Some((frame, ends_stream));
        }
    }

    /// Closes the destination with `frame` once the source has answered the
    /// gateway's close: whatever the source sent before its close reply (say,
    /// answers to the messages that preceded a violation) still goes through.
    fn close_after_reply(&mut self, frame: Bytes) {
        if self.source_done || self.close_from_source {
            self.insert(frame, true);
        } else {
            self.replace_close = Some(frame);
        }
    }

    /// The destination cannot take more: what waits for it is dropped.
    fn fail_destination(&mut self) {
        self.destination_failed = true;
        self.out.clear();
        // A pipe with bytes still in it is closed, not pooled.
        self.pipe = None;
        self.piped = 0;
    }

    fn end_stream(&mut self) {
        self.discarding = true;
        self.close_to_destination = true;
    }

    fn emit(&mut self, chunk: &Bytes, from: usize, to: usize) {
        if to > from {
            self.out.push_back(chunk.slice(from..to));
        }
    }

    /// Parses a chunk read from the source and queues what is to be forwarded.
    /// `our_ping` is the payload of the gateway's unanswered ping, if any:
    /// a pong carrying it is not forwarded.
    fn scan(&mut self, chunk: Bytes, our_ping: Option<[u8; 8]>) -> Scan {
        let mut scan = Scan::default();
        let held = self
            .parser
            .in_header()
            .then(|| Bytes::copy_from_slice(self.parser.partial_header()));
        // Where the frame header being read began in this chunk; None if in an earlier one.
        let mut header_start = self.parser.at_boundary().then_some(0);
        let mut emit_from = 0;
        let mut offset = 0;
        loop {
            let (used, event) = self.parser.advance(&chunk[offset..]);
            offset += used;
            let Some(event) = event else {
                if used == 0 {
                    break;
                }
                continue;
            };
            match event {
                Event::Header(header) => {
                    self.traffic.frames += 1;
                    let start = header_start.take();
                    if self.discarding {
                        continue;
                    }
                    // A pong that may answer our ping is held until its
                    // payload is known; one that does not is sent on then.
                    // So is every close frame: its code and reason are
                    // checked before it goes on (RFC 6455 §7.4).
                    let ours = our_ping.is_some()
                        && header.opcode == OpCode::Pong
                        && header.payload_len == PING_PAYLOAD_LEN;
                    if ours || header.opcode == OpCode::Close {
                        self.emit(&chunk, emit_from, start.unwrap_or(0));
                        self.skipping = true;
                    } else if let (None, Some(held)) = (start, &held) {
                        self.out.push_back(held.clone());
                    }
                }
                Event::FrameEnd { header, control } => {
                    header_start = Some(offset);
                    if !header.opcode.is_control() {
                        self.traffic.payload_bytes += header.payload_len;
                        self.message_len += header.payload_len;
                        if header.fin {
                            self.traffic.messages += 1;
                            if let Some(tally) = &self.tally {
                                tally.message(self.message_len);
                            }
                            self.message_len = 0;
                        }
                    }
                    let close = control.as_ref().filter(|c| c.opcode == OpCode::Close);
                    if let Some(close) = close {
                        self.close_from_source = true;
                        scan.close = Some(close.close_code());
                    }
                    if self.discarding {
                        continue;
                    }
                    if self.skipping {
                        self.skipping = false;
                        emit_from = offset;
                        let payload = control.as_ref().map(|c| c.payload()).unwrap_or_default();
                        if close.is_some() {
                            // The gateway's own close, if it has one to send
                            // instead; else the peer's, as it came. Nothing
                            // may follow a close frame (RFC 6455 §5.5.1).
                            let frame = self.replace_close.take().unwrap_or_else(|| {
                                Bytes::from(frame::encode(OpCode::Close, payload, header.mask))
                            });
                            self.out.push_back(frame);
                            self.end_stream();
                            continue;
                        }
                        if our_ping.is_some_and(|ours| payload == ours) {
                            scan.pong = our_ping;
                        } else {
                            // Someone else's pong: the same frame, re-encoded with its mask.
                            let frame = frame::encode(OpCode::Pong, payload, header.mask);
                            self.out.push_back(Bytes::from(frame));
                        }
                        continue;
                    }
                    if let Some((frame, ends_stream)) = self.inject.take() {
                        self.emit(&chunk, emit_from, offset);
                        emit_from = offset;
                        self.out.push_back(frame);
                        if ends_stream {
                            self.end_stream();
                        }
                    }
                }
                Event::Violation(violation) => {
                    if !self.discarding {
                        self.emit(&chunk, emit_from, header_start.unwrap_or(0));
                    }
                    self.discarding = true;
                    self.source_done = true;
                    scan.violation = Some(violation);
                    return scan;
                }
            }
        }
        if !self.discarding && !self.skipping {
            let end = if self.parser.in_header() {
                header_start.unwrap_or(0)
            } else {
                chunk.len()
            };
            self.emit(&chunk, emit_from, end);
        }
        scan
    }

    /// Adds what this direction counted since the last flush to the route's series.
    fn flush_tally(&mut self) {
        if let Some(tally) = &mut self.tally {
            let Traffic {
                frames,
                messages,
                payload_bytes,
            } = self.traffic;
            tally.flush(frames, messages, payload_bytes);
        }
    }

    /// Writes queued bytes, spliced ones first, until the destination would block.
    fn flush(&mut self, destination: &mut Link) {
        let result = self.drain_pipe(destination).and_then(|()| loop {
            let Some(front) = self.out.front_mut() else {
                break destination.flush();
            };
            match destination.write(front) {
                // Only an empty write takes nothing; never wait on it.
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    front.advance(written);
                    if front.is_empty() {
                        self.out.pop_front();
                    }
                }
                Err(e) => break Err(e),
            }
        });
        match result {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                tracing::debug!(error = %e, "websocket peer stopped reading");
                self.fail_destination();
            }
            _ => {}
        }
    }

    /// Splices the pipe's bytes into the destination; the emptied pipe goes
    /// back to the pool.
    fn drain_pipe(&mut self, destination: &Link) -> io::Result<()> {
        let Some(pipe) = &self.pipe else {
            return Ok(());
        };
        // Only plain sockets on both sides ever splice.
        let Some(stream) = destination.plain_socket() else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        while self.piped > 0 {
            match pipe.drain_to(stream, self.piped)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                moved => self.piped -= moved,
            }
        }
        if let Some(pipe) = self.pipe.take() {
            splice::give_back(pipe);
        }
        Ok(())
    }
}

/// Liveness of the client, probed with the gateway's own pings.
#[derive(Debug)]
struct Pinger {
    last_client_data: Instant,
    /// When the client must have sent something, after an unanswered ping.
    alive_by: Option<Instant>,
    /// The ping whose pong is still expected: when it was sent and its payload.
    awaiting: Option<(Instant, [u8; 8])>,
    sent: u64,
}

/// One WebSocket session between a client and a backend.
struct Session<'a> {
    /// The route's, which the session's caller keeps for the session's life.
    policy: &'a Policy,
    to_backend: Pump<'a>,
    to_client: Pump<'a>,
    client: Link,
    backend: Link,
    pinger: Pinger,
    last_activity: Instant,
    close_by: Option<Instant>,
    stats: SessionStats,
    /// The route's ping round-trip series.
    ping_rtt: Option<&'a Histogram>,
    /// Where `/sessions` reads the totals so far.
    live: &'a sessions::LiveTraffic,
    /// The client's message and byte budgets, if the route sets rates.
    /// Boxed: most routes set no rate, and every idle session would carry
    /// room for one.
    throttle: Option<Box<Throttle>>,
    /// When the gateway ends the session (`max_session_duration`, or its
    /// token's expiry, whichever comes first), with which code and reason.
    ends: Option<(Instant, SessionEnd)>,
    /// The route's limit series.
    limit_meters: Option<&'a LimitMeters>,
}

/// Relays a session until both closing handshakes are done, a peer vanishes,
/// a limit trips, or the server asks `control` to close (1001 on shutdown,
/// 1012 after a reload removed the route or backend) on both sides.
/// `allowed_rsv`: the RSV bits the negotiated extensions use (RSV1 for
/// permessage-deflate). `tally`: where the route's live counts go, if anywhere.
///
/// Not an `async fn`: one keeps room for its arguments in its future for
/// the session's whole life, next to the `Session` built from them, while an
/// `async` block uses what it captures in place. With the boxed control-frame
/// buffers this took a session's future from 3160 to 2128 bytes; borrowing
/// the policy and boxing the throttle and the closing futures, to 1144.
pub fn run<'a>(
    client: Peer,
    backend: Peer,
    policy: &'a Policy,
    allowed_rsv: u8,
    control: &'a sessions::Session,
    tally: Option<SessionTally<'a>>,
    bounds: Bounds<'a>,
) -> impl Future<Output = SessionStats> + 'a {
    let Bounds {
        limit_meters,
        token_end,
    } = bounds;
    let (to_backend, to_client, ping_rtt) = match tally {
        Some(tally) => (
            Some(tally.to_backend),
            Some(tally.to_client),
            Some(tally.ping_rtt),
        ),
        None => (None, None, None),
    };
    let now = Instant::now();
    let Peer {
        link: client,
        leftover: from_client,
    } = client;
    let Peer {
        link: backend,
        leftover: from_backend,
    } = backend;
    client.release_previous_wakers();
    backend.release_previous_wakers();
    let mut session = Session {
        policy,
        client,
        backend,
        to_backend: Pump::new(
            Rules {
                masked: true,
                allowed_rsv,
                max_message_size: policy.max_message_size,
            },
            to_backend,
        ),
        to_client: Pump::new(
            Rules {
                masked: false,
                allowed_rsv,
                max_message_size: u64::MAX,
            },
            to_client,
        ),
        pinger: Pinger {
            last_client_data: now,
            alive_by: None,
            awaiting: None,
            sent: 0,
        },
        last_activity: now,
        close_by: None,
        stats: SessionStats::default(),
        ping_rtt,
        live: &control.traffic,
        throttle: Throttle::new(&policy.limits, now).map(Box::new),
        ends: first_end(now, policy, token_end),
        limit_meters,
    };
    // The leftovers share hyper's read buffers: scan them, then let them go
    // here, or an idle session would keep two of those buffers alive.
    for (side, leftover) in [(Side::Client, from_client), (Side::Backend, from_backend)] {
        if !leftover.is_empty() {
            session.received(side, leftover, 0, now);
        }
    }
    async move {
        // One timer for the session, moved when the next deadline changes,
        // instead of a new timer entry on every turn.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut waits = Waits {
            timer,
            armed: None,
            draining: false,
        };
        std::future::poll_fn(|cx| session.poll_relay(cx, control, &mut waits)).await;
        // Boxed, and only now: each close waits under a timeout of its own,
        // and room for both in this future would sit unused through every
        // idle session's life.
        tokio::join!(
            Box::pin(session.client.close()),
            Box::pin(session.backend.close())
        );
        session.stats.client_to_backend = session.to_backend.traffic;
        session.stats.backend_to_client = session.to_client.traffic;
        session.stats
    }
}

/// What the relay waits on besides the sockets.
struct Waits<T> {
    timer: Pin<T>,
    /// The deadline the timer is set to, if it is set to one.
    armed: Option<Instant>,
    /// The server's close request has been acted on.
    draining: bool,
}

impl<'a> Session<'a> {
    /// Turns of the relay until the session is over. Written as a poll
    /// function, not a `select!`: the sockets keep this task's waker in
    /// their own readiness slots, so a turn builds no wait futures and an
    /// idle session stores none.
    fn poll_relay<T>(
        &mut self,
        cx: &mut Context<'_>,
        control: &sessions::Session,
        waits: &mut Waits<T>,
    ) -> Poll<()>
    where
        T: DerefMut<Target = tokio::time::Sleep>,
    {
        loop {
            if self.is_finished() {
                return Poll::Ready(());
            }
            let mut waiting_on_something = false;
            let mut progressed = false;
            if self.to_backend.wants_read() && !self.client_paused() {
                waiting_on_something = true;
                if let Poll::Ready(ready) = self.client.poll_read_ready(cx) {
                    // One clock reading for the turn's read and write.
                    let now = Instant::now();
                    self.read(Side::Client, ready, now);
                    // Writing at once usually succeeds and saves a turn.
                    self.written(Side::Backend, Ok(()), now);
                    progressed = true;
                }
            }
            if self.to_client.wants_read() {
                waiting_on_something = true;
                if let Poll::Ready(ready) = self.backend.poll_read_ready(cx) {
                    let now = Instant::now();
                    self.read(Side::Backend, ready, now);
                    self.written(Side::Client, Ok(()), now);
                    progressed = true;
                }
            }
            if self.to_backend.wants_write(&self.backend) {
                waiting_on_something = true;
                if let Poll::Ready(ready) = self.backend.poll_write_ready(cx) {
                    self.written(Side::Backend, ready, Instant::now());
                    progressed = true;
                }
            }
            if self.to_client.wants_write(&self.client) {
                waiting_on_something = true;
                if let Poll::Ready(ready) = self.client.poll_write_ready(cx) {
                    self.written(Side::Client, ready, Instant::now());
                    progressed = true;
                }
            }
            if !waits.draining {
                waiting_on_something = true;
                if let Poll::Ready(request) = control.poll_close_requested(cx) {
                    waits.draining = true;
                    let (code, reason) = (request.code, request.reason);
                    self.close_both(code, reason, code, reason);
                    progressed = true;
                }
            }
            if let Some(deadline) = self.next_deadline() {
                waiting_on_something = true;
                if waits.armed != Some(deadline) {
                    waits.timer.as_mut().reset(deadline);
                    waits.armed = Some(deadline);
                }
                if waits.timer.as_mut().poll(cx).is_ready() {
                    waits.armed = None;
                    if self.on_timer(Instant::now()) {
                        return Poll::Ready(());
                    }
                    progressed = true;
                }
            }
            if !waiting_on_something {
                // Nothing left to wait for: both peers are gone.
                return Poll::Ready(());
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}

impl<'a> Session<'a> {
    fn pump(&mut self, source: Side) -> &mut Pump<'a> {
        match source {
            Side::Client => &mut self.to_backend,
            Side::Backend => &mut self.to_client,
        }
    }

    fn is_finished(&self) -> bool {
        self.to_backend.is_done() && self.to_client.is_done()
    }

    fn read(&mut self, side: Side, ready: io::Result<()>, now: Instant) {
        if ready.is_err() {
            return self.source_gone(side);
        }
        if let Some(len) = self.splice_len(side) {
            if let Some(pipe) = splice::take() {
                return self.splice_in(side, pipe, len, now);
            }
        }
        // A rate-limited client's read is sized to its budget, in a buffer
        // of that size (not a pooled one, which must keep its capacity).
        let cap = match (side, self.throttle.as_deref()) {
            (Side::Client, Some(throttle)) => throttle.read_cap(now),
            _ => None,
        };
        let mut buffer = cap.map_or_else(buffer_pool::take, Vec::with_capacity);
        let source = match side {
            Side::Client => &mut self.client,
            Side::Backend => &mut self.backend,
        };
        match source.read(&mut buffer) {
            Ok(read) if read > 0 => {
                let chunk = match cap {
                    Some(_) => Bytes::from(buffer),
                    None => buffer_pool::freeze(buffer),
                };
                self.received(side, chunk, 0, now);
            }
            Ok(_) => {
                buffer_pool::give_back(buffer);
                self.source_gone(side);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => buffer_pool::give_back(buffer),
            Err(e) => {
                buffer_pool::give_back(buffer);
                tracing::debug!(error = %e, ?side, "websocket read failed");
                self.source_gone(side);
            }
        }
    }

    /// How many bytes the next read from `side` may leave to the kernel:
    /// the rest of a large data frame, when both sides are plain TCP (TLS
    /// records must pass through rustls) and the bytes are to be forwarded.
    /// Frame headers and control frames are always read, so the parser
    /// sees every one of them.
    fn splice_len(&self, side: Side) -> Option<usize> {
        let pump = match side {
            Side::Client => &self.to_backend,
            Side::Backend => &self.to_client,
        };
        let plain = self.client.plain_socket().is_some() && self.backend.plain_socket().is_some();
        let forwarding = !pump.discarding && !pump.skipping && !pump.destination_failed;
        let left = pump.parser.data_payload_left();
        let most = match (side, self.throttle.as_deref()) {
            (Side::Client, Some(throttle)) => {
                throttle.read_cap(Instant::now()).unwrap_or(SPLICE_MAX)
            }
            _ => SPLICE_MAX,
        };
        (plain && forwarding && left >= SPLICE_MIN)
            .then(|| usize::try_from(left).map_or(most, |left| left.min(most)))
    }

    /// Moves up to `len` payload bytes from `side`'s socket into `pipe`,
    /// for the destination to take with the next write.
    fn splice_in(&mut self, side: Side, pipe: splice::Pipe, len: usize, now: Instant) {
        let source = match side {
            Side::Client => &self.client,
            Side::Backend => &self.backend,
        };
        let filled = match source.plain_socket() {
            Some(stream) => pipe.fill_from(stream, len),
            None => Err(io::ErrorKind::Unsupported.into()),
        };
        match filled {
            Ok(0) => {
                splice::give_back(pipe);
                self.source_gone(side);
            }
            Ok(moved) => {
                let pump = self.pump(side);
                pump.parser.skip_data_payload(moved as u64);
                pump.pipe = Some(pipe);
                pump.piped = moved;
                // Nothing to scan; this lets the parser report the frame's
                // end and keeps the liveness and tallies current.
                self.received(side, Bytes::new(), moved, now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => splice::give_back(pipe),
            Err(e) => {
                splice::give_back(pipe);
                tracing::debug!(error = %e, ?side, "websocket splice failed");
                self.source_gone(side);
            }
        }
    }

    /// Handles a chunk read from `side` (and `spliced` bytes the kernel
    /// moved past it).
    fn received(&mut self, side: Side, chunk: Bytes, spliced: usize, now: Instant) {
        self.last_activity = now;
        let read = (chunk.len() + spliced) as u64;
        let messages_before = self.to_backend.traffic.messages;
        let our_ping = match side {
            Side::Client => self.pinger.awaiting.map(|(_, payload)| payload),
            Side::Backend => None,
        };
        if side == Side::Client {
            self.pinger.last_client_data = now;
            self.pinger.alive_by = None;
        }
        let pump = self.pump(side);
        let scan = pump.scan(chunk, our_ping);
        // Per read batch, so open sessions show their traffic as it happens.
        pump.flush_tally();
        let Traffic {
            messages,
            payload_bytes,
            ..
        } = pump.traffic;
        match side {
            Side::Client => {
                self.live.set_client(messages, payload_bytes);
                self.charge_client(messages - messages_before, read, now);
            }
            Side::Backend => self.live.set_backend(messages, payload_bytes),
        }
        let pump = self.pump(side);
        if pump.destination_failed {
            // Nobody to deliver to; keep reading so the source's close is seen.
            pump.fail_destination();
        }
        if let (Some(_), Some((sent_at, _))) = (scan.pong, self.pinger.awaiting) {
            let rtt = now - sent_at;
            self.stats.ping_rtt = Some(rtt);
            if let Some(series) = &self.ping_rtt {
                series.observe(rtt.as_secs_f64());
            }
            self.pinger.awaiting = None;
        }
        if let Some(code) = scan.close {
            // RFC 6455 §7.1.5: a close frame without a code reports 1005.
            self.record_close(initiator(side), Some(code.unwrap_or(1005)), None);
            self.close_by.get_or_insert(now + CLOSE_TIMEOUT);
        }
        if let Some(violation) = scan.violation {
            tracing::debug!(?side, %violation, "websocket protocol violation");
            let (code, reason) = (violation.close_code(), violation_reason(violation));
            match side {
                Side::Client => {
                    // The backend may still be answering messages the client
                    // sent before the violation: pass those on, then close.
                    self.record_close(Initiator::Gateway, Some(code), Some(reason));
                    self.close_by.get_or_insert(now + CLOSE_TIMEOUT);
                    let to_backend =
                        frame::encode_close(1001, "client broke the protocol", Some(mask_key()));
                    self.to_backend.insert(Bytes::from(to_backend), true);
                    let to_client = frame::encode_close(code, reason, None);
                    self.to_client.close_after_reply(Bytes::from(to_client));
                }
                Side::Backend => {
                    self.record_close(Initiator::Gateway, Some(code), Some(reason));
                    match self.to_client.replace_close.take() {
                        // The client broke the protocol first and is owed that close.
                        Some(owed) => {
                            self.close_by.get_or_insert(now + CLOSE_TIMEOUT);
                            self.to_client.insert(owed, true);
                            let to_backend = frame::encode_close(code, reason, Some(mask_key()));
                            self.to_backend.insert(Bytes::from(to_backend), true);
                        }
                        None => self.close_both(1001, "backend broke the protocol", code, reason),
                    }
                }
            }
        }
    }

    /// Charges a read from the client to its budgets: past them, reading
    /// pauses, or (`rate_exceeded = "close"`, after the grace) the session
    /// closes with 1008.
    fn charge_client(&mut self, messages: u64, bytes: u64, now: Instant) {
        // Once closing, the client's close reply is all that matters.
        let open = self.stats.closing.is_none();
        let Some(throttle) = self.throttle.as_deref_mut().filter(|_| open) else {
            return;
        };
        match throttle.charge(messages, bytes, now) {
            Verdict::Go => {}
            Verdict::Paused(limit) => {
                if let Some(meters) = self.limit_meters {
                    meters.throttled(limit);
                }
            }
            Verdict::Close(limit) => self.close_over_rate(limit),
        }
    }

    /// Close mode: the client kept over `limit` past the grace.
    fn close_over_rate(&mut self, limit: Limit) {
        if let Some(meters) = self.limit_meters {
            meters.rejected(limit);
        }
        let reason = match limit {
            Limit::ByteRate => "byte rate exceeded",
            _ => "message rate exceeded",
        };
        self.close_both(1008, reason, 1001, "client exceeded its rate");
    }

    /// Whether reading from the client waits for its budgets. Once the
    /// session is closing, its close reply is read whatever the budget.
    fn client_paused(&self) -> bool {
        self.stats.closing.is_none() && self.throttle.as_deref().is_some_and(Throttle::is_paused)
    }

    fn written(&mut self, side: Side, ready: io::Result<()>, now: Instant) {
        let (pump, destination) = match side {
            Side::Backend => (&mut self.to_backend, &mut self.backend),
            Side::Client => (&mut self.to_client, &mut self.client),
        };
        if ready.is_err() {
            pump.fail_destination();
            return;
        }
        if !pump.wants_write(destination) {
            return;
        }
        pump.flush(destination);
        if pump.out.is_empty() {
            self.last_activity = now;
        }
    }

    /// A peer closed its connection or failed without a close frame.
    fn source_gone(&mut self, side: Side) {
        let pump = self.pump(side);
        pump.source_done = true;
        let vanished = !pump.close_from_source;
        let (back, link) = match side {
            Side::Client => (&mut self.to_client, &self.client),
            Side::Backend => (&mut self.to_backend, &self.backend),
        };
        // An HTTP/2 stream that ends after its close frame is only half
        // closed (browsers send their close with END_STREAM): the close
        // reply still reaches it. Otherwise whatever goes back to a peer
        // that is gone cannot be delivered.
        if vanished || !link.half_closes() {
            back.fail_destination();
        }
        if !vanished {
            return;
        }
        self.record_close(initiator(side), None, None);
        self.close_by.get_or_insert(Instant::now() + CLOSE_TIMEOUT);
        let (code, reason, mask) = match side {
            // RFC 6455 §7.4.1: 1014, the gateway got an invalid response from the server.
            Side::Backend => (1014, "backend went away", None),
            Side::Client => (1001, "client went away", Some(mask_key())),
        };
        let pump = self.pump(side);
        let frame = pump
            .replace_close
            .take()
            .unwrap_or_else(|| Bytes::from(frame::encode_close(code, reason, mask)));
        if pump.forwarded_at_boundary() {
            pump.insert(frame, true);
        } else {
            // Mid-frame: no valid close frame can follow; end the connection.
            pump.fail_destination();
        }
    }

    /// The gateway closes both sides, at frame boundaries.
    fn close_both(
        &mut self,
        client_code: u16,
        client_reason: &'static str,
        backend_code: u16,
        backend_reason: &'static str,
    ) {
        self.record_close(Initiator::Gateway, Some(client_code), Some(client_reason));
        self.close_by.get_or_insert(Instant::now() + CLOSE_TIMEOUT);
        let to_client = frame::encode_close(client_code, client_reason, None);
        self.to_client.insert(Bytes::from(to_client), true);
        let to_backend = frame::encode_close(backend_code, backend_reason, Some(mask_key()));
        self.to_backend.insert(Bytes::from(to_backend), true);
    }

    fn record_close(
        &mut self,
        initiator: Initiator,
        code: Option<u16>,
        reason: Option<&'static str>,
    ) {
        self.stats.closing.get_or_insert(Closing {
            initiator,
            code,
            reason,
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        // Once closing, only the closing handshake's own deadline counts:
        // an idle or ping deadline in the past would fire on every turn.
        let open = self.stats.closing.is_none();
        let idle = self
            .policy
            .idle_timeout
            .filter(|_| open)
            .map(|idle| self.last_activity + idle);
        let ping_due = match (self.policy.ping_interval, self.pinger.alive_by) {
            (Some(interval), None) if open => Some(self.pinger.last_client_data + interval),
            _ => None,
        };
        let throttle = self.throttle.as_deref().filter(|_| open);
        let resume = throttle.and_then(Throttle::resume_at);
        let close_due = throttle.and_then(Throttle::close_due);
        let lifetime = self.ends.map(|(at, _)| at).filter(|_| open);
        [
            idle,
            ping_due,
            self.pinger.alive_by,
            self.close_by,
            resume,
            close_due,
            lifetime,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles whatever deadline passed; true when the session must end now.
    fn on_timer(&mut self, now: Instant) -> bool {
        if self.close_by.is_some_and(|by| now >= by) {
            if let Some(frame) = self.to_client.replace_close.take() {
                // The backend never answered; the client still gets its close code.
                self.to_client.insert(frame, true);
                self.close_by = Some(now + Duration::from_secs(1));
                return false;
            }
            tracing::debug!("closing handshake timed out");
            return true;
        }
        if self.pinger.alive_by.is_some_and(|by| now >= by) {
            tracing::debug!("client did not answer the gateway's ping");
            self.pinger.alive_by = None;
            // Recorded first, so the session counts as closed by the gateway
            // with no close frame (a dead peer, unlike an idle timeout's
            // 1001); then treated like a client that vanished (1001 to the backend).
            self.record_close(
                Initiator::Gateway,
                None,
                Some("no answer to the gateway's ping"),
            );
            self.source_gone(Side::Client);
            return false;
        }
        if self.stats.closing.is_some() {
            return false;
        }
        if let Some(throttle) = &mut self.throttle {
            if let Some(limit) = throttle.close_if_due(now) {
                self.close_over_rate(limit);
                return false;
            }
            throttle.resume_if_due(now);
        }
        if let Some((_, end)) = self.ends.filter(|(at, _)| now >= *at) {
            self.close_both(end.code, end.reason, 1001, end.reason);
            return false;
        }
        if self
            .policy
            .idle_timeout
            .is_some_and(|idle| now >= self.last_activity + idle)
        {
            self.close_both(1001, "idle timeout", 1001, "idle timeout");
            return false;
        }
        if let Some(interval) = self.policy.ping_interval {
            if self.pinger.alive_by.is_none() && now >= self.pinger.last_client_data + interval {
                self.send_ping(now);
            }
        }
        false
    }

    fn send_ping(&mut self, now: Instant) {
        self.pinger.sent += 1;
        let payload = self.pinger.sent.to_be_bytes();
        self.pinger.awaiting = Some((now, payload));
        self.pinger.alive_by = Some(now + self.policy.ping_timeout);
        self.to_client.insert(
            Bytes::from(frame::encode(OpCode::Ping, &payload, None)),
            false,
        );
    }
}

fn initiator(side: Side) -> Initiator {
    match side {
        Side::Client => Initiator::Client,
        Side::Backend => Initiator::Backend,
    }
}

fn violation_reason(violation: Violation) -> &'static str {
    match violation {
        Violation::MessageTooBig => "message too big",
        _ => "protocol error",
    }
}

/// What one session is held to besides its route's policy.
#[derive(Debug, Default)]
pub struct Bounds<'a> {
    /// Where refusals and pauses of its rates are counted.
    pub limit_meters: Option<&'a LimitMeters>,
    /// Its token's expiry, when it came with one.
    pub token_end: Option<SessionEnd>,
}

/// When and how the gateway ends a session on its own: after `at` (from
/// the relay's start), with `code` to the client (the backend gets 1001)
/// and `reason` to both.
#[derive(Debug, Clone, Copy)]
pub struct SessionEnd {
    pub at: Duration,
    pub code: u16,
    pub reason: &'static str,
}

/// The first of the session's own ends: its lifetime cap, its token's expiry.
fn first_end(
    now: Instant,
    policy: &Policy,
    token: Option<SessionEnd>,
) -> Option<(Instant, SessionEnd)> {
    let lifetime = policy.limits.max_duration.map(|cap| SessionEnd {
        at: lifetime(cap),
        code: policy.limits.max_duration_code,
        reason: "session lifetime reached",
    });
    [lifetime, token]
        .into_iter()
        .flatten()
        .min_by_key(|end| end.at)
        .map(|end| (now + end.at, end))
}

/// How long a session with `max_session_duration = cap` lasts: between
/// 90 % and 100 % of the cap, at random, so that sessions opened together
/// (after a deploy, say) do not all end and reconnect together.
fn lifetime(cap: Duration) -> Duration {
    let unit = f64::from(u32::from_le_bytes(mask_key())) / f64::from(u32::MAX);
    cap - (cap / 10).mul_f64(unit)
}

/// A masking key for the gateway's own frames to backends. RFC 6455 §5.3 asks
/// for unpredictable keys to stop script-chosen payloads from steering proxy
/// caches; these frames carry only the gateway's close codes, so a key from
/// the standard library's randomly seeded hasher is enough.
fn mask_key() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let bits = hasher.finish();
    [
        bits as u8,
        (bits >> 8) as u8,
        (bits >> 16) as u8,
        (bits >> 24) as u8,
    ]
}

//! One accepted connection: the TLS handshake where the listener has TLS,
//! then HTTP/1.1 (with upgrades) or HTTP/2 by ALPN, driven to its end or
//! to a graceful close when the server stops. HTTP/2 connections also get
//! a watchdog: one with no open stream for `keepalive_timeout` gets a
//! GOAWAY, and one whose client leaves a response unread for
//! `send_timeout` is closed (see `body::streams`).

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use crate::access_log::TlsFacts;
use crate::body::streams::{OpenStreams, SessionStream};
use crate::body::Body;
use crate::connection::{
    client_io, ClientConnection, ClientIo, ClientStream, Closability, Handler,
};
use crate::metrics::TlsResult;
use crate::model::Limits;
use crate::response::ResetStream;
use crate::tls::{HandshakeError, ServerTls};
use crate::websocket::handshake;

/// How often an idle HTTP/2 connection is pinged to see that the client is still there.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Streams one HTTP/2 connection may have open at once (nginx's
/// `http2_max_concurrent_streams` default); each may hold a file or a
/// backend connection.
const H2_MAX_STREAMS: u32 = 128;

/// Response bytes buffered per HTTP/2 stream while the client's window is
/// closed, so one connection buffers at most `H2_MAX_STREAMS` times this.
const H2_MAX_SEND_BUFFER: usize = 64 * 1024;

/// The longest the HTTP/2 watchdog sleeps when both of its timeouts are off.
const WATCHDOG_MAX_SLEEP: Duration = Duration::from_secs(3600);

/// What one HTTP/2 stream may have in flight from the client unread, and
/// the whole connection. A stream whose backend stops reading (a stalled
/// upload, a WebSocket whose backend is slow) keeps its unread bytes and
/// the connection window they took; with a stream window a quarter of the
/// connection's, one such stream cannot stall the page's other streams,
/// and what a connection can make the gateway hold stays 1 MiB.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// How long a connection that got a GOAWAY (idle, or the server stopping
/// it) may take to finish before it is closed.
const GOAWAY_LINGER: Duration = Duration::from_secs(5);

/// Admits the connection (PROXY header, per-client cap) where its listener
/// asks for that, runs the TLS handshake if the listener has TLS, then
/// serves HTTP/2 when ALPN chose it and HTTP/1.1 (with upgrades) otherwise.
pub(super) async fn serve_connection<H: Handler>(
    stream: TcpStream,
    admission: Option<Admission>,
    tls: Option<Arc<ServerTls>>,
    client: ClientConnection,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
) {
    let mut client = client;
    if let Some(admission) = admission {
        if !admission.admit(&stream, &mut client).await {
            return;
        }
    }
    let Some(tls) = tls else {
        let h2 = client.h2c && opens_with_h2_preface(&stream, limits.header_read_timeout).await;
        let io = client_io(ClientStream::Plain(stream), limits.send_timeout);
        let client = Arc::new(client);
        if h2 {
            return serve_http2(io, &client, handler, limits, stop).await;
        }
        return serve_http1(io, &client, handler, limits, stop).await;
    };
    // Not cut short by a stop: the client is waiting for an answer, and the
    // listener's handshake timeout bounds it.
    let accepted = tls.accept(stream).await;
    let count = |result| {
        if let Some(meters) = &client.meters {
            meters.handshake(result);
        }
    };
    let stream = match accepted {
        Ok(stream) => {
            count(TlsResult::Ok);
            stream
        }
        Err(error) => {
            count(match error {
                HandshakeError::Timeout(_) => TlsResult::Timeout,
                HandshakeError::Failed(_) => TlsResult::Error,
            });
            // Scanners, plaintext HTTP on the TLS port, clients that give up:
            // nothing an operator must act on.
            tracing::debug!(peer = %client.addr, %error, "TLS handshake failed");
            return;
        }
    };
    let session = stream.get_ref().1;
    // A CA checking a TLS-ALPN-01 challenge: the handshake was the answer.
    if session.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
        return;
    }
    let h2 = session.alpn_protocol() == Some(b"h2");
    client.client_cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(crate::tls::client_cert_facts);
    client.tls_facts = Some(TlsFacts {
        version: session.protocol_version().map(tls_version_name),
        alpn: session
            .alpn_protocol()
            .map(|alpn| String::from_utf8_lossy(alpn).into_owned()),
        sni: session.server_name().map(str::to_owned),
    });
    let client = Arc::new(client);
    let io = client_io(ClientStream::Tls(Box::new(stream)), limits.send_timeout);
    if h2 {
        serve_http2(io, &client, handler, limits, stop).await;
    } else {
        serve_http1(io, &client, handler, limits, stop).await;
    }
}

/// What a client with prior knowledge of HTTP/2 sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plaintext client opens with the HTTP/2 preface, peeked so
/// that whichever protocol serves it reads its bytes from the start. An
/// HTTP/1.1 request differs by its third byte at the latest (`PUT`,
/// `POST`); a peek that has fewer waits before looking again, since unread
/// bytes keep the socket readable, and waits longer each time (up to
/// 100 ms), so a client that trickles a prefix costs a few peeks, not a
/// spin. Within `header_read_timeout`, after which HTTP/1.1 takes the
/// connection and its own timeout ends it.
async fn opens_with_h2_preface(stream: &TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut start = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut start)).await {
            Ok(Ok(peeked)) => peeked,
            _ => return false,
        };
        if peeked == 0 || start[..peeked] != H2_PREFACE[..peeked] {
            return false;
        }
        if peeked == H2_PREFACE.len() {
            return true;
        }
        if tokio::time::timeout_at(deadline, tokio::time::sleep(pause))
            .await
            .is_err()
        {
            return false;
        }
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// How the access log names a TLS version.
fn tls_version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}

/// The connection's service: marks what a stopping server must know (see
/// [`Closability`]), calls the handler, and on HTTP/2 ties each response
/// body to its stream in `streams`. An extended CONNECT (RFC 8441) also
/// gets its stream in the request, for the WebSocket session it may become
/// to keep open; a response marked [`ResetStream`] becomes a RST_STREAM.
fn service<H: Handler>(
    client: &Arc<ClientConnection>,
    handler: H,
    streams: Option<Arc<OpenStreams>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = h2::Error,
    Future: Send + 'static,
> {
    let client = Arc::clone(client);
    service_fn(move |mut req: Request<Incoming>| {
        let client = Arc::clone(&client);
        let upgrade = handshake::is_upgrade(req.headers());
        client.closability().request_arrived(upgrade);
        // Open from the request's arrival, so a handler still waiting for a
        // backend keeps the connection from counting as idle.
        let stream = streams.as_ref().map(OpenStreams::opened);
        if let Some(streams) = streams.as_ref().filter(|_| is_extended_connect(&req)) {
            req.extensions_mut()
                .insert(SessionStream::new(streams.opened()));
        }
        let response = handler.call(Arc::clone(&client), req);
        async move {
            let Ok(response) = response.await;
            if upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                client.closability().upgrade_refused();
            }
            if let Some(ResetStream(reason)) = response.extensions().get() {
                return Err(h2::Error::from(*reason));
            }
            Ok(match stream {
                Some(stream) => response.map(|body| body.on_stream(stream)),
                None => response,
            })
        }
    })
}

/// An HTTP/2 CONNECT with a `:protocol` (RFC 8441 §4).
fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some()
}

async fn serve_http1<H: Handler>(
    io: ClientIo,
    client: &Arc<ClientConnection>,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_request_head)
        .keep_alive(true);
    let connection = builder
        .serve_connection(io, service(client, handler, None))
        .with_upgrades();
    // HTTP/1.1 keep-alive connections are bounded by `header_read_timeout`
    // and stalled responses by `send_timeout` at the socket.
    let watchdog = std::future::pending();
    drive(
        connection,
        stop,
        client.closability(),
        |c| c.graceful_shutdown(),
        watchdog,
    )
    .await;
}

async fn serve_http2<H: Handler>(
    io: ClientIo,
    client: &Arc<ClientConnection>,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
) {
    let streams = Arc::new(OpenStreams::default());
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // Pings find peers that vanished without closing.
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .max_header_list_size(u32::try_from(limits.max_request_head).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_send_buf_size(H2_MAX_SEND_BUFFER)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    if client.websocket_over_h2 {
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: browsers then open their
        // WebSockets as streams of this connection (RFC 8441).
        builder.enable_connect_protocol();
    }
    let connection =
        builder.serve_connection(io, service(client, handler, Some(Arc::clone(&streams))));
    let watchdog = watch_http2(&streams, limits.keepalive_timeout, limits.send_timeout);
    drive(
        connection,
        stop,
        client.closability(),
        |c| c.graceful_shutdown(),
        watchdog,
    )
    .await;
}

/// Why a watchdog ends a connection.
enum Verdict {
    /// No stream was open for `keepalive_timeout`: GOAWAY.
    Idle,
    /// A response waited this long for the client to read: close.
    Stalled(Duration),
}

/// Resolves when an HTTP/2 connection has been idle for `keepalive` or a
/// stream has waited for its client for `send_timeout` (zero turns either
/// off). Woken by its own timer only, never by a request: each turn
/// sleeps until the earliest moment either could be true.
async fn watch_http2(
    streams: &OpenStreams,
    keepalive: Duration,
    send_timeout: Duration,
) -> Verdict {
    loop {
        let mut next = WATCHDOG_MAX_SLEEP;
        if !keepalive.is_zero() {
            let idle = streams.idle_for().unwrap_or_default();
            if idle >= keepalive {
                return Verdict::Idle;
            }
            next = next.min(keepalive - idle);
        }
        if !send_timeout.is_zero() {
            let waited = streams.longest_wait().unwrap_or_default();
            if waited >= send_timeout {
                return Verdict::Stalled(waited);
            }
            next = next.min(send_timeout - waited);
        }
        tokio::time::sleep(next).await;
    }
}

/// Drives a connection to its end. Once `stop` fires, asks it to finish the
/// requests in flight and close; see [`Closability`] for when that is
/// (hyper's header read timeout bounds the wait for a first request). The
/// `watchdog` can end it earlier.
async fn drive<C, E>(
    connection: C,
    stop: CancellationToken,
    closability: &Closability,
    graceful_shutdown: fn(Pin<&mut C>),
    watchdog: impl Future<Output = Verdict>,
) where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    tokio::pin!(connection);
    tokio::pin!(watchdog);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        verdict = &mut watchdog => match verdict {
            Verdict::Idle => {
                graceful_shutdown(connection.as_mut());
                match tokio::time::timeout(GOAWAY_LINGER, connection.as_mut()).await {
                    Ok(result) => result,
                    Err(_) => return,
                }
            }
            Verdict::Stalled(waited) => {
                tracing::debug!(?waited, "the client read none of a response for send_timeout; closing the connection");
                return;
            }
        },
        () = stop.cancelled() => {
            tokio::select! {
                result = connection.as_mut() => result,
                () = closability.closable() => {
                    graceful_shutdown(connection.as_mut());
                    // Still watched: an HTTP/2 client that stops reading
                    // would otherwise keep a stream, and so the connection,
                    // open for as long as it likes (a listener removed by a
                    // reload has no shutdown deadline).
                    tokio::select! {
                        result = connection.as_mut() => result,
                        verdict = &mut watchdog => match verdict {
                            Verdict::Stalled(_) => return,
                            Verdict::Idle => match tokio::time::timeout(GOAWAY_LINGER, connection.as_mut()).await {
                                Ok(result) => result,
                                Err(_) => return,
                            },
                        },
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// What `opens_with_h2_preface` says of a client that sends `parts`
    /// with a pause between them, then waits.
    async fn sees_preface(parts: &[&'static [u8]]) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let parts = parts.to_vec();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            for part in parts {
                stream.write_all(part).await.expect("write");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let (server, _) = listener.accept().await.expect("accept");
        let seen = opens_with_h2_preface(&server, Duration::from_millis(200)).await;
        client.abort();
        seen
    }

    #[tokio::test]
    async fn the_h2_preface_is_told_from_http1_however_it_arrives() {
        assert!(sees_preface(&[H2_PREFACE]).await);
        assert!(sees_preface(&[b"PR", b"I * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await);
        assert!(!sees_preface(&[b"P", b"OST / HTTP/1.1\r\n"]).await);
        assert!(!sees_preface(&[b"GET / HTTP/1.1\r\n\r\n"]).await);
        // A prefix that stops growing: HTTP/1.1 gets it at the deadline.
        assert!(!sees_preface(&[b"PRI * HT"]).await);
        assert!(!sees_preface(&[]).await);
    }
}

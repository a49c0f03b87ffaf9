//! Listeners, the accept loop, one task per connection, and the graceful drain.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::body::Body;
use crate::gateway::{self, Gateway};
use crate::metrics::{Active, ListenerMeters, TlsResult};
use crate::snapshot::Limits;
use crate::tls::{HandshakeError, ServerTls};

/// Longest pause after an accept error such as EMFILE, so the loop neither
/// spins nor gives up while file descriptors are exhausted.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How often an idle HTTP/2 connection is pinged to see that the client is still there.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Connections the admin listener serves at once: enough for probes and
/// scrapers, and separate from the public limit so it answers when that is full.
const ADMIN_CONNECTIONS: usize = 64;

/// A client connection: its address, how it arrived, and its slot under
/// `max_connections`, held until the connection and any WebSocket session it
/// became are gone.
#[derive(Debug)]
pub struct ClientConnection {
    pub addr: SocketAddr,
    /// Whether the client reached us over TLS (`https`, `wss`).
    pub tls: bool,
    /// Set on a plaintext listener that sends everyone to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// The listener's series; `None` on the admin listener or with metrics off.
    meters: Option<ListenerMeters>,
    _slot: OwnedSemaphorePermit,
    /// Counts the connection in `wsgate_connections_active` while it lives.
    _active: Option<Active>,
}

impl ClientConnection {
    /// The scheme the client used, as `X-Forwarded-Proto` reports it.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// Serves the public listeners (in the order of the snapshot's `listeners`,
/// whose settings they take) and the admin listener until `shutdown`
/// resolves, then drains: stop accepting, let in-flight requests finish,
/// close WebSocket sessions with 1001, and return when all that is done or
/// when the snapshot's shutdown deadline passes.
pub async fn run(
    listeners: Vec<TcpListener>,
    admin: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let mut accept_loops = Vec::new();
    // Shared by all public listeners; a reload does not resize it.
    let slots = Arc::new(Semaphore::new(gateway.snapshot().limits.max_connections));
    for (index, listener) in listeners.into_iter().enumerate() {
        let for_requests = Arc::clone(&gateway);
        let handler = move |client, req| gateway::handle(Arc::clone(&for_requests), client, req);
        let accept = accept_loop(
            listener,
            Some(index),
            Arc::clone(&slots),
            Arc::clone(&gateway),
            handler,
            connections.clone(),
            stop.clone(),
        );
        accept_loops.push(tokio::spawn(accept));
    }
    // The admin listener has its own tracker: it keeps answering /readyz with
    // 503 during the drain and is not waited for.
    let admin_gateway = Arc::clone(&gateway);
    let admin_handler = move |_client, req| admin::handle(Arc::clone(&admin_gateway), req);
    let admin_accept = accept_loop(
        admin,
        None,
        Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
        Arc::clone(&gateway),
        admin_handler,
        TaskTracker::new(),
        admin_stop.clone(),
    );
    let admin_loop = tokio::spawn(admin_accept);

    shutdown.await;
    gateway.start_draining();
    stop.cancel();
    for accept in accept_loops {
        let _ = accept.await;
    }
    connections.close();
    gateway.close_sessions();
    let deadline = gateway.snapshot().limits.shutdown_timeout;
    let sessions = gateway.sessions();
    tracing::info!(
        connections = connections.len(),
        sessions = sessions.len(),
        ?deadline,
        "draining"
    );
    let drained = async { tokio::join!(connections.wait(), sessions.wait()) };
    if tokio::time::timeout(deadline, drained).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            sessions = sessions.len(),
            "drain deadline passed; closing the rest"
        );
    }
    admin_stop.cancel();
    let _ = admin_loop.await;
}

/// Accepts while a slot is free; at the limit, new connections wait in the
/// kernel's listen backlog. Limits and the listener's settings (entry
/// `index` of the snapshot's listeners; `None` for admin) come from the
/// snapshot current at accept time and hold for the connection's life.
async fn accept_loop<H, F>(
    listener: TcpListener,
    index: Option<usize>,
    slots: Arc<Semaphore>,
    gateway: Arc<Gateway>,
    handler: H,
    connections: TaskTracker,
    stop: CancellationToken,
) where
    H: Fn(Arc<ClientConnection>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut backoff = Duration::ZERO;
    let mut at_limit = false;
    loop {
        let full = slots.available_permits() == 0;
        if full && !at_limit {
            tracing::warn!("connection limit reached; new connections wait in the listen backlog");
        }
        at_limit = full;
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => return,
            },
            () = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                // Small responses must not wait for Nagle's timer.
                let _ = stream.set_nodelay(true);
                let snapshot = gateway.snapshot();
                let settings = index.and_then(|i| snapshot.listeners.get(i));
                let tls = settings.and_then(|l| l.tls.clone());
                let meters = settings.and_then(|l| l.meters.get());
                let client = ClientConnection {
                    addr: peer,
                    tls: tls.is_some(),
                    redirect_https: settings.and_then(|l| l.redirect_https),
                    meters: meters.cloned(),
                    _slot: slot,
                    _active: meters.map(ListenerMeters::connection_opened),
                };
                let connection = serve_connection(
                    stream,
                    tls,
                    client,
                    handler.clone(),
                    snapshot.limits,
                    stop.clone(),
                );
                connections.spawn(connection);
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "accept failed for one connection");
            }
            Err(error) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                tracing::warn!(%error, ?backoff, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Runs the TLS handshake if the listener has TLS, then serves HTTP/2 when
/// ALPN chose it and HTTP/1.1 (with upgrades) otherwise.
async fn serve_connection<H, F>(
    stream: TcpStream,
    tls: Option<Arc<ServerTls>>,
    client: ClientConnection,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
) where
    H: Fn(Arc<ClientConnection>, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let client = Arc::new(client);
    let peer = client.addr;
    let meters = client.meters.clone();
    let service = service_fn(move |req| handler(Arc::clone(&client), req));
    let Some(tls) = tls else {
        return serve_http1(TokioIo::new(stream), service, limits, stop).await;
    };
    let accepted = tokio::select! {
        accepted = tls.accept(stream) => accepted,
        () = stop.cancelled() => return,
    };
    let count = |result| {
        if let Some(meters) = &meters {
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
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // HTTP/2 has no request-head deadline between requests; pings
            // find peers that vanished without closing.
            .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
            .max_header_list_size(u32::try_from(limits.max_request_head).unwrap_or(u32::MAX));
        // No extended CONNECT (RFC 8441) yet: browsers open wss:// over HTTP/1.1.
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        drive(connection, stop, |c| c.graceful_shutdown()).await;
    } else {
        serve_http1(TokioIo::new(stream), service, limits, stop).await;
    }
}

async fn serve_http1<I, S>(io: I, service: S, limits: Limits, stop: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_request_head)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    drive(connection, stop, |c| c.graceful_shutdown()).await;
}

/// Drives a connection to its end; once `stop` fires, asks it to finish the
/// requests in flight and close.
async fn drive<C, E>(connection: C, stop: CancellationToken, graceful_shutdown: fn(Pin<&mut C>))
where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

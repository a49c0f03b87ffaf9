//! Listeners, the accept loop, one task per connection, and the graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::body::Body;
use crate::gateway::{self, Gateway};
use crate::snapshot::Limits;

/// Longest pause after an accept error such as EMFILE, so the loop neither
/// spins nor gives up while file descriptors are exhausted.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections the admin listener serves at once: enough for probes and
/// scrapers, and separate from the public limit so it answers when that is full.
const ADMIN_CONNECTIONS: usize = 64;

/// A client connection: its address and its slot under `max_connections`,
/// held until the connection and any WebSocket session it became are gone.
#[derive(Debug)]
pub struct ClientConnection {
    pub addr: SocketAddr,
    _slot: OwnedSemaphorePermit,
}

/// Serves the public listeners and the admin listener until `shutdown`
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
    for listener in listeners {
        let for_requests = Arc::clone(&gateway);
        let handler = move |client, req| gateway::handle(Arc::clone(&for_requests), client, req);
        let accept = accept_loop(
            listener,
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
/// kernel's listen backlog. Limits come from the snapshot current at accept
/// time and hold for the connection's life, like the rest of its config.
async fn accept_loop<H, F>(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    gateway: Arc<Gateway>,
    handler: H,
    connections: TaskTracker,
    stop: CancellationToken,
) where
    H: Fn(Arc<ClientConnection>, Request<Incoming>) -> F + Clone + Send + 'static,
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
                let limits = gateway.snapshot().limits;
                let client = Arc::new(ClientConnection {
                    addr: peer,
                    _slot: slot,
                });
                let connection =
                    serve_connection(stream, client, handler.clone(), limits, stop.clone());
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

async fn serve_connection<H, F>(
    stream: TcpStream,
    client: Arc<ClientConnection>,
    handler: H,
    limits: Limits,
    stop: CancellationToken,
) where
    H: Fn(Arc<ClientConnection>, Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_request_head)
        .keep_alive(true);
    let connection = builder
        .serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| handler(Arc::clone(&client), req)),
        )
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

//! Listeners, the accept loop, one task per connection, and the graceful drain.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client_limits::RateRule;
use crate::connection::{ClientConnection, Handler};
use crate::gateway::{self, Gateway};
use crate::metrics::{AcceptError, ListenerMeters};
use crate::model::Model;
use crate::snapshot::Snapshot;
use crate::tls::ServerTls;
use crate::upstream::{warn_throttled, LogThrottle};

mod admission;
pub mod fd_limit;
mod fd_reserve;
mod listen;
mod serve;

use admission::Admission;
use fd_reserve::{is_out_of_descriptors, FdReserve};
pub use listen::{bind, ListenerKey};
use listen::{steer_to_successor, HANDOVER};
use serve::serve_connection;

/// Longest pause after an accept error such as EMFILE, so the loop neither
/// spins nor gives up while file descriptors are exhausted.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections the admin listener serves at once: enough for probes and
/// scrapers, and separate from the public limit so it answers when that is full.
const ADMIN_CONNECTIONS: usize = 64;

/// A running server: its public listeners (which a reload may change), the
/// admin listener, and the connections they accepted.
pub struct Server {
    gateway: Arc<Gateway>,
    /// Shared by all public listeners; a reload does not resize it.
    slots: Arc<Semaphore>,
    connections: TaskTracker,
    /// Cancelled when the server stops accepting; each listener's token is
    /// a child, cancelled alone when a reload removes the listener.
    stop: CancellationToken,
    listeners: Mutex<Vec<Running>>,
    admin_stop: CancellationToken,
    admin_loop: Mutex<Option<JoinHandle<()>>>,
}

/// A public listener being served.
struct Running {
    key: ListenerKey,
    local: SocketAddr,
    stop: CancellationToken,
    accept: JoinHandle<()>,
}

impl Server {
    /// Starts serving: `listeners` are the snapshot's public listeners, bound,
    /// in its order; `admin` is the operator's listener, answered by
    /// `admin_handler` (the server does not know what it serves).
    pub fn start<H>(
        listeners: Vec<TcpListener>,
        admin: TcpListener,
        admin_handler: H,
        gateway: Arc<Gateway>,
    ) -> Arc<Server>
    where
        H: Handler,
    {
        let snapshot = gateway.snapshot();
        let server = Arc::new(Server {
            slots: Arc::new(Semaphore::new(snapshot.model.limits.max_connections)),
            gateway: Arc::clone(&gateway),
            connections: TaskTracker::new(),
            stop: CancellationToken::new(),
            listeners: Mutex::new(Vec::new()),
            admin_stop: CancellationToken::new(),
            admin_loop: Mutex::new(None),
        });
        let keys = listener_keys(&snapshot);
        server.serve_listeners(keys.into_iter().zip(listeners).collect());
        // The admin listener keeps answering /readyz with 503 during the
        // drain; its connections are not waited for.
        let acceptor = Acceptor {
            key: None,
            slots: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            gateway,
            handler: admin_handler,
            connections: TaskTracker::new(),
            stop: server.admin_stop.clone(),
            reserve: Some(Arc::new(FdReserve::new())),
            warnings: LogThrottle::default(),
        };
        *lock(&server.admin_loop) = Some(tokio::spawn(acceptor.run(admin)));
        server
    }

    fn serve_listeners(&self, bound: Vec<(ListenerKey, TcpListener)>) {
        let mut running = lock(&self.listeners);
        for (key, listener) in bound {
            let local = listener.local_addr().unwrap_or(key.bind);
            let stop = self.stop.child_token();
            let gateway = Arc::clone(&self.gateway);
            let handler = move |client, req| gateway::handle(Arc::clone(&gateway), client, req);
            let acceptor = Acceptor {
                key: Some(key),
                slots: Arc::clone(&self.slots),
                gateway: Arc::clone(&self.gateway),
                handler,
                connections: self.connections.clone(),
                stop: stop.clone(),
                reserve: None,
                warnings: LogThrottle::default(),
            };
            let accept = tokio::spawn(acceptor.run(listener));
            running.push(Running {
                key,
                local,
                stop,
                accept,
            });
        }
    }

    /// The addresses the public listeners are bound to, in the order of the
    /// current snapshot's listeners.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let running = lock(&self.listeners);
        let keys = listener_keys(&self.gateway.snapshot());
        keys.iter()
            .filter_map(|key| running.iter().find(|r| r.key == *key).map(|r| r.local))
            .collect()
    }

    /// Binds the listeners `next` has and the running server does not.
    /// Nothing is served on them until `switch_listeners`; on an error the
    /// ones bound so far are closed again.
    pub fn bind_added(&self, next: &Model) -> anyhow::Result<Vec<(ListenerKey, TcpListener)>> {
        let running: Vec<ListenerKey> = lock(&self.listeners).iter().map(|r| r.key).collect();
        let mut bound = Vec::new();
        for key in ListenerKey::all(next.listeners.iter().map(|l| l.bind)) {
            if !running.contains(&key) {
                let listener =
                    bind(key.bind).with_context(|| format!("cannot listen on {}", key.bind))?;
                bound.push((key, listener));
            }
        }
        Ok(bound)
    }

    /// After a reload swapped `next` in: serves the listeners `bind_added`
    /// bound, and stops accepting on the ones `next` no longer has (their
    /// connections finish the request in flight and close).
    pub fn switch_listeners(&self, next: &Snapshot, added: Vec<(ListenerKey, TcpListener)>) {
        let keys = listener_keys(next);
        let removed: Vec<Running> = {
            let mut running = lock(&self.listeners);
            let (kept, removed) = std::mem::take(&mut *running)
                .into_iter()
                .partition(|r| keys.contains(&r.key));
            *running = kept;
            removed
        };
        for listener in &added {
            if let Ok(local) = listener.1.local_addr() {
                tracing::info!(addr = %local, "listening");
            }
        }
        self.serve_listeners(added);
        for listener in removed {
            tracing::info!(addr = %listener.local, "listener removed by reload; draining its connections");
            listener.stop.cancel();
        }
    }

    /// The graceful shutdown: `/readyz` turns 503 and new upgrades are
    /// refused at once; after `shutdown_delay` the listeners stop accepting,
    /// requests in flight finish, WebSocket sessions are closed with 1001
    /// spread over `drain_spread`; returns when all that is done or when
    /// `shutdown_timeout` (counted from now) has passed.
    pub async fn shutdown(&self) {
        let started = Instant::now();
        let gateway = &self.gateway;
        gateway.start_draining();
        let drain = gateway.snapshot().model.drain;
        let deadline = started + drain.shutdown_timeout;
        if !drain.shutdown_delay.is_zero() {
            tracing::info!(delay = ?drain.shutdown_delay, "not ready; still accepting until the shutdown delay ends");
            gateway.refuse_upgrades(true);
            tokio::time::sleep(drain.shutdown_delay).await;
        }
        self.stop.cancel();
        let running = std::mem::take(&mut *lock(&self.listeners));
        for listener in running {
            let _ = listener.accept.await;
        }
        gateway.refuse_upgrades(false);
        self.connections.close();
        let sessions = gateway.sessions();
        let closing = sessions.close_all(drain.spread);
        tracing::info!(
            connections = self.connections.len(),
            sessions = closing,
            spread = ?drain.spread,
            deadline = ?deadline.saturating_duration_since(Instant::now()),
            "draining"
        );
        let drained = async { tokio::join!(self.connections.wait(), sessions.wait()) };
        if tokio::time::timeout_at(deadline.into(), drained)
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.connections.len(),
                sessions = sessions.tasks(),
                "drain deadline passed; closing the rest hard"
            );
        }
        self.admin_stop.cancel();
        let admin_loop = lock(&self.admin_loop).take();
        if let Some(admin_loop) = admin_loop {
            let _ = admin_loop.await;
        }
    }
}

/// The identities of `snapshot`'s public listeners, in its order.
fn listener_keys(snapshot: &Snapshot) -> Vec<ListenerKey> {
    ListenerKey::all(snapshot.listeners.iter().map(|l| l.bind))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves the public listeners (in the order of the snapshot's `listeners`,
/// whose settings they take) and the admin listener until `shutdown`
/// resolves, then drains (see [`Server::shutdown`]).
pub async fn run<H>(
    listeners: Vec<TcpListener>,
    admin: TcpListener,
    admin_handler: H,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) where
    H: Handler,
{
    let server = Server::start(listeners, admin, admin_handler, gateway);
    shutdown.await;
    server.shutdown().await;
}

/// The settings a listener's connections take from the snapshot.
#[derive(Clone, Default)]
struct ListenerSettings {
    tls: Option<Arc<ServerTls>>,
    redirect_https: Option<u16>,
    meters: Option<ListenerMeters>,
    proxy_protocol: bool,
    h2c: bool,
    request_rate: Option<RateRule>,
}

/// One listener's accept loop and what its connections need.
struct Acceptor<H> {
    /// `None` for the admin listener, which has no settings in the snapshot.
    key: Option<ListenerKey>,
    slots: Arc<Semaphore>,
    gateway: Arc<Gateway>,
    handler: H,
    connections: TaskTracker,
    stop: CancellationToken,
    /// The admin listener's spare descriptors; `None` on public listeners.
    reserve: Option<Arc<FdReserve>>,
    /// Accept failures are logged at most once every few seconds.
    warnings: LogThrottle,
}

impl<H: Handler> Acceptor<H> {
    /// Accepts and takes a slot; at the limit, the connection just accepted
    /// waits for a slot and later ones wait in the kernel's listen backlog. Once stopped, steers new connections to
    /// a successor on the same port (if there is one) and keeps accepting
    /// for the handover, then takes what is left in the backlog (closing
    /// the socket would reset those connections) and closes the socket.
    async fn run(self, listener: TcpListener) {
        let mut backoff = Duration::ZERO;
        let mut at_limit = false;
        let mut settings = ListenerSettings::default();
        // Accepted, then the limit was reached: served first once stopped.
        let mut waiting = None;
        loop {
            // No slot is held while waiting in `accept`, so listeners that
            // wait for clients do not take slots from the ones that have them.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.stop.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    if let Some(reserve) = &self.reserve {
                        reserve.refill();
                    }
                    let slot = match Arc::clone(&self.slots).try_acquire_owned() {
                        Ok(slot) => {
                            at_limit = false;
                            slot
                        }
                        Err(TryAcquireError::Closed) => return,
                        Err(TryAcquireError::NoPermits) => {
                            if !at_limit {
                                tracing::warn!("connection limit reached; new connections wait until one closes");
                            }
                            at_limit = true;
                            tokio::select! {
                                slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                                    Ok(slot) => slot,
                                    Err(_closed) => return,
                                },
                                () = self.stop.cancelled() => {
                                    waiting = Some((stream, peer));
                                    break;
                                }
                            }
                        }
                    };
                    self.serve(stream, peer, slot, &mut settings);
                }
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "accept failed for one connection");
                }
                Err(error) => {
                    let out_of_descriptors = is_out_of_descriptors(&error);
                    if let Some(meters) = self.meters() {
                        meters.accept_failed(if out_of_descriptors {
                            AcceptError::OutOfFileDescriptors
                        } else {
                            AcceptError::Other
                        });
                    }
                    // The admin listener accepts into a spare descriptor.
                    let spared = out_of_descriptors
                        && self.reserve.as_ref().is_some_and(|r| r.release_one());
                    if spared {
                        continue;
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    warn_throttled!(self.warnings, %error, ?backoff, "accept failed; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
            }
        }
        if let Some((stream, peer)) = waiting {
            if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                self.serve(stream, peer, slot, &mut settings);
            }
        }
        if self.key.is_some() && steer_to_successor(&listener) {
            let handover_ends = tokio::time::Instant::now() + HANDOVER;
            while let Ok(Ok((stream, peer))) =
                tokio::time::timeout_at(handover_ends, listener.accept()).await
            {
                if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                    self.serve(stream, peer, slot, &mut settings);
                }
            }
        }
        while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => self.serve(stream, peer, slot, &mut settings),
                Err(_) => break,
            }
        }
    }

    /// The listener's series in the current snapshot (none for the admin listener).
    fn meters(&self) -> Option<ListenerMeters> {
        let snapshot = self.gateway.snapshot();
        self.key
            .and_then(|key| key.settings(&snapshot))
            .and_then(|listener| listener.meters.clone())
    }

    /// Starts serving one accepted connection. Limits and the listener's
    /// settings come from the snapshot current now and hold for the
    /// connection's life; `last` keeps the listener's settings for
    /// connections accepted after a reload removed it.
    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        last: &mut ListenerSettings,
    ) {
        // Small responses must not wait for Nagle's timer.
        let _ = stream.set_nodelay(true);
        let snapshot = self.gateway.snapshot();
        if let Some(listener) = self.key.and_then(|key| key.settings(&snapshot)) {
            *last = ListenerSettings {
                tls: listener.tls.clone(),
                redirect_https: listener.redirect_https,
                meters: listener.meters.clone(),
                proxy_protocol: listener.proxy_protocol,
                h2c: listener.h2c,
                request_rate: listener.request_rate,
            };
        }
        let settings = last.clone();
        let mut client = ClientConnection::new(
            peer,
            stream.local_addr().ok(),
            settings.tls.is_some(),
            settings.redirect_https,
            settings.meters,
            slot,
        );
        client.request_rate = settings.request_rate;
        client.h2c = settings.h2c;
        client.websocket_over_h2 = self.key.is_some() && snapshot.router.websocket_over_h2();
        let admission = self.key.and_then(|key| {
            Admission::for_connection(
                &self.gateway,
                &snapshot,
                key.bind,
                settings.proxy_protocol,
                peer,
            )
        });
        let connection = serve_connection(
            stream,
            admission,
            settings.tls,
            client,
            self.handler.clone(),
            snapshot.model.limits,
            self.stop.clone(),
        );
        self.connections.spawn(connection);
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

//! What every handler shares about one client connection: who it is, how it
//! arrived, its slot under `max_connections`, and whether a stopping server
//! may close it. The accept loop makes one per connection and hands it to
//! each request; handlers read it and never reach into the accept loop.

mod send_deadline;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::access_log::TlsFacts;
use crate::body::Body;
use crate::client_limits::{Held, RateRule};
use crate::metrics::{Active, ListenerMeters};
use crate::tls::ClientCertFacts;
pub use send_deadline::SendDeadline;
pub use stream::{client_io, ClientIo, ClientStream};

/// A client connection: its address, how it arrived, and its slot under
/// `max_connections`, held until the connection and any WebSocket session it
/// became are gone.
#[derive(Debug)]
pub struct ClientConnection {
    pub addr: SocketAddr,
    /// The address the client connected to, for the access log.
    pub local: Option<SocketAddr>,
    /// Whether the client reached us over TLS (`https`, `wss`).
    pub tls: bool,
    /// The TLS version, ALPN protocol and SNI name, once the handshake is done.
    pub tls_facts: Option<TlsFacts>,
    /// The client certificate the handshake verified (mTLS listeners).
    pub client_cert: Option<ClientCertFacts>,
    /// Set on a plaintext listener that sends everyone to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// The listener's series; `None` on the admin listener or with metrics off.
    pub meters: Option<ListenerMeters>,
    /// The listener's request rate per client.
    pub request_rate: Option<RateRule>,
    /// Whether an HTTP/2 connection offers WebSockets on its streams
    /// (RFC 8441): some route takes them.
    pub websocket_over_h2: bool,
    /// A plaintext connection that may open with the HTTP/2 preface.
    pub h2c: bool,
    closability: Closability,
    slot: Arc<ConnectionSlot>,
}

/// What a connection counts against while it lives: `max_connections`,
/// `max_connections_per_client` and `wsgate_connections_active`. A
/// WebSocket session keeps this, not the whole [`ClientConnection`], so
/// an idle session does not carry the connection's TLS facts, meters and
/// settings.
#[derive(Debug)]
pub struct ConnectionSlot {
    per_client: OnceLock<Held>,
    _permit: OwnedSemaphorePermit,
    _active: Option<Active>,
}

impl ClientConnection {
    /// A connection from `addr` holding `slot`, counted by `meters` while it lives.
    pub fn new(
        addr: SocketAddr,
        local: Option<SocketAddr>,
        tls: bool,
        redirect_https: Option<u16>,
        meters: Option<ListenerMeters>,
        slot: OwnedSemaphorePermit,
    ) -> ClientConnection {
        ClientConnection {
            addr,
            local,
            tls,
            tls_facts: None,
            client_cert: None,
            redirect_https,
            slot: Arc::new(ConnectionSlot {
                per_client: OnceLock::new(),
                _permit: slot,
                _active: meters.as_ref().map(ListenerMeters::connection_opened),
            }),
            meters,
            request_rate: None,
            websocket_over_h2: false,
            h2c: false,
            closability: Closability::default(),
        }
    }

    /// Counts the connection under `max_connections_per_client` until it,
    /// and any session it becomes, ends.
    pub fn hold_per_client(&self, held: Held) {
        // Admission is the only caller, once per connection.
        let _ = self.slot.per_client.set(held);
    }

    /// What the connection counts against, for a session to keep.
    pub fn slot(&self) -> Arc<ConnectionSlot> {
        Arc::clone(&self.slot)
    }

    /// The scheme the client used, as `X-Forwarded-Proto` reports it.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// When a stopping server may close this connection.
    pub fn closability(&self) -> &Closability {
        &self.closability
    }
}

/// What a stopping server must know before it closes a connection. A
/// client that connected just before the stop has not sent its request yet,
/// and closing at once would fail it. An upgrade in flight must not be
/// closed either: hyper would add `Connection: close` to the 101.
#[derive(Debug, Default)]
pub struct Closability {
    requested: AtomicBool,
    upgrading: AtomicBool,
    changed: Notify,
}

impl Closability {
    /// A request arrived; `upgrade` says whether it asks for one.
    pub fn request_arrived(&self, upgrade: bool) {
        self.upgrading.store(upgrade, Ordering::Release);
        if !self.requested.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    /// The upgrade was refused (not 101): the connection is plain HTTP again.
    pub fn upgrade_refused(&self) {
        self.upgrading.store(false, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Resolves once the connection can be asked to close after its
    /// current response.
    pub async fn closable(&self) {
        loop {
            let changed = self.changed.notified();
            if self.requested.load(Ordering::Acquire) && !self.upgrading.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }
}

/// What answers the requests of a listener's connections: the gateway on
/// public listeners, the admin endpoints on the admin listener.
pub trait Handler: Clone + Send + Sync + 'static {
    type Future: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static;

    fn call(&self, client: Arc<ClientConnection>, req: Request<Incoming>) -> Self::Future;
}

impl<H, F> Handler for H
where
    H: Fn(Arc<ClientConnection>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    type Future = F;

    fn call(&self, client: Arc<ClientConnection>, req: Request<Incoming>) -> F {
        self(client, req)
    }
}

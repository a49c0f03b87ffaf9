//! What a connection on a public listener must pass before TLS or HTTP
//! begins: the PROXY protocol header where the listener expects one, which
//! makes the client's address known, then the cap on connections per
//! client. A connection that fails either is closed at once, not left in
//! the backlog, and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::client_limits::ClientKey;
use crate::connection::ClientConnection;
use crate::gateway::Gateway;
use crate::metrics::Limit;
use crate::proxy_protocol::{self, Header};
use crate::snapshot::Snapshot;

/// The PROXY header's first bytes that tell it from any HTTP method or TLS
/// record: "PROXY " for v1, a stretch of v2's signature no request starts with.
const TELLING_PREFIX: usize = 6;

/// The scope of per-client connection counts (routes' session counts have their own).
const CONNECTIONS: u64 = 0;

/// The checks one accepted connection goes through, settled from the
/// snapshot at accept time. Made only when the listener expects PROXY
/// headers or connections per client are capped, so without either a
/// connection pays nothing.
pub(super) struct Admission {
    gateway: Arc<Gateway>,
    listener: SocketAddr,
    /// `Some(trusted)`: the listener expects PROXY headers, and whether
    /// this peer may send one.
    proxy_protocol: Option<bool>,
    header_timeout: Duration,
    per_client_cap: Option<(u32, u8)>,
}

impl Admission {
    /// The checks for a connection from `peer` on `listener`, if it has any.
    pub(super) fn for_connection(
        gateway: &Arc<Gateway>,
        snapshot: &Snapshot,
        listener: SocketAddr,
        proxy_protocol: bool,
        peer: SocketAddr,
    ) -> Option<Admission> {
        let limits = &snapshot.model.limits;
        let per_client_cap = limits
            .max_connections_per_client
            .map(|cap| (cap, limits.client_ipv6_prefix));
        if !proxy_protocol && per_client_cap.is_none() {
            return None;
        }
        let trusted = snapshot
            .model
            .trusted_proxies
            .trusts(peer.ip().to_canonical());
        Some(Admission {
            gateway: Arc::clone(gateway),
            listener,
            proxy_protocol: proxy_protocol.then_some(trusted),
            header_timeout: limits.header_read_timeout,
            per_client_cap,
        })
    }

    /// Runs the checks; on success the client's address is the one they
    /// settled on and its per-client slot is held. A refusal is counted.
    pub(super) async fn admit(self, stream: &TcpStream, client: &mut ClientConnection) -> bool {
        if let Some(trusted) = self.proxy_protocol {
            match client_address(stream, client.addr, trusted, self.header_timeout).await {
                Ok(addr) => client.addr = addr,
                Err(reason) => {
                    if let Some(metrics) = self.gateway.metrics() {
                        metrics.proxy_protocol_rejected(&self.listener.to_string(), reason);
                    }
                    return false;
                }
            }
        }
        if let Some((cap, prefix)) = self.per_client_cap {
            let key = ClientKey::from_ip(client.addr.ip(), prefix);
            match self
                .gateway
                .client_limits()
                .open
                .try_hold(CONNECTIONS, key, cap)
            {
                Some(held) => client.hold_per_client(held),
                None => {
                    let limit = Limit::ConnectionsPerClient;
                    self.gateway.limit_refused(None, limit, client.addr.ip());
                    return false;
                }
            }
        }
        true
    }
}

/// The address a connection is from: the one a trusted sender's PROXY header
/// names (or the sender itself, for its own health checks), or the peer. A
/// peer that is not trusted and sends a header anyway is refused: it is
/// trying to choose the address it is known by.
async fn client_address(
    stream: &TcpStream,
    peer: SocketAddr,
    trusted: bool,
    within: Duration,
) -> Result<SocketAddr, &'static str> {
    if !trusted {
        return match sends_header(stream, within).await {
            true => Err("untrusted_peer"),
            false => Ok(peer),
        };
    }
    match proxy_protocol::read_header(stream, within).await {
        // An IPv4 client a v2 header carries as IPv6 is logged and limited as IPv4.
        Ok(Header::Proxied { source, .. }) => {
            Ok(SocketAddr::new(source.ip().to_canonical(), source.port()))
        }
        Ok(Header::Local) => Ok(peer),
        Err(error) => {
            tracing::debug!(%peer, %error, "refused a PROXY protocol header");
            Err(error.as_str())
        }
    }
}

/// Whether an untrusted peer's first bytes are a PROXY header, peeked so
/// that nothing is consumed. Only the telling prefix counts: a first
/// segment shorter than that is served as it is (an HTTP parser refuses it
/// if it was a header after all).
async fn sends_header(stream: &TcpStream, within: Duration) -> bool {
    let mut first = [0; TELLING_PREFIX];
    let peeked = tokio::time::timeout(within, stream.peek(&mut first)).await;
    let Ok(Ok(len)) = peeked else {
        // A silent or failed peer: whoever serves it next times out or fails too.
        return false;
    };
    len == TELLING_PREFIX && proxy_protocol::parse(&first).is_ok()
}

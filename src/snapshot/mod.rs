//! The running configuration: the validated [`Model`] and what is built
//! from it to serve requests (listeners' TLS, the router with its static
//! directories, upstream pools, hyper clients and metric handles). A request
//! or connection loads one and keeps it; a reload builds the next from a new
//! model, reusing the backends it keeps, and swaps it in.

mod build;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::acme::{Challenges, ManagedCertificate};
use crate::client_limits::RateRule;
use crate::error_pages::ErrorPages;
use crate::metrics::ListenerMeters;
use crate::model::Model;
use crate::ocsp::Stapler;
use crate::router::Router;
use crate::tls::ServerTls;
pub use build::BuildError;

/// A whole running configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// What it was built from: what `GET /config` shows and the next reload
    /// compares against.
    pub model: Model,
    /// The public listeners, in the model's order.
    pub listeners: Vec<Listener>,
    pub router: Router,
    /// Pages for error answers on every route, and without one.
    pub error_pages: ErrorPages,
    /// One per distinct `tls.acme` block; kept by the next snapshot that
    /// has the same block, with its renewal task.
    pub acme: Vec<Arc<ManagedCertificate>>,
    /// The answers of ACME orders in flight, handed from snapshot to snapshot.
    pub challenges: Arc<Challenges>,
    /// One per configured certificate with an OCSP responder; kept by the
    /// next snapshot that has the same certificate.
    pub staplers: Vec<Arc<Stapler>>,
}

/// One public listener's settings, as its connections take them.
#[derive(Debug)]
pub struct Listener {
    pub bind: SocketAddr,
    /// Present when the listener terminates TLS (https, wss).
    pub tls: Option<Arc<ServerTls>>,
    /// On a plaintext listener: answer every request with a 308 to the
    /// `https://` URL, on this port.
    pub redirect_https: Option<u16>,
    /// `None` with metrics off.
    pub meters: Option<ListenerMeters>,
    /// Connections from trusted proxies start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Clients may open with the HTTP/2 preface (plaintext listeners).
    pub h2c: bool,
    /// Requests per client on the listener.
    pub request_rate: Option<RateRule>,
}

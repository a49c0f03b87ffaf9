//! A connection to a backend: plain TCP, or TLS over TCP for `wss://` and
//! `https://` backends. One concrete type, so the WebSocket relay can take
//! the socket back after an upgrade and the pooled HTTP client can hold it.

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::maybe_tls::MaybeTls;

/// An open connection to a backend.
pub type UpstreamStream = MaybeTls<TlsStream<TcpStream>>;

/// What a backend connection is served over, and so what an upgrade hands back.
pub type UpstreamIo = TokioIo<UpstreamStream>;

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

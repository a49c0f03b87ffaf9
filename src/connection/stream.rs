//! The byte stream under a client connection, named once. hyper serves
//! exactly [`ClientIo`], and an upgrade hands exactly that type back, so the
//! relay's `Upgraded::downcast` names the type the server built: a change to
//! the wrapping changes this alias, and both sides follow it at compile time.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::SendDeadline;
use crate::maybe_tls::MaybeTls;

/// A client's socket, plain or under the TLS session the listener ran.
pub type ClientStream = MaybeTls<TlsStream<TcpStream>>;

/// What a client connection is served over.
pub type ClientIo = TokioIo<SendDeadline<ClientStream>>;

/// Wraps an accepted stream the way every client connection is served.
pub fn client_io(stream: ClientStream, send_timeout: Duration) -> ClientIo {
    TokioIo::new(SendDeadline::new(stream, send_timeout))
}

//! A TCP stream, or a TLS session over one: the one stream type for both
//! client and backend connections, so the code that takes a socket back
//! after an upgrade matches on two variants instead of guessing types.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::Connection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Plain TCP, or TCP under the TLS session `T` (tokio-rustls' server or client stream).
#[derive(Debug)]
pub enum MaybeTls<T> {
    Plain(TcpStream),
    /// Boxed: a TLS session is far larger than a socket.
    Tls(Box<T>),
}

/// A tokio-rustls stream over TCP that can be taken apart, for the relay,
/// which drives the socket and the TLS session itself.
pub trait TlsOverTcp {
    fn into_parts(self) -> (TcpStream, Connection);
}

impl TlsOverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_parts(self) -> (TcpStream, Connection) {
        let (stream, session) = self.into_inner();
        (stream, session.into())
    }
}

impl TlsOverTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn into_parts(self) -> (TcpStream, Connection) {
        let (stream, session) = self.into_inner();
        (stream, session.into())
    }
}

impl<T: TlsOverTcp> MaybeTls<T> {
    /// The socket, and the TLS session over it if there is one.
    pub fn into_parts(self) -> (TcpStream, Option<Connection>) {
        match self {
            MaybeTls::Plain(stream) => (stream, None),
            MaybeTls::Tls(tls) => {
                let (stream, session) = tls.into_parts();
                (stream, Some(session))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(stream) => stream.is_write_vectored(),
            MaybeTls::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MaybeTls::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MaybeTls::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

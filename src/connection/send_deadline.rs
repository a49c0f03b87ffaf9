//! `send_timeout`: a client that stops reading its response (a large file, a
//! proxied download) would otherwise hold its connection, and the backend
//! connection behind it, for as long as it likes. A write that can make no
//! progress for `send_timeout` fails, and hyper closes the connection.
//!
//! Only the HTTP phase is guarded: an upgraded WebSocket connection is
//! unwrapped by the relay, whose pings find clients that stop reading.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stall::StallTimer;

/// A client connection whose writes give up after `send_timeout` without
/// progress.
#[derive(Debug)]
pub struct SendDeadline<S> {
    inner: S,
    stall: Option<StallTimer>,
}

impl<S> SendDeadline<S> {
    /// A zero `limit` turns the deadline off.
    pub fn new(inner: S, limit: Duration) -> SendDeadline<S> {
        SendDeadline {
            inner,
            stall: StallTimer::new(limit),
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(stall) = &mut self.stall else {
            return poll;
        };
        match poll {
            Poll::Ready(result) => {
                stall.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => match stall.poll_stalled(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {:?}", stall.limit()),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

//! An HTTP/2 stream that carries a WebSocket (RFC 8441), seen through the
//! readiness questions the relay asks of a socket.
//!
//! hyper hands the stream over as an [`Upgraded`] that only reads into a
//! buffer it is given and writes when polled. To answer "is there something
//! to read?" without holding a buffer while the stream is idle, a readiness
//! poll reads into a pooled buffer and keeps what it got for the next
//! `read`; a pending poll returns the buffer at once. Writes go through
//! hyper's per-stream send task, which takes the next chunk only once the
//! client's flow-control window has room for the last: a client that stops
//! reading stops the relay writing to it, as a full socket would.
//! A readiness poll takes at most one buffer off the stream, and hyper
//! releases flow-control window only for what was taken, so a backend that
//! stops reading holds the client to one window and one buffer of bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;

use crate::body::streams::SessionStream;
use crate::buffer_pool;

/// The client's side of a WebSocket carried on an HTTP/2 stream.
pub struct H2Stream {
    io: TokioIo<Upgraded>,
    /// What the last readiness poll read and `read` has not taken yet: bytes
    /// (none: the stream ended) or the error that ended it.
    taken: Option<io::Result<Vec<u8>>>,
    /// The relay task's waker, for writes made outside a readiness poll.
    waker: Option<Waker>,
    /// The client ended its side, or the stream failed.
    ended: bool,
    /// The stream as its connection's watchdog sees it: a write that waits
    /// for the client longer than `send_timeout` closes the connection, as
    /// a response the client stops reading does.
    watched: Option<SessionStream>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field(
                "taken",
                &self.taken.as_ref().map(|t| t.as_ref().map(Vec::len)),
            )
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    pub fn new(upgraded: Upgraded, watched: Option<SessionStream>) -> H2Stream {
        H2Stream {
            io: TokioIo::new(upgraded),
            taken: None,
            waker: None,
            ended: false,
            watched,
        }
    }

    /// Ready once bytes, the stream's end or an error wait for `read`.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.taken.is_some() {
            return Poll::Ready(Ok(()));
        }
        let mut buffer = buffer_pool::take();
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut buffer) {
            Poll::Pending => {
                buffer_pool::give_back(buffer);
                Poll::Pending
            }
            Poll::Ready(Ok(_)) => {
                self.taken = Some(Ok(buffer));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => {
                buffer_pool::give_back(buffer);
                self.taken = Some(Err(error));
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Moves what the readiness poll read into `buffer`, as much as it has
    /// room for (a rate-limited read is smaller than a pooled buffer); the
    /// rest waits for the next read. `Ok(0)` is the stream's end.
    pub fn read(&mut self, buffer: &mut Vec<u8>) -> io::Result<usize> {
        let mut got = match self.taken.take() {
            None => return Err(io::ErrorKind::WouldBlock.into()),
            Some(Err(error)) => {
                self.ended = true;
                return Err(error);
            }
            Some(Ok(got)) => got,
        };
        if got.is_empty() {
            self.ended = true;
            buffer_pool::give_back(got);
            return Ok(0);
        }
        let room = buffer.capacity() - buffer.len();
        if buffer.is_empty() && buffer.capacity() == got.capacity() {
            // Both pooled: hand over the filled one instead of copying it.
            std::mem::swap(buffer, &mut got);
            buffer_pool::give_back(got);
            return Ok(buffer.len());
        }
        let moved = room.min(got.len());
        buffer.extend_from_slice(&got[..moved]);
        if moved < got.len() {
            got.drain(..moved);
            self.taken = Some(Ok(got));
        } else {
            buffer_pool::give_back(got);
        }
        Ok(moved)
    }

    /// Ready when hyper's send task can take another chunk: the client's
    /// window had room for the one before.
    pub fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Hands `bytes` to the stream; `WouldBlock` while the send task is
    /// still waiting for the client's window. The relay then polls
    /// [`Self::poll_write_ready`], which wakes it when there is room.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let waker = self.waker.as_ref().unwrap_or(Waker::noop());
        let mut cx = Context::from_waker(waker);
        let written = Pin::new(&mut self.io).poll_write(&mut cx, bytes);
        if let Some(watched) = &self.watched {
            match written {
                Poll::Ready(Ok(_)) => watched.write_went(),
                Poll::Pending => watched.write_waits(),
                Poll::Ready(Err(_)) => {}
            }
        }
        match written {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Ends the stream (END_STREAM) once what was written has gone out,
    /// then waits for the client to end its side. A stream dropped while
    /// the client's side is open is reset (RST_STREAM CANCEL), and Chromium,
    /// seeing the reset before it has read the close frame, reports 1006
    /// instead of the close code. The caller bounds the wait.
    pub async fn close(&mut self) {
        let _ = std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
        while !self.ended {
            if std::future::poll_fn(|cx| self.poll_read_ready(cx))
                .await
                .is_err()
            {
                return;
            }
            let mut discarded = buffer_pool::take();
            let _ = self.read(&mut discarded);
            buffer_pool::give_back(discarded);
        }
    }
}

//! The response body type of every handler: in-memory bytes, a file
//! streamed in bounded chunks, or a backend's body streamed through. One enum instead of a boxed trait object keeps
//! an allocation off every response.

use std::fs::File;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

pub mod compressed;
pub mod proxied;
pub mod streams;

use crate::access_log::Pending;
use crate::buffer_pool;
use crate::metrics::BodyMeter;
pub use proxied::ProxiedBody;
use streams::StreamGuard;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// In-memory content, taken on the first poll.
    Bytes(Option<Bytes>),
    /// A byte range of a file, read chunk by chunk as the connection drains.
    File(FileBody),
    /// A proxied response body, counted against its backend until it ends.
    Proxied(ProxiedBody),
    /// Another body, its bytes and time counted for the route's metrics.
    Metered(Box<(Body, BodyMeter)>),
    /// Another body on an HTTP/2 stream, watched for a client that stops reading.
    OnStream(Box<(Body, StreamGuard)>),
    /// Another body whose access log record is written when it is done.
    Logged(Box<(Body, Pending)>),
    /// Server-sent events, until the client goes away.
    Events(Box<Events>),
    /// Another body, compressed as it streams.
    Compressed(Box<compressed::CompressedBody>),
}

/// A server-sent event stream: `render`'s text at once, then every period.
pub struct Events {
    ticks: tokio::time::Interval,
    render: Box<dyn FnMut() -> Bytes + Send + Sync>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Body {
    pub fn empty() -> Body {
        Body::Bytes(None)
    }

    /// This body, counted by `meter` as it is sent.
    pub fn metered(self, meter: BodyMeter) -> Body {
        Body::Metered(Box::new((self, meter)))
    }

    /// An endless stream of `render`'s events, one now and one every `every`.
    pub fn events(
        every: std::time::Duration,
        render: impl FnMut() -> Bytes + Send + Sync + 'static,
    ) -> Body {
        let mut ticks = tokio::time::interval(every);
        // A client that fell behind gets the current state, not a backlog.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Body::Events(Box::new(Events {
            ticks,
            render: Box::new(render),
        }))
    }

    /// This body, recorded in the access log by `pending` once it is done.
    pub fn logged(self, pending: Pending) -> Body {
        Body::Logged(Box::new((self, pending)))
    }

    /// This body, sent on the HTTP/2 stream `stream` stands for.
    pub fn on_stream(self, stream: StreamGuard) -> Body {
        Body::OnStream(Box::new((self, stream)))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Bytes(Some(bytes).filter(|b| !b.is_empty()))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Body {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let chunk = match self.get_mut() {
            Body::Bytes(bytes) => bytes.take().map(Ok),
            Body::File(file) => file.next_chunk(),
            Body::Proxied(body) => return body.poll_frame(cx),
            Body::Compressed(body) => return body.poll_frame(cx),
            Body::Metered(metered) => {
                let (body, meter) = &mut **metered;
                let poll = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &poll {
                    meter.sent(frame.data_ref().map_or(0, Bytes::len));
                }
                return poll;
            }
            Body::Logged(logged) => {
                let (body, pending) = &mut **logged;
                let poll = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &poll {
                    pending.sent(frame.data_ref().map_or(0, Bytes::len));
                }
                return poll;
            }
            Body::Events(events) => {
                if events.ticks.poll_tick(cx).is_pending() {
                    return Poll::Pending;
                }
                Some(Ok((events.render)()))
            }
            Body::OnStream(watched) => {
                let (body, stream) = &mut **watched;
                stream.polled();
                let poll = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(_))) = &poll {
                    stream.handed_out();
                }
                return poll;
            }
        };
        Poll::Ready(chunk.map(|chunk| chunk.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Bytes(bytes) => bytes.is_none(),
            Body::File(file) => file.remaining == 0,
            Body::Proxied(body) => body.is_end_stream(),
            Body::Compressed(body) => body.is_end_stream(),
            Body::Metered(metered) => metered.0.is_end_stream(),
            Body::OnStream(watched) => watched.0.is_end_stream(),
            Body::Logged(logged) => logged.0.is_end_stream(),
            Body::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::File(file) => SizeHint::with_exact(file.remaining),
            Body::Proxied(body) => body.size_hint(),
            Body::Metered(metered) => metered.0.size_hint(),
            Body::OnStream(watched) => watched.0.size_hint(),
            Body::Logged(logged) => logged.0.size_hint(),
            Body::Events(_) | Body::Compressed(_) => SizeHint::default(),
        }
    }
}

/// Streams `remaining` bytes of a file from its current position, one chunk at a time.
///
/// Chunks are read on the worker thread, as nginx does without `aio`: a read
/// from the page cache costs less than the two thread switches a hop to the
/// blocking pool would (measured: the hop dominated CPU per 1 MiB response).
#[derive(Debug)]
pub struct FileBody {
    file: File,
    remaining: u64,
}

impl FileBody {
    /// `file` must already be positioned at the first byte to send.
    pub fn new(file: File, len: u64) -> FileBody {
        FileBody {
            file,
            remaining: len,
        }
    }

    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.remaining == 0 {
            return None;
        }
        let len = self.remaining.min(buffer_pool::BUFFER_SIZE as u64);
        let chunk = read_chunk(&self.file, len);
        self.remaining = match &chunk {
            Ok(chunk) => self.remaining - chunk.len() as u64,
            // Never poll a failed file again: the response is cut short.
            Err(_) => 0,
        };
        Some(chunk.map(buffer_pool::freeze))
    }
}

/// Reads exactly `len` bytes; a file that shrank underneath us is an error,
/// so a truncated body is never presented as complete.
fn read_chunk(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut chunk = buffer_pool::take();
    // read_to_end fills spare capacity without zeroing it first; `len` never
    // exceeds the capacity, so it does not reallocate.
    file.take(len).read_to_end(&mut chunk)?;
    if (chunk.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while it was sent",
        ));
    }
    Ok(chunk)
}

//! The response body type of every handler: in-memory bytes or a file
//! streamed in bounded chunks. One enum instead of a boxed trait object keeps
//! an allocation off every response.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

/// How much of a file is read per chunk: large enough that the blocking-pool
/// hop is cheap next to the copy, small enough to bound memory per response.
const FILE_CHUNK: u64 = 256 * 1024;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// In-memory content, taken on the first poll.
    Bytes(Option<Bytes>),
    /// A byte range of a file, read on the blocking pool.
    File(FileBody),
}

impl Body {
    pub fn empty() -> Body {
        Body::Bytes(None)
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
        match self.get_mut() {
            Body::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::File(file) => file
                .poll_chunk(cx)
                .map(|chunk| chunk.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Bytes(bytes) => bytes.is_none(),
            Body::File(file) => file.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::File(file) => SizeHint::with_exact(file.remaining),
        }
    }
}

/// Streams `remaining` bytes of a file from its current position, one chunk at a time.
#[derive(Debug)]
pub struct FileBody {
    state: FileState,
    remaining: u64,
}

#[derive(Debug)]
enum FileState {
    Idle(File),
    Reading(JoinHandle<(File, io::Result<Vec<u8>>)>),
    Failed,
}

impl FileBody {
    /// `file` must already be positioned at the first byte to send.
    pub fn new(file: File, len: u64) -> FileBody {
        FileBody {
            state: FileState::Idle(file),
            remaining: len,
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            match std::mem::replace(&mut self.state, FileState::Failed) {
                FileState::Failed => return Poll::Ready(None),
                FileState::Idle(file) => {
                    let len = self.remaining.min(FILE_CHUNK);
                    self.state = FileState::Reading(tokio::task::spawn_blocking(move || {
                        let chunk = read_chunk(&file, len);
                        (file, chunk)
                    }));
                }
                FileState::Reading(mut task) => {
                    let joined = match Pin::new(&mut task).poll(cx) {
                        Poll::Pending => {
                            self.state = FileState::Reading(task);
                            return Poll::Pending;
                        }
                        Poll::Ready(joined) => joined,
                    };
                    let (file, chunk) = joined.map_err(io::Error::other)?;
                    return Poll::Ready(Some(chunk.map(|chunk| {
                        self.remaining -= chunk.len() as u64;
                        self.state = FileState::Idle(file);
                        Bytes::from(chunk)
                    })));
                }
            }
        }
    }
}

/// Reads exactly `len` bytes; a file that shrank underneath us is an error,
/// so a truncated body is never presented as complete.
fn read_chunk(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    // read_to_end fills spare capacity without zeroing it first.
    file.take(len).read_to_end(&mut chunk)?;
    if (chunk.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while it was sent",
        ));
    }
    Ok(chunk)
}

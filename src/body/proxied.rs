//! The two bodies a proxied request moves: the client's request body on its
//! way to a backend, and the backend's response body on its way back. Each
//! is cut off when it stalls for `body_timeout`, so a client that stops
//! sending halfway, or a backend that stops answering halfway, cannot hold a
//! connection on both sides forever.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::metrics::UpstreamErrorKind;
use crate::stall::StallTimer;
use crate::upstream::{warn_throttled, Busy};

/// A backend's response body on its way to the client. Holds the backend's
/// busy count until the last byte, and reports a body broken off or stalled.
#[derive(Debug)]
pub struct ProxiedBody {
    body: Incoming,
    busy: Busy,
    stall: Option<StallTimer>,
    upload: Arc<UploadProgress>,
}

impl ProxiedBody {
    pub fn new(
        body: Incoming,
        busy: Busy,
        body_timeout: Duration,
        upload: Arc<UploadProgress>,
    ) -> ProxiedBody {
        ProxiedBody {
            body,
            busy,
            stall: StallTimer::new(body_timeout),
            upload,
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(stall) = &mut self.stall {
                    stall.progressed();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let backend = self.busy.backend();
                // The backend answered before the upload ended, then the
                // client's body failed and took the backend connection down.
                if self.upload.client_failed() {
                    tracing::debug!(backend = %backend.url, %error, "response cut short by the client's failed request body");
                    return Poll::Ready(Some(Err(io::Error::other(error))));
                }
                backend.failed(UpstreamErrorKind::Aborted);
                warn_throttled!(
                    backend.warnings,
                    backend = %backend.url,
                    %error,
                    "backend broke off its response; closing the client connection"
                );
                Poll::Ready(Some(Err(io::Error::other(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(stall) = &mut self.stall else {
                    return Poll::Pending;
                };
                if stall.poll_stalled(cx).is_pending() {
                    return Poll::Pending;
                }
                let backend = self.busy.backend();
                backend.failed(UpstreamErrorKind::BodyTimeout);
                warn_throttled!(
                    backend.warnings,
                    backend = %backend.url,
                    after = ?stall.limit(),
                    "backend stopped sending its response body; closing the client connection"
                );
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the backend's response body stalled",
                ))))
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client, not the backend, ended the request: its body broke off or
/// stalled. Travels inside hyper's error to `forward`, which answers the
/// client and leaves the backend's record alone.
#[derive(Debug)]
pub enum ClientBodyError {
    Stalled(Duration),
    Broken(hyper::Error),
}

impl ClientBodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ClientBodyError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            ClientBodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The client's error somewhere in `error`'s chain of causes.
    pub fn find<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e ClientBodyError> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(found) = error.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            cause = error.source();
        }
        None
    }
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientBodyError::Stalled(limit) => {
                write!(f, "the client sent no request body data for {limit:?}")
            }
            ClientBodyError::Broken(error) => {
                write!(f, "the client's request body broke off: {error}")
            }
        }
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ClientBodyError::Stalled(_) => None,
            ClientBodyError::Broken(error) => Some(error),
        }
    }
}

/// How the client's request body is getting on, for judging the backend
/// fairly. The wait for the response head (`response_timeout`) counts from
/// the last piece hyper took from the client, so an upload that keeps moving
/// is never cut off for taking long; a wait that ends while hyper waits on
/// the client, or a response broken off because the client's body failed,
/// is the client's doing, not the backend's.
#[derive(Debug)]
pub struct UploadProgress {
    started: Instant,
    /// Milliseconds after `started`.
    last_frame_ms: AtomicU64,
    waiting_on_client: AtomicBool,
    client_failed: AtomicBool,
}

impl UploadProgress {
    pub fn start() -> Arc<UploadProgress> {
        Arc::new(UploadProgress {
            started: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            client_failed: AtomicBool::new(false),
        })
    }

    fn record(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_frame_ms.store(elapsed, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }

    /// Whether hyper is waiting for the client's next piece of body.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// Whether the client's body broke off or stalled.
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }

    fn failed(&self, error: ClientBodyError) -> Box<dyn StdError + Send + Sync> {
        self.waiting_on_client.store(false, Ordering::Relaxed);
        self.client_failed.store(true, Ordering::Relaxed);
        error.into()
    }

    /// The start, for a request whose body the backend has not read yet.
    pub fn last_frame(&self) -> Instant {
        self.started + Duration::from_millis(self.last_frame_ms.load(Ordering::Relaxed))
    }
}

/// The client's request body, lent to one attempt at a time. It stays in
/// the shared slot until hyper first asks for a frame, so an attempt that
/// failed before sending any of it leaves it for the next backend.
pub struct RequestBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    taken: Option<Incoming>,
    stall: Option<StallTimer>,
    upload: Arc<UploadProgress>,
}

impl RequestBody {
    pub fn new(
        slot: &Arc<Mutex<Option<Incoming>>>,
        body_timeout: Duration,
        upload: &Arc<UploadProgress>,
    ) -> RequestBody {
        RequestBody {
            slot: Arc::clone(slot),
            taken: None,
            stall: StallTimer::new(body_timeout),
            upload: Arc::clone(upload),
        }
    }

    fn peek<T>(&self, read: impl FnOnce(&Incoming) -> T, gone: T) -> T {
        if let Some(body) = &self.taken {
            return read(body);
        }
        match self.slot.lock() {
            Ok(slot) => slot.as_ref().map_or(gone, read),
            Err(_) => gone,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this.slot.lock().ok().and_then(|mut slot| slot.take());
        }
        // Never sends an empty body in place of one already spent.
        let Some(body) = &mut this.taken else {
            return Poll::Ready(Some(Err("the request body was already sent".into())));
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.upload.record();
                if let Some(stall) = &mut this.stall {
                    stall.progressed();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(this
                .upload
                .failed(ClientBodyError::Broken(error))))),
            Poll::Ready(None) => {
                this.upload.record();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.upload.waiting_on_client.store(true, Ordering::Relaxed);
                let Some(stall) = &mut this.stall else {
                    return Poll::Pending;
                };
                match stall.poll_stalled(cx) {
                    Poll::Ready(()) => {
                        let stalled = ClientBodyError::Stalled(stall.limit());
                        Poll::Ready(Some(Err(this.upload.failed(stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.peek(http_body::Body::is_end_stream, false)
    }

    fn size_hint(&self) -> SizeHint {
        self.peek(http_body::Body::size_hint, SizeHint::default())
    }
}

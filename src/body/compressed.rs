//! A body compressed as it streams: each chunk of the inner body goes
//! through the encoder, and what comes out is sent. Memory per response is
//! the encoder's window and at most one chunk in and out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, VARY};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::{Body as _, Frame};

use super::Body;
use crate::compression::{self, Coding, Decision, Encoder, Policy};

#[derive(Debug)]
pub struct CompressedBody {
    inner: Body,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Input went in since output last came out: a pause in the inner
    /// body flushes it, so a slow stream still reaches the client.
    unflushed: bool,
    /// The inner body's trailers, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

impl CompressedBody {
    fn new(inner: Body, coding: Coding, level: i32, size: Option<u64>) -> CompressedBody {
        CompressedBody {
            inner,
            encoder: Some(Encoder::new(coding, level, size)),
            unflushed: false,
            trailers: None,
        }
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let output = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.unflushed = true;
                        encoder.write(&data)
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        self.finish()
                    }
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => self.finish(),
                Poll::Pending if self.unflushed => {
                    self.unflushed = false;
                    encoder.flush()
                }
                Poll::Pending => return Poll::Pending,
            };
            match output {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => {
                    self.unflushed = false;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Err(error) => {
                    self.encoder = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn finish(&mut self) -> io::Result<Bytes> {
        match self.encoder.take() {
            Some(mut encoder) => encoder.finish(),
            None => Ok(Bytes::new()),
        }
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }
}

/// `response` as `policy` has it go to a client that sent `accept_encoding`
/// with a `method` request: compressed on the fly, or marked as varying on
/// `Accept-Encoding`, or untouched.
pub fn compress(
    policy: &Policy,
    method: &Method,
    accept_encoding: Option<&HeaderValue>,
    mut response: Response<Body>,
) -> Response<Body> {
    let decision = policy.decide(
        method,
        accept_encoding,
        response.status(),
        response.headers(),
    );
    let (coding, level) = match decision {
        Decision::Unchanged => return response,
        Decision::Identity => {
            vary_on_encoding(response.headers_mut());
            return response;
        }
        Decision::Compress(coding, level) => (coding, level),
    };
    let headers = response.headers_mut();
    let size = headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    vary_on_encoding(headers);
    mark_encoded(headers, coding);
    // Ranges would be of the uncompressed bytes.
    headers.remove(ACCEPT_RANGES);
    // The length is unknown until the end (chunked, or HTTP/2 DATA frames).
    headers.remove(CONTENT_LENGTH);
    if *method == Method::HEAD {
        return response;
    }
    response.map(|body| Body::Compressed(Box::new(CompressedBody::new(body, coding, level, size))))
}

/// The fields of a body compressed here into `coding`: `Content-Encoding`
/// and a weak `ETag`.
fn mark_encoded(headers: &mut HeaderMap, coding: Coding) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    if let Some(etag) = headers.get(ETAG) {
        let weak = compression::weaken(etag);
        headers.insert(ETAG, weak);
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `*` is).
pub fn vary_on_encoding(headers: &mut HeaderMap) {
    let present = headers
        .get_all(VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"));
    if !present {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

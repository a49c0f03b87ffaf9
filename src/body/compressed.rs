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
use crate::compression::{self, Coding, Decision, Encoder, Policy, StreamSlot};

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
    /// Held until the body is dropped.
    _slot: Option<StreamSlot>,
}

impl CompressedBody {
    fn new(
        inner: Body,
        (coding, level): (Coding, i32),
        size: Option<u64>,
        slot: Option<StreamSlot>,
    ) -> CompressedBody {
        CompressedBody {
            inner,
            encoder: Some(Encoder::new(coding, level, size)),
            unflushed: false,
            trailers: None,
            _slot: slot,
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
                // Output from a write may leave input inside the encoder:
                // only a flush (or the end) clears `unflushed`.
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
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
    // wsgate's own answers say their length by their body, not by a field.
    let length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| response.body().size_hint().exact());
    let head = (response.status(), response.headers());
    let decision = policy.decide(method, accept_encoding, head, length);
    let (coding, level) = match decision {
        Decision::Unchanged => return response,
        Decision::Identity => {
            vary_on_encoding(response.headers_mut());
            return response;
        }
        Decision::Compress(coding, level) => (coding, level),
    };
    // A HEAD compresses nothing: it only says what a GET would get.
    let slot = if *method == Method::HEAD {
        None
    } else {
        match policy.stream_slot() {
            Some(slot) => Some(slot),
            // Every encoder is in use: this one goes as it is.
            None => {
                vary_on_encoding(response.headers_mut());
                return response;
            }
        }
    };
    let headers = response.headers_mut();
    vary_on_encoding(headers);
    mark_encoded(headers, coding);
    // Ranges would be of the uncompressed bytes.
    headers.remove(ACCEPT_RANGES);
    // The length is unknown until the end (chunked, or HTTP/2 DATA frames).
    headers.remove(CONTENT_LENGTH);
    if *method == Method::HEAD {
        // An empty body, so the HTTP layer adds no length of the plain one.
        *response.body_mut() = Body::empty();
        return response;
    }
    response.map(|body| {
        Body::Compressed(Box::new(CompressedBody::new(
            body,
            (coding, level),
            length,
            slot,
        )))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// All of a chunk reaches the client when the body behind it pauses,
    /// even when compressing it already let some output out (and kept a
    /// tail inside the encoder).
    #[tokio::test]
    async fn a_pause_flushes_everything_written_so_far() {
        let chunk: Bytes = (0..40_000u32)
            .flat_map(|i| format!("{{\"line\":{i}}}\n").into_bytes())
            .collect::<Vec<u8>>()
            .into();
        let expected = chunk.clone();
        // One chunk now, the next in an hour: a backend that paused.
        let inner = Body::events(std::time::Duration::from_secs(3600), move || chunk.clone());
        let mut body = CompressedBody::new(inner, (Coding::Gzip, 6), None, None);
        // Waits for the first tick, then takes what comes without waiting.
        let first = std::future::poll_fn(|cx| body.poll_frame(cx)).await;
        let mut sent = first
            .and_then(Result::ok)
            .and_then(|frame| frame.into_data().ok())
            .map(|data| data.to_vec())
            .unwrap_or_default();
        std::future::poll_fn(|cx| loop {
            match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    sent.extend_from_slice(frame.data_ref().expect("data"));
                }
                Poll::Ready(other) => panic!("the body ended: {other:?}"),
                Poll::Pending => return Poll::Ready(()),
            }
        })
        .await;
        assert!(!sent.is_empty(), "nothing was sent");
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        decoder.write_all(&sent).expect("gzip");
        decoder.flush().expect("gzip");
        assert_eq!(decoder.get_ref().len(), expected.len());
        assert!(decoder.get_ref()[..] == expected[..]);
    }
}

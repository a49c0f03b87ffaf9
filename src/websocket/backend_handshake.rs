//! The upgrade request to a backend and its answer, exchanged on the socket
//! directly: the head is written in one write and the answer's head parsed
//! with `httparse`. hyper's client would spend a task, its channels and an
//! upgrade hand-over on every session for an exchange that is one request
//! and, almost always, one 101.
//!
//! A refusal (403, 404, 500…) goes back to the client with its body, whose
//! framing (length, chunked, to the end) is hyper's to decode: the bytes
//! read so far are replayed to a hyper client connection, which reads the
//! rest from the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::upstream::UpstreamStream;

/// The largest answer head taken from a backend (hyper's server default
/// for requests is of the same order); a 101 is a few hundred bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header lines an answer may have.
const MAX_HEADERS: usize = 100;
/// The first read's size: room for a 101 and some frames behind it.
const FIRST_READ: usize = 2048;

/// Why the exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Malformed(&'static str),
    #[error("reading the refusal: {0}")]
    Refusal(#[from] hyper::Error),
}

/// A backend's answer to the upgrade request.
pub enum Answer {
    /// 101: the answer's head, the connection, and what came after the head.
    Switched {
        head: http::response::Parts,
        stream: UpstreamStream,
        leftover: Bytes,
    },
    /// Any other status: the client's answer, its body still on the way.
    Refused(Response<hyper::body::Incoming>),
}

/// The head of the upgrade request: request line, then `headers` (which
/// carry `Host`), in one buffer.
pub fn request_head(target: &str, headers: &HeaderMap) -> Vec<u8> {
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    let mut head = Vec::with_capacity(target.len() + size + 32);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // HeaderValue holds no CR or LF, so no line can be smuggled in.
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Sends `head` and reads the answer. Not bounded in time: the caller is.
pub async fn exchange(mut stream: UpstreamStream, head: &[u8]) -> Result<Answer, ExchangeError> {
    stream.write_all(head).await?;
    // Over TLS the request may still sit in the session's buffer.
    stream.flush().await?;
    let mut buffer = BytesMut::with_capacity(FIRST_READ);
    loop {
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(ExchangeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend closed the connection before answering",
            )));
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut answer = httparse::Response::new(&mut slots);
        let parsed = answer.parse(&buffer).map_err(|error| match error {
            httparse::Error::TooManyHeaders => {
                ExchangeError::Malformed("more than 100 header lines")
            }
            _ => ExchangeError::Malformed("not an HTTP/1.1 answer"),
        })?;
        let httparse::Status::Complete(head_len) = parsed else {
            if buffer.len() >= MAX_HEAD_BYTES {
                return Err(ExchangeError::Malformed("an answer head over 64 KiB"));
            }
            if buffer.capacity() == buffer.len() {
                buffer.reserve(buffer.len());
            }
            continue;
        };
        if answer.code != Some(StatusCode::SWITCHING_PROTOCOLS.as_u16()) {
            return refused(stream, buffer.freeze()).await.map(Answer::Refused);
        }
        if answer.version != Some(1) {
            return Err(ExchangeError::Malformed("a 101 that is not HTTP/1.1"));
        }
        let head = parts_of(answer.headers)?;
        let leftover = buffer.split_off(head_len).freeze();
        return Ok(Answer::Switched {
            head,
            stream,
            leftover,
        });
    }
}

/// A 101's header lines as a response head.
fn parts_of(lines: &[httparse::Header<'_>]) -> Result<http::response::Parts, ExchangeError> {
    let mut headers = HeaderMap::with_capacity(lines.len());
    for line in lines {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| ExchangeError::Malformed("an invalid header name"))?;
        let value = HeaderValue::from_bytes(line.value)
            .map_err(|_| ExchangeError::Malformed("an invalid header value"))?;
        headers.append(name, value);
    }
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    parts.headers = headers;
    Ok(parts)
}

/// Hands the refusal to a hyper client connection: it gets the bytes read
/// so far, then the socket, and decodes the body however it is framed.
async fn refused(
    stream: UpstreamStream,
    read: Bytes,
) -> Result<Response<hyper::body::Incoming>, ExchangeError> {
    let io = TokioIo::new(Replayed {
        read,
        stream,
        request_written: false,
        reader: None,
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "backend connection ended with an error");
        }
    });
    // Written nowhere (the request went out already); it only tells hyper
    // which answer to expect: one to a GET, so a body may follow.
    let request = Request::get("/").body(Empty::<Bytes>::new());
    let request = request.map_err(|_| ExchangeError::Malformed("unreachable: a static request"))?;
    Ok(sender.send_request(request).await?)
}

/// A backend connection whose first bytes were already read: reads give
/// those back first; writes are swallowed, since the request was sent.
/// Reads wait for the (swallowed) request: hyper takes an answer that
/// arrives before its request as the backend breaking HTTP.
struct Replayed {
    read: Bytes,
    stream: UpstreamStream,
    request_written: bool,
    reader: Option<Waker>,
}

impl AsyncRead for Replayed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.request_written {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if this.read.has_remaining() {
            let take = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..take]);
            this.read.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.request_written = true;
        if let Some(reader) = this.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_is_the_request_line_and_every_header() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("chat.example"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        let head = request_head("/room?id=1", &headers);
        assert_eq!(
            head,
            b"GET /room?id=1 HTTP/1.1\r\nhost: chat.example\r\nx-tag: a\r\nx-tag: b\r\n\r\n"
        );
    }

    #[test]
    fn a_101s_lines_become_its_head() {
        let lines = [
            httparse::Header {
                name: "Upgrade",
                value: b"websocket",
            },
            httparse::Header {
                name: "Sec-WebSocket-Accept",
                value: b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            },
        ];
        let parts = parts_of(&lines).expect("valid lines");
        assert_eq!(parts.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(parts.headers["upgrade"], "websocket");
        let bad = [httparse::Header {
            name: "Bad Name",
            value: b"x",
        }];
        assert!(parts_of(&bad).is_err());
    }
}

//! Small responses the gateway writes itself: errors, redirects, refusals.

use bytes::Bytes;
use std::time::Duration;

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::body::Body;

/// A status with a one-line plain-text body naming it.
pub fn status(code: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(Body::from(Bytes::from(text)));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Error pages must not be cached by shared caches in place of the real content.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 200 with `text` as a plain-text body.
pub fn plain_text(text: String) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Marks a response that an HTTP/2 connection replaces with a RST_STREAM
/// of this reason (HTTP_1_1_REQUIRED: the client retries over HTTP/1.1);
/// the response itself is what metrics and the log record.
#[derive(Debug, Clone, Copy)]
pub struct ResetStream(pub h2::Reason);

/// `status` for the record, sent as a RST_STREAM with `reason` on HTTP/2.
pub fn reset_stream(reason: h2::Reason, code: StatusCode) -> Response<Body> {
    let mut response = status(code);
    response.extensions_mut().insert(ResetStream(reason));
    response
}

/// 405 with the methods the resource does allow (RFC 9110 §15.5.6).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// 429 (RFC 6585 §4): the client sent too much; with `retry_after`, when
/// to try again, in whole seconds rounded up so a client that waits that
/// long is let through.
pub fn too_many_requests(retry_after: Option<Duration>) -> Response<Body> {
    let mut response = status(StatusCode::TOO_MANY_REQUESTS);
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

/// 301 to `location` (used for the trailing-slash form of directories).
pub fn moved_permanently(location: &str) -> Response<Body> {
    redirect(StatusCode::MOVED_PERMANENTLY, location)
}

/// 308 to `location`: like 301, but the method and body must be kept (RFC 9110 §15.4.9).
pub fn permanent_redirect(location: &str) -> Response<Body> {
    redirect(StatusCode::PERMANENT_REDIRECT, location)
}

/// `code` (a 3xx) to `location`, without a body.
pub fn redirect(code: StatusCode, location: &str) -> Response<Body> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

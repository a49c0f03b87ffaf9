//! A page compiled into the binary (the demo's), served at its route's
//! prefix and as `index.html` there; nothing else.

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::response;

/// A single HTML page compiled into the binary.
#[derive(Debug)]
pub struct EmbeddedPage {
    pub html: &'static str,
}

/// Serves `page` for `relative` (the path below the route's prefix).
pub fn serve_page<B>(req: &Request<B>, page: &EmbeddedPage, relative: &str) -> Response<Body> {
    if !matches!(relative, "" | "/" | "/index.html") {
        return response::status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response::method_not_allowed("GET, HEAD");
    }
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(page.html)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(page.html.len()));
    response
}

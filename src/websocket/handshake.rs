//! The opening handshake (RFC 6455 §4, and RFC 8441 §4 for a WebSocket on
//! an HTTP/2 stream): checking the client's request, building the request
//! to the backend, and checking the backend's answer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{
    CONNECTION, CONTENT_LENGTH, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use sha1::{Digest, Sha1};

use super::WebSocketRoute;

/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why the gateway refuses a client's handshake itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a WebSocket handshake must be an HTTP/1.1 GET or an HTTP/2 CONNECT")]
    NotGet,
    #[error("Sec-WebSocket-Version is not 13")]
    Version,
    #[error("Sec-WebSocket-Key is missing or not the base64 of 16 bytes")]
    Key,
    #[error("Origin is not allowed on this route")]
    Origin,
    #[error("none of the offered subprotocols is allowed on this route")]
    Subprotocol,
    #[error("Sec-WebSocket-Key or Sec-WebSocket-Version appears more than once")]
    Repeated,
    #[error(
        "a WebSocket handshake has no body, yet it carries Content-Length or Transfer-Encoding"
    )]
    Body,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::NotGet
            | Refusal::Key
            | Refusal::Subprotocol
            | Refusal::Repeated
            | Refusal::Body => StatusCode::BAD_REQUEST,
            // §4.4: a version the server does not speak gets 426 and the versions it does.
            Refusal::Version => StatusCode::UPGRADE_REQUIRED,
            Refusal::Origin => StatusCode::FORBIDDEN,
        }
    }
}

/// `Connection: upgrade` plus `Upgrade: websocket`, as token lists in any case (§4.2.1).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &CONNECTION, "upgrade") && has_token(headers, &UPGRADE, "websocket")
}

/// The `:protocol` of an HTTP/2 extended CONNECT (RFC 8441 §4), if the
/// request is one.
pub fn connect_protocol<B>(req: &Request<B>) -> Option<&str> {
    if req.method() != Method::CONNECT {
        return None;
    }
    let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
    Some(protocol.as_str())
}

/// An HTTP/2 extended CONNECT for a WebSocket (RFC 8441 §4).
pub fn is_h2_websocket<B>(req: &Request<B>) -> bool {
    connect_protocol(req).is_some_and(|protocol| protocol.eq_ignore_ascii_case("websocket"))
}

/// A request that opens a WebSocket: an HTTP/1.1 upgrade or an HTTP/2
/// extended CONNECT.
pub fn is_websocket_request<B>(req: &Request<B>) -> bool {
    is_upgrade(req.headers()) || is_h2_websocket(req)
}

/// Checks what the gateway can check before asking a backend (§4.2.1).
/// Over HTTP/2 there is no key (RFC 8441 §5): the stream is the proof that
/// the client asked for a WebSocket.
pub fn check_client<B>(req: &Request<B>, route: &WebSocketRoute) -> Result<(), Refusal> {
    let over_h2 = req.version() == Version::HTTP_2;
    let form_ok = if over_h2 {
        is_h2_websocket(req)
    } else {
        req.method() == Method::GET && req.version() == Version::HTTP_11
    };
    if !form_ok {
        return Err(Refusal::NotGet);
    }
    let headers = req.headers();
    // §11.3.1, §11.3.5: each appears at most once in a request.
    if [SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION]
        .iter()
        .any(|name| headers.get_all(name).iter().nth(1).is_some())
    {
        return Err(Refusal::Repeated);
    }
    // A body on a GET handshake is a request smuggled behind it, for
    // whichever side reads the stream after the 101.
    let empty_length = headers
        .get(CONTENT_LENGTH)
        .is_none_or(|length| length == "0")
        && headers.get_all(CONTENT_LENGTH).iter().count() <= 1;
    if !empty_length || headers.contains_key(TRANSFER_ENCODING) {
        return Err(Refusal::Body);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refusal::Version);
    }
    let key_ok = headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|key| BASE64.decode(key.as_bytes()).ok())
        .is_some_and(|nonce| nonce.len() == 16);
    if !key_ok && !over_h2 {
        return Err(Refusal::Key);
    }
    match headers.get(ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) if !route.origins.is_empty() && !origin_allowed(&route.origins, origin) => {
            return Err(Refusal::Origin)
        }
        None if route.require_origin => return Err(Refusal::Origin),
        _ => {}
    }
    if !route.subprotocols.is_empty() {
        let offered = tokens(headers, &SEC_WEBSOCKET_PROTOCOL);
        if !offered
            .into_iter()
            .any(|p| route.subprotocols.iter().any(|allowed| allowed == p))
        {
            return Err(Refusal::Subprotocol);
        }
    }
    Ok(())
}

fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// A `Sec-WebSocket-Key` for the backend handshake of a WebSocket that
/// came over HTTP/2, where the client sends none. §4.1 asks for a random
/// nonce, so that a backend cannot replay an old answer: 16 bytes from the
/// TLS stack's random number generator (aws-lc), already in the process.
pub fn new_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    if rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut nonce)
        .is_err()
    {
        // Not secret, only fresh: the clock's nanoseconds do for that.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        nonce = now.as_nanos().to_le_bytes();
    }
    HeaderValue::from_str(&BASE64.encode(nonce)).expect("base64 text is a valid header value")
}

/// `Sec-WebSocket-Accept` for a client key (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    BASE64.encode(sha1.finalize())
}

/// Checks a backend's 101 answer against the key the client sent (§4.1).
pub fn check_backend_answer(
    answer: &HeaderMap,
    client_key: &HeaderValue,
) -> Result<(), &'static str> {
    if !has_token(answer, &UPGRADE, "websocket") {
        return Err("101 without Upgrade: websocket");
    }
    let expected = accept_key(client_key.as_bytes());
    match answer.get(SEC_WEBSOCKET_ACCEPT) {
        Some(accept) if accept.as_bytes() == expected.as_bytes() => Ok(()),
        Some(_) => Err("Sec-WebSocket-Accept does not match the key"),
        None => Err("101 without Sec-WebSocket-Accept"),
    }
}

/// Restores the upgrade headers after the hop-by-hop ones were stripped.
pub fn set_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// The handshake fields the backend must get as the client sent them
/// (after `check_client`), even when the client's `Connection` header
/// named them as hop-by-hop and stripping removed them.
pub fn restore_handshake_fields(client: &HeaderMap, forwarded: &mut HeaderMap) {
    for name in [
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_EXTENSIONS,
        ORIGIN,
    ] {
        forwarded.remove(&name);
        for value in client.get_all(&name) {
            forwarded.append(name.clone(), value.clone());
        }
    }
}

fn has_token(headers: &HeaderMap, name: &http::header::HeaderName, token: &str) -> bool {
    tokens(headers, name)
        .into_iter()
        .any(|item| item.eq_ignore_ascii_case(token))
}

fn tokens<'h>(headers: &'h HeaderMap, name: &http::header::HeaderName) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// Whether the backend's answer negotiated an extension that uses RSV1.
pub fn negotiated_rsv(answer: &HeaderMap) -> u8 {
    let deflate = tokens(answer, &http::header::SEC_WEBSOCKET_EXTENSIONS)
        .into_iter()
        .any(|ext| {
            ext.split(';')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
        });
    if deflate {
        0b100
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn backend_answer_checks() {
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        let mut answer = HeaderMap::new();
        answer.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        answer.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert_eq!(check_backend_answer(&answer, &key), Ok(()));
        answer.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("wrong"));
        assert!(check_backend_answer(&answer, &key).is_err());
    }

    #[test]
    fn permessage_deflate_allows_rsv1() {
        let mut answer = HeaderMap::new();
        answer.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate; client_max_window_bits=15"),
        );
        assert_eq!(negotiated_rsv(&answer), 0b100);
        assert_eq!(negotiated_rsv(&HeaderMap::new()), 0);
    }
}

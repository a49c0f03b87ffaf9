//! What a proxy changes in the headers it forwards.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers before a message is forwarded.
///
/// RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header
/// field before a message is forwarded and, for each connection-option in
/// this field, remove any header or trailer field(s) from the message with
/// the same name as the connection-option, and then remove the Connection
/// header field itself (or replace it with the intermediary's own control
/// options for the forwarded message)." The fields it names as hop-by-hop
/// by convention (Proxy-Connection, Keep-Alive, TE, Transfer-Encoding,
/// Upgrade) go too.
///
/// `Upgrade` is removed like the rest: a WebSocket handshake sets its own
/// `Connection: Upgrade` and `Upgrade: websocket` on the forwarded request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        PROXY_CONNECTION,
        KEEP_ALIVE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
}

/// Adds `X-Forwarded-For` (appended to any the client sent), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `Forwarded` (RFC 7239).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    proto: &'static str,
    host: Option<&str>,
) {
    let ip = client.ip();
    let chain = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip.to_string(),
    };
    insert(headers, X_FORWARDED_FOR, chain);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut forwarded = format!("for={node};proto={proto}");
    // Only a plain host name or address is copied into the quoted-string:
    // anything else could close the quotes and forge another element.
    if let Some(host) = host.filter(|h| is_plain_host(h)) {
        insert(headers, X_FORWARDED_HOST, host.to_owned());
        forwarded.push_str(&format!(";host=\"{host}\""));
    }
    insert(headers, header::FORWARDED, forwarded);
}

/// Letters, digits and `-._:[]`: what a host name, IPv4 or bracketed IPv6
/// address with an optional port consists of.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        })
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_options_and_standard_hop_by_hop_fields_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret, Upgrade"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("cookie", HeaderValue::from_static("a=b"));
        headers.insert("sec-websocket-key", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["cookie", "sec-websocket-key"]);
    }

    #[test]
    fn a_host_that_is_not_plain_stays_out_of_forwarded() {
        let mut headers = HeaderMap::new();
        let client = "192.0.2.1:5000".parse().expect("addr");
        add_forwarded(
            &mut headers,
            client,
            "http",
            Some("x\", for=6.6.6.6;host=\"a"),
        );
        assert_eq!(headers["forwarded"], "for=192.0.2.1;proto=http");
        assert!(headers.get("x-forwarded-host").is_none());
    }

    #[test]
    fn forwarded_headers_extend_the_chain() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        add_forwarded(
            &mut headers,
            "[::1]:5000".parse().expect("addr"),
            "http",
            Some("chat.example.com"),
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, ::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "chat.example.com");
        assert_eq!(
            headers["forwarded"],
            "for=\"[::1]\";proto=http;host=\"chat.example.com\""
        );
    }
}

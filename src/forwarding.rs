//! What a proxy changes in the requests it forwards: the target, the
//! hop-by-hop headers, `Host`, and the forwarding headers. The HTTP proxy
//! and the WebSocket handshake share all of it.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::request_path;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Who a request came from, as the forwarding headers tell it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub client: SocketAddr,
    /// `http` or `https`: how the client reached the gateway.
    pub scheme: &'static str,
    pub trusted: &'a TrustedProxies,
}

/// The request target at a backend: the backend URL's path, the client's
/// path (below the route's prefix when the route strips it), and the query.
/// The raw path goes on unchanged; a stripped one is re-encoded so the
/// backend decodes exactly what the router saw, once.
pub fn backend_target(
    backend_path: &str,
    uri: &Uri,
    relative_path: &str,
    strip_prefix: bool,
) -> String {
    let path = if strip_prefix {
        request_path::encode(relative_path)
    } else {
        Cow::Borrowed(uri.path())
    };
    let path = if path.is_empty() { "/" } else { &path };
    match uri.query() {
        Some(query) => format!("{backend_path}{path}?{query}"),
        None => format!("{backend_path}{path}"),
    }
}

/// The headers a backend gets with a client's request (RFC 9110 §7.6):
/// hop-by-hop fields removed, forwarding fields added, and `Host` the one
/// the client asked for (`preserve_host`) or the backend's own authority.
pub fn backend_headers(
    request: &HeaderMap,
    uri: &Uri,
    origin: &Origin<'_>,
    preserve_host: bool,
    backend_authority: &str,
) -> HeaderMap {
    let mut headers = request.clone();
    strip_hop_by_hop(&mut headers);
    join_cookies(&mut headers);
    // RFC 9112 §3.2.2: with an absolute-form target (and in HTTP/2), its
    // authority is the host the request was routed on, whatever `Host` says.
    if let Some(authority) = uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, host);
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    add_forwarded(
        &mut headers,
        origin.client,
        origin.scheme,
        host.as_deref(),
        origin.trusted,
    );
    if !preserve_host || !headers.contains_key(header::HOST) {
        if let Ok(authority) = HeaderValue::from_str(backend_authority) {
            headers.insert(header::HOST, authority);
        }
    }
    headers
}

/// RFC 9113 §8.2.3: an HTTP/2 client may send each cookie pair as a
/// `Cookie` field of its own (browsers do, for header compression), and
/// they must be joined with "; " before an HTTP/1.1 hop, where many servers
/// read only the first `Cookie` line. Joined for every backend: one field
/// means the same to HTTP/2 ones.
fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for field in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(field.as_bytes());
    }
    // Joined valid field values with "; " make a valid value.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// A backend's response head as the client gets it: hop-by-hop headers
/// removed, and a `Content-Length` that came with `Transfer-Encoding`
/// dropped. RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and
/// an intermediary MUST remove the latter before forwarding; kept, it would
/// describe a body other than the one that follows.
pub fn response_headers(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
}

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

/// `trusted_proxies`: the networks whose `X-Forwarded-*` and `Forwarded`
/// headers are believed. A request from anywhere else has them replaced, so
/// a client cannot claim another address, and loses the headers in
/// `client_ip_headers`, which backends read as the client's address too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedProxies {
    networks: Vec<Network>,
    /// Lowercase header names.
    client_ip_headers: Vec<String>,
}

/// What `client_ip_headers` is when the config does not say: the headers
/// CDNs, load balancers and frameworks use for the client's address.
pub const DEFAULT_CLIENT_IP_HEADERS: [&str; 7] = [
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
];

impl Default for TrustedProxies {
    fn default() -> TrustedProxies {
        TrustedProxies::new(Vec::new(), default_client_ip_headers())
    }
}

/// [`DEFAULT_CLIENT_IP_HEADERS`], owned.
pub fn default_client_ip_headers() -> Vec<String> {
    DEFAULT_CLIENT_IP_HEADERS.map(str::to_owned).to_vec()
}

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Network {
    addr: IpAddr,
    prefix_len: u8,
}

impl Network {
    /// Parses `ADDR/LEN` or a bare address; `None` when it is neither, or
    /// the address has bits set past the prefix (a likely typo).
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, prefix_len) = match text.split_once('/') {
            Some((addr, len)) => (addr.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let addr = text.parse::<IpAddr>().ok()?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        let network = Network { addr, prefix_len };
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= bits && network.masked(addr) == bits_of(addr)).then_some(network)
    }

    /// Whether this is `0.0.0.0/0` or `::/0`: every address.
    pub fn is_everything(&self) -> bool {
        self.prefix_len == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                self.masked(ip.to_canonical()) == self.masked(self.addr)
            }
            _ => false,
        }
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let (bits, width) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let host_bits = width - u32::from(self.prefix_len.min(width as u8));
        if host_bits >= 128 {
            0
        } else {
            bits >> host_bits << host_bits
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl From<Network> for String {
    fn from(network: Network) -> String {
        network.to_string()
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(text: String) -> Result<Network, String> {
        Network::parse(&text).ok_or_else(|| format!("`{text}` is not a network"))
    }
}

fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl TrustedProxies {
    /// Trusts `networks`; from elsewhere, `client_ip_headers` (lowercase
    /// names) are removed.
    pub fn new(networks: Vec<Network>, client_ip_headers: Vec<String>) -> TrustedProxies {
        TrustedProxies {
            networks,
            client_ip_headers,
        }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(ip))
    }

    /// The client's address: the peer, or when the peer is a trusted proxy,
    /// the right-most `X-Forwarded-For` entry that is not a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for entry in chain.iter().rev() {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => client = ip.to_canonical(),
                Err(_) => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// Adds `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// `Forwarded` (RFC 7239). From a trusted proxy, the chain it sent is
/// extended and the protocol and host it reported are kept; from anyone
/// else, whatever they sent is replaced.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    proto: &'static str,
    host: Option<&str>,
    trusted: &TrustedProxies,
) {
    let ip = client.ip().to_canonical();
    let from_trusted = trusted.trusts(ip);
    if !from_trusted {
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            header::FORWARDED,
        ] {
            headers.remove(name);
        }
        for name in &trusted.client_ip_headers {
            headers.remove(name.as_str());
        }
    }
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let chain = if earlier.is_empty() {
        ip.to_string()
    } else {
        format!("{}, {ip}", earlier.join(", "))
    };
    insert(headers, X_FORWARDED_FOR, chain);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={node};proto={proto}");
    // Only a plain host name or address is copied into the quoted-string:
    // anything else could close the quotes and forge another element.
    if let Some(host) = host.filter(|h| is_plain_host(h)) {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            insert(headers, X_FORWARDED_HOST, host.to_owned());
        }
        element.push_str(&format!(";host=\"{host}\""));
    }
    let earlier: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = if earlier.is_empty() {
        element
    } else {
        format!("{}, {element}", earlier.join(", "))
    };
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
    fn targets() {
        let uri: Uri = "/chat/room%20a?x=1".parse().expect("uri");
        assert_eq!(
            backend_target("", &uri, "/room a", false),
            "/chat/room%20a?x=1"
        );
        assert_eq!(
            backend_target("/base", &uri, "/room a", true),
            "/base/room%20a?x=1"
        );
        let bare: Uri = "/chat".parse().expect("uri");
        assert_eq!(backend_target("/base", &bare, "", true), "/base/");
    }

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
    fn cookies_split_by_an_http2_client_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=b"));
        headers.append("cookie", HeaderValue::from_static("session=t.o.k"));
        headers.append("cookie", HeaderValue::from_static("c=d"));
        join_cookies(&mut headers);
        let fields: Vec<&HeaderValue> = headers.get_all("cookie").iter().collect();
        assert_eq!(fields, ["a=b; session=t.o.k; c=d"]);
        let mut one = HeaderMap::new();
        one.insert("cookie", HeaderValue::from_static("a=b; c=d"));
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=b; c=d");
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
            &TrustedProxies::default(),
        );
        assert_eq!(headers["forwarded"], "for=192.0.2.1;proto=http");
        assert!(headers.get("x-forwarded-host").is_none());
    }

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            networks
                .iter()
                .map(|n| Network::parse(n).expect(n))
                .collect(),
            default_client_ip_headers(),
        )
    }

    #[test]
    fn a_trusted_proxy_chain_is_extended() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert(
            "forwarded",
            HeaderValue::from_static("for=203.0.113.7;proto=https"),
        );
        add_forwarded(
            &mut headers,
            "[::1]:5000".parse().expect("addr"),
            "http",
            Some("chat.example.com"),
            &trusted(&["::1"]),
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, ::1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "chat.example.com");
        assert_eq!(
            headers["forwarded"],
            "for=203.0.113.7;proto=https, for=\"[::1]\";proto=http;host=\"chat.example.com\""
        );
    }

    #[test]
    fn an_untrusted_client_cannot_forge_its_address() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        let client = "192.0.2.9:1000".parse().expect("addr");
        add_forwarded(
            &mut headers,
            client,
            "http",
            None,
            &trusted(&["10.0.0.0/8"]),
        );
        assert_eq!(headers["x-forwarded-for"], "192.0.2.9");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["forwarded"], "for=192.0.2.9;proto=http");
    }

    #[test]
    fn the_client_address_is_found_behind_trusted_proxies() {
        let proxies = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 198.51.100.4, 10.1.2.3"),
        );
        let lb: IpAddr = "10.9.9.9".parse().expect("ip");
        assert_eq!(proxies.client_ip(lb, &headers).to_string(), "198.51.100.4");
        let outsider: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(proxies.client_ip(outsider, &headers), outsider);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert!(proxies.trusts(mapped));
        assert!(proxies.trusts("fd12::1".parse().expect("ip")));
        assert!(!proxies.trusts("fe80::1".parse().expect("ip")));
    }

    #[test]
    fn networks_parse_strictly() {
        assert!(Network::parse("10.0.0.0/8").is_some());
        assert!(Network::parse("0.0.0.0/0").is_some());
        assert!(Network::parse("::/0").is_some());
        assert!(Network::parse("192.0.2.1").is_some());
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "ten/8",
            "::1/129",
            "",
        ] {
            assert_eq!(Network::parse(bad), None, "{bad}");
        }
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
            &trusted(&["::1"]),
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

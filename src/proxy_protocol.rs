//! The PROXY protocol header that a load balancer sends at the very start of
//! a TCP connection to pass on the original client's address, in its text
//! (v1) and binary (v2) forms.
//!
//! Spec: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.
//! [`parse`] is a pure function over the bytes received so far; it rejects a
//! stream as soon as its bytes can no longer become a valid header.
//! [`read_header`] takes the header off a socket and leaves every byte after
//! it (a TLS ClientHello, an HTTP request) unread for whoever handles the
//! connection next.
//!
//! §2: "The receiver MUST be configured to only receive the protocol described
//! in this specification and MUST not try to guess whether the protocol header
//! is present or not." So there is no fallback here: on a listener that
//! expects the header, any error means closing the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Use the real peer: a v1 `UNKNOWN` line, a v2 LOCAL command (the
    /// balancer's own health checks), or a v2 address family we do not carry
    /// (AF_UNSPEC, AF_UNIX).
    Local,
    /// The original client and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

/// Why a connection did not start with a usable PROXY header.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The first bytes match neither signature: the peer speaks something
    /// else, most likely a client that bypassed the balancer.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("PROXY protocol v2 signature with a version other than 2")]
    UnsupportedVersion,
    #[error("PROXY protocol header for a datagram (UDP) connection on a TCP listener")]
    UnsupportedTransport,
    #[error(
        "PROXY protocol header longer than {V1_MAX_LEN} bytes (v1) or {MAX_HEADER_LEN} bytes (v2)"
    )]
    TooLong,
    #[error("no complete PROXY protocol header before the timeout")]
    Timeout,
    #[error("the peer closed the connection before the PROXY protocol header was complete")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(std::io::ErrorKind),
}

impl HeaderError {
    /// A short name for the error, usable as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderError::Missing => "missing",
            HeaderError::Malformed => "malformed",
            HeaderError::UnsupportedVersion => "unsupported_version",
            HeaderError::UnsupportedTransport => "unsupported_transport",
            HeaderError::TooLong => "too_long",
            HeaderError::Timeout => "timeout",
            HeaderError::Closed => "closed",
            HeaderError::Io(_) => "io",
        }
    }
}

const V1_SIGNATURE: &[u8] = b"PROXY ";
/// §2.1: the longest line a receiver must accept, "UNKNOWN" with its
/// ignored tail, CRLF included.
pub const V1_MAX_LEN: usize = 107;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and transport, length.
const V2_FIXED_LEN: usize = 16;
/// The most address and TLV bytes accepted after the fixed v2 part. The
/// length field allows 65535, but what balancers send is far smaller: the
/// addresses take at most 216 bytes (AF_UNIX), and the TLVs in use
/// (PP2_TYPE_SSL with its sub-TLVs and a certificate CN, AWS, Azure and GCP
/// endpoint ids, unique ids) typically add a few hundred. 4 KiB leaves
/// room for a custom TLV or two while bounding what one connection can make
/// us buffer before it has said anything we use.
pub const V2_MAX_PAYLOAD_LEN: usize = 4096;
/// The longest header [`parse`] accepts, of either version.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_PAYLOAD_LEN;

/// Parses the PROXY header at the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid header's beginning, more bytes are needed.
/// `Ok(Some((len, header)))`: the header is `buf[..len]`; the bytes after it
/// belong to the connection. `Err`: `buf` cannot start a valid header. The
/// answer never changes once it is not `Ok(None)`: more bytes after an error
/// or a complete header give the same result.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Header)>, HeaderError> {
    match buf.first() {
        None => Ok(None),
        Some(&b) if b == V1_SIGNATURE[0] => parse_v1(buf),
        Some(&b) if b == V2_SIGNATURE[0] => parse_v2(buf),
        Some(_) => Err(HeaderError::Missing),
    }
}

/// §2.1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, fields separated by
/// exactly one space, or `PROXY UNKNOWN` with anything up to the CRLF.
fn parse_v1(buf: &[u8]) -> Result<Option<(usize, Header)>, HeaderError> {
    if !starts_with_prefix_of(buf, V1_SIGNATURE) {
        return Err(HeaderError::Missing);
    }
    if buf.len() < V1_SIGNATURE.len() {
        return Ok(None);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        // Check the fields first so that a line that goes wrong early is
        // called malformed whenever it is seen, whether or not it also
        // runs past the limit.
        parse_v1_fields(&window[V1_SIGNATURE.len()..], false)?;
        return match window.len() {
            V1_MAX_LEN => Err(HeaderError::TooLong),
            _ => Ok(None),
        };
    };
    let Some(header) = parse_v1_fields(&window[V1_SIGNATURE.len()..cr], true)? else {
        return Err(HeaderError::Malformed);
    };
    match window.get(cr + 1) {
        Some(b'\n') => Ok(Some((cr + 2, header))),
        Some(_) => Err(HeaderError::Malformed),
        // The CR is the last byte the limit allows: its LF would not fit.
        None if window.len() == V1_MAX_LEN => Err(HeaderError::TooLong),
        None => Ok(None),
    }
}

/// Checks the fields of a v1 line after `PROXY `. `ended`: the CR was seen,
/// so the last field is whole; otherwise it may still grow and only needs to
/// be the beginning of a valid one. `Ok(None)`: valid so far, not ended.
fn parse_v1_fields(line: &[u8], ended: bool) -> Result<Option<Header>, HeaderError> {
    let mut fields = Fields {
        rest: Some(line),
        ended,
    };
    let Some(protocol) = fields.next_parsed(&PROTOCOL)? else {
        return Ok(None);
    };
    let ip = match protocol {
        V1Protocol::Tcp4 => &IPV4,
        V1Protocol::Tcp6 => &IPV6,
        // §2.1: after UNKNOWN "the receiver must ignore anything presented
        // before the CRLF is found".
        V1Protocol::Unknown => return Ok(ended.then_some(Header::Local)),
    };
    let Some(source_ip) = fields.next_parsed(ip)? else {
        return Ok(None);
    };
    let Some(destination_ip) = fields.next_parsed(ip)? else {
        return Ok(None);
    };
    let Some(source_port) = fields.next_parsed(&PORT)? else {
        return Ok(None);
    };
    let Some(destination_port) = fields.next_parsed(&PORT)? else {
        return Ok(None);
    };
    if fields.next().is_some() {
        return Err(HeaderError::Malformed);
    }
    Ok(Some(Header::Proxied {
        source: SocketAddr::new(source_ip, source_port),
        destination: SocketAddr::new(destination_ip, destination_port),
    }))
}

/// The space-separated fields of a v1 line; an empty field is a doubled or
/// trailing space, which no parser accepts.
struct Fields<'a> {
    rest: Option<&'a [u8]>,
    ended: bool,
}

impl<'a> Fields<'a> {
    /// The next field and whether it is whole (followed by a space, or the
    /// last of an ended line).
    fn next(&mut self) -> Option<(&'a [u8], bool)> {
        let rest = self.rest?;
        match rest.iter().position(|&b| b == b' ') {
            Some(space) => {
                self.rest = Some(&rest[space + 1..]);
                Some((&rest[..space], true))
            }
            None => {
                self.rest = None;
                Some((rest, self.ended))
            }
        }
    }

    /// The next field parsed; `Ok(None)` when it is the valid beginning of a
    /// field still arriving.
    fn next_parsed<T>(&mut self, syntax: &FieldSyntax<T>) -> Result<Option<T>, HeaderError> {
        match self.next() {
            Some((field, true)) => (syntax.parse)(field)
                .map(Some)
                .ok_or(HeaderError::Malformed),
            Some((field, false)) if (syntax.is_start)(field) => Ok(None),
            // Also a field missing from an ended line.
            _ => Err(HeaderError::Malformed),
        }
    }
}

/// How to read one kind of v1 field. `is_start` accepts every beginning of
/// a field that `parse` accepts, and refuses anything that begins with a
/// field it refuses: a refused field can never become valid, which is what
/// lets [`parse`] reject early and never change its answer.
struct FieldSyntax<T> {
    parse: fn(&[u8]) -> Option<T>,
    is_start: fn(&[u8]) -> bool,
}

const PROTOCOL: FieldSyntax<V1Protocol> = FieldSyntax {
    parse: parse_v1_protocol,
    is_start: is_v1_protocol_start,
};
const IPV4: FieldSyntax<IpAddr> = FieldSyntax {
    parse: parse_ipv4,
    is_start: is_ipv4_start,
};
const IPV6: FieldSyntax<IpAddr> = FieldSyntax {
    parse: parse_ipv6,
    is_start: is_ipv6_start,
};
const PORT: FieldSyntax<u16> = FieldSyntax {
    parse: parse_port,
    is_start: is_port_start,
};

#[derive(Debug, Clone, Copy)]
enum V1Protocol {
    Tcp4,
    Tcp6,
    /// No addresses follow.
    Unknown,
}

fn parse_v1_protocol(field: &[u8]) -> Option<V1Protocol> {
    match field {
        b"TCP4" => Some(V1Protocol::Tcp4),
        b"TCP6" => Some(V1Protocol::Tcp6),
        b"UNKNOWN" => Some(V1Protocol::Unknown),
        _ => None,
    }
}

fn is_v1_protocol_start(field: &[u8]) -> bool {
    [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
        .iter()
        .any(|protocol| protocol.starts_with(field))
}

fn parse_ipv4(field: &[u8]) -> Option<IpAddr> {
    let address: Ipv4Addr = std::str::from_utf8(field).ok()?.parse().ok()?;
    Some(address.into())
}

/// "255.255.255.255" is 15 characters.
fn is_ipv4_start(field: &[u8]) -> bool {
    field.len() <= 15 && field.iter().all(|&b| b.is_ascii_digit() || b == b'.')
}

fn parse_ipv6(field: &[u8]) -> Option<IpAddr> {
    let address: Ipv6Addr = std::str::from_utf8(field).ok()?.parse().ok()?;
    Some(address.into())
}

/// 45 characters: six groups of four and a dotted quad, the longest form
/// RFC 4291 §2.2 allows.
fn is_ipv6_start(field: &[u8]) -> bool {
    field.len() <= 45
        && field
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// §2.1 asks for "a decimal integer in the range [0..65535]": digits only,
/// so no sign, which `u16::from_str` would take. Leading zeros are allowed
/// as long as the field fits in five digits.
fn parse_port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || !is_port_start(field) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn is_port_start(field: &[u8]) -> bool {
    field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && field
            .iter()
            .fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'))
            <= u32::from(u16::MAX)
}

/// §2.2: a 16-byte fixed part, then as many address and TLV bytes as its
/// length field says.
fn parse_v2(buf: &[u8]) -> Result<Option<(usize, Header)>, HeaderError> {
    if !starts_with_prefix_of(buf, &V2_SIGNATURE) {
        return Err(HeaderError::Missing);
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(HeaderError::UnsupportedVersion);
    }
    // "Receivers must drop connections presenting unexpected values here."
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::Malformed),
    };
    let Some(&family_transport) = buf.get(13) else {
        return Ok(None);
    };
    // LOCAL: "discard the protocol block including the family which is
    // ignored".
    let addresses = if local {
        Addresses::None
    } else {
        v2_addresses(family_transport)?
    };
    let Some(&[high, low]) = buf.get(14..16) else {
        return Ok(None);
    };
    let payload_len = usize::from(u16::from_be_bytes([high, low]));
    if payload_len > V2_MAX_PAYLOAD_LEN {
        return Err(HeaderError::TooLong);
    }
    if payload_len < addresses.len() {
        return Err(HeaderError::Malformed);
    }
    let header_len = V2_FIXED_LEN + payload_len;
    let Some(payload) = buf.get(V2_FIXED_LEN..header_len) else {
        return Ok(None);
    };
    let header = addresses.read(payload).ok_or(HeaderError::Malformed)?;
    Ok(Some((header_len, header)))
}

/// The addresses a v2 PROXY command carries.
#[derive(Debug, Clone, Copy)]
enum Addresses {
    /// Nothing we use: AF_UNSPEC, or AF_UNIX paths.
    None,
    Ipv4,
    Ipv6,
}

fn v2_addresses(family_transport: u8) -> Result<Addresses, HeaderError> {
    match family_transport {
        0x00 | 0x31 | 0x32 => Ok(Addresses::None),
        0x11 => Ok(Addresses::Ipv4),
        0x21 => Ok(Addresses::Ipv6),
        0x12 | 0x22 => Err(HeaderError::UnsupportedTransport),
        // §2.2: "Other values are unspecified and must not be emitted in
        // version 2 of this protocol and must be rejected as invalid by
        // receivers."
        _ => Err(HeaderError::Malformed),
    }
}

impl Addresses {
    /// Bytes at the start of the payload. AF_UNIX's 216 are not required:
    /// we skip them with the TLVs whatever the length says.
    fn len(self) -> usize {
        match self {
            Addresses::None => 0,
            Addresses::Ipv4 => 2 * 4 + 2 * 2,
            Addresses::Ipv6 => 2 * 16 + 2 * 2,
        }
    }

    /// The header `payload` describes; `None` if it is shorter than
    /// `self.len()`, which the caller has already ruled out.
    fn read(self, payload: &[u8]) -> Option<Header> {
        let (source_ip, destination_ip, ports) = match self {
            Addresses::None => return Some(Header::Local),
            Addresses::Ipv4 => {
                let (source, rest) = payload.split_first_chunk::<4>()?;
                let (destination, rest) = rest.split_first_chunk::<4>()?;
                (IpAddr::from(*source), IpAddr::from(*destination), rest)
            }
            Addresses::Ipv6 => {
                let (source, rest) = payload.split_first_chunk::<16>()?;
                let (destination, rest) = rest.split_first_chunk::<16>()?;
                (IpAddr::from(*source), IpAddr::from(*destination), rest)
            }
        };
        let (source_port, rest) = ports.split_first_chunk::<2>()?;
        let (destination_port, _tlvs) = rest.split_first_chunk::<2>()?;
        Some(Header::Proxied {
            source: SocketAddr::new(source_ip, u16::from_be_bytes(*source_port)),
            destination: SocketAddr::new(destination_ip, u16::from_be_bytes(*destination_port)),
        })
    }
}

/// Whether `buf` and `signature` agree on the bytes both have.
fn starts_with_prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    let common = buf.len().min(signature.len());
    buf[..common] == signature[..common]
}

/// Reads the PROXY header off `stream`, leaving every byte after it unread;
/// gives up with [`HeaderError::Timeout`] after `timeout`.
///
/// Takes at most [`MAX_HEADER_LEN`] bytes. On an error the stream may have
/// lost a prefix of the would-be header, never more; it should be closed.
pub async fn read_header(stream: &TcpStream, timeout: Duration) -> Result<Header, HeaderError> {
    tokio::time::timeout(timeout, take_header(stream))
        .await
        .unwrap_or(Err(HeaderError::Timeout))
}

/// Peeks, then reads only bytes known to be the header's.
///
/// When [`parse`] wants more, everything peeked so far is a strict prefix of
/// the header, so it is read off the socket at once rather than peeked
/// again. That is what keeps this from spinning: readiness stays set while
/// unread bytes sit in the socket, so re-peeking an incomplete prefix would
/// return at once with the same bytes, forever. With the prefix consumed,
/// the next peek finds the queue empty and waits for new bytes, and a peer
/// that closes mid-header shows as a zero-length peek instead of a prefix
/// that never grows.
async fn take_header(stream: &TcpStream) -> Result<Header, HeaderError> {
    let mut buf = vec![0; MAX_HEADER_LEN];
    let mut taken = 0;
    loop {
        if taken == buf.len() {
            // parse() decides within MAX_HEADER_LEN bytes; defensive only.
            return Err(HeaderError::TooLong);
        }
        let peeked = stream.peek(&mut buf[taken..]).await.map_err(io_error)?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        let available = taken + peeked;
        match parse(&buf[..available])? {
            Some((header_len, header)) => {
                read_exactly(stream, &mut buf[taken..header_len]).await?;
                return Ok(header);
            }
            None => {
                read_exactly(stream, &mut buf[taken..available]).await?;
                taken = available;
            }
        }
    }
}

/// Reads `buf.len()` bytes that a peek has already seen in the socket.
async fn read_exactly(stream: &TcpStream, mut buf: &mut [u8]) -> Result<(), HeaderError> {
    while !buf.is_empty() {
        stream.readable().await.map_err(io_error)?;
        match stream.try_read(buf) {
            Ok(0) => return Err(HeaderError::Closed),
            Ok(read) => buf = &mut buf[read..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(io_error(error)),
        }
    }
    Ok(())
}

/// A reset is the peer hanging up, like a close; anything else is kept.
fn io_error(error: std::io::Error) -> HeaderError {
    match error.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
            HeaderError::Closed
        }
        kind => HeaderError::Io(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: source.parse().expect("test address"),
            destination: destination.parse().expect("test address"),
        }
    }

    fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let protocol = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {protocol} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
        .into_bytes()
    }

    /// A v2 header with `command` (0 LOCAL, 1 PROXY), `family` and `payload`.
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        let len = u16::try_from(payload.len()).expect("test payload fits");
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(payload);
        header
    }

    fn v2_proxy(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        let family = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                payload.extend_from_slice(&s.octets());
                payload.extend_from_slice(&d.octets());
                0x11
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                payload.extend_from_slice(&s.octets());
                payload.extend_from_slice(&d.octets());
                0x21
            }
            _ => panic!("test addresses of one family"),
        };
        payload.extend_from_slice(&source.port().to_be_bytes());
        payload.extend_from_slice(&destination.port().to_be_bytes());
        payload.extend_from_slice(tlvs);
        v2(1, family, &payload)
    }

    /// `header` parses whole, with anything after it, and not before it is
    /// whole.
    fn assert_parses(header: &[u8], expected: Header) {
        assert_eq!(parse(header), Ok(Some((header.len(), expected))));
        let mut followed = header.to_vec();
        followed.extend_from_slice(b"\x16\x03\x01\x02\x00");
        assert_eq!(parse(&followed), Ok(Some((header.len(), expected))));
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn v1_tcp4() {
        assert_parses(
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            proxied("192.168.0.1:56324", "192.168.0.11:443"),
        );
    }

    #[test]
    fn v1_tcp6() {
        assert_parses(
            b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n",
            proxied("[2001:db8::1]:0", "[::ffff:10.0.0.1]:65535"),
        );
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        assert_parses(b"PROXY UNKNOWN\r\n", Header::Local);
        assert_parses(
            b"PROXY UNKNOWN ffff:f...f:ffff 56324 443\r\n",
            Header::Local,
        );
        let mut longest = b"PROXY UNKNOWN ".to_vec();
        longest.resize(V1_MAX_LEN - 2, b'x');
        longest.extend_from_slice(b"\r\n");
        assert_parses(&longest, Header::Local);
    }

    #[test]
    fn v2_ipv4() {
        let header = v2_proxy(
            "10.1.2.3:40000".parse().expect("addr"),
            "10.0.0.1:443".parse().expect("addr"),
            &[],
        );
        assert_eq!(header.len(), 28);
        assert_parses(&header, proxied("10.1.2.3:40000", "10.0.0.1:443"));
    }

    #[test]
    fn v2_ipv6() {
        let header = v2_proxy(
            "[2001:db8::7]:1".parse().expect("addr"),
            "[2001:db8::1]:8443".parse().expect("addr"),
            &[],
        );
        assert_eq!(header.len(), 52);
        assert_parses(&header, proxied("[2001:db8::7]:1", "[2001:db8::1]:8443"));
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        // PP2_TYPE_ALPN "h2", then PP2_TYPE_SSL with a CN sub-TLV.
        let tlvs = b"\x01\x00\x02h2\x20\x00\x0e\x01\x00\x00\x00\x00\x22\x00\x06a.test";
        let header = v2_proxy(
            "192.0.2.1:5000".parse().expect("addr"),
            "192.0.2.2:443".parse().expect("addr"),
            tlvs,
        );
        assert_parses(&header, proxied("192.0.2.1:5000", "192.0.2.2:443"));
    }

    #[test]
    fn v2_local_ignores_family_and_addresses() {
        assert_parses(&v2(0, 0x00, &[]), Header::Local);
        assert_parses(&v2(0, 0x11, &[7; 12]), Header::Local);
        // "the family which is ignored": even one we would otherwise refuse.
        assert_parses(&v2(0, 0x12, &[]), Header::Local);
    }

    #[test]
    fn v2_families_without_addresses_we_use_are_local() {
        assert_parses(&v2(1, 0x00, &[]), Header::Local);
        assert_parses(&v2(1, 0x31, &[0; 216]), Header::Local);
        assert_parses(&v2(1, 0x32, &[0; 216]), Header::Local);
    }

    #[test]
    fn v2_longest_payload_is_accepted_and_one_more_byte_is_not() {
        let longest = v2(1, 0x00, &[0; V2_MAX_PAYLOAD_LEN]);
        assert_eq!(longest.len(), MAX_HEADER_LEN);
        assert_parses(&longest, Header::Local);
        let too_long = v2(1, 0x00, &[0; V2_MAX_PAYLOAD_LEN + 1]);
        assert_eq!(parse(&too_long[..16]), Err(HeaderError::TooLong));
    }

    #[test]
    fn other_protocols_are_rejected_at_their_first_byte() {
        assert_eq!(parse(b"G"), Err(HeaderError::Missing));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\x16"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(HeaderError::Missing));
        // Sharing a first byte with a signature gets no further.
        assert_eq!(parse(b"PO"), Err(HeaderError::Missing));
        assert_eq!(parse(b"PROXY_"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIT\r"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\r\nGET"), Err(HeaderError::Missing));
    }

    #[test]
    fn malformed_v1_lines() {
        for line in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 1\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 80 443\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rX",
            b"PROXY TCP4 1.2.3 5.6.7.8 80 443\r\n",
            b"PROXY TCP4 ::1 ::1 80 443\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 80 443\r\n",
            b"PROXY TCP6 ::1 ::1%eth0 80 443\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 80 443\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
        ] {
            assert_eq!(
                parse(line),
                Err(HeaderError::Malformed),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v1_goes_wrong_at_the_first_bad_byte() {
        assert_eq!(parse(b"PROXY TCP5"), Err(HeaderError::Malformed));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.x"), Err(HeaderError::Malformed));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999"),
            Err(HeaderError::Malformed)
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 "),
            Err(HeaderError::Malformed)
        );
    }

    #[test]
    fn v1_without_crlf_within_the_limit_is_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&line), Ok(None));
        line.push(b'\r');
        assert_eq!(parse(&line), Err(HeaderError::TooLong));
        line.push(b'\n');
        assert_eq!(parse(&line), Err(HeaderError::TooLong));
    }

    #[test]
    fn malformed_v2_headers() {
        let mut version_1 = v2(1, 0x11, &[0; 12]);
        version_1[12] = 0x11;
        assert_eq!(parse(&version_1), Err(HeaderError::UnsupportedVersion));
        assert_eq!(
            parse(&version_1[..13]),
            Err(HeaderError::UnsupportedVersion)
        );
        assert_eq!(parse(&v2(2, 0x11, &[0; 12])), Err(HeaderError::Malformed));
        assert_eq!(
            parse(&v2(1, 0x12, &[0; 12])),
            Err(HeaderError::UnsupportedTransport)
        );
        assert_eq!(
            parse(&v2(1, 0x22, &[0; 36])),
            Err(HeaderError::UnsupportedTransport)
        );
        assert_eq!(parse(&v2(1, 0x41, &[0; 36])), Err(HeaderError::Malformed));
        assert_eq!(parse(&v2(1, 0x13, &[0; 36])), Err(HeaderError::Malformed));
        // Too short for the family's addresses, rejected before the payload.
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 11])[..16]),
            Err(HeaderError::Malformed)
        );
        assert_eq!(parse(&v2(1, 0x21, &[0; 35])), Err(HeaderError::Malformed));
        assert_eq!(parse(&v2(1, 0x21, &[0; 12])), Err(HeaderError::Malformed));
    }

    #[test]
    fn error_labels_are_distinct() {
        let errors = [
            HeaderError::Missing,
            HeaderError::Malformed,
            HeaderError::UnsupportedVersion,
            HeaderError::UnsupportedTransport,
            HeaderError::TooLong,
            HeaderError::Timeout,
            HeaderError::Closed,
            HeaderError::Io(std::io::ErrorKind::Other),
        ];
        let labels: std::collections::HashSet<_> = errors.iter().map(|e| e.as_str()).collect();
        assert_eq!(labels.len(), errors.len());
    }

    fn socket_addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        let v4 = (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port));
        let v6 = (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port));
        prop_oneof![(v4.clone(), v4), (v6.clone(), v6)]
    }

    /// Bytes that get past the signatures often enough to reach the fields.
    fn header_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let tail = prop::collection::vec(any::<u8>(), 0..160);
        let text_tail = "[ 0-9a-fA-F.:TCPUNKOW46\r\n]{0,110}".prop_map(String::into_bytes);
        prop_oneof![
            tail.clone(),
            text_tail.prop_map(|tail| [V1_SIGNATURE, &tail].concat()),
            tail.prop_map(|tail| [&V2_SIGNATURE[..], &tail].concat()),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_get_an_answer_that_more_bytes_keep(bytes in header_like_bytes()) {
            let whole = parse(&bytes);
            if let Ok(Some((len, _))) = whole {
                prop_assert!(len <= bytes.len());
            }
            for cut in 0..bytes.len() {
                let prefix = parse(&bytes[..cut]);
                match whole {
                    Ok(Some((len, _))) if cut < len => prop_assert_eq!(prefix, Ok(None)),
                    _ => prop_assert!(prefix == Ok(None) || prefix == whole, "{:?} at {}", prefix, cut),
                }
            }
        }

        #[test]
        fn generated_headers_round_trip(
            (source, destination) in socket_addr_pair(),
            tlvs in prop::collection::vec(any::<u8>(), 0..64),
            after in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let expected = Header::Proxied { source, destination };
            for header in [v1(source, destination), v2_proxy(source, destination, &tlvs)] {
                prop_assert!(header.len() <= MAX_HEADER_LEN);
                prop_assert_eq!(parse(&header), Ok(Some((header.len(), expected))));
                let followed = [&header[..], &after].concat();
                prop_assert_eq!(parse(&followed), Ok(Some((header.len(), expected))));
                for cut in 0..header.len() {
                    prop_assert_eq!(parse(&header[..cut]), Ok(None));
                }
            }
        }
    }

    /// A connected pair: the peer writing `chunks` with a pause between them
    /// and then closing, and our side.
    async fn peer_writing(chunks: Vec<Vec<u8>>) -> (TcpStream, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("local addr");
        let peer = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            for chunk in chunks {
                stream.write_all(&chunk).await.expect("write");
                stream.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let (stream, _) = listener.accept().await.expect("accept");
        (stream, peer)
    }

    async fn rest_of(mut stream: TcpStream) -> Vec<u8> {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read rest");
        rest
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[tokio::test]
    async fn the_header_is_taken_and_the_request_left() {
        let header = v2_proxy(
            "203.0.113.9:51000".parse().expect("addr"),
            "10.0.0.2:443".parse().expect("addr"),
            b"\x04\x00\x01\x00",
        );
        let (stream, peer) = peer_writing(vec![header, REQUEST.to_vec()]).await;
        let found = read_header(&stream, Duration::from_secs(5)).await;
        assert_eq!(found, Ok(proxied("203.0.113.9:51000", "10.0.0.2:443")));
        assert_eq!(rest_of(stream).await, REQUEST);
        peer.await.expect("peer");
    }

    #[tokio::test]
    async fn a_header_arriving_in_pieces_is_waited_for() {
        let header = v1(
            "[2001:db8::9]:51000".parse().expect("addr"),
            "[2001:db8::1]:443".parse().expect("addr"),
        );
        let (first, second) = header.split_at(9);
        let with_request = [second, REQUEST].concat();
        let (stream, peer) = peer_writing(vec![first.to_vec(), with_request]).await;
        let found = read_header(&stream, Duration::from_secs(5)).await;
        assert_eq!(
            found,
            Ok(proxied("[2001:db8::9]:51000", "[2001:db8::1]:443"))
        );
        assert_eq!(rest_of(stream).await, REQUEST);
        peer.await.expect("peer");
    }

    #[tokio::test]
    async fn another_protocol_is_refused_and_left_unread() {
        let (stream, peer) = peer_writing(vec![REQUEST.to_vec()]).await;
        let found = read_header(&stream, Duration::from_secs(5)).await;
        assert_eq!(found, Err(HeaderError::Missing));
        assert_eq!(rest_of(stream).await, REQUEST);
        peer.await.expect("peer");
    }

    #[tokio::test]
    async fn a_peer_closing_mid_header_is_closed() {
        let (stream, peer) = peer_writing(vec![b"PROX".to_vec()]).await;
        let found = read_header(&stream, Duration::from_secs(5)).await;
        assert_eq!(found, Err(HeaderError::Closed));
        peer.await.expect("peer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_stalling_mid_header_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut peer = TcpStream::connect(listener.local_addr().expect("local addr"))
            .await
            .expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        peer.write_all(b"PROX").await.expect("write");
        let found = read_header(&stream, Duration::from_secs(5)).await;
        assert_eq!(found, Err(HeaderError::Timeout));
        drop(peer);
    }
}

//! Public listeners: an address, and TLS with its certificates or a
//! redirect to `https://`.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use crate::tls::ClientVerifier;
use serde::{Deserialize, Serialize};

use super::{Material, RateLimit};

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub bind: SocketAddr,
    /// Present when the listener terminates TLS (https, wss).
    pub tls: Option<ListenerTls>,
    /// On a plaintext listener: answer every request with a 308 to the
    /// `https://` URL, on this port.
    pub redirect_https: Option<u16>,
    /// Connections from `trusted_proxies` start with a PROXY protocol
    /// header (v1 or v2) whose source address is the client's.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// A plaintext listener also serves clients that open with the HTTP/2
    /// preface (prior knowledge, RFC 9113 §3.3): gRPC without TLS, say.
    #[serde(default)]
    pub h2c: bool,
    /// Requests per client on this listener, whatever their route.
    #[serde(default)]
    pub request_rate: Option<RateLimit>,
}

impl Listener {
    /// A plaintext listener that serves routes.
    pub fn plain(bind: SocketAddr) -> Listener {
        Listener {
            bind,
            tls: None,
            redirect_https: None,
            proxy_protocol: false,
            h2c: false,
            request_rate: None,
        }
    }
}

/// A listener's `tls = { ... }`: its certificates, picked by SNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerTls {
    /// The first one also answers clients that send no (or an unknown) name.
    pub certificates: Vec<Certificate>,
    pub handshake_timeout: Duration,
    /// Client certificates asked for and verified (mTLS).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Session ticket keys shared with other replicas; `None`: the process's own.
    #[serde(default)]
    pub ticket_keys: Option<TicketKeys>,
    /// Certificates ordered from an ACME CA and renewed by wsgate.
    #[serde(default)]
    pub acme: Option<Acme>,
}

/// `acme = { ... }` on a listener's `tls`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Acme {
    /// The names one certificate covers, lowercased; the first names its files.
    pub domains: Vec<String>,
    /// Where the CA sends expiry and policy mail.
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// A PEM file of the CA certificates the directory's own HTTPS chains
    /// to, resolved against the config's directory; `None`: the platform's.
    pub directory_ca: Option<std::path::PathBuf>,
    /// The state directory (account key, certificates, lock), resolved.
    pub state: std::path::PathBuf,
    pub challenge: AcmeChallenge,
}

/// How the CA checks that wsgate answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// A token at `http://NAME/.well-known/acme-challenge/` on port 80.
    Http01,
    /// A special certificate under ALPN `acme-tls/1` on port 443.
    TlsAlpn01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `ticket_keys = "file"` on a listener's `tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketKeys {
    /// As the config names it.
    pub file: String,
    /// Of the keys: a reload tells a rotated file from an unchanged one by it.
    pub fingerprint: String,
    #[serde(skip)]
    pub keys: Material<Vec<[u8; crate::tls::TICKET_KEY_LEN]>>,
}

/// `client_auth = { ... }` on a listener's `tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientAuth {
    /// The CA bundle client certificates must chain to, as the config names it.
    pub ca: String,
    /// Certificate revocation lists, as the config names them.
    pub crls: Vec<String>,
    /// Without a certificate, the handshake fails; otherwise routes decide.
    pub required: bool,
    /// Of the CA and CRL files' contents.
    pub fingerprint: String,
    #[serde(skip)]
    pub verifier: Material<ClientVerifier>,
}

/// A certificate chain and its key, as checked at validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The files as the config names them.
    pub cert: String,
    pub key: String,
    /// DNS names from the leaf's subjectAltName, lowercased; `*.` for wildcards.
    pub names: Vec<String>,
    /// When the leaf stops being valid, in seconds since the Unix epoch.
    pub not_after: i64,
    /// Of the chain: a reload tells a renewed file from an unchanged one by it.
    pub fingerprint: String,
    #[serde(skip)]
    pub material: Material<CertifiedKey>,
}

//! TLS with rustls and the aws-lc-rs provider: termination on listeners
//! (SNI, ALPN `h2`/`http/1.1`, a handshake deadline) and verified TLS to
//! `wss://` backends.

pub mod certs;
mod client_auth;
mod sni;
mod tickets;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::hash::HashAlgorithm;
use rustls::crypto::CryptoProvider;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion,
};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use certs::{CertError, Which};
pub use client_auth::{
    facts as client_cert_facts, verifier as client_verifier, ClientAuthError, ClientCertFacts,
    ClientVerifier,
};
pub use sni::{AlpnChallenges, LiveCertificate, SniResolver, ACME_TLS_ALPN};
pub use tickets::{parse_ticket_keys, Resumption, TicketKeyError, TICKET_KEY_LEN};

/// How long a client has to finish the TLS handshake when the config does not say.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.2 and 1.3; older versions are refused during the handshake.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one crypto provider, passed explicitly: with two compiled in,
/// rustls' implicit `builder()` would panic. Its suites with SHA-256 come
/// before those with SHA-384: every hash of a handshake's key schedule and
/// transcript then runs on the CPU's SHA-256 instructions (x86 has none for
/// SHA-512), which cut the CPU of a resumed handshake by a tenth here.
/// AES-128-GCM is what Chrome and Firefox ask for first anyway.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|suite| hash_of(*suite) != HashAlgorithm::SHA256);
        Arc::new(provider)
    }))
}

fn hash_of(suite: SupportedCipherSuite) -> HashAlgorithm {
    match suite {
        SupportedCipherSuite::Tls13(suite) => suite.common.hash_provider.algorithm(),
        SupportedCipherSuite::Tls12(suite) => suite.common.hash_provider.algorithm(),
    }
}

/// A TLS listener's settings, part of the config snapshot so a reload can
/// replace certificates without touching the socket.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
}

impl ServerTls {
    /// Serves the certificates in `resolver`, offering `h2` then `http/1.1`.
    /// With `clients`, client certificates are asked for and verified.
    pub fn new(
        resolver: SniResolver,
        handshake_timeout: Duration,
        clients: Option<&ClientVerifier>,
        resumption: &Resumption,
    ) -> Result<ServerTls, rustls::Error> {
        let builder =
            ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
        let builder = match clients {
            Some(verifier) => builder.with_client_cert_verifier(Arc::clone(&verifier.0)),
            None => builder.with_no_client_auth(),
        };
        let mut alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Last: only a CA validating a challenge offers it, and offers nothing else.
        if resolver.answers_challenges() {
            alpn.push(ACME_TLS_ALPN.to_vec());
        }
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn;
        // Our suite order, not the client's: OpenSSL and rustls clients ask
        // for AES-256 first, and would get the SHA-384 key schedule.
        config.ignore_client_order = true;
        config.ticketer = Arc::clone(&resumption.ticketer);
        config.session_storage = Arc::clone(&resumption.sessions);
        Ok(ServerTls {
            config: Arc::new(config),
            handshake_timeout,
        })
    }

    /// Runs the server side of the handshake on an accepted connection.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(HandshakeError::Timeout(self.handshake_timeout)),
        }
    }
}

/// Client settings for `wss://` backends that trust `roots`; the backend
/// handshake is HTTP/1.1, so only that is offered.
pub fn backend_client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `config` offering only HTTP/2 by ALPN, for backends spoken to in it.
pub fn offering_h2(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// The platform's CA roots (read once per process) and how many were usable.
pub fn platform_roots() -> &'static (RootCertStore, usize) {
    static ROOTS: OnceLock<(RootCertStore, usize)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "cannot read some of the platform's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        (roots, added)
    })
}

/// A route's `backend_ca` file (`given`), parsed: the CA certificates its
/// backends are verified against, each checked to be a usable trust anchor.
pub fn load_ca(chain: &[CertificateDer<'static>], given: &str) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in chain {
        roots
            .add(cert.clone())
            .map_err(|e| CertError::BadCertificate {
                given: given.to_owned(),
                reason: e.to_string(),
            })?;
    }
    Ok(roots)
}

//! Client certificates (mTLS) on a listener: the verifier built from the
//! operator's CA bundle and CRLs, and what a verified certificate says
//! about its holder. rustls and webpki check the chain, the validity
//! period, the client-auth key usage and revocation.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::provider;

/// Why a listener's `client_auth` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("no CA certificate in `{0}`")]
    NoCa(String),
    #[error("`{given}` cannot be read: {reason}")]
    Unreadable { given: String, reason: String },
    #[error("no CRL in `{0}`")]
    NoCrl(String),
    #[error("cannot verify client certificates with these CAs and CRLs: {0}")]
    Verifier(String),
}

/// The verifier a listener's handshakes use.
#[derive(Clone)]
pub struct ClientVerifier(pub Arc<dyn ClientCertVerifier>);

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientVerifier")
    }
}

/// What a verified client certificate says, for the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFacts {
    /// The subject, as RFC 4514 writes it (`CN=alice,O=Example`).
    pub subject: String,
    /// The subjectAltNames: DNS names, emails, URIs and IP addresses.
    pub sans: Vec<String>,
}

/// A verifier trusting the CA certificates in `ca_pem` (the file `ca`),
/// refusing what the CRLs list; with `required == false` clients without
/// a certificate are let in (and routes decide).
pub fn verifier(
    (ca, ca_pem): (&str, &[u8]),
    crls: &[(String, Vec<u8>)],
    required: bool,
) -> Result<ClientVerifier, ClientAuthError> {
    let unreadable =
        |given: &str, error: rustls_pki_types::pem::Error| ClientAuthError::Unreadable {
            given: given.to_owned(),
            reason: error.to_string(),
        };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(ca, e))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(ClientAuthError::NoCa(ca.to_owned()));
    }
    let mut lists = Vec::new();
    for (given, pem) in crls {
        let parsed: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| unreadable(given, e))?;
        if parsed.is_empty() {
            return Err(ClientAuthError::NoCrl(given.clone()));
        }
        lists.extend(parsed);
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).with_crls(lists);
    if !required {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map(ClientVerifier)
        .map_err(|error| ClientAuthError::Verifier(error.to_string()))
}

/// The subject and SANs of a certificate the handshake verified.
pub fn facts(der: &CertificateDer<'_>) -> Option<ClientCertFacts> {
    let (_, parsed) = X509Certificate::from_der(der).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(alt_names)) = parsed.subject_alternative_name() {
        for name in &alt_names.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(format!("DNS:{dns}")),
                GeneralName::RFC822Name(email) => sans.push(format!("email:{email}")),
                GeneralName::URI(uri) => sans.push(format!("URI:{uri}")),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Some(ClientCertFacts {
        subject: parsed.subject().to_string(),
        sans,
    })
}

//! Certificate files: PEM chains and keys, read and checked the way
//! `wsgate check` reports them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate chain with its key, ready for the SNI resolver.
#[derive(Debug)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the leaf's subjectAltName, lowercased; `*.` for wildcards.
    pub names: Vec<String>,
    /// When the leaf became and stops being valid, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a certificate or key file cannot be used. Each names the file as the
/// config wrote it and, where that helps, where it was looked for.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {what} file `{given}` ({}): {source}", resolved.display())]
    Unreadable {
        what: &'static str,
        given: String,
        resolved: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)")]
    NoCertificate(String),
    #[error("`{0}` holds no private key (expected PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)")]
    NoKey(String),
    #[error("`{given}` is not valid PEM: {reason}")]
    BadPem { given: String, reason: String },
    #[error("`{given}`: the first certificate cannot be parsed: {reason}")]
    BadCertificate { given: String, reason: String },
    #[error("`{given}`: the key cannot be used: {reason}")]
    BadKey { given: String, reason: String },
    #[error("key `{key}` does not belong to certificate `{cert}`")]
    KeyMismatch { cert: String, key: String },
}

/// Reads `cert` (leaf first, then intermediates) and `key`, both resolved
/// against `base_dir`, and checks that they belong together.
pub fn load(
    base_dir: &Path,
    cert: &str,
    key: &str,
    provider: &CryptoProvider,
) -> Result<LoadedCertificate, Vec<(Which, CertError)>> {
    let chain = read(base_dir, cert, "certificate").and_then(|bytes| parse_chain(cert, &bytes));
    let private_key = read(base_dir, key, "key").and_then(|bytes| parse_key(key, &bytes));
    let (chain, private_key) = match (chain, private_key) {
        (Ok(chain), Ok(private_key)) => (chain, private_key),
        (chain, private_key) => {
            let mut errors = Vec::new();
            if let Err(error) = chain {
                errors.push((Which::Cert, error));
            }
            if let Err(error) = private_key {
                errors.push((Which::Key, error));
            }
            return Err(errors);
        }
    };
    let leaf = leaf_facts(cert, &chain[0]).map_err(|e| vec![(Which::Cert, e)])?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| {
            let reason = e.to_string();
            vec![(
                Which::Key,
                CertError::BadKey {
                    given: key.to_owned(),
                    reason,
                },
            )]
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // A key type whose public half rustls cannot derive: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            let error = CertError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            };
            return Err(vec![(Which::Key, error)]);
        }
    }
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        names: leaf.names,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
    })
}

/// Which of the pair a [`CertError`] is about, so it is reported at that value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
}

/// Reads a file the config names, relative to the config's directory.
pub fn read(base_dir: &Path, given: &str, what: &'static str) -> Result<Vec<u8>, CertError> {
    let joined = base_dir.join(given);
    let resolved = std::path::absolute(&joined).unwrap_or(joined);
    std::fs::read(&resolved).map_err(|source| CertError::Unreadable {
        what,
        given: given.to_owned(),
        resolved,
        source,
    })
}

fn pem_error(given: &str, error: pem::Error, missing: CertError) -> CertError {
    match error {
        pem::Error::NoItemsFound => missing,
        other => CertError::BadPem {
            given: given.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The certificates in a PEM file, in order; at least one.
pub fn parse_chain(given: &str, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    let chain =
        chain.map_err(|e| pem_error(given, e, CertError::NoCertificate(given.to_owned())))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate(given.to_owned()));
    }
    Ok(chain)
}

fn parse_key(given: &str, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(bytes)
        .map_err(|e| pem_error(given, e, CertError::NoKey(given.to_owned())))
}

struct LeafFacts {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
}

fn leaf_facts(given: &str, leaf: &CertificateDer<'_>) -> Result<LeafFacts, CertError> {
    let bad = |reason: String| CertError::BadCertificate {
        given: given.to_owned(),
        reason,
    };
    let (_, parsed) = X509Certificate::from_der(leaf).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Some(alt_names) = parsed
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
    {
        for name in &alt_names.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(LeafFacts {
        names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

/// Whether a certificate valid until `not_after` (Unix seconds) has expired.
pub fn has_expired(not_after: i64) -> bool {
    not_after < unix_now()
}

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Unix time as an HTTP date (`Tue, 24 Nov 2026 08:00:00 GMT`), for messages.
pub fn format_time(unix: i64) -> String {
    let time = match u64::try_from(unix) {
        Ok(seconds) => UNIX_EPOCH + std::time::Duration::from_secs(seconds),
        Err(_) => UNIX_EPOCH,
    };
    httpdate::fmt_http_date(time)
}

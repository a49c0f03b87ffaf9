//! A listener's `tls.acme`: the names to order, the CA and where its state lives.

use std::collections::HashSet;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::RawAcme;
use crate::model::{Acme, AcmeChallenge};

/// Let's Encrypt's production directory: what Caddy and certbot use unless told.
pub const DEFAULT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

pub(super) fn acme(check: &mut Checker, raw: &Spanned<RawAcme>, base_dir: &Path) -> Option<Acme> {
    let raw = raw.get_ref();
    let mut complete = true;
    let mut domains = Vec::new();
    let mut seen = HashSet::new();
    if raw.domains.get_ref().is_empty() {
        check.error(raw.domains.span(), ConfigError::AcmeNoDomains);
        complete = false;
    }
    for domain in raw.domains.get_ref() {
        let name = domain.get_ref().to_ascii_lowercase();
        let error = if name.starts_with("*.") {
            Some(ConfigError::AcmeWildcard(name.clone()))
        } else if !is_dns_name(&name) {
            Some(ConfigError::AcmeBadDomain(domain.get_ref().clone()))
        } else if !seen.insert(name.clone()) {
            Some(ConfigError::AcmeDuplicateDomain(name.clone()))
        } else {
            None
        };
        match error {
            Some(error) => {
                check.error(domain.span(), error);
                complete = false;
            }
            None => domains.push(name),
        }
    }
    let directory = match &raw.directory {
        Some(url) if !url.get_ref().starts_with("https://") => {
            check.error(
                url.span(),
                ConfigError::AcmeBadDirectory(url.get_ref().clone()),
            );
            complete = false;
            String::new()
        }
        Some(url) => url.get_ref().clone(),
        None => DEFAULT_DIRECTORY.to_owned(),
    };
    let email = raw.email.as_ref().map(|email| {
        let text = email.get_ref();
        let plausible = text
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            check.error(email.span(), ConfigError::AcmeBadEmail(text.clone()));
            complete = false;
        }
        text.clone()
    });
    let challenge = match raw.challenge.as_ref().map(|c| (c, c.get_ref().as_str())) {
        None | Some((_, "tls-alpn-01")) => AcmeChallenge::TlsAlpn01,
        Some((_, "http-01")) => AcmeChallenge::Http01,
        Some((given, other)) => {
            check.error(
                given.span(),
                ConfigError::AcmeBadChallenge(other.to_owned()),
            );
            complete = false;
            AcmeChallenge::TlsAlpn01
        }
    };
    let state = base_dir.join(raw.state.get_ref());
    // Missing is fine: wsgate makes it at startup, as certbot does.
    if state.exists() && !state.is_dir() {
        check.error(
            raw.state.span(),
            ConfigError::AcmeStateNotDirectory(state.clone()),
        );
        complete = false;
    }
    let directory_ca = match &raw.directory_ca {
        Some(file) => {
            let path = base_dir.join(file.get_ref());
            let error = match CertificateDer::pem_file_iter(&path) {
                Ok(mut certs) => match certs.next() {
                    Some(Ok(_)) => None,
                    Some(Err(error)) => Some(error.to_string()),
                    None => Some("holds no PEM certificate".to_owned()),
                },
                Err(error) => Some(error.to_string()),
            };
            if let Some(error) = error {
                let given = file.get_ref().clone();
                check.error(file.span(), ConfigError::AcmeDirectoryCa { given, error });
                complete = false;
            }
            Some(path)
        }
        None => None,
    };
    complete.then_some(Acme {
        domains,
        email,
        directory,
        directory_ca,
        state,
        challenge,
    })
}

/// Letters, digits and inner dashes in labels of 1 to 63, at most 253 in all;
/// not an IP address, which needs a different identifier type.
fn is_dns_name(name: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label) && name.parse::<std::net::IpAddr>().is_err()
}

//! `[[listeners]]`: addresses, TLS certificates (read and checked here),
//! and redirects to `https://`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{Checker, ConfigError};
use crate::config::{Diagnostic, RawClientAuth, RawConfig, RawListener, RawTls};
use crate::model::{
    fingerprint, Acme, AcmeChallenge, Certificate, ClientAuth, Listener, ListenerTls, Material,
    TicketKeys,
};
use crate::tls::{self, certs, Which};

/// Which certificate file serves a name on a listener, for the cross-listener check.
type NameOwners = HashMap<String, (SocketAddr, String)>;

/// The email of the account each (state directory, CA) pair opens.
type AccountEmails = HashMap<(PathBuf, String), Option<String>>;

pub(super) fn listeners(check: &mut Checker, raw: &RawConfig, base_dir: &Path) -> Vec<Listener> {
    if raw.listeners.is_empty() {
        check
            .errors
            .push(Diagnostic::error(None, ConfigError::NoListeners));
    }
    let mut compiled: Vec<Listener> = Vec::new();
    let mut names_elsewhere = NameOwners::new();
    let mut accounts = AccountEmails::new();
    for listener in &raw.listeners {
        let addr = check.address(&listener.bind);
        // Port 0 asks the OS for a fresh port each time, so it never collides.
        let taken = addr.filter(|a| a.port() != 0 && compiled.iter().any(|l| l.bind == *a));
        if let Some(addr) = taken {
            check.error(listener.bind.span(), ConfigError::DuplicateListener(addr));
        }
        let bind = addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let tls = listener
            .tls
            .as_ref()
            .and_then(|tls| server_tls(check, tls, base_dir, bind, &mut names_elsewhere));
        let redirect_https = redirect_https(check, listener);
        let proxy_protocol = listener.proxy_protocol.as_ref().filter(|on| *on.get_ref());
        let no_senders = raw
            .trusted_proxies
            .as_ref()
            .is_none_or(|list| list.get_ref().is_empty());
        if let (Some(on), true) = (proxy_protocol, no_senders) {
            check.error(on.span(), ConfigError::ProxyProtocolUntrusted);
        }
        let h2c = listener.h2c.as_ref().filter(|on| *on.get_ref());
        if let (Some(on), Some(_)) = (h2c, &listener.tls) {
            check.error(on.span(), ConfigError::H2cOnTls);
        }
        let request_rate = super::limits::rate(
            check,
            ("request_rate", &listener.request_rate),
            ("request_burst", &listener.request_burst),
        );
        acme_ports(check, raw, listener, addr);
        if let Some(acme) = tls.as_ref().and_then(|tls| tls.acme.as_ref()) {
            one_email_per_account(check, &mut accounts, listener, acme);
        }
        if addr.is_some() && taken.is_none() {
            compiled.push(Listener {
                bind,
                tls,
                redirect_https,
                proxy_protocol: proxy_protocol.is_some(),
                h2c: h2c.is_some(),
                request_rate,
            });
        }
    }
    compiled
}

/// Blocks that share a state directory and a CA share one account, whose
/// contact is the `email`: two emails would take turns at the CA.
fn one_email_per_account(
    check: &mut Checker,
    accounts: &mut AccountEmails,
    listener: &RawListener,
    acme: &Acme,
) {
    let key = (acme.state.clone(), acme.directory.clone());
    match accounts.get(&key) {
        None => {
            accounts.insert(key, acme.email.clone());
        }
        Some(first) if *first == acme.email => {}
        Some(first) => {
            let raw = listener
                .tls
                .as_ref()
                .and_then(|tls| tls.get_ref().acme.as_ref());
            let span = raw.and_then(|raw| raw.get_ref().email.as_ref().map(Spanned::span));
            let Some(span) = span.or(raw.map(Spanned::span)) else {
                return;
            };
            check.error(
                span,
                ConfigError::AcmeAccountEmails {
                    first: first.clone().unwrap_or_else(|| "none".to_owned()),
                },
            );
        }
    }
}

/// Whether the CA can reach the challenge of `listener`'s `acme` block: it
/// validates HTTP-01 on port 80 of a plaintext listener and TLS-ALPN-01 on
/// port 443. Other ports are only warned about, since a port forward or a
/// load balancer may bring 80 and 443 there.
fn acme_ports(
    check: &mut Checker,
    raw: &RawConfig,
    listener: &RawListener,
    addr: Option<SocketAddr>,
) {
    let Some(acme) = listener
        .tls
        .as_ref()
        .and_then(|tls| tls.get_ref().acme.as_ref())
    else {
        return;
    };
    let challenge = acme.get_ref().challenge.as_ref();
    let span = challenge.map_or(acme.span(), Spanned::span);
    match challenge.map(|challenge| challenge.get_ref().as_str()) {
        Some("http-01") => {
            let plaintext: Vec<Option<SocketAddr>> = (raw.listeners.iter())
                .filter(|l| l.tls.is_none())
                .map(|l| l.bind.get_ref().parse().ok())
                .collect();
            if plaintext.is_empty() {
                check.error(span, ConfigError::AcmeHttpWithoutPlaintext);
            } else if !plaintext.iter().flatten().any(|a| a.port() == 80) {
                check.warn(span, ConfigError::AcmeHttpNotOnPort80);
            }
        }
        None | Some("tls-alpn-01") => {
            if addr.is_some_and(|addr| addr.port() != 443) {
                check.warn(span, ConfigError::AcmeAlpnNotOnPort443);
            }
        }
        // Refused where the block is read.
        Some(_) => {}
    }
}

/// The `https://` port a plaintext listener redirects to, if it does.
fn redirect_https(check: &mut Checker, listener: &RawListener) -> Option<u16> {
    let enabled = listener.redirect_https.as_ref().filter(|on| *on.get_ref());
    let Some(enabled) = enabled else {
        if let Some(port) = &listener.https_port {
            check.error(port.span(), ConfigError::HttpsPortWithoutRedirect);
        }
        return None;
    };
    if listener.tls.is_some() {
        check.error(enabled.span(), ConfigError::RedirectOnTls);
    }
    let Some(port) = &listener.https_port else {
        return Some(443);
    };
    match u16::try_from(*port.get_ref()) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            check.error(port.span(), ConfigError::BadPort);
            Some(443)
        }
    }
}

/// Loads a listener's certificates; every file problem is reported at the
/// `cert` or `key` value it concerns.
fn server_tls(
    check: &mut Checker,
    raw: &Spanned<RawTls>,
    base_dir: &Path,
    bind: SocketAddr,
    names_elsewhere: &mut NameOwners,
) -> Option<ListenerTls> {
    let tls = raw.get_ref();
    let mut pairs = Vec::new();
    match (&tls.cert, &tls.key, &tls.certificates) {
        (Some(cert), Some(key), None) => pairs.push((cert, key)),
        (None, None, Some(list)) if list.get_ref().is_empty() => {
            check.error(list.span(), ConfigError::TlsNoCertificate);
        }
        (None, None, Some(list)) => pairs.extend(
            list.get_ref()
                .iter()
                .map(|pair| (&pair.get_ref().cert, &pair.get_ref().key)),
        ),
        (_, _, Some(list)) => check.error(list.span(), ConfigError::TlsBothForms),
        (Some(cert), None, None) => check.error(cert.span(), ConfigError::CertWithoutKey),
        (None, Some(key), None) => check.error(key.span(), ConfigError::KeyWithoutCert),
        (None, None, None) if tls.acme.is_some() => {}
        (None, None, None) => check.error(raw.span(), ConfigError::TlsNoCertificate),
    }
    let handshake_timeout = check.positive(
        &tls.handshake_timeout,
        tls::DEFAULT_HANDSHAKE_TIMEOUT,
        "handshake_timeout",
    );
    let provider = tls::provider();
    let mut certificates = Vec::new();
    // Which certificate (by its position in `pairs`) took each name on this listener.
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut complete = true;
    for (index, (cert, key)) in pairs.iter().enumerate() {
        let loaded = match certs::load(base_dir, cert.get_ref(), key.get_ref(), &provider) {
            Ok(loaded) => loaded,
            Err(errors) => {
                for (which, error) in errors {
                    let span = match which {
                        Which::Cert => cert.span(),
                        Which::Key => key.span(),
                    };
                    check.error(span, ConfigError::Certificate(error));
                }
                complete = false;
                continue;
            }
        };
        let given = cert.get_ref();
        if certs::has_expired(loaded.not_after) {
            let when = certs::format_time(loaded.not_after);
            let error = ConfigError::CertificateExpired {
                given: given.clone(),
                when,
            };
            check.warn(cert.span(), error);
        }
        if let Err(error) = crate::ocsp::Target::of(&loaded.key.cert) {
            let given = given.clone();
            if error.must_staple {
                check.error(
                    cert.span(),
                    ConfigError::MustStapleUnstaplable { given, error },
                );
                complete = false;
            } else {
                check.warn(cert.span(), ConfigError::CannotStaple { given, error });
            }
        }
        for name in &loaded.names {
            match owners.get(name) {
                Some(&owner) if owner != index => {
                    let error = ConfigError::OverlappingName {
                        given: given.clone(),
                        name: name.clone(),
                        other: pairs[owner].0.get_ref().clone(),
                    };
                    check.error(cert.span(), error);
                }
                Some(_) => {}
                None => {
                    owners.insert(name.clone(), index);
                }
            }
            match names_elsewhere.get(name) {
                Some((listener, other)) if *listener != bind && other != given => {
                    let error = ConfigError::NameOnOtherListener {
                        given: given.clone(),
                        name: name.clone(),
                        listener: *listener,
                        other: other.clone(),
                    };
                    check.warn(cert.span(), error);
                }
                Some(_) => {}
                None => {
                    names_elsewhere.insert(name.clone(), (bind, given.clone()));
                }
            }
        }
        certificates.push(Certificate {
            cert: given.clone(),
            key: key.get_ref().clone(),
            fingerprint: fingerprint(loaded.key.cert.iter().map(|der| der.as_ref())),
            names: loaded.names,
            not_after: loaded.not_after,
            material: Material::shared(loaded.key),
        });
    }
    let client_auth = match &tls.client_auth {
        Some(raw) => match client_auth(check, raw.get_ref(), base_dir) {
            Some(client_auth) => Some(client_auth),
            None => return None,
        },
        None => None,
    };
    let acme = match &tls.acme {
        Some(raw) => {
            let acme = super::acme::acme(check, raw, base_dir)?;
            let clients_must_show_certificates = tls
                .client_auth
                .as_ref()
                .is_some_and(|c| c.get_ref().required.unwrap_or(true));
            if acme.challenge == AcmeChallenge::TlsAlpn01 && clients_must_show_certificates {
                check.error(raw.span(), ConfigError::AcmeAlpnWithRequiredClientAuth);
                complete = false;
            }
            for name in &acme.domains {
                if let Some(&owner) = owners.get(name) {
                    let other = pairs[owner].0.get_ref().clone();
                    let name = name.clone();
                    check.error(raw.span(), ConfigError::AcmeNameTaken { name, other });
                    complete = false;
                }
            }
            Some(acme)
        }
        None => None,
    };
    let ticket_keys = match &tls.ticket_keys {
        Some(file) if tls.client_auth.is_some() => {
            check.error(file.span(), ConfigError::TicketKeysWithClientAuth);
            return None;
        }
        Some(file) => Some(ticket_keys(check, file, base_dir)?),
        None => None,
    };
    (complete && (!certificates.is_empty() || acme.is_some())).then_some(ListenerTls {
        certificates,
        handshake_timeout,
        client_auth,
        ticket_keys,
        acme,
    })
}

/// `ticket_keys`: the file read and its keys checked.
fn ticket_keys(check: &mut Checker, file: &Spanned<String>, base_dir: &Path) -> Option<TicketKeys> {
    let given = file.get_ref().clone();
    let text = match std::fs::read_to_string(base_dir.join(&given)) {
        Ok(text) => text,
        Err(source) => {
            check.error(
                file.span(),
                ConfigError::TicketKeysUnreadable { given, source },
            );
            return None;
        }
    };
    match tls::parse_ticket_keys(&text) {
        Ok(keys) => Some(TicketKeys {
            file: given,
            fingerprint: fingerprint(keys.iter().map(|key| key.as_slice())),
            keys: Material::new(keys),
        }),
        Err(error) => {
            check.error(file.span(), ConfigError::TicketKeys { given, error });
            None
        }
    }
}

/// `client_auth`: the CA bundle and CRLs read and a verifier built from them.
fn client_auth(check: &mut Checker, raw: &RawClientAuth, base_dir: &Path) -> Option<ClientAuth> {
    let read = |check: &mut Checker, file: &Spanned<String>| match std::fs::read(
        base_dir.join(file.get_ref()),
    ) {
        Ok(bytes) => Some(bytes),
        Err(source) => {
            let given = file.get_ref().clone();
            check.error(
                file.span(),
                ConfigError::ClientAuthUnreadable { given, source },
            );
            None
        }
    };
    let ca_pem = read(check, &raw.ca)?;
    let mut crls = Vec::new();
    for file in raw.crls.iter().flat_map(|list| list.get_ref()) {
        crls.push((file.get_ref().clone(), read(check, file)?));
    }
    let required = raw.required.unwrap_or(true);
    let verifier = match tls::client_verifier((raw.ca.get_ref(), &ca_pem), &crls, required) {
        Ok(verifier) => verifier,
        Err(error) => {
            check.error(raw.ca.span(), ConfigError::ClientAuth(error));
            return None;
        }
    };
    let mut blocks: Vec<&[u8]> = vec![&ca_pem];
    blocks.extend(crls.iter().map(|(_, pem)| pem.as_slice()));
    Some(ClientAuth {
        ca: raw.ca.get_ref().clone(),
        crls: crls.iter().map(|(given, _)| given.clone()).collect(),
        required,
        fingerprint: fingerprint(blocks),
        verifier: Material::new(verifier),
    })
}

//! Certificates ordered from an ACME CA (RFC 8555) and renewed while the
//! listeners serve them. Each `tls.acme` block is one [`ManagedCertificate`]:
//! the stored certificate is served from startup, a task orders one when
//! there is none and renews it two thirds into its lifetime, and each new
//! certificate is swapped into the listeners' resolvers as a reload would,
//! without touching a session. The task lives as long as some snapshot
//! holds the block, so a reload that keeps it keeps the task.

mod order;
mod schedule;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::metrics::AcmeMeters;
use crate::model::Acme;
use crate::tls::{self, certs, AlpnChallenges, LiveCertificate};
use store::{write_secret, StateDir};

/// While a replica sharing the state directory orders, how often to look
/// for the certificate it will store.
const LOCK_POLL: Duration = Duration::from_secs(5);
/// The longest a renewal task sleeps at once, so that a certificate another
/// replica renewed is picked up within it.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// The answers to the challenges of the orders in flight, for every listener.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: key authorizations by token.
    http: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: certificates by name, given to the TLS listeners' resolvers.
    pub alpn: Arc<AlpnChallenges>,
}

/// Where HTTP-01 tokens are fetched (RFC 8555 §8.3).
pub const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

impl Challenges {
    fn put_http(&self, token: &str, key_authorization: &str) {
        self.http_tokens()
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    fn remove_http(&self, token: &str) {
        self.http_tokens().remove(token);
    }

    fn http_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.http.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key authorization for `token`: this process's own, or one a
    /// replica sharing a state directory of `managed` put there.
    pub fn http_answer(&self, token: &str, managed: &[Arc<ManagedCertificate>]) -> Option<String> {
        if let Some(answer) = self.http_tokens().get(token) {
            return Some(answer.clone());
        }
        managed.iter().find_map(|certificate| {
            let file = StateDir::new(&certificate.settings.state).http_token(token)?;
            std::fs::read_to_string(file).ok()
        })
    }
}

/// One `tls.acme` block's certificate: served from `live`, renewed by a task.
#[derive(Debug)]
pub struct ManagedCertificate {
    pub settings: Acme,
    /// What the listeners serve; empty until the first certificate arrives.
    pub live: Arc<LiveCertificate>,
    held: Mutex<Option<Held>>,
    challenges: Arc<Challenges>,
    started: AtomicBool,
    /// This process's place in the renewal window.
    spread: f64,
}

/// The validity of the certificate in `live`, and whether it covers every name.
#[derive(Debug, Clone, Copy)]
struct Held {
    not_before: i64,
    not_after: i64,
    covers_all: bool,
}

impl ManagedCertificate {
    /// Serves what the state directory holds for `settings`, if anything.
    pub fn new(settings: Acme, challenges: &Arc<Challenges>) -> Arc<ManagedCertificate> {
        let managed = ManagedCertificate {
            settings,
            live: Arc::new(LiveCertificate::empty()),
            held: Mutex::new(None),
            challenges: Arc::clone(challenges),
            started: AtomicBool::new(false),
            spread: schedule::spread(),
        };
        managed.read_stored();
        Arc::new(managed)
    }

    /// When the certificate in hand expires, if there is one.
    pub fn expires(&self) -> Option<i64> {
        self.held().map(|held| held.not_after)
    }

    fn held(&self) -> Option<Held> {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the stored certificate if it is newer than the one in hand
    /// (another replica may have renewed it); false if there is none.
    fn read_stored(&self) -> bool {
        let files = StateDir::new(&self.settings.state).certificate(&self.settings.domains[0]);
        let (cert, key) = (files.cert.to_string_lossy(), files.key.to_string_lossy());
        let loaded = match certs::load(std::path::Path::new("/"), &cert, &key, &tls::provider()) {
            Ok(loaded) => loaded,
            Err(errors) => {
                let missing = errors.iter().all(|(_, error)| {
                    matches!(error, certs::CertError::Unreadable { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound)
                });
                if !missing {
                    let errors: Vec<String> = errors.iter().map(|(_, e)| e.to_string()).collect();
                    tracing::warn!(errors = %errors.join("; "), "the stored ACME certificate cannot be used; ordering a new one");
                }
                return false;
            }
        };
        if self
            .held()
            .is_some_and(|held| held.not_after >= loaded.not_after)
        {
            return true;
        }
        let covers_all = self
            .settings
            .domains
            .iter()
            .all(|name| loaded.names.contains(name));
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Held {
            not_before: loaded.not_before,
            not_after: loaded.not_after,
            covers_all,
        });
        self.live.store(Some(loaded.key));
        true
    }

    /// When to order: now without a certificate, or with one that lacks a
    /// name the config has since added.
    fn renew_at(&self) -> i64 {
        match self.held() {
            Some(held) if held.covers_all => {
                schedule::renew_at(held.not_before, held.not_after, self.spread)
            }
            _ => 0,
        }
    }

    /// Starts the renewal task once, on the current Tokio runtime.
    pub fn start(self: &Arc<Self>, meters: Option<AcmeMeters>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        if let (Some(meters), Some(not_after)) = (&meters, self.expires()) {
            meters.expires(&self.settings.domains, not_after);
        }
        if self.held().is_none() {
            tracing::warn!(
                domains = %self.settings.domains.join(","),
                directory = %self.settings.directory,
                "no certificate yet: ordering one; until it arrives, TLS clients asking for these names are refused"
            );
        }
        tokio::spawn(renew(Arc::downgrade(self), meters));
    }

    fn store(&self, obtained: &order::Obtained) -> anyhow::Result<()> {
        let files = StateDir::new(&self.settings.state).certificate(&self.settings.domains[0]);
        write_secret(&files.key, obtained.key_pem.as_bytes())?;
        write_secret(&files.cert, obtained.chain_pem.as_bytes())?;
        anyhow::ensure!(
            self.read_stored(),
            "the certificate the CA issued cannot be loaded"
        );
        Ok(())
    }
}

/// Orders whenever the certificate is due, for as long as a snapshot holds it.
async fn renew(managed: Weak<ManagedCertificate>, meters: Option<AcmeMeters>) {
    let mut failures = 0u32;
    loop {
        let Some(certificate) = managed.upgrade() else {
            return;
        };
        certificate.read_stored();
        let wait = u64::try_from(certificate.renew_at() - certs::unix_now()).unwrap_or(0);
        if wait > 0 {
            drop(certificate);
            tokio::time::sleep(Duration::from_secs(wait).min(LONGEST_SLEEP)).await;
            continue;
        }
        let state = StateDir::new(&certificate.settings.state);
        let lock = match state.try_lock() {
            Ok(Some(lock)) => lock,
            // A replica is ordering; what it stores is read on the next turn.
            Ok(None) => {
                drop(certificate);
                tokio::time::sleep(LOCK_POLL).await;
                continue;
            }
            Err(error) => {
                failures += 1;
                let wait = schedule::retry_after(failures, schedule::spread());
                tracing::warn!(state = %state.root().display(), %error, retry_in = ?wait, "cannot lock the ACME state directory");
                drop(certificate);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        // The replica that held the lock may have just stored a fresh one.
        if certificate.read_stored() && certificate.renew_at() > certs::unix_now() {
            continue;
        }
        let domains = certificate.settings.domains.join(",");
        let result = match order::obtain(&certificate.settings, &certificate.challenges).await {
            Ok(obtained) => certificate.store(&obtained),
            Err(error) => Err(error),
        };
        drop(lock);
        match result {
            Ok(()) => {
                failures = 0;
                let not_after = certificate.expires().unwrap_or_default();
                tracing::info!(%domains, expires = %certs::format_time(not_after), "ACME certificate issued and served");
                if let Some(meters) = &meters {
                    meters.issued(&certificate.settings.domains, not_after);
                }
            }
            Err(error) => {
                failures += 1;
                let wait = schedule::retry_after(failures, schedule::spread());
                tracing::warn!(%domains, error = %format!("{error:#}"), retry_in = ?wait, "ACME order failed");
                if let Some(meters) = &meters {
                    meters.failed();
                }
                drop(certificate);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

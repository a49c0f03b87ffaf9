//! Certificates ordered from an ACME CA (RFC 8555) and renewed while the
//! listeners serve them. Each `tls.acme` block is one [`ManagedCertificate`]:
//! the stored certificate is served from startup, a task orders one when
//! there is none and renews it where the CA's renewal information says (or
//! two thirds into its lifetime), and each new
//! certificate is swapped into the listeners' resolvers as a reload would,
//! without touching a session. The task lives as long as some snapshot
//! holds the block, so a reload that keeps it keeps the task.

mod order;
mod schedule;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use crate::metrics::AcmeMeters;
use crate::model::{Acme, AcmeChallenge};
use crate::tls::{self, certs, AlpnChallenges, LiveCertificate};
use store::{write_secret, StateDir};

/// While a replica sharing the state directory orders, how often to look
/// for the certificate it will store.
const LOCK_POLL: Duration = Duration::from_secs(5);
/// The longest a whole order may take (the CA's validation has 2 minutes of
/// it): an unreachable CA that drops packets must not hold the task.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// The same for a question about the renewal window.
const ARI_TIMEOUT: Duration = Duration::from_secs(30);
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

/// Reads of replicas' HTTP-01 tokens under way at once, and how long one
/// may take: every fetch of a made-up token reads the state directory, and
/// on a stalled shared filesystem those reads must not pile up.
static REPLICA_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);
const REPLICA_READ_TIMEOUT: Duration = Duration::from_secs(2);

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

    /// The key authorization for `token` if an order of this process put
    /// it up.
    pub fn own_http_answer(&self, token: &str) -> Option<String> {
        self.http_tokens().get(token).cloned()
    }

    /// The key authorization for `token` that a replica sharing a state
    /// directory of `managed` put there. Read off the runtime's threads:
    /// the directory may be on a slow shared filesystem.
    pub async fn replica_http_answer(
        &self,
        token: &str,
        managed: &[Arc<ManagedCertificate>],
    ) -> Option<String> {
        let files: Vec<PathBuf> = managed
            .iter()
            .filter(|certificate| certificate.settings.challenge == AcmeChallenge::Http01)
            .filter_map(|certificate| StateDir::new(&certificate.settings.state).http_token(token))
            .collect();
        if files.is_empty() {
            return None;
        }
        // Over the cap, the fetch goes on to the routes, as an unknown token does.
        let permit = REPLICA_READS.try_acquire().ok()?;
        let read = move || {
            let _permit = permit;
            files
                .iter()
                .find_map(|file| std::fs::read_to_string(file).ok())
        };
        let reading = tokio::task::spawn_blocking(read);
        match tokio::time::timeout(REPLICA_READ_TIMEOUT, reading).await {
            Ok(read) => read.ok().flatten(),
            Err(_) => {
                tracing::warn!(timeout = ?REPLICA_READ_TIMEOUT, "reading an HTTP-01 token from the ACME state directory took too long");
                None
            }
        }
    }
}

/// One `tls.acme` block's certificate: served from `live`, renewed by a task.
#[derive(Debug)]
pub struct ManagedCertificate {
    pub settings: Acme,
    /// What the listeners serve; empty until the first certificate arrives.
    pub live: Arc<LiveCertificate>,
    held: Mutex<Option<Held>>,
    /// The CA's renewal window for the certificate in hand, when it gives one.
    window: Mutex<Option<Window>>,
    /// The CA offers no renewal information: the two-thirds rule it is.
    no_ari: AtomicBool,
    challenges: Arc<Challenges>,
    started: AtomicBool,
    meters: OnceLock<AcmeMeters>,
    /// A stored file that cannot be used is said once, not on every look.
    warned_unusable: AtomicBool,
    /// This process's place in the renewal window.
    spread: f64,
}

/// The validity of the certificate in `live`, and its leaf for the CA's
/// renewal information.
#[derive(Debug, Clone)]
struct Held {
    not_before: i64,
    not_after: i64,
    leaf: rustls_pki_types::CertificateDer<'static>,
}

/// When the CA suggests renewing one certificate, and when to ask again.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// The certificate it is about, by its expiry.
    not_after: i64,
    renew_at: i64,
    ask_again: i64,
}

impl ManagedCertificate {
    /// Serves what the state directory holds for `settings`, if anything.
    pub fn new(settings: Acme, challenges: &Arc<Challenges>) -> Arc<ManagedCertificate> {
        let managed = ManagedCertificate {
            settings,
            live: Arc::new(LiveCertificate::empty()),
            held: Mutex::new(None),
            window: Mutex::new(None),
            no_ari: AtomicBool::new(false),
            challenges: Arc::clone(challenges),
            started: AtomicBool::new(false),
            meters: OnceLock::new(),
            warned_unusable: AtomicBool::new(false),
            spread: schedule::spread(),
        };
        managed.read_stored(false);
        Arc::new(managed)
    }

    /// When the certificate in hand expires, if there is one.
    pub fn expires(&self) -> Option<i64> {
        self.held().map(|held| held.not_after)
    }

    fn held(&self) -> Option<Held> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn window(&self) -> Option<Window> {
        *self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn files(&self) -> store::CertificateFiles {
        StateDir::new(&self.settings.state).certificate(&self.settings.domains)
    }

    /// Serves the stored certificate if it is newer than the one in hand
    /// (another replica may have renewed it), or with `just_issued` in any
    /// case. Whether it took one.
    fn read_stored(&self, just_issued: bool) -> bool {
        let pem = self.files().pem.to_string_lossy().into_owned();
        // Key and chain share the file: one rename replaced both.
        let loaded = match certs::load(std::path::Path::new("/"), &pem, &pem, &tls::provider()) {
            Ok(loaded) => loaded,
            Err(errors) => {
                let missing = errors.iter().all(|(_, error)| {
                    matches!(error, certs::CertError::Unreadable { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound)
                });
                if !missing && !self.warned_unusable.swap(true, Ordering::Relaxed) {
                    let errors: Vec<String> = errors.iter().map(|(_, e)| e.to_string()).collect();
                    tracing::warn!(errors = %errors.join("; "), "the stored ACME certificate cannot be used; ordering a new one");
                }
                return false;
            }
        };
        self.warned_unusable.store(false, Ordering::Relaxed);
        let newer = self
            .held()
            .is_none_or(|held| loaded.not_after > held.not_after);
        if !newer && !just_issued {
            return false;
        }
        // `load` refuses a file without a certificate, so there is a leaf.
        let Some(leaf) = loaded.key.cert.first().cloned() else {
            return false;
        };
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Held {
            not_before: loaded.not_before,
            not_after: loaded.not_after,
            leaf,
        });
        self.live.store(Some(loaded.key));
        if let Some(meters) = self.meters.get() {
            meters.expires(&self.settings.domains, loaded.not_after);
        }
        true
    }

    /// When to order: at once without a certificate; where the CA's window
    /// for this certificate says, if it gave one; else two thirds in.
    fn renew_at(&self) -> i64 {
        let Some(held) = self.held() else {
            return 0;
        };
        match self.window() {
            Some(window) if window.not_after == held.not_after => window.renew_at,
            _ => schedule::renew_at(held.not_before, held.not_after, self.spread),
        }
    }

    /// Asks the CA for its renewal window (ARI) when the last answer is
    /// due for a refresh. A CA without ARI is not asked again; one that
    /// fails leaves the two-thirds rule in force and is asked in an hour.
    async fn refresh_window(&self) {
        let Some(held) = self.held() else {
            return;
        };
        let now = certs::unix_now();
        let current = self
            .window()
            .is_some_and(|w| w.not_after == held.not_after && w.ask_again > now);
        if current || self.no_ari.load(Ordering::Relaxed) {
            return;
        }
        let hour = i64::try_from(LONGEST_SLEEP.as_secs()).unwrap_or(3600);
        let asked = tokio::time::timeout(
            ARI_TIMEOUT,
            order::renewal_window(&self.settings, &held.leaf),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {ARI_TIMEOUT:?}")));
        let window = match asked {
            Ok(Some(window)) => Window {
                not_after: held.not_after,
                renew_at: schedule::within(window.start, window.end, self.spread),
                ask_again: now
                    + i64::try_from(window.ask_again.as_secs())
                        .unwrap_or(hour)
                        .clamp(60, 86_400),
            },
            Ok(None) => {
                self.no_ari.store(true, Ordering::Relaxed);
                return;
            }
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "no renewal information from the CA; renewing two thirds in");
                Window {
                    not_after: held.not_after,
                    renew_at: schedule::renew_at(held.not_before, held.not_after, self.spread),
                    ask_again: now + hour,
                }
            }
        };
        *self.window.lock().unwrap_or_else(PoisonError::into_inner) = Some(window);
    }

    /// Starts the renewal task once, on the current Tokio runtime.
    pub fn start(self: &Arc<Self>, meters: Option<AcmeMeters>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(meters) = meters {
            if let Some(not_after) = self.expires() {
                meters.expires(&self.settings.domains, not_after);
            }
            let _ = self.meters.set(meters);
        }
        if self.held().is_none() {
            // Its names have no certificate served until the order ends,
            // whatever a block this one replaced had.
            if let Some(meters) = self.meters.get() {
                meters.forget(&self.settings.domains);
            }
            tracing::warn!(
                domains = %self.settings.domains.join(","),
                directory = %self.settings.directory,
                "no certificate yet: ordering one; until it arrives, TLS clients asking for these names are refused"
            );
        }
        tokio::spawn(renew(Arc::downgrade(self)));
    }

    fn store(&self, obtained: &order::Obtained) -> anyhow::Result<()> {
        let pem = format!("{}{}", obtained.key_pem, obtained.chain_pem);
        write_secret(&self.files().pem, pem.as_bytes())?;
        anyhow::ensure!(
            self.read_stored(true),
            "the certificate the CA issued cannot be loaded"
        );
        Ok(())
    }

    /// One order, under the state directory's lock, unless a replica holds
    /// it, renewed meanwhile, or failed so recently that the shared back-off
    /// says wait. Returns how long to wait before looking again.
    async fn order(&self, failures: &mut u32) -> Duration {
        let state = StateDir::new(&self.settings.state);
        let _lock = match state.try_lock() {
            Ok(Some(lock)) => lock,
            // A replica is ordering; what it stores is read on the next turn.
            Ok(None) => return LOCK_POLL,
            Err(error) => {
                *failures += 1;
                let wait = schedule::retry_after(*failures, false, schedule::spread());
                tracing::warn!(state = %state.root().display(), %error, retry_in = ?wait, "cannot lock the ACME state directory");
                return wait;
            }
        };
        let now = certs::unix_now();
        // The replica that held the lock may have just stored a fresh one.
        if self.read_stored(false) && self.renew_at() > now {
            *failures = 0;
            return Duration::ZERO;
        }
        // The replicas' shared back-off, so that N of them do not fail N times as often.
        let files = self.files();
        if let Some((shared, not_before)) = store::read_retry(&files.retry) {
            *failures = (*failures).max(shared);
            if not_before > now {
                return Duration::from_secs(u64::try_from(not_before - now).unwrap_or(0));
            }
        }
        let domains = self.settings.domains.join(",");
        let replaced = self.held().map(|held| held.leaf);
        let obtained = tokio::time::timeout(
            ORDER_TIMEOUT,
            order::obtain(&self.settings, &self.challenges, replaced.as_ref()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(order::Failure {
                error: anyhow::anyhow!("the order did not finish within {ORDER_TIMEOUT:?}"),
                validated: false,
            })
        });
        let failure = match obtained {
            Ok(obtained) => match self.store(&obtained) {
                Ok(()) if self.renew_at() > certs::unix_now() => {
                    *failures = 0;
                    let _ = std::fs::remove_file(&files.retry);
                    let not_after = self.expires().unwrap_or_default();
                    tracing::info!(%domains, expires = %certs::format_time(not_after), "ACME certificate issued and served");
                    if let Some(meters) = self.meters.get() {
                        meters.issued();
                    }
                    return Duration::ZERO;
                }
                // Served, but already due again (a CA capping lifetimes at
                // its own expiry, a clock far ahead): not a reason to order
                // again at once.
                Ok(()) => order::Failure {
                    error: anyhow::anyhow!(
                        "the CA issued a certificate that is already due for renewal (check this machine's clock)"
                    ),
                    validated: true,
                },
                Err(error) => order::Failure {
                    error,
                    validated: true,
                },
            },
            Err(failure) => failure,
        };
        *failures += 1;
        let wait = schedule::retry_after(*failures, failure.validated, schedule::spread());
        let not_before = certs::unix_now() + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX);
        if let Err(error) = store::write_retry(&files.retry, *failures, not_before) {
            tracing::warn!(file = %files.retry.display(), %error, "cannot share the back-off with replicas");
        }
        tracing::warn!(%domains, error = %format!("{:#}", failure.error), retry_in = ?wait, "ACME order failed");
        if let Some(meters) = self.meters.get() {
            meters.failed();
        }
        wait
    }
}

/// Orders whenever the certificate is due, for as long as a snapshot holds it.
async fn renew(managed: Weak<ManagedCertificate>) {
    let mut failures = 0u32;
    loop {
        let Some(certificate) = managed.upgrade() else {
            return;
        };
        // Another replica's renewal: its success is ours.
        if certificate.read_stored(false) {
            failures = 0;
        }
        certificate.refresh_window().await;
        let due_in = u64::try_from(certificate.renew_at() - certs::unix_now()).unwrap_or(0);
        let wait = if due_in > 0 {
            Duration::from_secs(due_in)
        } else {
            certificate.order(&mut failures).await
        };
        drop(certificate);
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(LONGEST_SLEEP)).await;
        }
    }
}

//! OCSP stapling: for each configured certificate whose leaf names an OCSP
//! responder, a task fetches the certificate's status, checks it, and
//! serves it stapled to the handshake; it refreshes halfway to the
//! response's nextUpdate. A responder that fails never blocks handshakes:
//! the last good response is stapled until it expires, then none is. A
//! Must-Staple certificate (RFC 7633) is served only with a valid staple.
//! Like ACME certificates, a stapler lives while some snapshot holds its
//! certificate, so a reload that keeps the certificate keeps the staple.

mod der;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::sign::CertifiedKey;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::{certs, LiveCertificate};
pub use der::Staple;

/// id-ad-ocsp (1.3.6.1.5.5.7.48.1), the access method of an OCSP responder.
const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
/// id-pe-tlsfeature (1.3.6.1.5.5.7.1.24), which Must-Staple is.
const TLS_FEATURE: &str = "1.3.6.1.5.5.7.1.24";
/// How long a responder has to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses are a few KiB; more is not an OCSP response.
const MAX_RESPONSE: usize = 64 * 1024;
/// Without a nextUpdate, and the longest a task sleeps at once.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Where and how to ask about one certificate.
#[derive(Debug, Clone)]
pub struct Target {
    /// The responder, as the leaf's Authority Information Access names it.
    pub url: String,
    /// The leaf asks to be served only with a staple (TLS feature status_request).
    pub must_staple: bool,
    id: der::CertId,
    issuer: der::Issuer,
}

/// Why a certificate that names a responder cannot be stapled, and
/// whether it is Must-Staple (then it could never be served).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct TargetError {
    pub reason: Unstaplable,
    pub must_staple: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Unstaplable {
    #[error(
        "its OCSP responder cannot be asked: the file holds no issuer certificate after the leaf"
    )]
    NoIssuer,
    #[error("its issuer certificate cannot be read: {0}")]
    BadIssuer(String),
    #[error("its OCSP responder `{0}` is not an http:// URL")]
    NotHttp(String),
    #[error("it names no OCSP responder")]
    NoResponder,
}

impl Target {
    /// The responder of `chain`'s leaf; `None` when it names none.
    pub fn of(
        chain: &[rustls_pki_types::CertificateDer<'_>],
    ) -> Result<Option<Target>, TargetError> {
        let Some(leaf) = chain
            .first()
            .and_then(|der| X509Certificate::from_der(der).ok())
        else {
            return Ok(None);
        };
        let leaf = leaf.1;
        let mut url = None;
        let mut must_staple = false;
        for extension in leaf.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::AuthorityInfoAccess(access) => {
                    url = access
                        .accessdescs
                        .iter()
                        .filter(|d| d.access_method.to_id_string() == AD_OCSP)
                        .find_map(|d| match &d.access_location {
                            GeneralName::URI(uri) => Some(uri.to_string()),
                            _ => None,
                        });
                }
                _ if extension.oid.to_id_string() == TLS_FEATURE => {
                    must_staple = der::requests_status(extension.value);
                }
                _ => {}
            }
        }
        let fail = |reason| TargetError {
            reason,
            must_staple,
        };
        let Some(url) = url else {
            return match must_staple {
                true => Err(fail(Unstaplable::NoResponder)),
                false => Ok(None),
            };
        };
        if !url.starts_with("http://") {
            return Err(fail(Unstaplable::NotHttp(url)));
        }
        let issuer = chain.get(1).ok_or(fail(Unstaplable::NoIssuer))?;
        let (_, issuer) = X509Certificate::from_der(issuer)
            .map_err(|e| fail(Unstaplable::BadIssuer(e.to_string())))?;
        let issuer_key =
            der::Issuer::new(&issuer).map_err(|e| fail(Unstaplable::BadIssuer(e.to_string())))?;
        Ok(Some(Target {
            url,
            must_staple,
            id: der::CertId::new(&leaf, &issuer),
            issuer: issuer_key,
        }))
    }

    /// Asks the responder, and checks the answer.
    pub async fn fetch(&self) -> anyhow::Result<Staple> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(header::CONTENT_TYPE, "application/ocsp-request")
            .header(header::ACCEPT, "application/ocsp-response")
            .body(Full::new(Bytes::from(self.id.request())))?;
        let exchange = async {
            let response = client.request(request).await?;
            anyhow::ensure!(
                response.status().is_success(),
                "the responder answered {}",
                response.status()
            );
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the response: {e}"))?;
            Ok::<_, anyhow::Error>(body.to_bytes())
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {FETCH_TIMEOUT:?}"))??;
        Ok(der::check(
            &body,
            &self.id,
            &self.issuer,
            certs::unix_now(),
        )?)
    }
}

/// One certificate served with its status stapled.
#[derive(Debug)]
pub struct Stapler {
    /// Of the certificate's chain: a reload that keeps the certificate keeps its stapler.
    pub fingerprint: String,
    /// What the listeners serve: the key with the current staple, the key
    /// alone, or (Must-Staple without a staple) nothing.
    pub live: Arc<LiveCertificate>,
    key: Arc<CertifiedKey>,
    target: Target,
    /// Until when the staple being served is good.
    stapled_until: Mutex<Option<i64>>,
    started: AtomicBool,
}

impl Stapler {
    pub fn new(key: &Arc<CertifiedKey>, target: Target, fingerprint: &str) -> Arc<Stapler> {
        let stapler = Stapler {
            fingerprint: fingerprint.to_owned(),
            live: Arc::new(LiveCertificate::empty()),
            key: Arc::clone(key),
            target,
            stapled_until: Mutex::new(None),
            started: AtomicBool::new(false),
        };
        stapler.serve(None);
        Arc::new(stapler)
    }

    /// Starts the refresh task once, on the current Tokio runtime.
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh(Arc::downgrade(self)));
        }
    }

    fn serve(&self, staple: Option<&Staple>) {
        let until = staple.map(Staple::good_until);
        *self
            .stapled_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = until;
        let served = match staple {
            Some(staple) => {
                let mut key = CertifiedKey::clone(&self.key);
                key.ocsp = Some(staple.der.clone());
                Some(Arc::new(key))
            }
            None if self.target.must_staple => None,
            None => Some(Arc::clone(&self.key)),
        };
        self.live.store(served);
    }

    /// Seconds until the staple being served expires, if one is.
    fn staple_left(&self) -> Option<i64> {
        self.stapled_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|until| until - certs::unix_now())
    }
}

/// When to ask again after a good response: halfway to when it stops being
/// good, as Caddy does, and never sooner than 10 s from now.
fn refresh_in(staple: &Staple, now: i64) -> Duration {
    let halfway = staple.this_update + (staple.good_until() - staple.this_update) / 2;
    let seconds = u64::try_from(halfway - now).unwrap_or(0).max(10);
    Duration::from_secs(seconds).min(LONGEST_WAIT)
}

/// After `failures` failed fetches in a row: 5, 10, 20… seconds, at most
/// an hour. A Must-Staple certificate is not served until one succeeds, so
/// the first tries come quickly.
fn retry_in(failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(10);
    Duration::from_secs(5 * factor).min(LONGEST_WAIT)
}

async fn refresh(stapler: Weak<Stapler>) {
    let mut failures = 0u32;
    loop {
        let Some(current) = stapler.upgrade() else {
            return;
        };
        let wait = match current.target.fetch().await {
            Ok(staple) => {
                if failures > 0
                    || current
                        .live
                        .load()
                        .as_ref()
                        .is_none_or(|k| k.ocsp.is_none())
                {
                    tracing::info!(responder = %current.target.url, "OCSP response stapled");
                }
                failures = 0;
                current.serve(Some(&staple));
                refresh_in(&staple, certs::unix_now())
            }
            Err(error) if is_revoked(&error) => {
                // Not an outage: the last "good" answer must not go on.
                current.serve(None);
                tracing::error!(responder = %current.target.url, "the CA says this certificate is revoked: served without a staple (a Must-Staple one not at all); replace it");
                LONGEST_WAIT
            }
            Err(error) => {
                failures += 1;
                let left = current.staple_left();
                if left.is_some_and(|left| left <= 0) {
                    current.serve(None);
                }
                // Asked again no later than the staple expires, so it goes then.
                let wait = match left {
                    Some(left) if left > 0 => retry_in(failures)
                        .min(Duration::from_secs(u64::try_from(left).unwrap_or(0))),
                    _ => retry_in(failures),
                };
                let must_staple = current.target.must_staple;
                tracing::warn!(responder = %current.target.url, error = %format!("{error:#}"), retry_in = ?wait, must_staple, "OCSP responder failed; handshakes go on with the last good staple until it expires");
                wait
            }
        };
        drop(current);
        tokio::time::sleep(wait).await;
    }
}

fn is_revoked(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<der::ResponseError>(),
        Some(der::ResponseError::Revoked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_halfway_and_retries_slower() {
        let staple = |this, next| Staple {
            der: Vec::new(),
            this_update: this,
            next_update: next,
        };
        assert_eq!(
            refresh_in(&staple(0, Some(7200)), 0),
            Duration::from_secs(3600)
        );
        assert_eq!(
            refresh_in(&staple(0, Some(600)), 0),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_in(&staple(0, Some(600)), 599),
            Duration::from_secs(10)
        );
        assert_eq!(refresh_in(&staple(0, None), 0), LONGEST_WAIT);
        assert_eq!(refresh_in(&staple(0, Some(86_400 * 7)), 0), LONGEST_WAIT);
        assert_eq!(retry_in(1), Duration::from_secs(5));
        assert_eq!(retry_in(3), Duration::from_secs(20));
        assert_eq!(retry_in(10), Duration::from_secs(2560));
        assert_eq!(retry_in(40), LONGEST_WAIT);
    }
}

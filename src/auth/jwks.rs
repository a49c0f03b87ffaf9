//! JWT keys at a URL: a JWKS document fetched when first needed, used for
//! `keys_refresh`, fetched again early (at most every 30 s) when a token
//! names a key it does not have (the issuer rotated), and kept when a fetch
//! fails. One fetch at a time, bounded in time and size; requests that
//! need keys wait for it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use jsonwebtoken::Algorithm;

use crate::proxy::{self, Connector};
use crate::tokens::{ClaimRules, Verifier};
use crate::upstream::{warn_throttled, BackendPool};

/// The largest JWKS document taken.
const MAX_DOCUMENT: usize = 1 << 20;
/// A fetch's bound, connect included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Unknown `kid`s fetch again at most this often, so forged ones cannot
/// make the gateway hammer the issuer.
const MIN_REFETCH: Duration = Duration::from_secs(30);

/// A route's keys at a URL.
pub(super) struct RemoteKeys {
    pub(super) pool: Arc<BackendPool>,
    clients: Vec<Client<Connector, Empty<Bytes>>>,
    algorithms: Vec<Algorithm>,
    rules: ClaimRules,
    refresh: Duration,
    held: Mutex<Held>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    keys: Option<(Arc<Verifier>, Instant)>,
    last_try: Option<Instant>,
    /// The last fetch a token's unknown `kid` asked for.
    last_for_kid: Option<Instant>,
}

/// A failed fetch is not tried again sooner than this.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").finish_non_exhaustive()
    }
}

impl RemoteKeys {
    pub(super) fn new(
        pool: Arc<BackendPool>,
        algorithms: Vec<Algorithm>,
        rules: ClaimRules,
        refresh: Duration,
    ) -> RemoteKeys {
        RemoteKeys {
            clients: proxy::clients(&pool),
            pool,
            algorithms,
            rules,
            refresh,
            held: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys to check a token naming `kid` with; `None` while none could
    /// ever be fetched.
    pub(super) async fn verifier(&self, kid: Option<&str>) -> Option<Arc<Verifier>> {
        if self.wants_fetch(kid).is_none() {
            return self.current();
        }
        let _one_fetch = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(for_kid) = self.wants_fetch(kid) {
            self.fetch(for_kid).await;
        }
        self.current()
    }

    fn current(&self) -> Option<Arc<Verifier>> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.keys.as_ref().map(|(keys, _)| Arc::clone(keys))
    }

    /// Whether to fetch now, and whether for an unknown `kid`.
    fn wants_fetch(&self, kid: Option<&str>) -> Option<bool> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let may_retry = held
            .last_try
            .is_none_or(|at| at.elapsed() >= RETRY_AFTER_FAILURE);
        match &held.keys {
            None => may_retry.then_some(false),
            Some((_, fetched)) if fetched.elapsed() >= self.refresh => may_retry.then_some(false),
            Some((keys, _)) => {
                let unknown = kid.is_some_and(|kid| !keys.knows(kid));
                let may = held
                    .last_for_kid
                    .is_none_or(|at| at.elapsed() >= MIN_REFETCH);
                (unknown && may).then_some(true)
            }
        }
    }

    async fn fetch(&self, for_kid: bool) {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.download()).await;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.last_try = Some(Instant::now());
        if for_kid {
            held.last_for_kid = held.last_try;
        }
        match fetched {
            Ok(Some(keys)) => held.keys = Some((Arc::new(keys), Instant::now())),
            Ok(None) => {}
            Err(_) => {
                warn_throttled!(self.pool.warnings, after = ?FETCH_TIMEOUT, "fetching the JWT keys timed out; the keys held are kept");
            }
        }
    }

    /// One GET of the document, from the first backend that takes it.
    async fn download(&self) -> Option<Verifier> {
        let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
        for backend in self.pool.order(&HeaderMap::new(), localhost) {
            let index = self
                .pool
                .backends()
                .iter()
                .position(|b| Arc::ptr_eq(b, backend))?;
            let client = self.clients.get(index)?;
            let path = if backend.path.is_empty() {
                "/"
            } else {
                backend.path.as_str()
            };
            // The connector speaks TLS to `https://` backends; the client
            // sees plain `http://` targets, as the proxy's does.
            let uri: Uri = format!("http://{}{path}", backend.authority())
                .parse()
                .ok()?;
            let mut request = Request::new(Empty::<Bytes>::new());
            *request.uri_mut() = uri;
            let response = match client.request(request).await {
                Ok(response) if response.status().is_success() => response,
                Ok(response) => {
                    warn_throttled!(self.pool.warnings, status = %response.status(), url = %backend.url, "the JWKS URL did not answer 2xx; the keys held are kept");
                    return None;
                }
                Err(error) if error.is_connect() => continue,
                Err(error) => {
                    warn_throttled!(self.pool.warnings, %error, url = %backend.url, "fetching the JWT keys failed; the keys held are kept");
                    return None;
                }
            };
            let body = Limited::new(response.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .ok()?;
            return match Verifier::from_file_text(&body.to_bytes(), &self.algorithms, &self.rules) {
                Ok(keys) => Some(keys),
                Err(error) => {
                    warn_throttled!(self.pool.warnings, %error, url = %backend.url, "the JWKS document cannot be used; the keys held are kept");
                    None
                }
            };
        }
        None
    }
}

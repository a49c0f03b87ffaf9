//! Picks a listener's certificate from the name the client asked for (SNI):
//! an exact name first, then one that is renewed while the listener runs
//! (ACME), then a wildcard one label up, then the default. A CA checking a
//! TLS-ALPN-01 challenge gets that challenge's certificate and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate replaced while listeners serve it (an ACME renewal), or
/// not there yet (the first order still running).
pub type LiveCertificate = ArcSwapOption<CertifiedKey>;

/// The TLS-ALPN-01 certificates of the orders in flight, by name. Only
/// wsgate's own orders add to it, one per name, and take it away again.
#[derive(Debug, Default)]
pub struct AlpnChallenges(Mutex<HashMap<String, Arc<CertifiedKey>>>);

impl AlpnChallenges {
    pub fn insert(&self, name: &str, key: Arc<CertifiedKey>) {
        self.lock().insert(name.to_owned(), key);
    }

    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The certificates of one listener, indexed by the names they cover. Each
/// is live: a stapler puts each new OCSP response into it, and takes a
/// Must-Staple certificate out while it has none.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Arc<LiveCertificate>>,
    /// Keyed by the parent domain: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<LiveCertificate>>,
    /// The first configured certificate: for clients without SNI or with an
    /// unknown name. `None` on a listener with only ACME names.
    default: Option<Arc<LiveCertificate>>,
    /// Renewed certificates and the names each covers.
    live: Vec<(Vec<String>, Arc<LiveCertificate>)>,
    challenges: Option<Arc<AlpnChallenges>>,
}

impl SniResolver {
    pub fn new(default: Arc<LiveCertificate>) -> SniResolver {
        SniResolver {
            default: Some(default),
            ..SniResolver::default()
        }
    }

    /// Serves `certificate` for `names` whenever it holds one.
    pub fn add_live(&mut self, names: Vec<String>, certificate: Arc<LiveCertificate>) {
        self.live.push((names, certificate));
    }

    /// Answers TLS-ALPN-01 validation from `challenges`.
    pub fn answer_challenges(&mut self, challenges: Arc<AlpnChallenges>) {
        self.challenges = Some(challenges);
    }

    /// Whether TLS-ALPN-01 is answered, so `acme-tls/1` must be offered.
    pub fn answers_challenges(&self) -> bool {
        self.challenges.is_some()
    }

    /// Adds `key` under `name` (lowercase; `*.` marks a wildcard). Returns
    /// false if an earlier certificate already covers exactly that name.
    pub fn add(&mut self, name: &str, key: &Arc<LiveCertificate>) -> bool {
        let (map, name) = match name.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent),
            None => (&mut self.exact, name),
        };
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.to_owned(), Arc::clone(key));
        true
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.fallback();
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name).and_then(|live| live.load_full()) {
            return Some(key);
        }
        let ordered = self
            .live
            .iter()
            .find(|(names, _)| names.contains(&name))
            .and_then(|(_, certificate)| certificate.load_full());
        ordered
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)?.load_full()
            })
            .or_else(|| self.fallback())
    }

    /// For no name or an unknown one: the first configured certificate, or
    /// the first ACME one that is there.
    fn fallback(&self) -> Option<Arc<CertifiedKey>> {
        self.default
            .as_ref()
            .and_then(|live| live.load_full())
            .or_else(|| {
                self.live
                    .iter()
                    .find_map(|(_, certificate)| certificate.load_full())
            })
    }

    /// The challenge certificate when the client is a CA validating
    /// TLS-ALPN-01: it offers `acme-tls/1` alone (RFC 8737 §3).
    fn challenge(&self, client_hello: &ClientHello<'_>) -> Option<Option<Arc<CertifiedKey>>> {
        let challenges = self.challenges.as_ref()?;
        let mut offered = client_hello.alpn()?;
        let only_acme = offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none();
        if !only_acme {
            return None;
        }
        let name = client_hello.server_name()?.to_ascii_lowercase();
        Some(challenges.get(&name))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(challenge) = self.challenge(&client_hello) {
            return challenge;
        }
        self.pick(client_hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::sign::{Signer, SigningKey};
    use rustls::{SignatureAlgorithm, SignatureScheme};

    /// A stand-in signing key: the resolver only hands keys out, it never signs.
    #[derive(Debug)]
    struct Unused;

    impl SigningKey for Unused {
        fn choose_scheme(&self, _offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
            None
        }
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::ECDSA
        }
    }

    fn key() -> Arc<CertifiedKey> {
        Arc::new(CertifiedKey::new(Vec::new(), Arc::new(Unused)))
    }

    fn fixed(key: &Arc<CertifiedKey>) -> Arc<LiveCertificate> {
        Arc::new(LiveCertificate::new(Some(Arc::clone(key))))
    }

    #[test]
    fn exact_beats_wildcard_and_unknown_gets_the_default() {
        let (default, exact, wildcard) = (key(), key(), key());
        let mut resolver = SniResolver::new(fixed(&default));
        assert!(resolver.add("api.example.com", &fixed(&exact)));
        assert!(resolver.add("*.example.com", &fixed(&wildcard)));
        let picks = |name: Option<&str>, key: &Arc<CertifiedKey>| {
            resolver
                .pick(name)
                .is_some_and(|got| Arc::ptr_eq(&got, key))
        };
        assert!(picks(Some("API.example.com"), &exact));
        assert!(picks(Some("www.example.com"), &wildcard));
        // A wildcard covers one label only (RFC 6125 §6.4.3).
        assert!(picks(Some("a.b.example.com"), &default));
        assert!(picks(Some("example.com"), &default));
        assert!(picks(None, &default));
    }

    #[test]
    fn a_certificate_taken_out_lets_the_next_candidate_answer() {
        // A Must-Staple certificate without a staple: its name falls
        // through to the wildcard, then the default.
        let (default, stapled, wildcard) = (key(), key(), key());
        let must_staple = fixed(&stapled);
        let mut resolver = SniResolver::new(fixed(&default));
        resolver.add("a.example.com", &must_staple);
        must_staple.store(None);
        let picks = |resolver: &SniResolver, name: &str, key: &Arc<CertifiedKey>| {
            resolver
                .pick(Some(name))
                .is_some_and(|got| Arc::ptr_eq(&got, key))
        };
        assert!(picks(&resolver, "a.example.com", &default));
        resolver.add("*.example.com", &fixed(&wildcard));
        assert!(picks(&resolver, "a.example.com", &wildcard));
        must_staple.store(Some(Arc::clone(&stapled)));
        assert!(picks(&resolver, "a.example.com", &stapled));
    }

    #[test]
    fn a_live_certificate_serves_its_names_once_it_is_there() {
        let (wildcard, renewed) = (key(), key());
        let live = Arc::new(LiveCertificate::empty());
        let mut resolver = SniResolver::default();
        resolver.add_live(vec!["www.example.com".into()], Arc::clone(&live));
        assert!(resolver.pick(Some("www.example.com")).is_none());
        assert!(resolver.pick(None).is_none());
        resolver.add("*.example.com", &fixed(&wildcard));
        let picks = |resolver: &SniResolver, name: Option<&str>, key: &Arc<CertifiedKey>| {
            resolver
                .pick(name)
                .is_some_and(|got| Arc::ptr_eq(&got, key))
        };
        assert!(picks(&resolver, Some("www.example.com"), &wildcard));
        live.store(Some(Arc::clone(&renewed)));
        assert!(picks(&resolver, Some("WWW.example.com"), &renewed));
        assert!(picks(&resolver, Some("api.example.com"), &wildcard));
        // No name and no configured certificate: the ACME one.
        assert!(picks(&resolver, None, &renewed));
    }

    #[test]
    fn a_name_taken_by_an_earlier_certificate_is_refused() {
        let mut resolver = SniResolver::new(fixed(&key()));
        assert!(resolver.add("a.example.com", &fixed(&key())));
        assert!(!resolver.add("a.example.com", &fixed(&key())));
        assert!(resolver.add("*.example.com", &fixed(&key())));
        assert!(!resolver.add("*.example.com", &fixed(&key())));
    }
}

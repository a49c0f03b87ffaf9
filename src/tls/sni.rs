//! Picks a listener's certificate from the name the client asked for (SNI):
//! an exact name first, then a wildcard one label up, then the default.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of one listener, indexed by the names they cover.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first configured certificate: for clients without SNI or with an unknown name.
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(default: Arc<CertifiedKey>) -> SniResolver {
        SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        }
    }

    /// Adds `key` under `name` (lowercase; `*.` marks a wildcard). Returns
    /// false if an earlier certificate already covers exactly that name.
    pub fn add(&mut self, name: &str, key: &Arc<CertifiedKey>) -> bool {
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

    fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.to_ascii_lowercase();
        self.exact
            .get(&name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.pick(client_hello.server_name())))
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

    #[test]
    fn exact_beats_wildcard_and_unknown_gets_the_default() {
        let (default, exact, wildcard) = (key(), key(), key());
        let mut resolver = SniResolver::new(Arc::clone(&default));
        assert!(resolver.add("api.example.com", &exact));
        assert!(resolver.add("*.example.com", &wildcard));
        assert!(Arc::ptr_eq(resolver.pick(Some("API.example.com")), &exact));
        assert!(Arc::ptr_eq(
            resolver.pick(Some("www.example.com")),
            &wildcard
        ));
        // A wildcard covers one label only (RFC 6125 §6.4.3).
        assert!(Arc::ptr_eq(
            resolver.pick(Some("a.b.example.com")),
            &default
        ));
        assert!(Arc::ptr_eq(resolver.pick(Some("example.com")), &default));
        assert!(Arc::ptr_eq(resolver.pick(None), &default));
    }

    #[test]
    fn a_name_taken_by_an_earlier_certificate_is_refused() {
        let mut resolver = SniResolver::new(key());
        assert!(resolver.add("a.example.com", &key()));
        assert!(!resolver.add("a.example.com", &key()));
        assert!(resolver.add("*.example.com", &key()));
        assert!(!resolver.add("*.example.com", &key()));
    }
}

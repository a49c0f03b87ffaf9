//! JSON Web Tokens for JWT auth: the keys (a PEM public key or a JWKS file),
//! read once with the config, and the check of one token against them.
//!
//! Algorithm confusion is ruled out twice: a token's `alg` must be one the
//! config lists, and of the same family as the key that checks it (an RSA
//! public key never serves as an HMAC secret). `alg: none` is no algorithm
//! at all to the parser. `exp` is required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{0}` is not an algorithm; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")]
    UnknownAlgorithm(String),
    #[error("no algorithms: list the ones tokens are signed with, e.g. algorithms = [\"RS256\"]")]
    NoAlgorithms,
    #[error("not a JWKS document: {0}")]
    Jwks(String),
    #[error("JWKS key {index} cannot be used: {reason}")]
    JwksKey { index: usize, reason: String },
    #[error("no public key of a listed algorithm's kind in this PEM file (RSA for RS*/PS*, EC for ES*, Ed25519 for EdDSA)")]
    NoPemKey,
    #[error("no key in the file serves the listed algorithms")]
    NoUsableKey,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Past its `exp` (with the leeway).
    Expired,
    /// Its signature, algorithm, `nbf`, `iss`, `aud` or shape is wrong.
    Invalid,
}

/// One key, and the listed algorithms of its family.
struct Key {
    id: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// The keys tokens are checked against, with the rules for their claims.
pub struct Verifier {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// A token that passed: its claims, and when it expires.
#[derive(Debug)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub expires: SystemTime,
}

/// The rules for claims besides the signature.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
}

/// Parses algorithm names as JWT headers write them.
pub fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, KeyError> {
    if names.is_empty() {
        return Err(KeyError::NoAlgorithms);
    }
    names
        .iter()
        .map(|name| {
            name.parse::<Algorithm>()
                .map_err(|_| KeyError::UnknownAlgorithm(name.clone()))
        })
        .collect()
}

impl Verifier {
    /// The keys in `text`, a JWKS document (JSON) or PEM public keys, for
    /// tokens signed with `algorithms` and claims checked by `rules`.
    pub fn from_file_text(
        text: &[u8],
        algorithms: &[Algorithm],
        rules: &ClaimRules,
    ) -> Result<Verifier, KeyError> {
        let looks_like_json = text.trim_ascii_start().first() == Some(&b'{');
        let keys = if looks_like_json {
            jwks_keys(text)?
        } else {
            pem_keys(text, algorithms)?
        };
        let keys: Vec<Key> = keys
            .into_iter()
            .filter_map(|(id, key)| {
                let family: Vec<Algorithm> = algorithms
                    .iter()
                    .copied()
                    .filter(|alg| alg.family() == key.family())
                    .collect();
                let first = *family.first()?;
                let mut validation = Validation::new(first);
                validation.algorithms = family;
                validation.leeway = rules.leeway.as_secs();
                validation.validate_nbf = true;
                validation.set_required_spec_claims(&["exp"]);
                if !rules.issuers.is_empty() {
                    validation.set_issuer(&rules.issuers);
                }
                if rules.audiences.is_empty() {
                    validation.validate_aud = false;
                } else {
                    validation.set_audience(&rules.audiences);
                }
                Some(Key {
                    id,
                    key,
                    validation,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(Verifier { keys })
    }

    /// Whether a key with `kid` is among the keys.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.id.as_deref() == Some(kid))
    }

    /// Checks `token`: the key its `kid` names (or each key of its
    /// algorithm's family, when it names none), then its claims.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let candidates = self.keys.iter().filter(|key| {
            let id_matches = match (&header.kid, &key.id) {
                (Some(wanted), Some(id)) => wanted == id,
                (Some(_), None) | (None, _) => true,
            };
            id_matches && key.validation.algorithms.contains(&header.alg)
        });
        let mut outcome = Err(TokenError::Invalid);
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(data) => {
                    let exp = data.claims.get("exp").and_then(Value::as_u64);
                    let Some(exp) = exp else {
                        return Err(TokenError::Invalid);
                    };
                    return Ok(Verified {
                        expires: UNIX_EPOCH + Duration::from_secs(exp),
                        claims: data.claims,
                    });
                }
                Err(error) => {
                    // An expired token with a good signature says so,
                    // whichever key was tried first.
                    if matches!(
                        error.kind(),
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature
                    ) {
                        outcome = Err(TokenError::Expired);
                    }
                }
            }
        }
        outcome
    }
}

/// The `kid` a token's header names, if it parses and names one.
pub fn key_id(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

fn jwks_keys(text: &[u8]) -> Result<Vec<(Option<String>, DecodingKey)>, KeyError> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|error| KeyError::Jwks(error.to_string()))?;
    set.keys
        .iter()
        .enumerate()
        .map(|(index, jwk)| {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
                && jwk.common.key_id.is_none()
                && set.keys.len() > 1
            {
                return Err(KeyError::JwksKey {
                    index,
                    reason: "an HMAC secret among several keys needs a `kid`".to_owned(),
                });
            }
            DecodingKey::from_jwk(jwk)
                .map(|key| (jwk.common.key_id.clone(), key))
                .map_err(|error| KeyError::JwksKey {
                    index,
                    reason: error.to_string(),
                })
        })
        .collect()
}

/// The PEM public key of the kind the algorithms need.
fn pem_keys(
    text: &[u8],
    algorithms: &[Algorithm],
) -> Result<Vec<(Option<String>, DecodingKey)>, KeyError> {
    use jsonwebtoken::AlgorithmFamily as Family;
    let mut keys = Vec::new();
    for family in [Family::Rsa, Family::Ec, Family::Ed] {
        if !algorithms.iter().any(|alg| alg.family() == family) {
            continue;
        }
        let key = match family {
            Family::Rsa => DecodingKey::from_rsa_pem(text),
            Family::Ec => DecodingKey::from_ec_pem(text),
            _ => DecodingKey::from_ed_pem(text),
        };
        if let Ok(key) = key {
            keys.push((None, key));
        }
    }
    if keys.is_empty() {
        return Err(KeyError::NoPemKey);
    }
    Ok(keys)
}

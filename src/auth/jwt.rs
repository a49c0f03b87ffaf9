//! JWTs: the token from where the route says, checked against its keys;
//! claims onto headers, a query token out of the request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use serde_json::Value;

use super::jwks::RemoteKeys;
use super::{remove_query_param, Granted};
use crate::metrics::{AuthMeters, AuthResult};
use crate::model::TokenSource;
use crate::remembered::Remembered;
use crate::tokens::{key_id, TokenError, Verified, Verifier};

#[derive(Debug)]
pub(super) struct Jwt {
    pub(super) keys: Keys,
    pub(super) sources: Vec<TokenSource>,
    pub(super) claims_to_headers: Vec<(String, HeaderName)>,
    pub(super) expired_close_code: u16,
    pub(super) challenge: HeaderValue,
    pub(super) meters: Option<AuthMeters>,
    pub(super) passed: Passed,
}

/// How long a token that passed is taken again without its signature checked.
const PASSED_FOR: Duration = Duration::from_secs(60);
/// At most this many tokens are remembered.
const PASSED_MAX: usize = 4096;

/// Tokens that passed, by a keyed hash of the whole token: a client sends
/// the same token with every request, and a signature check costs 60–130 µs
/// (RS256, ES256, measured in bench/auth.sh). An entry is used until the
/// token's `exp` at the latest, so the leeway is only ever granted by a
/// real check.
#[derive(Debug)]
pub(super) struct Passed(Remembered<Arc<Verified>>);

impl Default for Passed {
    fn default() -> Passed {
        Passed(Remembered::new(PASSED_FOR, PASSED_MAX))
    }
}

impl Passed {
    fn get(&self, token: &str) -> Option<Arc<Verified>> {
        let verified = self.0.get(self.0.key(&[token.as_bytes()]))?;
        (SystemTime::now() < verified.expires).then_some(verified)
    }

    fn put(&self, token: &str, verified: Arc<Verified>) {
        self.0.put(self.0.key(&[token.as_bytes()]), verified);
    }
}

/// Where a route's keys come from.
#[derive(Debug)]
pub(super) enum Keys {
    /// Read from a file with the config.
    Read(Arc<Verifier>),
    /// Fetched from a URL.
    Fetched(Arc<RemoteKeys>),
}

impl Jwt {
    /// The keys to check `token` with; `None` when they are at a URL and
    /// none could be fetched.
    async fn keys(&self, token: &str) -> Option<Arc<Verifier>> {
        match &self.keys {
            Keys::Read(keys) => Some(Arc::clone(keys)),
            Keys::Fetched(remote) => remote.verifier(key_id(token).as_deref()).await,
        }
    }

    /// Checks the request's token; on refusal, the challenge and the log's
    /// reason (and 503 rather than 401 when no keys could be fetched).
    pub(super) async fn check<B>(
        &self,
        req: &mut Request<B>,
        granted: &mut Granted,
    ) -> Result<(), (StatusCode, HeaderValue, &'static str)> {
        let found = self
            .sources
            .iter()
            .find_map(|source| token_in(req, source).map(|token| (source, token)));
        let result = match &found {
            None => Err(AuthResult::Missing),
            // A token that passed before needs neither its keys nor a check.
            Some((_, token)) => match self.passed.get(token) {
                Some(verified) => Ok(verified),
                None => {
                    let Some(keys) = self.keys(token).await else {
                        if let Some(meters) = &self.meters {
                            meters.counted(AuthResult::Unavailable);
                        }
                        let challenge = HeaderValue::from_static("Bearer");
                        return Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            challenge,
                            "jwt_keys_unavailable",
                        ));
                    };
                    match keys.verify(token) {
                        Ok(verified) => {
                            let verified = Arc::new(verified);
                            self.passed.put(token, Arc::clone(&verified));
                            Ok(verified)
                        }
                        Err(TokenError::Expired) => Err(AuthResult::Expired),
                        Err(TokenError::Invalid) => Err(AuthResult::Denied),
                    }
                }
            },
        };
        let counted = result.as_ref().map_or_else(|r| *r, |_| AuthResult::Ok);
        if let Some(meters) = &self.meters {
            meters.counted(counted);
        }
        let verified = match result {
            Ok(verified) => verified,
            Err(result) => {
                let (reason, challenge) = match result {
                    AuthResult::Missing => ("jwt_missing", self.challenge.clone()),
                    AuthResult::Expired => (
                        "jwt_expired",
                        HeaderValue::from_static(
                            "Bearer error=\"invalid_token\", error_description=\"expired\"",
                        ),
                    ),
                    _ => (
                        "jwt_invalid",
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    ),
                };
                return Err((StatusCode::UNAUTHORIZED, challenge, reason));
            }
        };
        let headers = req.headers_mut();
        for (claim, header) in &self.claims_to_headers {
            headers.remove(header);
            let value = match verified.claims.get(claim) {
                Some(Value::String(text)) => HeaderValue::from_str(text.as_str()).ok(),
                Some(Value::Null) | None => None,
                Some(other) => HeaderValue::from_str(&other.to_string()).ok(),
            };
            if let Some(value) = value {
                headers.insert(header.clone(), value);
            }
        }
        match &found {
            Some((TokenSource::Query(name), _)) => {
                remove_query_param(req.uri_mut(), name);
                granted.removed_query = Some(name.clone());
            }
            Some((TokenSource::Subprotocol, token)) => {
                without_subprotocol(req.headers_mut(), token)
            }
            _ => {}
        }
        granted.token_expires = Some((verified.expires, self.expired_close_code));
        Ok(())
    }
}

/// The token `source` names in `req`, if it carries one.
fn token_in<B>(req: &Request<B>, source: &TokenSource) -> Option<String> {
    match source {
        TokenSource::Header(name) => {
            let value = req.headers().get(name.as_str())?.to_str().ok()?.trim();
            if name == "authorization" {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            } else {
                Some(value.to_owned())
            }
        }
        TokenSource::Cookie(name) => req
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then(|| value.to_owned())
            }),
        TokenSource::Query(name) => req.uri().query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        }),
        TokenSource::Subprotocol => subprotocols(req.headers())
            .find(|entry| looks_like_jwt(entry))
            .map(str::to_owned),
    }
    .filter(|token| !token.is_empty())
}

/// The entries of `Sec-WebSocket-Protocol`, over all its lines.
fn subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// Three dot-separated base64url parts: a compact JWS, not a protocol name.
fn looks_like_jwt(entry: &str) -> bool {
    let parts: Vec<&str> = entry.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|part| {
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `Sec-WebSocket-Protocol` without the entry `token`, so the backend
/// chooses among the application's own subprotocols.
fn without_subprotocol(headers: &mut HeaderMap, token: &str) {
    let kept: Vec<String> = subprotocols(headers)
        .filter(|entry| *entry != token && !entry.is_empty())
        .map(str::to_owned)
        .collect();
    headers.remove(SEC_WEBSOCKET_PROTOCOL);
    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
        if !kept.is_empty() {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_among_subprotocols_is_found_and_taken_out() {
        let mut headers = HeaderMap::new();
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln, v2.json"),
        );
        let token = subprotocols(&headers)
            .find(|e| looks_like_jwt(e))
            .map(str::to_owned);
        assert_eq!(
            token.as_deref(),
            Some("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")
        );
        without_subprotocol(&mut headers, token.as_deref().unwrap_or_default());
        assert_eq!(headers[SEC_WEBSOCKET_PROTOCOL], "chat, v2.json");
        assert!(!looks_like_jwt("v2.json"));
        assert!(!looks_like_jwt("a.b.c+d"));
    }
}

//! Basic auth against an htpasswd file (RFC 7617).

use std::sync::Arc;

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Response};
use tokio::sync::Semaphore;

use super::unauthorized;
use crate::body::Body;
use crate::credentials::Htpasswd;
use crate::metrics::{AuthMeters, AuthResult};

/// Password checks running at once. Each costs tens of milliseconds of CPU
/// (argon2 also its memory cost, 64 MiB by default): a flood of wrong
/// passwords waits here instead of taking every core and the memory.
static CHECKS: Semaphore = Semaphore::const_new(4);

#[derive(Debug)]
pub(super) struct Basic {
    pub(super) users: Arc<Htpasswd>,
    pub(super) challenge: HeaderValue,
    pub(super) meters: Option<AuthMeters>,
}

impl Basic {
    pub(super) async fn check(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
        let result = match credentials(headers) {
            None => AuthResult::Missing,
            Some(None) => AuthResult::Denied,
            Some(Some((user, password))) => self.verify(user, password).await,
        };
        if let Some(meters) = &self.meters {
            meters.counted(result);
        }
        if result == AuthResult::Ok {
            return Ok(());
        }
        let reason = match result {
            AuthResult::Missing => "basic_auth_missing",
            _ => "basic_auth_denied",
        };
        Err(unauthorized(self.challenge.clone(), reason))
    }

    /// Checks the password off the async threads, a few at a time.
    async fn verify(&self, user: String, password: Vec<u8>) -> AuthResult {
        let Ok(_turn) = CHECKS.acquire().await else {
            return AuthResult::Denied;
        };
        let users = Arc::clone(&self.users);
        let checked = tokio::task::spawn_blocking(move || users.verify(&user, &password)).await;
        match checked {
            Ok(true) => AuthResult::Ok,
            _ => AuthResult::Denied,
        }
    }
}

/// The `Authorization: Basic` credentials: `None` when there are none,
/// `Some(None)` when they are malformed (RFC 7617: base64 of `user:password`).
#[allow(clippy::option_option)]
fn credentials(headers: &HeaderMap) -> Option<Option<(String, Vec<u8>)>> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) =
        value.split_at(value.iter().position(|&b| b == b' ').unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim_ascii())
        .ok();
    Some(decoded.and_then(|decoded| {
        let colon = decoded.iter().position(|&b| b == b':')?;
        let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
        Some((user, decoded[colon + 1..].to_vec()))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
        );
        headers
    }

    #[test]
    fn basic_credentials_are_read_as_rfc_7617_says() {
        assert_eq!(credentials(&HeaderMap::new()), None);
        assert_eq!(credentials(&with("Bearer abc")), None);
        // "alice:se:cret": the password may hold a colon, the user not.
        assert_eq!(
            credentials(&with("basic YWxpY2U6c2U6Y3JldA==")),
            Some(Some(("alice".to_owned(), b"se:cret".to_vec())))
        );
        assert_eq!(credentials(&with("Basic !!!")), Some(None));
        // "alice" without a colon.
        assert_eq!(credentials(&with("Basic YWxpY2U=")), Some(None));
    }
}

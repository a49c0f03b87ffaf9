//! Authentication on a route, before its action: today basic auth against
//! an htpasswd file. A request without credentials, or with wrong ones,
//! gets `401` with a `WWW-Authenticate` challenge and never reaches the
//! action; the `Authorization` header goes on to the backend as it came.

use std::sync::Arc;

use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::Semaphore;

use crate::access_log::UpstreamFacts;
use crate::body::Body;
use crate::credentials::Htpasswd;
use crate::metrics::{AuthMeters, AuthResult};
use crate::model;
use crate::response;

/// Password checks running at once. Each costs tens of milliseconds of CPU
/// (argon2 also its memory cost, 64 MiB by default): a flood of wrong
/// passwords waits here instead of taking every core and the memory.
static CHECKS: Semaphore = Semaphore::const_new(4);

/// A route's `auth`, ready to check requests.
#[derive(Debug)]
pub struct RouteAuth {
    basic: Option<Basic>,
}

#[derive(Debug)]
struct Basic {
    users: Arc<Htpasswd>,
    challenge: HeaderValue,
    meters: Option<AuthMeters>,
}

impl RouteAuth {
    /// The runtime form of `auth`; `None` when its files were not read
    /// (a model read back from `/config`), which the caller refuses.
    pub fn new(
        auth: &model::Auth,
        meters: impl Fn(&str) -> Option<AuthMeters>,
    ) -> Option<RouteAuth> {
        let basic = match &auth.basic {
            None => None,
            Some(basic) => {
                let users = Arc::clone(basic.users.get()?);
                let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", basic.realm);
                Some(Basic {
                    users,
                    challenge: HeaderValue::from_str(&challenge).ok()?,
                    meters: meters("basic"),
                })
            }
        };
        Some(RouteAuth { basic })
    }

    /// Lets the request through, or answers it: 401 with the challenge.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
        let Some(basic) = &self.basic else {
            return Ok(());
        };
        let result = match credentials(headers) {
            None => AuthResult::Missing,
            Some(None) => AuthResult::Denied,
            Some(Some((user, password))) => basic.verify(user, password).await,
        };
        if let Some(meters) = &basic.meters {
            meters.counted(result);
        }
        if result == AuthResult::Ok {
            return Ok(());
        }
        let mut answer = response::status(StatusCode::UNAUTHORIZED);
        answer
            .headers_mut()
            .insert(WWW_AUTHENTICATE, basic.challenge.clone());
        answer.extensions_mut().insert(UpstreamFacts {
            reason: Some(match result {
                AuthResult::Missing => "basic_auth_missing",
                _ => "basic_auth_denied",
            }),
            ..UpstreamFacts::default()
        });
        Err(answer)
    }
}

impl Basic {
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

//! Authentication on a route, before its action: basic auth against an
//! htpasswd file, and JWTs checked against configured keys. A request
//! without credentials, or with wrong ones, gets `401` with a
//! `WWW-Authenticate` challenge and never reaches the action. Basic auth's
//! `Authorization` header goes on to the backend as it came; a JWT's
//! claims can go on as headers (copies the client sent are removed), and a
//! token that came in the query string is taken out of it.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::access_log::UpstreamFacts;
use crate::body::Body;
use crate::credentials::Htpasswd;
use crate::metrics::{AuthMeters, AuthResult};
use crate::model::{self, TokenSource};
use crate::response;
use crate::tokens::{TokenError, Verifier};

/// Password checks running at once. Each costs tens of milliseconds of CPU
/// (argon2 also its memory cost, 64 MiB by default): a flood of wrong
/// passwords waits here instead of taking every core and the memory.
static CHECKS: Semaphore = Semaphore::const_new(4);

/// A route's `auth`, ready to check requests.
#[derive(Debug)]
pub struct RouteAuth {
    basic: Option<Basic>,
    jwt: Option<Jwt>,
}

#[derive(Debug)]
struct Jwt {
    verifier: Arc<Verifier>,
    sources: Vec<TokenSource>,
    claims_to_headers: Vec<(String, HeaderName)>,
    expired_close_code: u16,
    challenge: HeaderValue,
    meters: Option<AuthMeters>,
}

/// What a request that passed carries on.
#[derive(Debug, Default)]
pub struct Granted {
    /// When the JWT it came with expires, and the close code a WebSocket
    /// session gets then.
    pub token_expires: Option<(SystemTime, u16)>,
    /// The query parameter its token came in, taken out of the request.
    pub removed_query: Option<String>,
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
        let jwt = match &auth.jwt {
            None => None,
            Some(jwt) => Some(Jwt {
                verifier: Arc::clone(jwt.verifier.get()?),
                sources: jwt.token_from.clone(),
                claims_to_headers: jwt
                    .claims_to_headers
                    .iter()
                    .filter_map(|(claim, header)| {
                        Some((
                            claim.clone(),
                            HeaderName::from_bytes(header.as_bytes()).ok()?,
                        ))
                    })
                    .collect(),
                expired_close_code: jwt.expired_close_code,
                challenge: HeaderValue::from_static("Bearer"),
                meters: meters("jwt"),
            }),
        };
        Some(RouteAuth { basic, jwt })
    }

    /// Lets the request through (with what it carries on), or answers it:
    /// 401 with the challenge. Every method the route sets must pass.
    pub async fn check<B>(&self, req: &mut Request<B>) -> Result<Granted, Response<Body>> {
        let mut granted = Granted::default();
        if let Some(jwt) = &self.jwt {
            if let Err((challenge, reason)) = jwt.check(req, &mut granted) {
                return Err(unauthorized(challenge, reason));
            }
        }
        if let Some(basic) = &self.basic {
            basic.check(req.headers()).await?;
        }
        Ok(granted)
    }
}

impl Jwt {
    /// Checks the request's token; on refusal, the challenge and the log's reason.
    fn check<B>(
        &self,
        req: &mut Request<B>,
        granted: &mut Granted,
    ) -> Result<(), (HeaderValue, &'static str)> {
        let found = self
            .sources
            .iter()
            .find_map(|source| token_in(req, source).map(|token| (source, token)));
        let result = match &found {
            None => Err(AuthResult::Missing),
            Some((_, token)) => self.verifier.verify(token).map_err(|error| match error {
                TokenError::Expired => AuthResult::Expired,
                TokenError::Invalid => AuthResult::Denied,
            }),
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
                return Err((challenge, reason));
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
        if let Some((TokenSource::Query(name), _)) = &found {
            remove_query_param(req.uri_mut(), name);
            granted.removed_query = Some(name.clone());
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
    }
    .filter(|token| !token.is_empty())
}

/// `uri` without the query parameter `name` (every occurrence).
pub fn remove_query_param(uri: &mut Uri, name: &str) {
    let Some(path_and_query) = uri.path_and_query() else {
        return;
    };
    let kept = without_query_param(path_and_query.as_str(), name);
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = PathAndQuery::try_from(kept).ok().or(parts.path_and_query);
    *uri = Uri::from_parts(parts).unwrap_or_default();
}

/// `path?query` without the parameter `name`.
pub fn without_query_param(target: &str, name: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != name)
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// 401 with `challenge`, and `reason` for the log.
fn unauthorized(challenge: HeaderValue, reason: &'static str) -> Response<Body> {
    let mut answer = response::status(StatusCode::UNAUTHORIZED);
    answer.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    answer.extensions_mut().insert(UpstreamFacts {
        reason: Some(reason),
        ..UpstreamFacts::default()
    });
    answer
}

impl Basic {
    async fn check(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
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

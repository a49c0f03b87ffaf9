//! Authentication on a route, before its action: basic auth against an
//! htpasswd file, JWTs checked against configured keys, and an auth
//! service that decides (forward auth). A request
//! without credentials, or with wrong ones, gets `401` with a
//! `WWW-Authenticate` challenge and never reaches the action. Basic auth's
//! `Authorization` header goes on to the backend as it came; a JWT's
//! claims can go on as headers (copies the client sent are removed), and a
//! token that came in the query string is taken out of it.

mod basic;
mod client_cert;
mod forward;
mod jwks;
mod jwt;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::WWW_AUTHENTICATE;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};

use crate::access_log::UpstreamFacts;
use crate::body::Body;
use crate::metrics::AuthMeters;
use crate::model;
use crate::response;
use crate::tls::ClientCertFacts;
use crate::tokens::{self, ClaimRules};
use crate::upstream::BackendPool;
use basic::Basic;
use client_cert::ClientCert;
use forward::{Decision, Forward, Question};
use jwks::RemoteKeys;
use jwt::{Jwt, Keys};

/// A route's `auth`, ready to check requests.
#[derive(Debug)]
pub struct RouteAuth {
    basic: Option<Basic>,
    jwt: Option<Jwt>,
    forward: Option<Arc<Forward>>,
    client_cert: Option<ClientCert>,
}

/// The backend pools a route's auth talks to, built with the route's others.
#[derive(Debug, Default)]
pub struct AuthPools {
    /// The auth service's (forward auth).
    pub forward: Option<Arc<BackendPool>>,
    /// The JWT keys' server (keys at a URL).
    pub jwks: Option<Arc<BackendPool>>,
}

/// What a request that passed carries on.
#[derive(Debug, Default)]
pub struct Granted {
    /// When the JWT it came with expires, and the close code a WebSocket
    /// session gets then.
    pub token_expires: Option<(SystemTime, u16)>,
    /// The query parameter its token came in, taken out of the request.
    pub removed_query: Option<String>,
    /// Forward auth that asks again while a WebSocket session lasts.
    pub recheck: Option<Recheck>,
}

/// Asks the auth service about a session's request again, every so often.
#[derive(Debug)]
pub struct Recheck {
    forward: Arc<Forward>,
    question: Question,
    every: Duration,
}

impl Recheck {
    /// Resolves once the service says no (a refusal, not an outage: a
    /// service that is down does not end the sessions it let in).
    pub async fn revoked(self) {
        loop {
            tokio::time::sleep(self.every).await;
            // The service itself, not the cache: the point is to hear a no.
            if let Decision::Refuse(_) = self.forward.ask(&self.question).await {
                return;
            }
        }
    }
}

impl RouteAuth {
    /// The runtime form of `auth`; `None` when its files were not read
    /// (a model read back from `/config`), which the caller refuses.
    pub fn new(
        auth: &model::Auth,
        meters: impl Fn(&str) -> Option<AuthMeters>,
        pools: AuthPools,
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
                keys: match pools.jwks {
                    Some(pool) => {
                        let algorithms = tokens::algorithms(&jwt.algorithms).ok()?;
                        let rules = ClaimRules {
                            issuers: jwt.issuer.iter().cloned().collect(),
                            audiences: jwt.audience.iter().cloned().collect(),
                            leeway: jwt.leeway,
                        };
                        Keys::Fetched(Arc::new(RemoteKeys::new(
                            pool,
                            algorithms,
                            rules,
                            jwt.keys_refresh,
                        )))
                    }
                    None => Keys::Read(Arc::clone(jwt.verifier.get()?)),
                },
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
                passed: Default::default(),
            }),
        };
        // A method set but not buildable makes the whole route unbuildable
        // (`None`): it must never quietly let requests through.
        let forward = match &auth.forward {
            None => None,
            Some(settings) => Some(Arc::new(Forward::new(
                pools.forward?,
                settings,
                meters("forward"),
            ))),
        };
        let client_cert = match &auth.client_cert {
            None => None,
            Some(settings) => Some(ClientCert {
                subject: HeaderName::from_bytes(settings.subject_header.as_bytes()).ok()?,
                sans: HeaderName::from_bytes(settings.san_header.as_bytes()).ok()?,
                meters: meters("client_cert"),
            }),
        };
        Some(RouteAuth {
            basic,
            jwt,
            forward,
            client_cert,
        })
    }

    /// The pools of the auth service and of the JWT keys' server, for
    /// health checks and metrics.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<BackendPool>> {
        let forward = self.forward.as_ref().map(|forward| &forward.pool);
        let jwks = self.jwt.as_ref().and_then(|jwt| match &jwt.keys {
            Keys::Fetched(remote) => Some(&remote.pool),
            Keys::Read(_) => None,
        });
        forward.into_iter().chain(jwks)
    }

    /// Lets the request from `client` (over `scheme`) through, with what it
    /// carries on, or answers it: 401 with the challenge, or the auth
    /// service's refusal. Every method the route sets must pass.
    pub async fn check<B>(
        &self,
        req: &mut Request<B>,
        client: IpAddr,
        scheme: &'static str,
        cert: Option<&ClientCertFacts>,
    ) -> Result<Granted, Response<Body>> {
        let mut granted = Granted::default();
        if let Some(required) = &self.client_cert {
            if !required.check(req.headers_mut(), cert) {
                return Err(client_cert::refusal());
            }
        }
        if let Some(jwt) = &self.jwt {
            if let Err((status, challenge, reason)) = jwt.check(req, &mut granted).await {
                let mut answer = unauthorized(challenge, reason);
                *answer.status_mut() = status;
                return Err(answer);
            }
        }
        if let Some(basic) = &self.basic {
            basic.check(req.headers()).await?;
        }
        if let Some(forward) = &self.forward {
            let question = Question::of(req, client, scheme);
            let question = forward.check(req, question).await?;
            granted.recheck = forward.revalidate.map(|every| Recheck {
                forward: Arc::clone(forward),
                question,
                every,
            });
        }
        Ok(granted)
    }
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

//! Forward auth: an auth service decides (nginx `auth_request`, Traefik
//! ForwardAuth). It gets a bodyless request with the original method, the
//! credentials and the `X-Forwarded-*` facts; 2xx lets the request through
//! (with the named answer headers copied onto it), 401, 403 and redirects go
//! to the client as the service wrote them, and anything else, or no answer
//! in time, is 503 unless the route chose to fail open.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SEC_WEBSOCKET_PROTOCOL,
    SET_COOKIE, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;

use crate::access_log::UpstreamFacts;
use crate::body::Body;
use crate::metrics::{AuthMeters, AuthResult};
use crate::proxy::{self, Connector};
use crate::remembered::Remembered;
use crate::response;
use crate::upstream::{warn_throttled, BackendPool};

/// Headers of a 2xx answer to copy onto the forwarded request.
type Copied = Vec<(HeaderName, HeaderValue)>;

/// The client headers the service sees: the credentials, and what a
/// WebSocket upgrade is judged by.
const PASSED: [HeaderName; 5] = [
    AUTHORIZATION,
    COOKIE,
    ORIGIN,
    SEC_WEBSOCKET_PROTOCOL,
    USER_AGENT,
];

/// The largest refusal body passed on to the client.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Decisions remembered at most, when the route caches them.
const CACHED_MAX: usize = 4096;

/// The service's answer headers a refusal keeps.
const REFUSAL_HEADERS: [HeaderName; 4] = [WWW_AUTHENTICATE, LOCATION, SET_COOKIE, CONTENT_TYPE];

/// A route's auth service.
#[derive(Debug)]
pub struct Forward {
    pub(super) pool: Arc<BackendPool>,
    clients: Vec<Client<Connector, Empty<Bytes>>>,
    timeout: Duration,
    copy: Vec<HeaderName>,
    cache: Option<Cache>,
    pub(super) revalidate: Option<Duration>,
    fail_open: bool,
    meters: Option<AuthMeters>,
}

/// What the service said.
#[derive(Debug)]
pub(super) enum Decision {
    /// 2xx: the headers to copy onto the forwarded request.
    Allow(Copied),
    /// 401, 403, 3xx: the answer for the client.
    Refuse(Response<Body>),
    /// No usable answer.
    Unavailable,
}

/// What the service is asked about one request (kept by a WebSocket
/// session, to ask again).
#[derive(Debug, Clone)]
pub struct Question {
    method: Method,
    uri: String,
    host: Option<HeaderValue>,
    scheme: &'static str,
    client: IpAddr,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Question {
    pub(super) fn of<B>(req: &Request<B>, client: IpAddr, scheme: &'static str) -> Question {
        let headers = PASSED
            .iter()
            .flat_map(|name| {
                req.headers()
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        Question {
            method: req.method().clone(),
            uri: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            host: req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| req.headers().get(HOST).cloned()),
            scheme,
            client,
            headers,
        }
    }
}

/// 2xx decisions by credentials, for a short while.
#[derive(Debug)]
struct Cache(Remembered<Copied>);

impl Forward {
    pub(super) fn new(
        pool: Arc<BackendPool>,
        settings: &crate::model::ForwardAuth,
        meters: Option<AuthMeters>,
    ) -> Forward {
        Forward {
            clients: proxy::clients(&pool),
            pool,
            timeout: settings.timeout,
            copy: settings
                .copy_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            cache: (!settings.cache.is_zero())
                .then(|| Cache(Remembered::new(settings.cache, CACHED_MAX))),
            revalidate: settings.revalidate,
            fail_open: settings.fail_open,
            meters,
        }
    }

    /// Asks the service about `req`; on 2xx, copies the named headers onto
    /// it (client copies removed first) and returns the question to ask
    /// again later; otherwise the client's answer.
    pub(super) async fn check<B>(
        &self,
        req: &mut Request<B>,
        question: Question,
    ) -> Result<Question, Response<Body>> {
        let decision = self.decide(&question).await;
        let result = match &decision {
            Decision::Allow(_) => AuthResult::Ok,
            Decision::Refuse(_) => AuthResult::Denied,
            Decision::Unavailable if self.fail_open => AuthResult::Ok,
            Decision::Unavailable => AuthResult::Unavailable,
        };
        if let Some(meters) = &self.meters {
            meters.counted(result);
        }
        match decision {
            Decision::Allow(copied) => {
                let headers = req.headers_mut();
                for name in &self.copy {
                    headers.remove(name);
                }
                for (name, value) in copied {
                    headers.append(name, value);
                }
                Ok(question)
            }
            Decision::Refuse(answer) => Err(answer),
            Decision::Unavailable if self.fail_open => {
                for name in &self.copy {
                    req.headers_mut().remove(name);
                }
                Ok(question)
            }
            Decision::Unavailable => {
                let mut answer = response::status(StatusCode::SERVICE_UNAVAILABLE);
                answer.extensions_mut().insert(UpstreamFacts {
                    reason: Some("forward_auth_unavailable"),
                    ..UpstreamFacts::default()
                });
                Err(answer)
            }
        }
    }

    /// The service's decision on `question`, from the cache when it may be.
    async fn decide(&self, question: &Question) -> Decision {
        let key = self.cache.as_ref().map(|cache| cache.key(question));
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            if let Some(copied) = cache.get(key) {
                return Decision::Allow(copied);
            }
        }
        let decision = self.ask(question).await;
        if let (Some(cache), Some(key), Decision::Allow(copied)) = (&self.cache, key, &decision) {
            cache.put(key, copied.clone());
        }
        decision
    }

    /// One subrequest, to the pool's first backend that takes it; the
    /// answer, a refusal's body included, within `timeout` in all.
    pub(super) async fn ask(&self, question: &Question) -> Decision {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let order = self.pool.order(&HeaderMap::new(), question.client);
        for backend in order {
            let Some(index) = self
                .pool
                .backends()
                .iter()
                .position(|b| Arc::ptr_eq(b, backend))
            else {
                continue;
            };
            let Some(client) = self.clients.get(index) else {
                continue;
            };
            let path = if backend.path.is_empty() {
                "/"
            } else {
                backend.path.as_str()
            };
            let Ok(uri) = format!("http://{}{path}", backend.authority()).parse::<Uri>() else {
                continue;
            };
            let request = subrequest(question, uri, backend.authority());
            let answered = tokio::time::timeout_at(deadline, client.request(request)).await;
            let late = || {
                warn_throttled!(self.pool.warnings, backend = %backend.url, after = ?self.timeout, "the auth service did not answer in time");
                Decision::Unavailable
            };
            match answered {
                Ok(Ok(answer)) => {
                    // A refusal's body could trickle in: it counts against the deadline too.
                    return tokio::time::timeout_at(deadline, self.decision(answer))
                        .await
                        .unwrap_or_else(|_| late());
                }
                Ok(Err(error)) if error.is_connect() => continue,
                Ok(Err(error)) => {
                    warn_throttled!(self.pool.warnings, backend = %backend.url, %error, "the auth service failed");
                    return Decision::Unavailable;
                }
                Err(_) => return late(),
            }
        }
        Decision::Unavailable
    }

    async fn decision(&self, answer: Response<hyper::body::Incoming>) -> Decision {
        let status = answer.status();
        if status.is_success() {
            let copied = self
                .copy
                .iter()
                .flat_map(|name| {
                    answer
                        .headers()
                        .get_all(name)
                        .iter()
                        .map(move |value| (name.clone(), value.clone()))
                })
                .collect();
            return Decision::Allow(copied);
        }
        let refusal = status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status.is_redirection();
        if !refusal {
            return Decision::Unavailable;
        }
        let (parts, body) = answer.into_parts();
        let body = Limited::new(body, MAX_REFUSAL_BODY)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let mut refused = Response::new(Body::from(body));
        *refused.status_mut() = parts.status;
        for name in REFUSAL_HEADERS {
            for value in parts.headers.get_all(&name) {
                refused.headers_mut().append(name.clone(), value.clone());
            }
        }
        refused.extensions_mut().insert(UpstreamFacts {
            status: Some(parts.status.as_u16()),
            reason: Some("forward_auth_denied"),
            ..UpstreamFacts::default()
        });
        Decision::Refuse(refused)
    }
}

/// The request the service gets.
fn subrequest(question: &Question, uri: Uri, authority: &str) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.method_mut() = question.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (name, value) in &question.headers {
        headers.append(name.clone(), value.clone());
    }
    if let Ok(host) = HeaderValue::from_str(authority) {
        headers.insert(HOST, host);
    }
    let facts = [
        (
            "x-forwarded-method",
            HeaderValue::from_str(question.method.as_str()).ok(),
        ),
        ("x-forwarded-uri", HeaderValue::from_str(&question.uri).ok()),
        ("x-forwarded-host", question.host.clone()),
        (
            "x-forwarded-proto",
            Some(HeaderValue::from_static(question.scheme)),
        ),
        (
            "x-forwarded-for",
            HeaderValue::from_str(&question.client.to_string()).ok(),
        ),
    ];
    for (name, value) in facts {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    request
}

impl Cache {
    /// The key of a question's credentials.
    fn key(&self, question: &Question) -> u128 {
        let credentials: Vec<&[u8]> = question
            .headers
            .iter()
            .filter(|(name, _)| name == AUTHORIZATION || name == COOKIE)
            .flat_map(|(name, value)| [name.as_str().as_bytes(), value.as_bytes()])
            .collect();
        self.0.key(&credentials)
    }

    fn get(&self, key: u128) -> Option<Copied> {
        self.0.get(key)
    }

    fn put(&self, key: u128, copied: Copied) {
        self.0.put(key, copied);
    }
}

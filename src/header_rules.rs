//! A route's header rules and CORS policy, compiled: the names and values
//! `check` already validated, parsed once when the route is built, applied
//! per message.

use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    STRICT_TRANSPORT_SECURITY, VARY,
};
use http::{HeaderMap, Method};

use crate::model::{Cors, HeaderRules, RouteHeaders};

/// One kind of message's rules: removes, then sets, then adds.
#[derive(Debug, Default)]
pub struct Rules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Rules {
    /// `None` when there is nothing to do, so most routes pay nothing.
    fn compile(rules: &HeaderRules) -> Option<Rules> {
        if rules.is_empty() {
            return None;
        }
        let field = |(name, value): &(String, String)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        };
        Some(Rules {
            remove: rules
                .remove
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            set: rules.set.iter().filter_map(field).collect(),
            add: rules.add.iter().filter_map(field).collect(),
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A route's compiled `request_headers`, `response_headers`, `hsts` and `cors`.
#[derive(Debug, Default)]
pub struct RouteRules {
    /// For what goes to the backends.
    pub request: Option<Rules>,
    response: Option<Rules>,
    hsts: Option<HeaderValue>,
    pub cors: Option<CorsPolicy>,
}

impl RouteRules {
    pub fn compile(headers: &RouteHeaders) -> RouteRules {
        RouteRules {
            request: Rules::compile(&headers.request),
            response: Rules::compile(&headers.response),
            hsts: headers
                .hsts
                .as_deref()
                .and_then(|value| HeaderValue::from_str(value).ok()),
            cors: headers.cors.as_ref().map(CorsPolicy::compile),
        }
    }

    /// Applies the CORS fields for `request` and the response rules to an
    /// answer sent over TLS (`tls`) or not: HSTS only over TLS, as RFC 6797
    /// §7.2 requires (a plaintext answer carrying it could be anyone's). The
    /// rules come last, so they can override the rest.
    pub fn apply_to_response(&self, headers: &mut HeaderMap, request: CorsRequest<'_>, tls: bool) {
        if let (Some(cors), CorsRequest::Actual(origin)) = (&self.cors, request) {
            cors.answer(origin, headers);
        }
        if let (Some(hsts), true) = (&self.hsts, tls) {
            headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if let Some(rules) = &self.response {
            rules.apply(headers);
        }
    }
}

/// What kind of request an answer is for, as CORS sees it.
#[derive(Debug, Clone, Copy)]
pub enum CorsRequest<'a> {
    /// A preflight, whose answer [`CorsPolicy::preflight`] made whole.
    Preflight,
    /// Any other request, with its `Origin` if it had one.
    Actual(Option<&'a HeaderValue>),
}

/// Request headers a preflight may name without the route listing them
/// (Fetch's CORS-safelisted request headers whose values need no check).
const SAFELISTED_REQUEST_HEADERS: [&str; 3] = ["accept", "accept-language", "content-language"];

/// A route's `cors`, compiled (the Fetch standard's CORS protocol).
#[derive(Debug)]
pub struct CorsPolicy {
    /// `origins = ["*"]`: `Access-Control-Allow-Origin: *`, the same for all.
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<String>,
    headers: Vec<String>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

impl CorsPolicy {
    fn compile(cors: &Cors) -> CorsPolicy {
        let list = |items: &[String]| {
            (!items.is_empty())
                .then(|| HeaderValue::from_str(&items.join(", ")).ok())
                .flatten()
        };
        CorsPolicy {
            any_origin: cors.origins.iter().any(|o| o == "*"),
            origins: cors.origins.clone(),
            methods: cors.methods.clone(),
            headers: cors.headers.clone(),
            allow_methods: list(&cors.methods),
            allow_headers: list(&cors.headers),
            expose: list(&cors.expose),
            max_age: cors.max_age.map(|age| HeaderValue::from(age.as_secs())),
            credentials: cors.credentials,
        }
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`, sent by a browser before a request
    /// it may not make unasked. It carries no credentials, so wsgate answers
    /// it itself, before the route's auth.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The headers of a `204` that allows the preflight; or, when the origin,
    /// method or a requested header is not allowed, those of the refusal
    /// (no CORS fields: the browser then refuses the request).
    pub fn preflight(&self, request: &HeaderMap) -> Result<HeaderMap, HeaderMap> {
        let mut answer = HeaderMap::new();
        self.vary(&mut answer, true);
        match self.allowed(request) {
            Some(allow_origin) => {
                self.allow(&mut answer, allow_origin);
                Ok(answer)
            }
            None => Err(answer),
        }
    }

    /// What `Access-Control-Allow-Origin` allows the preflight, if it is allowed.
    fn allowed(&self, request: &HeaderMap) -> Option<HeaderValue> {
        let allow_origin = self.allow_origin(request.get(ORIGIN)?)?;
        let method = request.get(ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        let simple = matches!(method, "GET" | "HEAD" | "POST");
        if !simple && !self.methods.iter().any(|m| m == method) {
            return None;
        }
        let requested = request
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty());
        for name in requested {
            let listed =
                self.headers.contains(&name) || SAFELISTED_REQUEST_HEADERS.contains(&name.as_str());
            if !listed {
                return None;
            }
        }
        Some(allow_origin)
    }

    /// The fields of a preflight's `204`.
    fn allow(&self, answer: &mut HeaderMap, allow_origin: HeaderValue) {
        answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        let lists = [
            (ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ];
        for (name, value) in lists {
            if let Some(value) = value {
                answer.insert(name, value.clone());
            }
        }
        if self.credentials {
            answer.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The CORS fields of an actual response to a request from `origin`.
    fn answer(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        self.vary(headers, false);
        let Some(allow_origin) = origin.and_then(|origin| self.allow_origin(origin)) else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// `*`, or the request's own origin when it is one of the route's.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }

    /// Answers that depend on the request's `Origin` (every one, unless any
    /// origin gets the same `*`) say so, so that a cache does not hand one
    /// origin's answer to another; a preflight's also depends on what it asked.
    fn vary(&self, headers: &mut HeaderMap, preflight: bool) {
        if self.any_origin {
            return;
        }
        let value = if preflight {
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        } else {
            "Origin"
        };
        headers.append(VARY, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rules_remove_then_set_then_add() {
        let rules = RouteRules::compile(&RouteHeaders {
            response: HeaderRules {
                remove: vec!["server".into(), "x-powered-by".into()],
                set: pairs(&[("x-frame-options", "DENY"), ("cache-control", "no-store")]),
                add: pairs(&[("link", "</b.css>; rel=preload")]),
            },
            hsts: Some("max-age=63072000; includeSubDomains".into()),
            ..RouteHeaders::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert("server", HeaderValue::from_static("app/1.0"));
        headers.insert("x-powered-by", HeaderValue::from_static("php"));
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.insert("link", HeaderValue::from_static("</a.css>; rel=preload"));
        rules.apply_to_response(&mut headers, CorsRequest::Actual(None), false);
        assert!(headers.get("server").is_none() && headers.get("x-powered-by").is_none());
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers.get_all("link").iter().count(), 2);
        assert!(
            headers.get("strict-transport-security").is_none(),
            "not over plain HTTP"
        );
        rules.apply_to_response(&mut headers, CorsRequest::Actual(None), true);
        assert_eq!(
            headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
        assert!(rules.request.is_none());
    }

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy::compile(&Cors {
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            methods: vec!["GET".into(), "PUT".into()],
            headers: vec!["x-custom".into()],
            expose: vec!["x-request-id".into()],
            max_age: Some(std::time::Duration::from_secs(600)),
            credentials,
        })
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_preflight_is_allowed_only_for_listed_origins_methods_and_headers() {
        let cors = policy(&["https://app.example"], true);
        let asked = request(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "X-Custom, accept"),
        ]);
        let allowed = cors.preflight(&asked).expect("allowed");
        assert_eq!(
            allowed["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(allowed["access-control-allow-methods"], "GET, PUT");
        assert_eq!(allowed["access-control-allow-headers"], "x-custom");
        assert_eq!(allowed["access-control-max-age"], "600");
        assert_eq!(allowed["access-control-allow-credentials"], "true");
        assert!(allowed["vary"]
            .to_str()
            .unwrap_or_default()
            .starts_with("Origin"));
        for refused in [
            request(&[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ]),
            request(&[
                ("origin", "https://app.example"),
                ("access-control-request-method", "DELETE"),
            ]),
            request(&[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-other"),
            ]),
        ] {
            let answer = cors.preflight(&refused).expect_err("refused");
            assert!(answer.get("access-control-allow-origin").is_none());
            assert!(answer.contains_key("vary"));
        }
    }

    #[test]
    fn actual_answers_name_the_origin_and_vary_on_it() {
        let cors = policy(&["https://app.example"], false);
        let mut headers = HeaderMap::new();
        let origin = HeaderValue::from_static("https://app.example");
        cors.answer(Some(&origin), &mut headers);
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(headers["access-control-expose-headers"], "x-request-id");
        assert_eq!(headers["vary"], "Origin");
        assert!(headers.get("access-control-allow-credentials").is_none());
        let mut other = HeaderMap::new();
        cors.answer(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut other,
        );
        assert!(other.get("access-control-allow-origin").is_none());
        assert_eq!(
            other["vary"], "Origin",
            "a cache must not reuse it for app.example"
        );
        let any = policy(&["*"], false);
        let mut open = HeaderMap::new();
        any.answer(Some(&origin), &mut open);
        assert_eq!(open["access-control-allow-origin"], "*");
        assert!(open.get("vary").is_none());
    }
}

//! A route's header rules, compiled: the names and values `check` already
//! validated, parsed once when the route is built, applied per message.

use http::header::{HeaderName, HeaderValue, STRICT_TRANSPORT_SECURITY};
use http::HeaderMap;

use crate::model::{HeaderRules, RouteHeaders};

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

/// A route's compiled `request_headers`, `response_headers` and `hsts`.
#[derive(Debug, Default)]
pub struct RouteRules {
    /// For what goes to the backends.
    pub request: Option<Rules>,
    response: Option<Rules>,
    hsts: Option<HeaderValue>,
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
        }
    }

    /// Applies the response rules to an answer sent over TLS (`tls`) or
    /// not: HSTS only over TLS, as RFC 6797 §7.2 requires (a plaintext
    /// answer carrying it could be anyone's).
    pub fn apply_to_response(&self, headers: &mut HeaderMap, tls: bool) {
        if let Some(rules) = &self.response {
            rules.apply(headers);
        }
        if let (Some(hsts), true) = (&self.hsts, tls) {
            headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
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
        rules.apply_to_response(&mut headers, false);
        assert!(headers.get("server").is_none() && headers.get("x-powered-by").is_none());
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers.get_all("link").iter().count(), 2);
        assert!(
            headers.get("strict-transport-security").is_none(),
            "not over plain HTTP"
        );
        rules.apply_to_response(&mut headers, true);
        assert_eq!(
            headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
        assert!(rules.request.is_none());
    }
}

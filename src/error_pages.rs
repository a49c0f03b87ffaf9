//! Error pages, compiled: the operator's page in place of the body of an
//! error answer, with the answer's status and its meaningful fields kept.

use bytes::Bytes;
use http::header::{
    HeaderName, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH,
    CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, TRANSFER_ENCODING,
};
use http::{HeaderValue, Response, StatusCode};

use crate::access_log::UpstreamFacts;
use crate::body::Body;
use crate::model::{self, StatusMatch};
use crate::static_files;

/// Fields that describe the body being replaced; the rest (`Allow`,
/// `WWW-Authenticate`, `Retry-After`, a backend's `Set-Cookie`) still apply.
const BODY_FIELDS: [HeaderName; 10] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    CONTENT_LOCATION,
    CONTENT_RANGE,
    TRANSFER_ENCODING,
    ETAG,
    LAST_MODIFIED,
    ACCEPT_RANGES,
];

/// One set of pages: a route's, or the global ones.
#[derive(Debug, Default)]
pub struct ErrorPages {
    exact: Vec<(StatusCode, Page)>,
    /// Index 0 for `4xx`, 1 for `5xx`.
    classes: [Option<Page>; 2],
}

#[derive(Debug, Clone)]
struct Page {
    body: Bytes,
    content_type: HeaderValue,
}

impl ErrorPages {
    /// Pages whose content the model holds; a model read back from
    /// `/config` has none, and serves none.
    pub fn new(model: &model::ErrorPages) -> ErrorPages {
        let mut pages = ErrorPages::default();
        for entry in &model.pages {
            let Some(body) = entry.content.get() else {
                continue;
            };
            let page = Page {
                body: Bytes::clone(body),
                content_type: static_files::header(static_files::content_type(&entry.file)),
            };
            match entry.statuses {
                StatusMatch::Exact(code) => {
                    if let Ok(status) = StatusCode::from_u16(code) {
                        pages.exact.push((status, page));
                    }
                }
                StatusMatch::Class(class @ (4 | 5)) => {
                    pages.classes[usize::from(class - 4)] = Some(page);
                }
                StatusMatch::Class(_) => {}
            }
        }
        pages
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.classes.iter().all(Option::is_none)
    }

    fn find(&self, status: StatusCode) -> Option<&Page> {
        let exact = self.exact.iter().find(|(code, _)| *code == status);
        let class = match status.as_u16() / 100 {
            4 => self.classes[0].as_ref(),
            5 => self.classes[1].as_ref(),
            _ => None,
        };
        exact.map(|(_, page)| page).or(class)
    }
}

/// Where an answer's page may come from.
pub struct PageSources<'a> {
    /// The route's pages, and whether they (and the global ones) also
    /// replace what its backends answer.
    pub route: Option<(&'a ErrorPages, bool)>,
    pub global: &'a ErrorPages,
}

impl PageSources<'_> {
    /// `response` with its body replaced by the page for its status, if
    /// one applies: for 4xx and 5xx answers wsgate made, and for a
    /// backend's when the route intercepts them.
    pub fn apply(&self, mut response: Response<Body>) -> Response<Body> {
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return response;
        }
        let (route_pages, intercept) = self.route.unwrap_or((&EMPTY, false));
        let from_backend = response
            .extensions()
            .get::<UpstreamFacts>()
            .is_some_and(|facts| facts.answered_by_backend(status.as_u16()));
        if from_backend && !intercept {
            return response;
        }
        let Some(page) = route_pages
            .find(status)
            .or_else(|| self.global.find(status))
        else {
            return response;
        };
        let headers = response.headers_mut();
        for name in &BODY_FIELDS {
            // A 416's `Content-Range: bytes */LEN` tells the client the size.
            if !(*name == CONTENT_RANGE && status == StatusCode::RANGE_NOT_SATISFIABLE) {
                headers.remove(name);
            }
        }
        headers.insert(CONTENT_TYPE, page.content_type.clone());
        // The page stands for an error, which a shared cache must not keep
        // in place of the resource.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        *response.body_mut() = Body::from(page.body.clone());
        response
    }
}

static EMPTY: ErrorPages = ErrorPages {
    exact: Vec::new(),
    classes: [None, None],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ErrorPage, Material};

    fn pages(entries: &[(&str, &str, &str)]) -> ErrorPages {
        ErrorPages::new(&model::ErrorPages {
            pages: entries
                .iter()
                .map(|(status, file, text)| ErrorPage {
                    statuses: StatusMatch::parse(status).unwrap(),
                    file: (*file).to_owned(),
                    fingerprint: String::new(),
                    content: Material::new(Bytes::from(text.to_string())),
                })
                .collect(),
        })
    }

    fn body_of(response: &Response<Body>) -> Option<&Bytes> {
        match response.body() {
            Body::Bytes(bytes) => bytes.as_ref(),
            _ => None,
        }
    }

    #[test]
    fn exact_statuses_win_over_classes_and_routes_over_global() {
        let route = pages(&[
            ("404", "404.html", "route 404"),
            ("5xx", "5xx.html", "route 5xx"),
        ]);
        let global = pages(&[
            ("4xx", "4xx.txt", "global 4xx"),
            ("502", "502.html", "global 502"),
        ]);
        let sources = PageSources {
            route: Some((&route, false)),
            global: &global,
        };
        for (status, expected) in [
            (404, Some("route 404")),
            (403, Some("global 4xx")),
            (502, Some("route 5xx")),
            (200, None),
            (301, None),
        ] {
            let mut answer = crate::response::status(StatusCode::from_u16(status).unwrap());
            answer
                .headers_mut()
                .insert(ETAG, HeaderValue::from_static("\"x\""));
            let answer = sources.apply(answer);
            assert_eq!(answer.status().as_u16(), status);
            match expected {
                Some(text) => {
                    assert_eq!(body_of(&answer).map(|b| &b[..]), Some(text.as_bytes()));
                    assert_eq!(answer.headers().get(ETAG), None);
                    assert_eq!(answer.headers()[CACHE_CONTROL], "no-store");
                }
                None => assert!(answer.headers().get(ETAG).is_some()),
            }
        }
        let answer = sources.apply(crate::response::status(StatusCode::FORBIDDEN));
        assert_eq!(answer.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn backend_answers_are_kept_unless_intercepted() {
        let global = pages(&[("5xx", "5xx.html", "sorry")]);
        let from_backend = || {
            let mut answer = Response::new(Body::from("backend's own"));
            *answer.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            answer.extensions_mut().insert(UpstreamFacts {
                status: Some(503),
                ..UpstreamFacts::default()
            });
            answer
        };
        let empty = ErrorPages::default();
        let kept = PageSources {
            route: Some((&empty, false)),
            global: &global,
        }
        .apply(from_backend());
        assert_eq!(body_of(&kept).map(|b| &b[..]), Some(&b"backend's own"[..]));
        let intercepted = PageSources {
            route: Some((&empty, true)),
            global: &global,
        }
        .apply(from_backend());
        assert_eq!(body_of(&intercepted).map(|b| &b[..]), Some(&b"sorry"[..]));
        assert_eq!(
            intercepted.headers()[CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}

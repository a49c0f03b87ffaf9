//! A route's `rewrite`, `trailing_slash` and `redirect`, compiled: what they
//! do to one request's path, and the `Location` a redirect answers with.

use std::borrow::Cow;

use http::StatusCode;
use regex::{Regex, RegexBuilder};

use crate::model::{self, Piece, Target, TrailingSlash};
use crate::request_path;

/// How large a compiled pattern may grow: far beyond any path rule, yet it
/// stops a pattern like `(a{1000}){1000}` from taking the memory it asks for.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A route's `rewrite`, its pattern compiled once.
#[derive(Debug)]
pub struct Rewrite {
    from: Regex,
    to: String,
}

impl Rewrite {
    /// `Err` says why the pattern is refused (`check` reports it).
    pub fn compile(rewrite: &model::Rewrite) -> Result<Rewrite, regex::Error> {
        let from = RegexBuilder::new(&rewrite.from)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()?;
        Ok(Rewrite {
            from,
            to: rewrite.to.clone(),
        })
    }

    /// The groups `to` names (`$1`, `${name}`, `$name`, as `regex` reads
    /// them) that the pattern does not have: they would expand to nothing.
    pub fn unknown_groups(&self) -> Vec<String> {
        let mut unknown = Vec::new();
        let mut rest = self.to.as_str();
        while let Some(at) = rest.find('$') {
            let after = &rest[at + 1..];
            let (name, next) = if let Some(escaped) = after.strip_prefix('$') {
                rest = escaped;
                continue;
            } else if let Some(braced) = after.strip_prefix('{') {
                match braced.split_once('}') {
                    Some((name, next)) => (name, next),
                    None => break,
                }
            } else {
                let end = after
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            let known = match name.parse::<usize>() {
                Ok(index) => index < self.from.captures_len(),
                Err(_) => self.from.capture_names().flatten().any(|n| n == name),
            };
            if !known && !name.is_empty() {
                unknown.push(name.to_owned());
            }
            rest = next;
        }
        unknown
    }

    /// The new path for a decoded, normalised `path`: `None` when the pattern
    /// does not match, `Err` when what it makes climbs above the root or
    /// is not a path. The result is normalised again, so it reaches files
    /// and routes only as a request for it could.
    pub fn apply(&self, path: &str) -> Option<Result<String, request_path::PathError>> {
        let captures = self.from.captures(path)?;
        let mut rewritten = String::new();
        captures.expand(&self.to, &mut rewritten);
        // Encoded first: normalising decodes, and `%` in a decoded path is a `%`.
        let encoded = request_path::encode(&rewritten);
        Some(request_path::normalize(&encoded).map(Cow::into_owned))
    }
}

impl std::fmt::Display for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rewrite {} → {}", self.from.as_str(), self.to)
    }
}

/// The path a `trailing_slash` rule sends `path` to, if it is not the canonical spelling.
pub fn canonical_slash(rule: TrailingSlash, path: &str) -> Option<String> {
    match rule {
        TrailingSlash::Add => {
            let last = path.rsplit('/').next().unwrap_or("");
            (!path.ends_with('/') && !last.contains('.')).then(|| format!("{path}/"))
        }
        TrailingSlash::Remove => path
            .strip_suffix('/')
            .filter(|trimmed| !trimmed.is_empty())
            .map(str::to_owned),
    }
}

/// A route's `redirect`.
#[derive(Debug)]
pub struct Redirect {
    target: Target,
    pub status: StatusCode,
}

/// The parts of a request a redirect target may use.
pub struct RequestParts<'a> {
    /// Without port; `None` for an HTTP/1.0 request without `Host`.
    pub host: Option<&'a str>,
    /// Decoded and normalised.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    pub fn new(redirect: &model::Redirect) -> Redirect {
        Redirect {
            target: redirect.to.clone(),
            status: StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND),
        }
    }

    /// The target as the config writes it.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The `Location` for a request with these parts; `None` when the
    /// target names the host and the request did not.
    pub fn location(&self, parts: &RequestParts<'_>) -> Option<String> {
        let path = request_path::encode(parts.path);
        let mut location = String::new();
        for piece in &self.target.pieces {
            match piece {
                Piece::Text(text) => location.push_str(text),
                Piece::Host => location.push_str(parts.host?),
                Piece::Path => location.push_str(&path),
                Piece::Query => push_query(&mut location, parts.query.unwrap_or("")),
                Piece::Uri => {
                    location.push_str(&path);
                    if let Some(query) = parts.query {
                        location.push('?');
                        push_query(&mut location, query);
                    }
                }
            }
        }
        if self.target.relative {
            // `/$path` for the path `/evil.example` would read as `//evil.example`,
            // another site (and `/\evil.example` too, to browsers): one slash
            // keeps the client here.
            let lead = location.len() - location.trim_start_matches(['/', '\\']).len();
            location.replace_range(..lead, "/");
        }
        Some(location)
    }
}

/// A query string as the request had it, but for `\`, which browsers
/// would read as `/` at the start of a relative target.
fn push_query(location: &mut String, query: &str) {
    for piece in query.split_inclusive('\\') {
        match piece.strip_suffix('\\') {
            Some(before) => {
                location.push_str(before);
                location.push_str("%5C");
            }
            None => location.push_str(piece),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(to: &str) -> Redirect {
        Redirect::new(&model::Redirect {
            to: Target::parse(to).unwrap(),
            status: 301,
        })
    }

    #[test]
    fn locations_carry_the_request_encoded() {
        let parts = RequestParts {
            host: Some("old.example"),
            path: "/a b/ü%",
            query: Some("q=1&r=%20"),
        };
        assert_eq!(
            redirect("https://new.example$uri")
                .location(&parts)
                .unwrap(),
            "https://new.example/a%20b/%C3%BC%25?q=1&r=%20"
        );
        assert_eq!(
            redirect("https://$host:8443$path")
                .location(&parts)
                .unwrap(),
            "https://old.example:8443/a%20b/%C3%BC%25"
        );
        let no_query = RequestParts {
            query: None,
            ..parts
        };
        assert_eq!(
            redirect("/new$uri").location(&no_query).unwrap(),
            "/new/a%20b/%C3%BC%25"
        );
    }

    #[test]
    fn a_relative_target_stays_on_the_site() {
        let parts = RequestParts {
            host: Some("a"),
            path: "/evil.example/x",
            query: None,
        };
        let query = RequestParts {
            host: Some("a"),
            path: "/",
            query: Some("\\evil.example/\\x"),
        };
        for target in ["/$query", "$path$query"] {
            let location = redirect(target).location(&query).unwrap();
            assert_eq!(location, "/%5Cevil.example/%5Cx", "{target}");
        }
        for target in ["/$path", "/$uri", "/$path$path"] {
            let location = redirect(target).location(&parts).unwrap();
            assert!(
                location.starts_with("/evil.example/x"),
                "{target}: {location}"
            );
        }
        let without_host = RequestParts {
            host: None,
            ..parts
        };
        assert_eq!(redirect("https://$host/").location(&without_host), None);
    }

    #[test]
    fn rewrites_make_normal_paths() {
        let rewrite = |from: &str, to: &str| {
            Rewrite::compile(&model::Rewrite {
                from: from.into(),
                to: to.into(),
            })
            .unwrap()
        };
        let moved = rewrite("^/old/(.*)$", "/new/$1");
        assert_eq!(moved.apply("/old/a/b").unwrap(), Ok("/new/a/b".into()));
        assert_eq!(moved.apply("/other"), None);
        // A decoded `%` and `?` stay path characters.
        assert_eq!(moved.apply("/old/50%?").unwrap(), Ok("/new/50%?".into()));
        let climbing = rewrite("^/up/(.*)$", "/a/../../$1");
        assert_eq!(
            climbing.apply("/up/x").unwrap(),
            Err(request_path::PathError::AboveRoot)
        );
        let named = rewrite("^/u/(?P<id>[0-9]+)$", "/users/${id}/profile");
        assert_eq!(
            named.apply("/u/42").unwrap(),
            Ok("/users/42/profile".into())
        );
    }

    #[test]
    fn group_references_are_checked_against_the_pattern() {
        let rewrite = |to: &str| {
            Rewrite::compile(&model::Rewrite {
                from: "^/(?P<user>[a-z]+)/([0-9]+)$".into(),
                to: to.into(),
            })
            .unwrap()
            .unknown_groups()
        };
        assert!(rewrite("/u/$1/${2}/${user}/$user/$$3").is_empty());
        assert_eq!(rewrite("/u/$3"), ["3"]);
        assert_eq!(rewrite("/u/$1_old"), ["1_old"]);
        assert_eq!(rewrite("/u/${name}"), ["name"]);
    }

    #[test]
    fn slashes_are_added_to_directories_and_removed() {
        assert_eq!(
            canonical_slash(TrailingSlash::Add, "/docs"),
            Some("/docs/".into())
        );
        assert_eq!(canonical_slash(TrailingSlash::Add, "/docs/"), None);
        assert_eq!(canonical_slash(TrailingSlash::Add, "/app.js"), None);
        assert_eq!(
            canonical_slash(TrailingSlash::Remove, "/docs/"),
            Some("/docs".into())
        );
        assert_eq!(canonical_slash(TrailingSlash::Remove, "/"), None);
        assert_eq!(canonical_slash(TrailingSlash::Remove, "/docs"), None);
    }

    #[test]
    fn patterns_that_would_grow_huge_are_refused() {
        let huge = model::Rewrite {
            from: "(a{1000}){1000}".into(),
            to: "/".into(),
        };
        assert!(Rewrite::compile(&huge).is_err());
    }
}

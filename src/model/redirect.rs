//! A route's `redirect`, `rewrite` and `trailing_slash`, as validated. The
//! redirect target is parsed here, once, into text and the request parts it
//! names; the rewrite keeps its pattern as text (the runtime compiles it).

use serde::{Deserialize, Serialize};

/// `redirect = { to, status }`: the route answers every request with a redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub to: Target,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

impl Redirect {
    /// Temporary, as Caddy's `redir` and Traefik's `redirectRegex` default to:
    /// browsers keep a 301 or 308 for good, so a mistake would outlive its fix.
    pub const DEFAULT_STATUS: u16 = 302;
    pub const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];
}

/// `rewrite = { from, to }`: the request's path, changed before the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// A regular expression over the decoded path (linear-time syntax).
    pub from: String,
    /// The new path, with `$1` or `${name}` for the pattern's groups.
    pub to: String,
}

/// `trailing_slash`: which spelling of a path is the canonical one; the
/// other gets a 308 to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailingSlash {
    /// `/docs` → `/docs/`, for paths whose last segment has no `.` (a file name).
    Add,
    /// `/docs/` → `/docs`.
    Remove,
}

/// A redirect target: text with the request's parts in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub pieces: Vec<Piece>,
    /// Starts with `/` (same site) rather than `http://` or `https://`.
    pub relative: bool,
}

/// One piece of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Piece {
    Text(String),
    /// `$host`: the host the client asked for, without port.
    Host,
    /// `$path`: the path, percent-encoded, after any rewrite.
    Path,
    /// `$query`: the query string as received, without `?`.
    Query,
    /// `$uri`: the path and, when there is one, `?` and the query.
    Uri,
}

/// Why a redirect target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "a redirect target starts with `/` (this site), `$uri`, `$path`, `https://` or `http://`"
    )]
    NotUrl,
    #[error(
        "`${0}` is not a variable here; use $host, $path, $query or $uri (write $$ for a `$`)"
    )]
    UnknownVariable(String),
    #[error("the host of a redirect target must be written out or be `$host`; `${0}` there would let a request choose where clients are sent")]
    VariableInHost(&'static str),
    #[error("a redirect target is visible ASCII without `\\`; percent-encode spaces and other characters (e.g. %20)")]
    BadCharacter,
}

impl Target {
    /// Parses `text`, refusing any variable that could put text chosen by
    /// the request into the target's scheme or host.
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        // `//host` would be another site, spelt without a scheme; `$path`
        // and `$uri` always start with `/`.
        let starts_with_path = ["$path", "$uri"].iter().any(|variable| {
            text.strip_prefix(variable).is_some_and(|rest| {
                !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        });
        // `/\host` too: browsers read a backslash there as a slash.
        let relative =
            (text.starts_with('/') && !text.starts_with("//") && !text.starts_with("/\\"))
                || starts_with_path;
        if text.bytes().any(|b| !b.is_ascii_graphic() || b == b'\\') {
            return Err(TargetError::BadCharacter);
        }
        let after_scheme = ["https://", "http://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme).map(|_| scheme.len()));
        if !relative && after_scheme.is_none() {
            return Err(TargetError::NotUrl);
        }
        let mut pieces = Vec::new();
        let mut text_piece = String::new();
        // Until a `/`, `?` or `#` (or a path variable) ends it, the host is
        // being written; a path variable before any of it would be the host.
        let mut in_host = after_scheme.is_some();
        let mut host_written = false;
        let mut rest = text;
        if let Some(start) = after_scheme {
            text_piece.push_str(&text[..start]);
            rest = &text[start..];
        }
        while let Some(at) = rest.find('$') {
            let literal = &rest[..at];
            host_written |= in_host && !literal.is_empty() && !literal.starts_with(['/', '?', '#']);
            in_host &= !literal.contains(['/', '?', '#']);
            text_piece.push_str(literal);
            let after = &rest[at + 1..];
            if let Some(after) = after.strip_prefix('$') {
                text_piece.push('$');
                rest = after;
                continue;
            }
            let name_len = after
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            let piece = match &after[..name_len] {
                "host" => Piece::Host,
                "path" => Piece::Path,
                "query" => Piece::Query,
                "uri" => Piece::Uri,
                other => return Err(TargetError::UnknownVariable(other.to_owned())),
            };
            match piece {
                Piece::Query if in_host => return Err(TargetError::VariableInHost("query")),
                // `https://$path` is `https:///evil.example/…`, which
                // browsers read as the host `evil.example`.
                Piece::Path if in_host && !host_written => {
                    return Err(TargetError::VariableInHost("path"))
                }
                Piece::Uri if in_host && !host_written => {
                    return Err(TargetError::VariableInHost("uri"))
                }
                // Both start with `/`: the host ends there.
                Piece::Path | Piece::Uri => in_host = false,
                Piece::Host => host_written = true,
                Piece::Query | Piece::Text(_) => {}
            }
            if !text_piece.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text_piece)));
            }
            pieces.push(piece);
            rest = &after[name_len..];
        }
        text_piece.push_str(rest);
        if !text_piece.is_empty() {
            pieces.push(Piece::Text(text_piece));
        }
        Ok(Target { pieces, relative })
    }
}

impl std::fmt::Display for Target {
    /// As the config would write it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => f.write_str(&text.replace('$', "$$"))?,
                Piece::Host => f.write_str("$host")?,
                Piece::Path => f.write_str("$path")?,
                Piece::Query => f.write_str("$query")?,
                Piece::Uri => f.write_str("$uri")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_split_into_text_and_parts() {
        let target = Target::parse("https://new.example.com/app$uri").unwrap();
        assert!(!target.relative);
        assert_eq!(
            target.pieces,
            [
                Piece::Text("https://new.example.com/app".into()),
                Piece::Uri
            ]
        );
        let target = Target::parse("https://$host:8443$path?from=old&$query").unwrap();
        assert_eq!(
            target.pieces,
            [
                Piece::Text("https://".into()),
                Piece::Host,
                Piece::Text(":8443".into()),
                Piece::Path,
                Piece::Text("?from=old&".into()),
                Piece::Query,
            ]
        );
        let target = Target::parse("/new$$/$path").unwrap();
        assert!(target.relative);
        assert_eq!(target.to_string(), "/new$$/$path");
        assert_eq!(target.pieces, [Piece::Text("/new$/".into()), Piece::Path]);
    }

    #[test]
    fn the_request_cannot_choose_the_host() {
        for bad in [
            "https://$query",
            "https://a.example$query/x",
            "http://$query@x",
        ] {
            assert_eq!(
                Target::parse(bad),
                Err(TargetError::VariableInHost("query")),
                "{bad}"
            );
        }
        for bad in ["https://$path", "http://$uri", "https://$uri/x"] {
            assert!(
                matches!(Target::parse(bad), Err(TargetError::VariableInHost(_))),
                "{bad}"
            );
        }
        for bad in ["/\\evil.example", "/a b", "/ü", "https://a.example/\\x"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Target::parse("https://a.example/$query").is_ok());
        assert!(Target::parse("https://a.example?$query").is_ok());
        assert_eq!(Target::parse("$query"), Err(TargetError::NotUrl));
        assert_eq!(Target::parse("$paths"), Err(TargetError::NotUrl));
        assert!(Target::parse("$uri").is_ok_and(|target| target.relative));
        assert_eq!(Target::parse("//evil.example/"), Err(TargetError::NotUrl));
        assert_eq!(
            Target::parse("/x/$1"),
            Err(TargetError::UnknownVariable("1".into()))
        );
    }
}

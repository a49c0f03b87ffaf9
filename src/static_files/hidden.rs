//! `hide = [...]` on a static route: names never served, whatever the
//! directory holds. By default every dot-name (`.env`, `.git/`, `.htpasswd`)
//! is hidden, as Caddy's `hide` and the common nginx `location ~ /\.`
//! rule do, except `.well-known` (RFC 8615), which is there to be served.

/// Whether a segment of `relative` (a normalised path) matches a pattern.
pub fn is_hidden(patterns: &[String], relative: &str) -> bool {
    relative
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != ".well-known")
        .any(|segment| {
            patterns
                .iter()
                .any(|p| glob_matches(p.as_bytes(), segment.as_bytes()))
        })
}

/// `*` matches any run of bytes, `?` one byte, everything else itself.
/// Iterative with one backtrack point, so it is linear-ish in the name and
/// cannot blow up on patterns with many stars.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StaticSettings;

    fn hide(patterns: &[&str]) -> Vec<String> {
        patterns.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn dot_names_are_hidden_by_default_except_well_known() {
        let default = hide(&[StaticSettings::DEFAULT_HIDE]);
        for path in ["/.env", "/.git/config", "/app/.htpasswd", "/a/.b/c.txt"] {
            assert!(is_hidden(&default, path), "{path}");
        }
        for path in [
            "/index.html",
            "/.well-known/acme-challenge/x",
            "/a.b/c",
            "/",
        ] {
            assert!(!is_hidden(&default, path), "{path}");
        }
    }

    #[test]
    fn globs_match_whole_segments() {
        let patterns = hide(&["*.bak", "secret?", "node_modules"]);
        assert!(is_hidden(&patterns, "/db.sql.bak"));
        assert!(is_hidden(&patterns, "/x/secret1/y"));
        assert!(is_hidden(&patterns, "/node_modules/a.js"));
        assert!(!is_hidden(&patterns, "/secret12"));
        assert!(!is_hidden(&patterns, "/bak"));
        assert!(!is_hidden(&patterns, "/.env"));
        assert!(glob_matches(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_matches(b"a*b*c", b"aXXbYY"));
        assert!(glob_matches(b"*", b""));
    }
}

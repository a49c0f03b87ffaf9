//! Which `Host` values a route accepts, as the config writes them.

use serde::{Deserialize, Serialize};

/// Which `Host` values a route accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum HostMatch {
    /// No `host` key: every host.
    Any,
    /// `host = "chat.example.com"`, stored lowercase.
    Exact(String),
    /// `host = "*.example.com"`, stored lowercase as the suffix `.example.com`.
    Wildcard(String),
}

impl HostMatch {
    /// Parses the config form; `None` when it is not a host name pattern.
    pub fn parse(pattern: &str) -> Option<HostMatch> {
        let lower = pattern.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return None;
        }
        Some(if wildcard {
            HostMatch::Wildcard(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_owned())
        })
    }

    /// Whether a request for `host` (without port; `None`: no host given) matches.
    pub fn matches(&self, host: Option<&str>) -> bool {
        match (self, host) {
            (HostMatch::Any, _) => true,
            (_, None) => false,
            (HostMatch::Exact(name), Some(host)) => host.eq_ignore_ascii_case(name),
            (HostMatch::Wildcard(suffix), Some(host)) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }

    /// Lower sorts first: exact names, then longer wildcards, then any host.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(_) => (0, 0),
            HostMatch::Wildcard(suffix) => (1, usize::MAX - suffix.len()),
            HostMatch::Any => (2, 0),
        }
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Any => f.write_str("*"),
            HostMatch::Exact(name) => f.write_str(name),
            HostMatch::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl From<HostMatch> for String {
    fn from(host: HostMatch) -> String {
        host.to_string()
    }
}

impl TryFrom<String> for HostMatch {
    type Error = String;

    fn try_from(text: String) -> Result<HostMatch, String> {
        if text == "*" {
            return Ok(HostMatch::Any);
        }
        HostMatch::parse(&text).ok_or_else(|| format!("`{text}` is not a host pattern"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_are_checked() {
        assert_eq!(
            HostMatch::parse("*.Example.com"),
            Some(HostMatch::Wildcard(".example.com".into()))
        );
        assert_eq!(
            HostMatch::parse("a.b"),
            Some(HostMatch::Exact("a.b".into()))
        );
        for bad in ["", "*", "a..b", "a b", "*.", "http://a", "a/b", "a.*.b"] {
            assert_eq!(HostMatch::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_patterns_round_trip_through_their_text() {
        for text in ["*", "a.example.com", "*.example.com"] {
            let parsed = HostMatch::try_from(text.to_owned()).expect(text);
            assert_eq!(String::from(parsed), text);
        }
    }
}

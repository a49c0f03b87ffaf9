//! `error_pages`, global or on a route, as validated: which statuses get
//! which file, the files read once by `check`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Material;

/// Pages by status; a route's are looked up before the global ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorPages {
    pub pages: Vec<ErrorPage>,
}

impl ErrorPages {
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// One `STATUS = "file"` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPage {
    pub statuses: StatusMatch,
    /// As the config names it.
    pub file: String,
    /// Of the content: a reload tells a changed page from an unchanged one by it.
    pub fingerprint: String,
    #[serde(skip)]
    pub content: Material<Bytes>,
}

/// Which statuses a page is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusMatch {
    /// One status, 400 to 599.
    Exact(u16),
    /// `"4xx"` or `"5xx"`: the hundreds digit.
    Class(u16),
}

impl StatusMatch {
    /// `"404"`, `"4xx"` or `"5xx"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<StatusMatch> {
        match text.as_bytes() {
            [class @ (b'4' | b'5'), b'x' | b'X', b'x' | b'X'] => {
                Some(StatusMatch::Class(u16::from(class - b'0')))
            }
            _ => text
                .parse::<u16>()
                .ok()
                .filter(|code| (400..600).contains(code) && text.len() == 3)
                .map(StatusMatch::Exact),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_error_codes_or_classes() {
        assert_eq!(StatusMatch::parse("404"), Some(StatusMatch::Exact(404)));
        assert_eq!(StatusMatch::parse("5xx"), Some(StatusMatch::Class(5)));
        assert_eq!(StatusMatch::parse("4XX"), Some(StatusMatch::Class(4)));
        for bad in ["200", "3xx", "600", "+404", "0404", "4x", "abc", ""] {
            assert_eq!(StatusMatch::parse(bad), None, "{bad}");
        }
    }
}

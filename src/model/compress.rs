//! A route's `compress`, as validated: which codings it offers, in which
//! order, at which levels, and which responses qualify.

use serde::{Deserialize, Serialize};

/// A content coding wsgate can compress into (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    pub fn from_token(token: &str) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|coding| coding.token() == token)
    }

    /// The levels `check` accepts, as each library numbers them.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Coding::Brotli => 0..=11,
            Coding::Zstd => 1..=19,
            Coding::Gzip => 1..=9,
        }
    }

    /// Fast enough for every response, with most of the ratio: brotli 4
    /// and zstd 3 are their authors' picks for dynamic content, gzip 6 is
    /// zlib's own default.
    pub fn default_level(self) -> i32 {
        match self {
            Coding::Brotli => 4,
            Coding::Zstd => 3,
            Coding::Gzip => 6,
        }
    }
}

/// `compress = { ... }` on a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compress {
    /// Offered in this order when a client accepts several equally.
    pub codings: Vec<(Coding, i32)>,
    /// Bodies known to be smaller are sent as they are.
    pub min_size: u64,
    /// Media types compressed: `type/subtype`, `type/*` or `type/*+suffix`,
    /// lower case.
    pub types: Vec<String>,
}

impl Compress {
    pub const DEFAULT_MIN_SIZE: u64 = 512;

    /// Text formats that compress well; images, video, archives and fonts
    /// in WOFF2 are compressed already.
    pub const DEFAULT_TYPES: [&'static str; 9] = [
        "text/*",
        "application/json",
        "application/*+json",
        "application/javascript",
        "application/xml",
        "application/*+xml",
        "application/wasm",
        "image/svg+xml",
        "image/x-icon",
    ];
}

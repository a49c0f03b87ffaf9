//! The series of a route's authentication: checks by method and result.

use prometheus::IntCounter;

use super::Families;

/// How one credential check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// No credentials came with the request.
    Missing,
    /// Credentials came and were wrong (or malformed).
    Denied,
    /// A JWT with a good signature, past its `exp`.
    Expired,
    /// The auth service gave no usable answer (503).
    Unavailable,
}

impl AuthResult {
    const ALL: [AuthResult; 5] = [
        AuthResult::Ok,
        AuthResult::Missing,
        AuthResult::Denied,
        AuthResult::Expired,
        AuthResult::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::Missing => "missing",
            AuthResult::Denied => "denied",
            AuthResult::Expired => "expired",
            AuthResult::Unavailable => "unavailable",
        }
    }
}

/// One route's `wsgate_auth_total` series for one method.
#[derive(Debug, Clone)]
pub struct AuthMeters {
    results: [IntCounter; AuthResult::ALL.len()],
}

impl AuthMeters {
    pub(crate) fn new(families: &Families, route: &str, method: &str) -> AuthMeters {
        AuthMeters {
            results: AuthResult::ALL.map(|result| {
                families
                    .auth
                    .with_label_values(&[route, method, result.as_str()])
            }),
        }
    }

    pub fn counted(&self, result: AuthResult) {
        self.results[result as usize].inc();
    }
}

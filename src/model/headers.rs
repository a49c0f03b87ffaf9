//! A route's header rules, as validated: plain strings here, compiled into
//! header names and values where the server builds its routes.

use serde::{Deserialize, Serialize};

/// What a route changes in one kind of message. Applied in this order:
/// `remove`, then `set`, then `add`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRules {
    /// Fields replaced (or made) with these values.
    pub set: Vec<(String, String)>,
    /// Fields appended, beside any of the same name.
    pub add: Vec<(String, String)>,
    /// Fields removed.
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A route's `request_headers`, `response_headers` and `hsts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHeaders {
    /// On what goes to the backends, after wsgate's own forwarding fields.
    pub request: HeaderRules,
    /// On everything the route answers: a backend's responses and wsgate's
    /// own (404, 401, 429, 502…).
    pub response: HeaderRules,
    /// `Strict-Transport-Security`, sent on responses over TLS only.
    pub hsts: Option<String>,
}

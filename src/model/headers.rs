//! A route's header rules, as validated: plain strings here, compiled into
//! header names and values where the server builds its routes.

use std::time::Duration;

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
    /// Cross-origin requests the route allows, preflights answered by wsgate.
    #[serde(default)]
    pub cors: Option<Cors>,
}

/// A route's `cors = { ... }` (the Fetch standard's CORS protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// Origins allowed, as browsers send them; `["*"]` is any origin.
    pub origins: Vec<String>,
    /// Methods a preflight may ask for.
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for, lower case.
    pub headers: Vec<String>,
    /// Response headers scripts may read besides the safelisted ones.
    pub expose: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Option<Duration>,
    /// Whether requests with cookies or credentials are allowed.
    pub credentials: bool,
}

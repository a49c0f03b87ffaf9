//! A route's authentication, as validated.

use serde::{Deserialize, Serialize};

use super::Material;
use crate::credentials::Htpasswd;

/// `auth = { ... }` on a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    pub basic: Option<BasicAuth>,
}

/// `auth = { basic = "users.htpasswd", realm = "..." }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BasicAuth {
    /// The htpasswd file as the config names it.
    pub file: String,
    /// What browsers show in their login prompt.
    pub realm: String,
    /// Of the file's content: a reload tells a changed file from an unchanged one by it.
    pub fingerprint: String,
    #[serde(skip)]
    pub users: Material<Htpasswd>,
}

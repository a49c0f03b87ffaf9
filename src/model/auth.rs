//! A route's authentication, as validated.

use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::{Material, Pool};
use crate::credentials::Htpasswd;
use crate::tokens::Verifier;

/// `auth = { ... }` on a route. Every method set must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    pub basic: Option<BasicAuth>,
    #[serde(default)]
    pub jwt: Option<JwtAuth>,
    #[serde(default)]
    pub forward: Option<ForwardAuth>,
    /// A verified client certificate is required (on listeners with `client_auth`).
    #[serde(default)]
    pub client_cert: Option<ClientCertAuth>,
}

/// `auth = { client_cert = { ... } }`: the headers the certificate's facts go in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertAuth {
    pub subject_header: String,
    pub san_header: String,
}

/// `auth = { forward = { ... } }`: an auth service decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardAuth {
    /// The auth service's backends; a backend URL's path is the one asked.
    pub pool: Pool,
    /// For the service's answer, connect included.
    pub timeout: Duration,
    /// Headers of a 2xx answer copied onto the forwarded request (lowercase).
    pub copy_headers: Vec<String>,
    /// How long a 2xx is reused for the same credentials; zero: never.
    pub cache: Duration,
    /// How often an open WebSocket session is asked about again.
    pub revalidate: Option<Duration>,
    /// Let requests through when the service cannot answer (never by default).
    pub fail_open: bool,
}

/// `auth = { jwt = { ... } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtAuth {
    /// The key file as the config names it (PEM public keys or a JWKS
    /// document), or the `http(s)://` URL of a JWKS document.
    pub keys: String,
    /// For keys at a URL: the server they are fetched from.
    #[serde(default)]
    pub keys_pool: Option<Pool>,
    /// For keys at a URL: how long fetched keys are used before fetching again.
    #[serde(default)]
    pub keys_refresh: Duration,
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required among `aud`, when set.
    pub audience: Option<String>,
    /// Allowed clock difference for `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the token is looked for, in order.
    pub token_from: Vec<TokenSource>,
    /// Claims copied onto the forwarded request: (claim, header name).
    pub claims_to_headers: Vec<(String, String)>,
    /// What a WebSocket session gets when its token expires.
    pub expired_close_code: u16,
    /// Of the key file's content.
    pub fingerprint: String,
    #[serde(skip)]
    pub verifier: Material<Verifier>,
}

/// Where a request carries its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// A header; for `Authorization`, after `Bearer `.
    Header(String),
    Cookie(String),
    /// A query parameter; removed from the forwarded request and the log.
    Query(String),
    /// An entry of a WebSocket upgrade's `Sec-WebSocket-Protocol` that is a
    /// JWT (browsers cannot set other headers); removed from the list the
    /// backend gets.
    Subprotocol,
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

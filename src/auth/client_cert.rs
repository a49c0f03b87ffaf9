//! Routes that require a verified client certificate (mTLS): the listener's
//! handshake verified it; here its subject and SANs go to the backend in
//! the route's headers, replacing any the client sent.

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::access_log::UpstreamFacts;
use crate::body::Body;
use crate::metrics::{AuthMeters, AuthResult};
use crate::response;
use crate::tls::ClientCertFacts;

/// A route's `client_cert` requirement.
#[derive(Debug)]
pub(super) struct ClientCert {
    pub(super) subject: HeaderName,
    pub(super) sans: HeaderName,
    pub(super) meters: Option<AuthMeters>,
}

impl ClientCert {
    /// Whether the client has a verified certificate; if so, its facts go
    /// in the headers.
    pub(super) fn check(&self, headers: &mut HeaderMap, cert: Option<&ClientCertFacts>) -> bool {
        headers.remove(&self.subject);
        headers.remove(&self.sans);
        let result = if cert.is_some() {
            AuthResult::Ok
        } else {
            AuthResult::Missing
        };
        if let Some(meters) = &self.meters {
            meters.counted(result);
        }
        let Some(cert) = cert else {
            return false;
        };
        if let Ok(subject) = HeaderValue::from_str(&cert.subject) {
            headers.insert(self.subject.clone(), subject);
        }
        if let Ok(sans) = HeaderValue::from_str(&cert.sans.join(", ")) {
            headers.insert(self.sans.clone(), sans);
        }
        true
    }
}

/// 403 for a client without a certificate: there is no challenge to send,
/// a certificate is offered in the handshake.
pub(super) fn refusal() -> Response<Body> {
    let mut answer = response::status(StatusCode::FORBIDDEN);
    answer.extensions_mut().insert(UpstreamFacts {
        reason: Some("client_cert_missing"),
        ..UpstreamFacts::default()
    });
    answer
}

//! The two OCSP messages (RFC 6960) wsgate handles: the request for one
//! certificate's status, and the responder's answer, checked before it is
//! stapled: for this certificate, "good", current, and signed by its issuer
//! or by a responder the issuer delegated to.

use sha1::{Digest, Sha1};
use x509_parser::asn1_rs::{Any, Class, FromDer, GeneralizedTime, Tag};
use x509_parser::prelude::X509Certificate;

use crate::tls;

/// id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1), as OID contents.
const OCSP_BASIC: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// AlgorithmIdentifier for SHA-1, the hash every responder takes in a CertID.
const SHA1_ALGORITHM: &[u8] = &[
    0x30, 0x09, 0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00,
];
/// How far a responder's clock may run ahead of ours.
const CLOCK_SKEW: i64 = 300;
/// How long a response without nextUpdate is taken to be good for
/// (RFC 6960 allows leaving it out): a week after its thisUpdate, the
/// longest public CAs' responses last.
const MAX_AGE_WITHOUT_NEXT_UPDATE: i64 = 7 * 86_400;

/// Which certificate a request asks about (RFC 6960 §4.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    issuer_name_hash: [u8; 20],
    issuer_key_hash: [u8; 20],
    /// The INTEGER's contents.
    serial: Vec<u8>,
}

/// What a response's signature is checked against.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The issuer's subject, DER: a delegated responder must be issued by it.
    subject: Vec<u8>,
    /// The contents of its SubjectPublicKeyInfo's AlgorithmIdentifier.
    key_algorithm: Vec<u8>,
    public_key: Vec<u8>,
}

/// A response fit to staple.
#[derive(Debug, Clone)]
pub struct Staple {
    pub der: Vec<u8>,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

impl Staple {
    /// Until when it may be stapled.
    pub fn good_until(&self) -> i64 {
        self.next_update
            .unwrap_or(self.this_update.saturating_add(MAX_AGE_WITHOUT_NEXT_UPDATE))
    }
}

/// Whether a TLS feature extension's value (RFC 7633: SEQUENCE OF INTEGER)
/// asks for status_request (5): Must-Staple.
pub fn requests_status(extension_value: &[u8]) -> bool {
    let Ok((features, _)) = next(extension_value, "TLS feature") else {
        return false;
    };
    let mut features = features.data;
    while let Ok((feature, rest)) = next(features, "TLS feature") {
        if feature.header.tag() == Tag::Integer && feature.data == [5] {
            return true;
        }
        features = rest;
    }
    false
}

/// Why a response is not stapled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the response is not well-formed DER ({0})")]
    Malformed(&'static str),
    #[error("the responder answered `{0}` instead of a status")]
    Unsuccessful(&'static str),
    #[error("the response says nothing about this certificate")]
    NotForThisCertificate,
    #[error("the responder says the certificate is revoked")]
    Revoked,
    #[error("the responder does not know the certificate")]
    Unknown,
    #[error(
        "the response is not signed by the certificate's issuer or a responder it delegated to"
    )]
    BadSignature,
    #[error("the response is not valid yet (thisUpdate ahead of this machine's clock)")]
    NotYetValid,
    #[error(
        "the response has expired (nextUpdate has passed, or a week since thisUpdate without one)"
    )]
    Expired,
}

use ResponseError::Malformed;

impl CertId {
    /// For `leaf`, issued by `issuer`.
    pub fn new(leaf: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> CertId {
        CertId {
            issuer_name_hash: Sha1::digest(leaf.issuer().as_raw()).into(),
            issuer_key_hash: Sha1::digest(&issuer.public_key().subject_public_key.data).into(),
            serial: leaf.raw_serial().to_vec(),
        }
    }

    /// The OCSPRequest for this certificate alone, unsigned, without nonce
    /// (so that responders and caches may answer it from a pre-made response).
    pub fn request(&self) -> Vec<u8> {
        let cert_id = tlv(
            0x30,
            &[
                SHA1_ALGORITHM.to_vec(),
                tlv(0x04, &self.issuer_name_hash),
                tlv(0x04, &self.issuer_key_hash),
                tlv(0x02, &self.serial),
            ]
            .concat(),
        );
        let request = tlv(0x30, &cert_id);
        let request_list = tlv(0x30, &request);
        let tbs_request = tlv(0x30, &request_list);
        tlv(0x30, &tbs_request)
    }
}

impl Issuer {
    pub fn new(issuer: &X509Certificate<'_>) -> Result<Issuer, ResponseError> {
        let spki = issuer.public_key();
        let (_, info) = Any::from_der(spki.raw).map_err(|_| Malformed("issuer key"))?;
        let (_, algorithm) = Any::from_der(info.data).map_err(|_| Malformed("issuer key"))?;
        Ok(Issuer {
            subject: issuer.subject().as_raw().to_vec(),
            key_algorithm: algorithm.data.to_vec(),
            public_key: spki.subject_public_key.data.to_vec(),
        })
    }
}

/// A DER TLV with a one-byte tag.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// The next element of a DER sequence's contents, and what follows it.
fn next<'a>(input: &'a [u8], what: &'static str) -> Result<(Any<'a>, &'a [u8]), ResponseError> {
    let (rest, any) = Any::from_der(input).map_err(|_| Malformed(what))?;
    Ok((any, rest))
}

fn is_context(any: &Any<'_>, tag: u32) -> bool {
    any.header.class() == Class::ContextSpecific && any.header.tag() == Tag(tag)
}

fn time(any: Any<'_>, what: &'static str) -> Result<i64, ResponseError> {
    let time = GeneralizedTime::try_from(any).map_err(|_| Malformed(what))?;
    let time = time.0.to_datetime().map_err(|_| Malformed(what))?;
    Ok(time.unix_timestamp())
}

/// Checks `der` as the answer about `id` at `now` (Unix seconds).
pub fn check(der: &[u8], id: &CertId, issuer: &Issuer, now: i64) -> Result<Staple, ResponseError> {
    // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ... }
    let (response, trailing) = next(der, "OCSPResponse")?;
    // What is stapled is the response alone, without anything sent after it.
    let der = &der[..der.len() - trailing.len()];
    let (status, rest) = next(response.data, "responseStatus")?;
    if status.header.tag() != Tag::Enumerated || status.data.len() != 1 {
        return Err(Malformed("responseStatus"));
    }
    match status.data[0] {
        0 => {}
        1 => return Err(ResponseError::Unsuccessful("malformedRequest")),
        2 => return Err(ResponseError::Unsuccessful("internalError")),
        3 => return Err(ResponseError::Unsuccessful("tryLater")),
        5 => return Err(ResponseError::Unsuccessful("sigRequired")),
        6 => return Err(ResponseError::Unsuccessful("unauthorized")),
        _ => return Err(Malformed("responseStatus")),
    }
    let (bytes, _) = next(rest, "responseBytes")?;
    if !is_context(&bytes, 0) {
        return Err(Malformed("responseBytes"));
    }
    let (bytes, _) = next(bytes.data, "responseBytes")?;
    let (kind, rest) = next(bytes.data, "responseType")?;
    if kind.header.tag() != Tag::Oid || kind.data != OCSP_BASIC {
        return Err(Malformed("not a basic OCSP response"));
    }
    let (basic, _) = next(rest, "response")?;
    // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs [0] }
    let (basic, _) = next(basic.data, "BasicOCSPResponse")?;
    let Signed {
        signed,
        algorithm,
        signature,
        rest,
    } = signed_parts(basic.data).ok_or(Malformed("BasicOCSPResponse"))?;
    let (tbs, _) = next(signed, "tbsResponseData")?;
    let certs = match next(rest, "certs") {
        Ok((certs, _)) if is_context(&certs, 0) => Some(next(certs.data, "certs")?.0.data),
        _ => None,
    };
    if !signed_by_issuer_or_delegate(issuer, (algorithm, signed, signature), certs, now) {
        return Err(ResponseError::BadSignature);
    }
    let staple = single_response(tbs.data, id)?;
    if staple.0 > now + CLOCK_SKEW {
        return Err(ResponseError::NotYetValid);
    }
    let staple = Staple {
        der: der.to_vec(),
        this_update: staple.0,
        next_update: staple.1,
    };
    if staple.good_until() <= now {
        return Err(ResponseError::Expired);
    }
    Ok(staple)
}

/// thisUpdate and nextUpdate of the SingleResponse about `id`, if "good".
fn single_response(tbs: &[u8], id: &CertId) -> Result<(i64, Option<i64>), ResponseError> {
    // ResponseData ::= SEQUENCE { version [0] OPTIONAL, responderID, producedAt, responses, ... }
    let (first, rest) = next(tbs, "ResponseData")?;
    // Past the responderID, which follows the version when there is one.
    let rest = match is_context(&first, 0) {
        true => next(rest, "responderID")?.1,
        false => rest,
    };
    let (_produced_at, rest) = next(rest, "producedAt")?;
    let (responses, _) = next(rest, "responses")?;
    let mut responses = responses.data;
    while !responses.is_empty() {
        let (single, others) = next(responses, "SingleResponse")?;
        responses = others;
        let (cert_id, rest) = next(single.data, "CertID")?;
        if !same_certificate(cert_id.data, id)? {
            continue;
        }
        let (status, rest) = next(rest, "certStatus")?;
        match (status.header.class(), status.header.tag().0) {
            (Class::ContextSpecific, 0) => {}
            (Class::ContextSpecific, 1) => return Err(ResponseError::Revoked),
            (Class::ContextSpecific, 2) => return Err(ResponseError::Unknown),
            _ => return Err(Malformed("certStatus")),
        }
        let (this_update, rest) = next(rest, "thisUpdate")?;
        let this_update = time(this_update, "thisUpdate")?;
        let next_update = match next(rest, "nextUpdate") {
            Ok((tagged, _)) if is_context(&tagged, 0) => {
                Some(time(next(tagged.data, "nextUpdate")?.0, "nextUpdate")?)
            }
            _ => None,
        };
        return Ok((this_update, next_update));
    }
    Err(ResponseError::NotForThisCertificate)
}

/// Whether a response's CertID (its contents) names `id`. Responders
/// answer in the hash they were asked in, SHA-1 here.
fn same_certificate(cert_id: &[u8], id: &CertId) -> Result<bool, ResponseError> {
    let (algorithm, rest) = next(cert_id, "hashAlgorithm")?;
    let (name_hash, rest) = next(rest, "issuerNameHash")?;
    let (key_hash, rest) = next(rest, "issuerKeyHash")?;
    let (serial, _) = next(rest, "serialNumber")?;
    let (sha1, _) = next(SHA1_ALGORITHM, "hashAlgorithm")?;
    // Some encoders leave out the NULL parameters.
    let sha1_oid = &sha1.data[..7];
    Ok(algorithm.data.starts_with(sha1_oid)
        && name_hash.data == id.issuer_name_hash
        && key_hash.data == id.issuer_key_hash
        && serial.data == id.serial.as_slice())
}

/// RFC 6960 §4.2.2.2: signed by the issuer itself, or by a certificate in
/// `certs` that the issuer signed for OCSP signing (id-kp-OCSPSigning).
fn signed_by_issuer_or_delegate(
    issuer: &Issuer,
    (algorithm, message, signature): (&[u8], &[u8], &[u8]),
    certs: Option<&[u8]>,
    now: i64,
) -> bool {
    if verify(
        &issuer.key_algorithm,
        &issuer.public_key,
        algorithm,
        message,
        signature,
    ) {
        return true;
    }
    let mut certs = certs.unwrap_or_default();
    while let Ok((cert, rest)) = next(certs, "certs") {
        let der = &certs[..certs.len() - rest.len()];
        certs = rest;
        let delegated = signed_parts(cert.data).is_some_and(|cert| {
            verify(
                &issuer.key_algorithm,
                &issuer.public_key,
                cert.algorithm,
                cert.signed,
                cert.signature,
            )
        });
        let Ok((_, delegate)) = X509Certificate::from_der(der) else {
            continue;
        };
        let for_ocsp = delegate
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.value.ocsp_signing);
        let from_issuer = delegate.issuer().as_raw() == issuer.subject.as_slice();
        let validity = delegate.validity();
        let current =
            validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp();
        let Ok(key) = Issuer::new(&delegate) else {
            continue;
        };
        if delegated
            && for_ocsp
            && from_issuer
            && current
            && verify(
                &key.key_algorithm,
                &key.public_key,
                algorithm,
                message,
                signature,
            )
        {
            return true;
        }
    }
    false
}

/// A signed structure, from its contents: a certificate's, or a
/// BasicOCSPResponse's (whose `certs` follow the signature).
struct Signed<'a> {
    /// The signed part's whole DER.
    signed: &'a [u8],
    /// The signatureAlgorithm's contents.
    algorithm: &'a [u8],
    /// The signature's bits.
    signature: &'a [u8],
    /// What follows the signature.
    rest: &'a [u8],
}

fn signed_parts(contents: &[u8]) -> Option<Signed<'_>> {
    let (_, rest) = next(contents, "signed part").ok()?;
    let signed = &contents[..contents.len() - rest.len()];
    let (algorithm, rest) = next(rest, "signatureAlgorithm").ok()?;
    let (signature, rest) = next(rest, "signatureValue").ok()?;
    let (unused, bits) = signature.data.split_first()?;
    (*unused == 0).then_some(Signed {
        signed,
        algorithm: algorithm.data,
        signature: bits,
        rest,
    })
}

/// Whether one of rustls' verification algorithms for a key of
/// `key_algorithm` and a signature of `algorithm` (AlgorithmIdentifier
/// contents, both) accepts `signature` over `message`.
fn verify(
    key_algorithm: &[u8],
    public_key: &[u8],
    algorithm: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    tls::provider()
        .signature_verification_algorithms
        .all
        .iter()
        .any(|candidate| {
            candidate.public_key_alg_id().as_ref() == key_algorithm
                && candidate.signature_alg_id().as_ref() == algorithm
                && candidate
                    .verify_signature(public_key, message, signature)
                    .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CertId {
        CertId {
            issuer_name_hash: [1; 20],
            issuer_key_hash: [2; 20],
            serial: vec![0x10, 0x01],
        }
    }

    fn issuer() -> Issuer {
        Issuer {
            subject: Vec::new(),
            key_algorithm: Vec::new(),
            public_key: Vec::new(),
        }
    }

    #[test]
    fn a_request_names_the_certificate_in_sha1() {
        let request = id().request();
        // OCSPRequest → TBSRequest → requestList → Request → CertID.
        let mut contents = request.as_slice();
        for _ in 0..5 {
            let (any, _) = next(contents, "nesting").expect("sequence");
            assert_eq!(any.header.tag(), Tag::Sequence);
            contents = any.data;
        }
        assert!(same_certificate(contents, &id()).expect("CertID"));
        let mut other = id();
        other.serial = vec![0x10, 0x02];
        assert!(!same_certificate(contents, &other).expect("CertID"));
    }

    #[test]
    fn must_staple_is_status_request_among_the_features() {
        assert!(requests_status(&[0x30, 0x03, 0x02, 0x01, 0x05]));
        assert!(requests_status(&[
            0x30, 0x06, 0x02, 0x01, 0x11, 0x02, 0x01, 0x05
        ]));
        assert!(!requests_status(&[0x30, 0x03, 0x02, 0x01, 0x11]));
        // 5 as part of another number, or outside an INTEGER, is not it.
        assert!(!requests_status(&[0x30, 0x04, 0x02, 0x02, 0x01, 0x05]));
        assert!(!requests_status(&[0x30, 0x03, 0x04, 0x01, 0x05]));
        assert!(!requests_status(&[]));
    }

    #[test]
    fn without_next_update_a_response_is_good_for_a_week() {
        let staple = Staple {
            der: Vec::new(),
            this_update: 1_000,
            next_update: None,
        };
        assert_eq!(staple.good_until(), 1_000 + 7 * 86_400);
    }

    #[test]
    fn long_contents_get_a_long_form_length() {
        assert_eq!(&tlv(0x04, &[0; 0x7F])[..2], &[0x04, 0x7F]);
        assert_eq!(&tlv(0x04, &[0; 0x80])[..3], &[0x04, 0x81, 0x80]);
        assert_eq!(&tlv(0x04, &[0; 0x1234])[..4], &[0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn refusals_and_garbage_are_errors_not_panics() {
        let try_later = [0x30, 0x03, 0x0A, 0x01, 0x03];
        assert_eq!(
            check(&try_later, &id(), &issuer(), 0).map(|_| ()),
            Err(ResponseError::Unsuccessful("tryLater"))
        );
        // A "successful" response whose body is another type's.
        let other_type = [
            0x30, 0x0F, 0x0A, 0x01, 0x00, 0xA0, 0x0A, 0x30, 0x08, 0x06, 0x03, 0x2A, 0x03, 0x04,
            0x04, 0x01, 0x00,
        ];
        assert!(matches!(
            check(&other_type, &id(), &issuer(), 0),
            Err(ResponseError::Malformed(_))
        ));
        for cut in 0..other_type.len() {
            assert!(check(&other_type[..cut], &id(), &issuer(), 0).is_err());
        }
        assert!(check(b"not DER at all", &id(), &issuer(), 0).is_err());
    }
}

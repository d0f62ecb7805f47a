//! A patient's personal privacy cap: "stop using my data at this node once my total epsilon reaches X".
//!
//! The request is signed by the patient's enrolled key, like a consent
//! token: it names one node and the patient's pseudonym there, carries a
//! random id (a node applies each id once) and the time it was signed (a
//! node refuses one more than a day away from its clock), so it cannot be
//! replayed later, elsewhere, or by anyone else. The node keeps the
//! patient's account; this module only checks the request (no IO).

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey};

use crate::consent::{check_node, check_patient_key, valid_token_id, TOKEN_ID_LEN};
use crate::error::{Error, Object};
use crate::signed::{self, Versioned};

/// Cap request format version written today.
pub const CAP_VERSION: u32 = 1;
/// Envelope domain of cap requests.
pub const CAP_DOMAIN: &str = "witmed/privacy-cap/v1";
/// Largest accepted difference between a request's `issued_at` and the node's clock.
pub const CAP_MAX_AGE_SECONDS: i64 = 24 * 60 * 60;
/// Largest cap a patient may set: beyond it a cap means nothing (and sums stay finite).
pub const MAX_CAP_EPSILON: f64 = 1e6;

/// A patient's request to set (or, with `epsilon: None`, remove) their personal cap at one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapRequest {
    /// Format version ([`CAP_VERSION`]).
    pub version: u32,
    /// 32 lowercase hex characters, random: each request is applied once.
    pub id: String,
    /// Identity key of the hospital node the request is for.
    pub node: PublicKey,
    /// The patient's pseudonym at that node.
    pub patient: Pseudonym,
    /// The total epsilon after which the patient's data is no longer used; `None` removes the cap.
    pub epsilon: Option<f64>,
    /// When the patient signed it (unix seconds).
    pub issued_at: i64,
}

impl Versioned for CapRequest {
    const OBJECT: Object = Object::PrivacyCap;
    const DOMAIN: &'static str = CAP_DOMAIN;
}

witmed_crypto::single_version!(CapRequest, "privacy cap request", CAP_VERSION);

impl CapRequest {
    /// Signs the request with the patient's key.
    pub fn sign(self, patient_key: &KeyPair) -> Envelope {
        Envelope::seal(CAP_DOMAIN, &self, patient_key)
    }
}

/// A cap request whose signature, signer, node, time and contents were
/// checked. Only [`verify_cap_request`] makes one; it derefs to the request.
#[derive(Debug, Clone)]
pub struct VerifiedCap {
    request: CapRequest,
}

impl Deref for VerifiedCap {
    type Target = CapRequest;
    fn deref(&self) -> &CapRequest {
        &self.request
    }
}

/// Verifies a cap request submitted to the node `node` at `now`.
///
/// `enrolled` returns the patient key staff enrolled for a pseudonym; the
/// request must be signed by it. Whether the id was used before is the
/// node's to check (it holds the used ids).
pub fn verify_cap_request(
    envelope: &Envelope,
    node: &PublicKey,
    enrolled: &dyn Fn(&Pseudonym) -> Option<PublicKey>,
    now: i64,
) -> Result<VerifiedCap, Error> {
    let request: CapRequest = signed::open(envelope)?;
    check_node(Object::PrivacyCap, &request.node, node)?;
    check_patient_key(&request.patient, &envelope.signer, enrolled)?;
    if !valid_token_id(&request.id) {
        return Err(invalid(format!(
            "id {:?} is not {TOKEN_ID_LEN} lowercase hex characters",
            request.id
        )));
    }
    if let Some(epsilon) = request.epsilon {
        if !(epsilon.is_finite() && (0.0..=MAX_CAP_EPSILON).contains(&epsilon)) {
            return Err(invalid(format!(
                "cap epsilon {epsilon} is not a number from 0 to {MAX_CAP_EPSILON}"
            )));
        }
    }
    if now.abs_diff(request.issued_at) > CAP_MAX_AGE_SECONDS.unsigned_abs() {
        return Err(Error::Expired {
            what: Object::PrivacyCap,
            expires: request.issued_at.saturating_add(CAP_MAX_AGE_SECONDS),
            now,
        });
    }
    Ok(VerifiedCap { request })
}

fn invalid(reason: String) -> Error {
    Error::InvalidCap(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use witmed_crypto::Role;

    const NOW: i64 = 1_800_000_000;

    fn request(node: PublicKey, epsilon: Option<f64>, issued_at: i64) -> CapRequest {
        CapRequest {
            version: CAP_VERSION,
            id: crate::consent::token_id([5; 16]),
            node,
            patient: Pseudonym([4; 16]),
            epsilon,
            issued_at,
        }
    }

    fn check(r: CapRequest, signer: &KeyPair) -> Result<VerifiedCap, Error> {
        let enrolled = KeyPair::from_seed(Role::Patient, &[2; 32]).public();
        verify_cap_request(
            &r.sign(signer),
            &PublicKey::from_bytes([9; 32]),
            &|_| Some(enrolled),
            NOW,
        )
    }

    #[test]
    fn only_the_enrolled_key_for_this_node_within_a_day_with_a_sane_cap_is_accepted() {
        let patient = KeyPair::from_seed(Role::Patient, &[2; 32]);
        let other = KeyPair::from_seed(Role::Patient, &[3; 32]);
        let node = PublicKey::from_bytes([9; 32]);
        let code =
            |r: Result<VerifiedCap, Error>| r.map(|_| "ok").unwrap_or_else(|e| e.error_code());
        assert_eq!(code(check(request(node, Some(2.0), NOW), &patient)), "ok");
        assert_eq!(code(check(request(node, None, NOW), &patient)), "ok");
        assert_eq!(
            code(check(request(node, Some(2.0), NOW), &other)),
            "wrong_patient_key"
        );
        let elsewhere = PublicKey::from_bytes([8; 32]);
        assert_eq!(
            code(check(request(elsewhere, Some(2.0), NOW), &patient)),
            "other_node"
        );
        let old = NOW - CAP_MAX_AGE_SECONDS - 1;
        assert_eq!(
            code(check(request(node, Some(2.0), old), &patient)),
            "expired"
        );
        for bad in [f64::NAN, -1.0, f64::INFINITY, MAX_CAP_EPSILON * 2.0] {
            assert_eq!(
                code(check(request(node, Some(bad), NOW), &patient)),
                "invalid_cap"
            );
        }
    }
}

//! Patient consent: opt-in tokens and revocations, signed by the patient's enrolled key.
//!
//! A token names the one hospital node it is for, the patient's pseudonym at
//! that node, the DUO purposes, data categories and privacy modes the patient
//! allows, and a validity window. A node accepts it only if the signer is the
//! key hospital staff enrolled for that pseudonym; the caller supplies that
//! lookup, so this module does no IO. A revocation names a token id and
//! takes effect as soon as it is verified.
//!
//! A patient's key is replaced (a lost key) only by a [`Reenrolment`] signed
//! by the hospital administrator key or by the key it replaces: the member of
//! staff who enrols cannot change a key alone (dual control).

use std::collections::BTreeSet;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey};
use witmed_protocol::vocab::{Category, Mode};

use crate::duo::Terms;
use crate::error::{Error, Object};
use crate::signed::{self, Versioned};

/// Consent token format version written today.
pub const TOKEN_VERSION: u32 = 1;
/// Envelope domain of consent tokens.
pub const TOKEN_DOMAIN: &str = "witmed/consent-token/v1";
/// Revocation format version written today.
pub const REVOCATION_VERSION: u32 = 1;
/// Envelope domain of revocations.
pub const REVOCATION_DOMAIN: &str = "witmed/consent-revocation/v1";
/// Re-enrolment format version written today.
pub const REENROLMENT_VERSION: u32 = 1;
/// Envelope domain of patient re-enrolments.
pub const REENROLMENT_DOMAIN: &str = "witmed/patient-reenrolment/v1";
/// Length of a token id in lowercase hex characters (128 random bits).
pub const TOKEN_ID_LEN: usize = 32;

/// A patient's opt-in to research use of their data at one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Format version ([`TOKEN_VERSION`]).
    pub version: u32,
    /// 32 lowercase hex characters; see [`token_id`].
    pub id: String,
    /// Identity key of the hospital node this consent is for.
    pub node: PublicKey,
    /// The patient's pseudonym at that node.
    pub patient: Pseudonym,
    /// DUO codes: at least one primary purpose, optionally modifiers.
    pub purposes: Vec<String>,
    /// Data categories a query may read.
    pub categories: BTreeSet<Category>,
    /// Privacy modes under which the data may be used.
    pub modes: BTreeSet<Mode>,
    /// First second (unix) of validity.
    pub not_before: i64,
    /// First second (unix) the token is no longer valid.
    pub expires: i64,
    /// True only for demo and simulation tokens, so they can be told apart from real consent.
    pub simulated: bool,
}

/// A patient's withdrawal of one consent token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Format version ([`REVOCATION_VERSION`]).
    pub version: u32,
    /// The id of the token withdrawn.
    pub token_id: String,
    /// The node the token was for.
    pub node: PublicKey,
    /// The patient who withdraws; must be the token's patient.
    pub patient: Pseudonym,
    /// When the patient signed it (unix seconds); informational.
    pub issued_at: i64,
}

/// The replacement of a patient's enrolled key at one node (lost or compromised key).
///
/// Signed by the hospital administrator key, or by the patient's currently
/// enrolled key (co-signature of the old key). Once applied, tokens signed by
/// the old key no longer count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reenrolment {
    /// Format version ([`REENROLMENT_VERSION`]).
    pub version: u32,
    /// The node whose enrolment changes.
    pub node: PublicKey,
    /// The patient's pseudonym at that node.
    pub patient: Pseudonym,
    /// The patient's new public key.
    pub new_key: PublicKey,
    /// Why the key changes (for the audit log), e.g. "key lost".
    pub reason: String,
    /// When it was signed (unix seconds); a node refuses one much older or newer than its clock.
    pub issued_at: i64,
    /// 32 lowercase hex characters, random: each re-enrolment is applied once.
    pub id: String,
}

/// Largest accepted difference between a re-enrolment's `issued_at` and the node's clock.
pub const REENROLMENT_MAX_AGE_SECONDS: i64 = 24 * 60 * 60;
/// Longest accepted re-enrolment reason, in bytes.
pub const MAX_REASON_BYTES: usize = 200;

impl Versioned for Reenrolment {
    const OBJECT: Object = Object::Reenrolment;
    const DOMAIN: &'static str = REENROLMENT_DOMAIN;
}

impl Reenrolment {
    /// Signs the re-enrolment with the hospital admin key or the patient's old key.
    pub fn sign(self, key: &KeyPair) -> Envelope {
        Envelope::seal(REENROLMENT_DOMAIN, &self, key)
    }
}

/// A re-enrolment whose signature, signer, node, time and contents were
/// checked. Only [`verify_reenrolment`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedReenrolment {
    reenrolment: Reenrolment,
    /// The key that is replaced.
    pub old_key: PublicKey,
    /// True if the hospital admin key signed it, false if the old patient key did.
    pub by_hospital: bool,
}

impl Deref for VerifiedReenrolment {
    type Target = Reenrolment;
    fn deref(&self) -> &Reenrolment {
        &self.reenrolment
    }
}

/// Verifies a re-enrolment submitted to the node `node` at `now`.
///
/// `hospital_admin` is the key that signs the node policy; `enrolled` returns
/// the key enrolled for a pseudonym today. The signer must be one of the two.
pub fn verify_reenrolment(
    envelope: &Envelope,
    node: &PublicKey,
    hospital_admin: &PublicKey,
    enrolled: &dyn Fn(&Pseudonym) -> Option<PublicKey>,
    now: i64,
) -> Result<VerifiedReenrolment, Error> {
    let r: Reenrolment = signed::open(envelope)?;
    check_node(Object::Reenrolment, &r.node, node)?;
    let old_key = enrolled(&r.patient).ok_or(Error::NotEnrolled { patient: r.patient })?;
    let by_hospital = envelope.signer == *hospital_admin;
    if !by_hospital && envelope.signer != old_key {
        return Err(Error::ReenrolmentNotAuthorised {
            patient: r.patient,
            signer: envelope.signer,
        });
    }
    if !valid_token_id(&r.id) {
        return Err(invalid_reenrolment(format!(
            "id {:?} is not {TOKEN_ID_LEN} lowercase hex characters",
            r.id
        )));
    }
    if r.new_key == old_key {
        return Err(invalid_reenrolment(
            "the new key is the key already enrolled".into(),
        ));
    }
    if r.reason.len() > MAX_REASON_BYTES {
        return Err(invalid_reenrolment(format!(
            "reason is over {MAX_REASON_BYTES} bytes"
        )));
    }
    if now.abs_diff(r.issued_at) > REENROLMENT_MAX_AGE_SECONDS.unsigned_abs() {
        return Err(invalid_reenrolment(format!(
            "issued at {} is more than a day away from this node's clock ({now})",
            r.issued_at
        )));
    }
    Ok(VerifiedReenrolment {
        reenrolment: r,
        old_key,
        by_hospital,
    })
}

fn invalid_reenrolment(reason: String) -> Error {
    Error::InvalidConsent(format!("re-enrolment: {reason}"))
}

impl Versioned for Token {
    const OBJECT: Object = Object::ConsentToken;
    const DOMAIN: &'static str = TOKEN_DOMAIN;
}

impl Versioned for Revocation {
    const OBJECT: Object = Object::Revocation;
    const DOMAIN: &'static str = REVOCATION_DOMAIN;
}

witmed_crypto::single_version!(Token, "consent token", TOKEN_VERSION);
witmed_crypto::single_version!(Revocation, "consent revocation", REVOCATION_VERSION);
witmed_crypto::single_version!(Reenrolment, "patient re-enrolment", REENROLMENT_VERSION);

/// The token id for 16 random bytes (the caller draws them: this crate does no IO).
pub fn token_id(random: [u8; 16]) -> String {
    random.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn valid_token_id(id: &str) -> bool {
    id.len() == TOKEN_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Token {
    /// Signs the token with the patient's key.
    pub fn sign(self, patient_key: &KeyPair) -> Envelope {
        Envelope::seal(TOKEN_DOMAIN, &self, patient_key)
    }

    /// Whether the token's window contains `now`: `not_before <= now < expires`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.expires
    }
}

impl Revocation {
    /// Signs the revocation with the patient's key.
    pub fn sign(self, patient_key: &KeyPair) -> Envelope {
        Envelope::seal(REVOCATION_DOMAIN, &self, patient_key)
    }
}

/// A consent token whose signature, node, signer and contents were checked.
///
/// Only [`verify_token`] makes one, so holding a `Verified` is proof of those
/// checks. It derefs to the [`Token`].
#[derive(Debug, Clone)]
pub struct Verified {
    token: Token,
    terms: Terms,
    envelope: Envelope,
}

impl Verified {
    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The token's purposes, parsed.
    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    /// The signed form, to store and re-verify later.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl Deref for Verified {
    type Target = Token;
    fn deref(&self) -> &Token {
        &self.token
    }
}

/// A revocation whose signature, node and signer were checked. Only
/// [`verify_revocation`] makes one. It derefs to the [`Revocation`].
#[derive(Debug, Clone)]
pub struct VerifiedRevocation {
    revocation: Revocation,
    envelope: Envelope,
}

impl VerifiedRevocation {
    /// The revocation.
    pub fn revocation(&self) -> &Revocation {
        &self.revocation
    }

    /// The signed form, to store.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Whether this revocation withdraws `token`. Apply a revocation only to
    /// a token it revokes: a patient may withdraw only their own consent.
    pub fn revokes(&self, token: &Verified) -> bool {
        self.revocation.token_id == token.id
            && self.revocation.patient == token.patient
            && self.revocation.node == token.node
    }
}

impl Deref for VerifiedRevocation {
    type Target = Revocation;
    fn deref(&self) -> &Revocation {
        &self.revocation
    }
}

/// Verifies a consent token submitted to the node `node` at time `now`.
///
/// `enrolled` returns the patient key staff enrolled for a pseudonym. A token
/// whose window has not started is accepted (it becomes eligible later); one
/// already expired at `now` is refused.
pub fn verify_token(
    envelope: &Envelope,
    node: &PublicKey,
    enrolled: &dyn Fn(&Pseudonym) -> Option<PublicKey>,
    now: i64,
) -> Result<Verified, Error> {
    let token: Token = signed::open(envelope)?;
    check_node(Object::ConsentToken, &token.node, node)?;
    check_patient_key(&token.patient, &envelope.signer, enrolled)?;
    let terms = check_contents(&token)?;
    if now >= token.expires {
        return Err(Error::Expired {
            what: Object::ConsentToken,
            expires: token.expires,
            now,
        });
    }
    Ok(Verified {
        token,
        terms,
        envelope: envelope.clone(),
    })
}

/// Verifies a revocation submitted to the node `node`. Revocations are
/// honoured whenever they arrive, so there is no time check.
pub fn verify_revocation(
    envelope: &Envelope,
    node: &PublicKey,
    enrolled: &dyn Fn(&Pseudonym) -> Option<PublicKey>,
) -> Result<VerifiedRevocation, Error> {
    let revocation: Revocation = signed::open(envelope)?;
    check_node(Object::Revocation, &revocation.node, node)?;
    check_patient_key(&revocation.patient, &envelope.signer, enrolled)?;
    if !valid_token_id(&revocation.token_id) {
        return Err(invalid_id(&revocation.token_id));
    }
    Ok(VerifiedRevocation {
        revocation,
        envelope: envelope.clone(),
    })
}

pub(crate) fn check_node(
    what: Object,
    intended: &PublicKey,
    this: &PublicKey,
) -> Result<(), Error> {
    if intended != this {
        return Err(Error::OtherNode {
            what,
            intended: *intended,
            this: *this,
        });
    }
    Ok(())
}

pub(crate) fn check_patient_key(
    patient: &Pseudonym,
    signer: &PublicKey,
    enrolled: &dyn Fn(&Pseudonym) -> Option<PublicKey>,
) -> Result<(), Error> {
    match enrolled(patient) {
        None => Err(Error::NotEnrolled { patient: *patient }),
        Some(key) if key != *signer => Err(Error::WrongPatientKey {
            patient: *patient,
            signer: *signer,
        }),
        Some(_) => Ok(()),
    }
}

fn check_contents(token: &Token) -> Result<Terms, Error> {
    if !valid_token_id(&token.id) {
        return Err(invalid_id(&token.id));
    }
    let terms = Terms::parse(&token.purposes)?;
    // An empty set would make a token that permits nothing: surely a mistake.
    if token.categories.is_empty() {
        return Err(Error::InvalidConsent("it lists no data categories".into()));
    }
    if token.modes.is_empty() {
        return Err(Error::InvalidConsent("it lists no privacy modes".into()));
    }
    if token.not_before >= token.expires {
        return Err(Error::InvalidConsent(format!(
            "not_before {} is not before expires {}",
            token.not_before, token.expires
        )));
    }
    Ok(terms)
}

fn invalid_id(id: &str) -> Error {
    Error::InvalidConsent(format!(
        "token id {id:?} is not {TOKEN_ID_LEN} lowercase hex characters"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn keys() -> (KeyPair, KeyPair, KeyPair, PublicKey) {
        let hospital = KeyPair::from_seed(witmed_crypto::Role::Hospital, &[1; 32]);
        let old = KeyPair::from_seed(witmed_crypto::Role::Patient, &[2; 32]);
        let new = KeyPair::from_seed(witmed_crypto::Role::Patient, &[3; 32]);
        (hospital, old, new, PublicKey::from_bytes([9; 32]))
    }

    fn record(node: PublicKey, new: &KeyPair) -> Reenrolment {
        Reenrolment {
            version: REENROLMENT_VERSION,
            node,
            patient: Pseudonym([4; 16]),
            new_key: new.public(),
            reason: "key lost".into(),
            issued_at: NOW,
            id: token_id([5; 16]),
        }
    }

    fn check(r: Reenrolment, signer: &KeyPair) -> Result<VerifiedReenrolment, Error> {
        let (hospital, old, _, node) = keys();
        let old_key = old.public();
        verify_reenrolment(
            &r.sign(signer),
            &node,
            &hospital.public(),
            &|_| Some(old_key),
            NOW,
        )
    }

    #[test]
    fn a_reenrolment_needs_the_hospital_key_or_the_old_patient_key() {
        let (hospital, old, new, node) = keys();
        let by_hospital = check(record(node, &new), &hospital).unwrap();
        assert!(by_hospital.by_hospital && by_hospital.old_key == old.public());
        assert!(!check(record(node, &new), &old).unwrap().by_hospital);
        let stranger = KeyPair::from_seed(witmed_crypto::Role::Hospital, &[7; 32]);
        let refused = check(record(node, &new), &stranger).unwrap_err();
        assert_eq!(refused.error_code(), "reenrolment_not_authorised");
        // The new key cannot approve itself.
        let refused = check(record(node, &new), &new).unwrap_err();
        assert_eq!(refused.error_code(), "reenrolment_not_authorised");
    }

    #[test]
    fn a_reenrolment_for_another_node_stale_or_to_the_same_key_is_refused() {
        let (hospital, old, new, node) = keys();
        let other = check(record(PublicKey::from_bytes([8; 32]), &new), &hospital);
        assert_eq!(other.unwrap_err().error_code(), "other_node");
        let mut stale = record(node, &new);
        stale.issued_at = NOW - REENROLMENT_MAX_AGE_SECONDS - 1;
        assert_eq!(
            check(stale, &hospital).unwrap_err().error_code(),
            "invalid_consent"
        );
        let same = record(node, &old);
        assert_eq!(
            check(same, &hospital).unwrap_err().error_code(),
            "invalid_consent"
        );
        let mut long = record(node, &new);
        long.reason = "x".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(
            check(long, &hospital).unwrap_err().error_code(),
            "invalid_consent"
        );
    }
}

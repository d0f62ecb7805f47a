//! Consent operations on an open node: enrolment, submission of signed tokens and revocations, simulation.
//!
//! Each operation verifies first, writes durably with its audit entry, and
//! only then changes the in-memory registry that queries read.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey, Role};
use witmed_policies::consent::{self, Token};

use crate::audit;
use crate::consents::{put_enrolment, put_signed, revocation_key, token_key};
use crate::node::Node;
use crate::store::{self, cf};
use witmed_protocol::vocab::{Category, Mode};

/// Errors from consent operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] witmed_policies::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("patient {0} has no record at this node; import the patient's data before enrolling")]
    UnknownPatient(Pseudonym),
    #[error(
        "patient {0} is already enrolled with another key; a key change needs hospital review"
    )]
    AlreadyEnrolled(Pseudonym),
    #[error("consent token {0} was already submitted")]
    DuplicateToken(String),
    #[error("no consent token {0} at this node; submit the token before its revocation")]
    UnknownToken(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Policy(e) => e.error_code(),
            Error::Store(_) => "store_failed",
            Error::UnknownPatient(_) => "unknown_patient",
            Error::AlreadyEnrolled(_) => "already_enrolled",
            Error::DuplicateToken(_) => "duplicate_token",
            Error::UnknownToken(_) => "unknown_token",
            Error::Invalid(_) => "invalid",
        }
    }
}

/// What a submitted file was.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Token {
        id: String,
        patient: Pseudonym,
    },
    Revocation {
        token_id: String,
        patient: Pseudonym,
    },
}

/// Binds `key` to patient `p` (hospital staff, at registration).
pub fn enrol(node: &Node, p: Pseudonym, key: PublicKey, now: i64) -> Result<(), Error> {
    if !node.store.contains(cf::PATIENTS, &p.0)? {
        return Err(Error::UnknownPatient(p));
    }
    let mut registry = crate::locks::write(&node.consents);
    match registry.enrolled_key(&p) {
        Some(existing) if existing == key => return Ok(()),
        Some(_) => return Err(Error::AlreadyEnrolled(p)),
        None => {}
    }
    let mut batch = node.store.batch();
    put_enrolment(&mut batch, &p, key, now, false)?;
    let detail = format!("patient {p} enrolled with key {}", key.short());
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "patient.enrolled", "operator", detail),
    )?;
    node.store.write_durable(batch)?;
    registry.enrol(p, key);
    Ok(())
}

/// Verifies and stores a signed consent token or revocation (text form).
pub fn submit(node: &Node, text: &str, now: i64) -> Result<Submitted, Error> {
    let envelope = witmed_policies::parse_signed(text)?;
    if envelope.domain == consent::REVOCATION_DOMAIN {
        submit_revocation(node, &envelope, text, now)
    } else {
        submit_token(node, text, now)
    }
}

fn submit_token(node: &Node, text: &str, now: i64) -> Result<Submitted, Error> {
    let mut registry = crate::locks::write(&node.consents);
    let verified = registry.verify_token_text(text, &node.id(), now, false)?;
    let token = verified.token().clone();
    if registry.has_token(&token.id) {
        return Err(Error::DuplicateToken(token.id));
    }
    let mut batch = node.store.batch();
    put_signed(&mut batch, &token_key(&token.id), text, false)?;
    let detail = format!(
        "consent token {} for patient {}: purposes {}, until {}",
        token.id,
        token.patient,
        token.purposes.join(","),
        token.expires
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "consent.granted", verified_signer(text), detail),
    )?;
    node.store.write_durable(batch)?;
    registry.add_token(verified, false);
    Ok(Submitted::Token {
        id: token.id,
        patient: token.patient,
    })
}

fn submit_revocation(
    node: &Node,
    envelope: &Envelope,
    text: &str,
    now: i64,
) -> Result<Submitted, Error> {
    let mut registry = crate::locks::write(&node.consents);
    let verified = registry.verify_revocation_envelope(envelope, &node.id())?;
    let revocation = verified.revocation().clone();
    // One patient must not revoke another's token: the revocation must name
    // a token this node holds, for the same patient and node.
    match registry.token(&revocation.token_id) {
        Some(token) if verified.revokes(token) => {}
        Some(_) => {
            return Err(Error::Invalid(format!(
                "revocation of token {} is not signed by that token's patient",
                revocation.token_id
            )))
        }
        None => return Err(Error::UnknownToken(revocation.token_id)),
    }
    let mut batch = node.store.batch();
    put_signed(
        &mut batch,
        &revocation_key(&revocation.token_id),
        text,
        false,
    )?;
    let detail = format!(
        "consent token {} of patient {} revoked",
        revocation.token_id, revocation.patient
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "consent.revoked", envelope.signer.to_hex(), detail),
    )?;
    node.store.write_durable(batch)?;
    registry.revoke(&revocation.token_id);
    Ok(Submitted::Revocation {
        token_id: revocation.token_id,
        patient: revocation.patient,
    })
}

fn verified_signer(text: &str) -> String {
    witmed_policies::parse_signed(text)
        .map(|e| e.signer.to_hex())
        .unwrap_or_default()
}

/// What `consent simulate` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Simulated {
    pub patients: usize,
    pub enrolled: usize,
    pub tokens: usize,
    pub already: usize,
}

/// Enrols generated keys and signs tokens for a seeded share of patients.
///
/// For demonstrations and simulation only: every enrolment and token is
/// marked simulated in the store, and the keys are derived from the seed.
pub fn simulate(
    node: &Node,
    rate: f64,
    purposes: &[String],
    seed: u64,
    now: i64,
) -> Result<Simulated, Error> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(Error::Invalid(format!(
            "--rate must be within 0 and 1, got {rate}"
        )));
    }
    let pseudonyms = all_patients(node)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Simulated {
        patients: pseudonyms.len(),
        ..Simulated::default()
    };
    let mut registry = crate::locks::write(&node.consents);
    let mut batch = node.store.batch();
    let mut pending = Vec::new();
    for p in pseudonyms {
        if !rng.gen_bool(rate) {
            continue;
        }
        let key = simulated_patient_key(seed, &p);
        let token = simulated_token(node.id(), p, purposes, seed, now);
        if registry.has_token(&token.id) {
            out.already += 1;
            continue;
        }
        if registry.enrolled_key(&p).is_none() {
            put_enrolment(&mut batch, &p, key.public(), now, true)?;
            registry.enrol(p, key.public());
            out.enrolled += 1;
        }
        let id = token.id.clone();
        let text = token.sign(&key).to_text();
        put_signed(&mut batch, &token_key(&id), &text, true)?;
        pending.push(text);
    }
    let detail = format!(
        "SIMULATED consent: {} tokens for purposes {} (seed {seed}, rate {rate})",
        pending.len(),
        purposes.join(",")
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "consent.simulated", "operator", detail),
    )?;
    node.store.write_durable(batch)?;
    for text in pending {
        let verified = registry.verify_token_text(&text, &node.id(), now, false)?;
        registry.add_token(verified, true);
        out.tokens += 1;
    }
    Ok(out)
}

fn all_patients(node: &Node) -> Result<Vec<Pseudonym>, Error> {
    let mut out = Vec::new();
    node.store.scan_prefix(cf::PATIENTS, b"", |key, _| {
        if let Ok(bytes) = key.try_into() {
            out.push(Pseudonym(bytes));
        }
        Ok(())
    })?;
    Ok(out)
}

/// A simulated patient's key, reproducible from the seed.
pub fn simulated_patient_key(seed: u64, p: &Pseudonym) -> KeyPair {
    let mut input = b"witmed/simulated-patient-key".to_vec();
    input.extend_from_slice(&seed.to_le_bytes());
    input.extend_from_slice(&p.0);
    KeyPair::from_seed(Role::Patient, &witmed_crypto::sha256(&input))
}

fn simulated_token(
    node: PublicKey,
    patient: Pseudonym,
    purposes: &[String],
    seed: u64,
    now: i64,
) -> Token {
    let mut input = b"witmed/simulated-token".to_vec();
    input.extend_from_slice(&seed.to_le_bytes());
    input.extend_from_slice(&patient.0);
    input.extend_from_slice(purposes.join(",").as_bytes());
    let id = hex::encode(&witmed_crypto::sha256(&input)[..16]);
    Token {
        version: consent::TOKEN_VERSION,
        id,
        node,
        patient,
        purposes: purposes.to_vec(),
        categories: Category::ALL.into_iter().collect(),
        modes: [Mode::Dp, Mode::Encrypted].into_iter().collect(),
        not_before: now - 86_400,
        expires: now + 365 * 86_400,
        simulated: true,
    }
}

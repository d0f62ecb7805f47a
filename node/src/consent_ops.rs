//! Consent operations on an open node: enrolment, re-enrolment, submission of signed tokens and revocations, storing demonstration consent.
//!
//! Each operation verifies first, writes durably with its audit entry, and
//! only then changes the in-memory registry that queries read.

use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey, Role};
use witmed_policies::consent::{self, Verified};

use crate::audit;
use crate::consents::{
    put_enrolment, put_signed, reenrolment_key, revocation_key, supersede_token, token_key,
};
use crate::node::Node;
use crate::store::{self, cf};

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
        "patient {0} is already enrolled with another key; to replace a lost key use `witmed patient reenrol` with the hospital admin key or the patient's old key"
    )]
    AlreadyEnrolled(Pseudonym),
    #[error("consent token {0} was already submitted")]
    DuplicateToken(String),
    #[error("no consent token {0} at this node; submit the token before its revocation")]
    UnknownToken(String),
    #[error("re-enrolment {0} was already applied at this node; a new key change needs a new re-enrolment")]
    DuplicateReenrolment(String),
    #[error("this node's policy does not allow demonstration data (allow_demonstration_data = false); simulated consent is only for demonstration nodes: sign and install a policy with allow_demonstration_data = true, never on a node with real patients")]
    DemonstrationDataNotAllowed,
    #[error("the OS random source failed; retry, and check the system's entropy source")]
    Random,
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
            Error::DuplicateReenrolment(_) => "duplicate_reenrolment",
            Error::DemonstrationDataNotAllowed => "demonstration_data_not_allowed",
            Error::Random => "random_failed",
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
///
/// A simulated enrolment is replaced (its tokens stop counting); a real one
/// is never: changing a real patient's key is [`reenrol`]'s, under dual control.
pub fn enrol(node: &Node, p: Pseudonym, key: PublicKey, now: i64) -> Result<(), Error> {
    if !node.store.contains(cf::PATIENTS, &p.0)? {
        return Err(Error::UnknownPatient(p));
    }
    let mut registry = crate::locks::write(&node.consents);
    let replaced = match registry.enrolment(&p) {
        Some(e) if e.key == key && !e.simulated => return Ok(()),
        Some(e) if !e.simulated => return Err(Error::AlreadyEnrolled(p)),
        Some(e) => Some(e.key),
        None => None,
    };
    let mut batch = node.store.batch();
    put_enrolment(&mut batch, &p, key, now, false)?;
    let superseded = registry.tokens_not_signed_by(&p, &key);
    for id in &superseded {
        supersede_token(&mut batch, &node.store, id)?;
    }
    let mut detail = format!("patient {p} enrolled with key {}", key.short());
    if let Some(old) = replaced {
        detail.push_str(&format!(
            ", replacing a SIMULATED enrolment (key {}; {} simulated tokens no longer count)",
            old.short(),
            superseded.len()
        ));
    }
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "patient.enrolled", "operator", detail).about(p),
    )?;
    node.store.write_durable(batch)?;
    registry.enrol(p, key, false);
    Ok(())
}

/// What a re-enrolment did.
#[derive(Debug, Clone, PartialEq)]
pub struct Reenrolled {
    pub patient: Pseudonym,
    pub old_key: PublicKey,
    pub new_key: PublicKey,
    /// Tokens signed by the old key, which no longer count.
    pub superseded: usize,
}

/// Verifies and applies a signed re-enrolment (text form): the patient's
/// enrolled key is replaced and the old key's tokens stop counting.
pub fn reenrol(node: &Node, text: &str, now: i64) -> Result<Reenrolled, Error> {
    let envelope = witmed_policies::parse_signed(text)?;
    let mut registry = crate::locks::write(&node.consents);
    let lookup = |q: &Pseudonym| registry.enrolled_key(q);
    let verified = consent::verify_reenrolment(
        &envelope,
        &node.id(),
        &node.config.hospital_key,
        &lookup,
        now,
    )?;
    let record_key = reenrolment_key(&verified.id);
    if node.store.contains(cf::CONSENTS, &record_key)? {
        return Err(Error::DuplicateReenrolment(verified.id.clone()));
    }
    let p = verified.patient;
    let mut batch = node.store.batch();
    put_enrolment(&mut batch, &p, verified.new_key, now, false)?;
    let superseded = registry.tokens_not_signed_by(&p, &verified.new_key);
    for id in &superseded {
        supersede_token(&mut batch, &node.store, id)?;
    }
    put_signed(&mut batch, &record_key, text, false)?;
    let detail = format!(
        "patient {p}: key {} replaced by {} under re-enrolment {} signed by the {} (reason {:?}); {} tokens of the old key no longer count",
        verified.old_key.short(),
        verified.new_key.short(),
        verified.id,
        if verified.by_hospital { "hospital admin key" } else { "patient's old key" },
        verified.reason,
        superseded.len()
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "patient.reenrolled", envelope.signer.to_hex(), detail).about(p),
    )?;
    node.store.write_durable(batch)?;
    registry.enrol(p, verified.new_key, false);
    Ok(Reenrolled {
        patient: p,
        old_key: verified.old_key,
        new_key: verified.new_key,
        superseded: superseded.len(),
    })
}

/// Verifies and stores a signed consent token or revocation (text form).
pub fn submit(node: &Node, text: &str, now: i64) -> Result<Submitted, Error> {
    let envelope = witmed_policies::parse_signed(text)?;
    if envelope.domain == consent::REVOCATION_DOMAIN {
        submit_revocation(node, &envelope, text, now)
    } else {
        submit_token(node, &envelope, text, now)
    }
}

fn submit_token(
    node: &Node,
    envelope: &Envelope,
    text: &str,
    now: i64,
) -> Result<Submitted, Error> {
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
        &audit::Entry::new(now, "consent.granted", envelope.signer.to_hex(), detail)
            .about(token.patient),
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
        &audit::Entry::new(now, "consent.revoked", envelope.signer.to_hex(), detail)
            .about(revocation.patient),
    )?;
    node.store.write_durable(batch)?;
    registry.revoke(&revocation.token_id);
    Ok(Submitted::Revocation {
        token_id: revocation.token_id,
        patient: revocation.patient,
    })
}

/// What `consent simulate` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Simulated {
    pub patients: usize,
    pub enrolled: usize,
    pub tokens: usize,
    /// Chosen by the seed but already enrolled (real or simulated): left alone.
    pub already: usize,
}

/// Stores simulated consent for the patients `chosen` picks, each made by `consent_for`.
///
/// For demonstration nodes only: refused unless the node policy allows
/// demonstration data. Every enrolment and token is marked simulated in the
/// store and counts only while the policy allows it. Making the keys and
/// tokens is witmed-lab's (`consent simulate`), never the hospital binary's;
/// this only stores them. `chosen` is asked for every patient in store order,
/// so a seeded choice depends on the seed alone; patients already enrolled
/// are skipped, and everything is written in one synced batch or not at all.
pub fn store_simulated(
    node: &Node,
    mut chosen: impl FnMut() -> bool,
    mut consent_for: impl FnMut(Pseudonym) -> Result<(PublicKey, Verified, String), Error>,
    describe: impl FnOnce(usize, usize) -> String,
    now: i64,
) -> Result<Simulated, Error> {
    if !node.policy().allow_demonstration_data {
        return Err(Error::DemonstrationDataNotAllowed);
    }
    let pseudonyms = all_patients(node)?;
    let mut out = Simulated {
        patients: pseudonyms.len(),
        ..Simulated::default()
    };
    let mut registry = crate::locks::write(&node.consents);
    let mut batch = node.store.batch();
    let mut made: Vec<(Pseudonym, PublicKey, Verified)> = Vec::new();
    for p in pseudonyms {
        if !chosen() {
            continue;
        }
        if registry.enrolment(&p).is_some() {
            out.already += 1;
            continue;
        }
        let (key, verified, text) = consent_for(p)?;
        put_enrolment(&mut batch, &p, key, now, true)?;
        put_signed(&mut batch, &token_key(&verified.id), &text, true)?;
        made.push((p, key, verified));
    }
    let detail = describe(made.len(), out.already);
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "consent.simulated", "operator", detail),
    )?;
    node.store.write_durable(batch)?;
    for (p, key, verified) in made {
        registry.enrol(p, key, true);
        registry.add_token(verified, true);
        out.enrolled += 1;
        out.tokens += 1;
    }
    Ok(out)
}

/// Installs a new policy (next serial) that allows demonstration data, so
/// witmed-lab's `consent simulate` may run and its simulated consent counts.
/// For the demo, simnet, benchmarks and tests: never on a node with real patients.
pub fn allow_demonstration_data(node: &Node, now: i64) -> Result<(), crate::node::Error> {
    let hospital = KeyPair::load_role(&node.dir.hospital_key(), Role::Hospital)?;
    let mut policy = node.policy();
    policy.serial += 1;
    policy.allow_demonstration_data = true;
    policy.issued_at = now;
    node.install_policy(&policy.sign(&hospital).to_text(), now)?;
    Ok(())
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

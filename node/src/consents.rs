//! The node's consent registry: patient key enrolments, verified consent tokens and revocations.
//!
//! Signed objects are stored as their signed text and verified again when
//! the registry is loaded, so a record altered in the store is refused
//! rather than trusted. The in-memory registry is updated only after the
//! durable write, so a revocation excludes the patient from the very next
//! query and survives a crash.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, Pseudonym, PublicKey};
use witmed_policies::consent::{self, Verified, VerifiedRevocation};
use witmed_policies::evaluate::{self, Use};

use crate::store::{cf, Batch, Error as StoreError, Store, Versioned, RECORD_VERSION};

/// A patient's public key bound to their pseudonym by hospital staff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolment {
    pub version: u32,
    pub key: PublicKey,
    /// Unix seconds.
    pub at: i64,
    /// Made by `witmed consent simulate`, not by a real patient.
    pub simulated: bool,
}

/// A signed object as stored: its text form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSigned {
    pub version: u32,
    pub text: String,
    pub simulated: bool,
}

impl Versioned for Enrolment {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for StoredSigned {
    fn version(&self) -> u32 {
        self.version
    }
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(rest);
    k
}

/// Key of a patient's enrolment.
pub fn enrolment_key(p: &Pseudonym) -> Vec<u8> {
    key(b"e/", &p.0)
}
/// Key of a token.
pub fn token_key(id: &str) -> Vec<u8> {
    key(b"t/", id.as_bytes())
}
/// Key of a revocation.
pub fn revocation_key(id: &str) -> Vec<u8> {
    key(b"r/", id.as_bytes())
}

/// The registry in memory.
#[derive(Debug, Default)]
pub struct Registry {
    enrolled: HashMap<Pseudonym, PublicKey>,
    tokens: HashMap<Pseudonym, Vec<Verified>>,
    token_ids: BTreeSet<String>,
    revoked: BTreeSet<String>,
    simulated_tokens: usize,
    /// Bumped on every change: cached eligibility of an older generation is stale.
    generation: u64,
    /// Every token's not_before and expires: eligibility can only change at these times.
    boundaries: BTreeSet<i64>,
}

/// Counts for `witmed node status` and `consent list`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub enrolled: usize,
    pub tokens: usize,
    pub simulated_tokens: usize,
    pub revoked: usize,
    pub patients_with_tokens: usize,
}

impl Registry {
    /// Loads and re-verifies everything in the consents family.
    ///
    /// Tokens that no longer verify (altered in the store) are left out and
    /// reported in the returned list.
    pub fn load(
        store: &Store,
        node: &PublicKey,
        now: i64,
    ) -> Result<(Registry, Vec<String>), StoreError> {
        let mut registry = Registry::default();
        store.scan_records(cf::CONSENTS, b"e/", |k, e: Enrolment| {
            if let Ok(p) = k[2..].try_into().map(Pseudonym) {
                registry.enrolled.insert(p, e.key);
            }
            Ok(())
        })?;
        let mut problems = Vec::new();
        let mut stored_tokens = Vec::new();
        store.scan_records(cf::CONSENTS, b"t/", |_, s: StoredSigned| {
            stored_tokens.push(s);
            Ok(())
        })?;
        for s in stored_tokens {
            match registry.verify_token_text(&s.text, node, now, true) {
                Ok(v) => registry.add_token(v, s.simulated),
                Err(e) => problems.push(e.to_string()),
            }
        }
        store.scan_records(cf::CONSENTS, b"r/", |k, _: StoredSigned| {
            registry
                .revoked
                .insert(String::from_utf8_lossy(&k[2..]).into_owned());
            Ok(())
        })?;
        Ok((registry, problems))
    }

    /// The key enrolled for `p`.
    pub fn enrolled_key(&self, p: &Pseudonym) -> Option<PublicKey> {
        self.enrolled.get(p).copied()
    }

    /// Records an enrolment in memory (after it is durable).
    pub fn enrol(&mut self, p: Pseudonym, key: PublicKey) {
        self.enrolled.insert(p, key);
        self.generation += 1;
    }

    /// Changes with every enrolment, token and revocation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The time range around `now` in which no token starts or ends, so
    /// eligibility computed at `now` holds throughout: `[from, until)`.
    pub fn stable_range(&self, now: i64) -> (i64, i64) {
        let from = self
            .boundaries
            .range(..=now)
            .next_back()
            .copied()
            .unwrap_or(i64::MIN);
        let until = self
            .boundaries
            // Excluded, not `now + 1..`: total at i64::MAX.
            .range((std::ops::Bound::Excluded(now), std::ops::Bound::Unbounded))
            .next()
            .copied()
            .unwrap_or(i64::MAX);
        (from, until)
    }

    /// Verifies a signed token against this registry's enrolments.
    ///
    /// `at_load`: tokens loaded from the store may have expired since they were
    /// submitted; they are kept (and are simply not eligible).
    pub fn verify_token_text(
        &self,
        text: &str,
        node: &PublicKey,
        now: i64,
        at_load: bool,
    ) -> Result<Verified, witmed_policies::Error> {
        let envelope = witmed_policies::parse_signed(text)?;
        let lookup = |p: &Pseudonym| self.enrolled_key(p);
        // An expired token is refused at submission, but one that expired
        // while stored is kept so that the audit trail stays whole.
        let check_time = if at_load { i64::MIN / 2 } else { now };
        consent::verify_token(&envelope, node, &lookup, check_time)
    }

    /// Verifies a signed revocation.
    pub fn verify_revocation_envelope(
        &self,
        envelope: &Envelope,
        node: &PublicKey,
    ) -> Result<VerifiedRevocation, witmed_policies::Error> {
        let lookup = |p: &Pseudonym| self.enrolled_key(p);
        consent::verify_revocation(envelope, node, &lookup)
    }

    /// The verified token with this id.
    pub fn token(&self, id: &str) -> Option<&Verified> {
        self.tokens.values().flatten().find(|v| v.token().id == id)
    }

    /// True if a token with this id is known.
    pub fn has_token(&self, id: &str) -> bool {
        self.token_ids.contains(id)
    }

    /// Adds a verified token (after it is durable).
    pub fn add_token(&mut self, token: Verified, simulated: bool) {
        self.token_ids.insert(token.token().id.clone());
        self.boundaries.insert(token.token().not_before);
        self.boundaries.insert(token.token().expires);
        self.generation += 1;
        if simulated {
            self.simulated_tokens += 1;
        }
        self.tokens
            .entry(token.token().patient)
            .or_default()
            .push(token);
    }

    /// Marks a token revoked (after the revocation is durable).
    pub fn revoke(&mut self, token_id: &str) {
        self.revoked.insert(token_id.to_string());
        self.generation += 1;
    }

    /// True if the patient may be included in a query with this use at `now`.
    pub fn eligible(&self, p: &Pseudonym, use_: &Use, now: i64) -> bool {
        let Some(tokens) = self.tokens.get(p) else {
            return false;
        };
        let refs: Vec<&Verified> = tokens.iter().collect();
        evaluate::patient_eligible(&refs, &self.revoked, use_, now)
    }

    /// Every token, for listing.
    pub fn tokens(&self) -> impl Iterator<Item = &Verified> {
        self.tokens.values().flatten()
    }

    /// True if the token was revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains(id)
    }

    /// Counts.
    pub fn counts(&self) -> Counts {
        Counts {
            enrolled: self.enrolled.len(),
            tokens: self.token_ids.len(),
            simulated_tokens: self.simulated_tokens,
            revoked: self.revoked.len(),
            patients_with_tokens: self.tokens.len(),
        }
    }
}

/// Adds an enrolment to a batch.
pub fn put_enrolment(
    batch: &mut Batch<'_>,
    p: &Pseudonym,
    key: PublicKey,
    at: i64,
    simulated: bool,
) -> Result<(), StoreError> {
    let record = Enrolment {
        version: RECORD_VERSION,
        key,
        at,
        simulated,
    };
    batch.put(cf::CONSENTS, &enrolment_key(p), &record)
}

/// Adds a signed object to a batch.
pub fn put_signed(
    batch: &mut Batch<'_>,
    key: &[u8],
    text: &str,
    simulated: bool,
) -> Result<(), StoreError> {
    let record = StoredSigned {
        version: RECORD_VERSION,
        text: text.to_string(),
        simulated,
    };
    batch.put(cf::CONSENTS, key, &record)
}

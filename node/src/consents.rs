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

use crate::store::{cf, Batch, Error as StoreError, Store, RECORD_VERSION};

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

witmed_crypto::single_version!(Enrolment, "enrolment", RECORD_VERSION);
witmed_crypto::single_version!(StoredSigned, "stored signed object", RECORD_VERSION);

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
/// Key of a token whose patient key was replaced (re-enrolment): kept for
/// the audit trail, never loaded as consent.
pub fn superseded_key(id: &str) -> Vec<u8> {
    key(b"s/", id.as_bytes())
}
/// Key of an applied re-enrolment (by its id), so each is applied once.
pub fn reenrolment_key(id: &str) -> Vec<u8> {
    key(b"n/", id.as_bytes())
}

/// An enrolled patient key and whether `consent simulate` made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Enrolled {
    pub key: PublicKey,
    pub simulated: bool,
}

/// A verified token and whether it is simulated (demonstration data).
#[derive(Debug, Clone)]
struct Held {
    token: Verified,
    simulated: bool,
}

/// The registry in memory.
#[derive(Debug, Default)]
pub struct Registry {
    enrolled: HashMap<Pseudonym, Enrolled>,
    tokens: HashMap<Pseudonym, Vec<Held>>,
    token_ids: BTreeSet<String>,
    revoked: BTreeSet<String>,
    simulated_tokens: usize,
    /// Bumped on every change: cached eligibility of an older generation is stale.
    generation: u64,
    /// Every token's not_before and expires: eligibility can only change at these times.
    boundaries: BTreeSet<i64>,
}

/// Counts for `witmed node status` and `consent list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
            if let Some(p) = k.get(2..).and_then(|b| b.try_into().ok()).map(Pseudonym) {
                let enrolled = Enrolled {
                    key: e.key,
                    simulated: e.simulated,
                };
                registry.enrolled.insert(p, enrolled);
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
        self.enrolled.get(p).map(|e| e.key)
    }

    /// The enrolment of `p`, with whether it is simulated.
    pub fn enrolment(&self, p: &Pseudonym) -> Option<Enrolled> {
        self.enrolled.get(p).copied()
    }

    /// Records an enrolment in memory (after it is durable).
    ///
    /// Tokens signed by a key that was enrolled before are dropped: the
    /// caller moved them to the superseded prefix in the same durable batch.
    pub fn enrol(&mut self, p: Pseudonym, key: PublicKey, simulated: bool) {
        self.enrolled.insert(p, Enrolled { key, simulated });
        if let Some(held) = self.tokens.get_mut(&p) {
            let before = held.len();
            held.retain(|h| h.token.envelope().signer == key);
            let dropped = before - held.len();
            if held.is_empty() {
                self.tokens.remove(&p);
            }
            if dropped > 0 {
                self.recount();
            }
        }
        self.generation += 1;
    }

    /// Ids of `p`'s tokens that are not signed by `key` (they stop counting
    /// when `key` replaces the enrolled key).
    pub fn tokens_not_signed_by(&self, p: &Pseudonym, key: &PublicKey) -> Vec<String> {
        self.tokens
            .get(p)
            .into_iter()
            .flatten()
            .filter(|h| h.token.envelope().signer != *key)
            .map(|h| h.token.token().id.clone())
            .collect()
    }

    fn recount(&mut self) {
        let held = self.tokens.values().flatten();
        self.token_ids = held.clone().map(|h| h.token.token().id.clone()).collect();
        self.simulated_tokens = held.filter(|h| h.simulated).count();
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
        self.tokens().find(|v| v.token().id == id)
    }

    /// True if a token with this id is known.
    pub fn has_token(&self, id: &str) -> bool {
        self.token_ids.contains(id)
    }

    /// Adds a verified token (after it is durable). A token is simulated if
    /// its stored record or its own signed contents say so.
    pub fn add_token(&mut self, token: Verified, simulated: bool) {
        let simulated = simulated || token.token().simulated;
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
            .push(Held { token, simulated });
    }

    /// Marks a token revoked (after the revocation is durable).
    pub fn revoke(&mut self, token_id: &str) {
        self.revoked.insert(token_id.to_string());
        self.generation += 1;
    }

    /// True if the patient may be included in a query with this use at `now`.
    ///
    /// Simulated tokens count only if `allow_simulated` (the node policy's
    /// `allow_demonstration_data`); otherwise a patient who holds only
    /// simulated consent is never included.
    pub fn eligible(&self, p: &Pseudonym, use_: &Use, now: i64, allow_simulated: bool) -> bool {
        let Some(held) = self.tokens.get(p) else {
            return false;
        };
        let refs: Vec<&Verified> = held
            .iter()
            .filter(|h| allow_simulated || !h.simulated)
            .map(|h| &h.token)
            .collect();
        evaluate::patient_eligible(&refs, &self.revoked, use_, now)
    }

    /// Every token, for listing.
    pub fn tokens(&self) -> impl Iterator<Item = &Verified> {
        self.tokens.values().flatten().map(|h| &h.token)
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

/// Moves stored token `id` to the superseded prefix within `batch`: it
/// stays in the store for the audit trail but is no longer loaded as consent.
pub fn supersede_token(batch: &mut Batch<'_>, store: &Store, id: &str) -> Result<(), StoreError> {
    let from = token_key(id);
    if let Some(record) = store.get::<StoredSigned>(cf::CONSENTS, &from)? {
        batch.put(cf::CONSENTS, &superseded_key(id), &record)?;
    }
    // One key: the range [key, key + 0x00) holds exactly it.
    let mut to = from.clone();
    to.push(0);
    batch.delete_range(cf::CONSENTS, &from, &to);
    Ok(())
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

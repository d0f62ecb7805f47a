//! The audit log's hash chain: entries, their links, the signed head, and how each link is computed.
//!
//! Every entry written today carries a [`Link`]: its sequence number, the
//! hash of the entry before it, a random salt and its own hash:
//!
//! ```text
//! digest = SHA-256("witmed/audit-content/v2" 0x00 | salt | postcard(at, kind, actor, detail, subject))
//!        (with a research use: "witmed/audit-content/v3", and postcard(..., subject, research))
//! hash   = SHA-256("witmed/audit-link/v1" 0x00 | seq u64 BE | prev | digest)
//! ```
//!
//! An entry that records a research use of patients' data (version 3: a
//! `query.answered` entry) also carries a [`ResearchUse`], covered by the
//! digest under the `witmed/audit-content/v3` domain; an entry without one
//! digests exactly as a version 2 entry did, so older chains still verify.
//!
//! The salt keeps an entry's digest from revealing its content (a patient's
//! view of the log carries the digests of other entries, and `detail` has
//! little entropy). Entries written before the chain existed (version 1, no
//! link) form a legacy prefix: their hashes are computed the same way from
//! their storage sequence number and an unsalted digest, starting at
//! [`GENESIS`], so the first chained entry's `prev` pins the whole prefix.
//!
//! This file depends on neither the store nor the rest of `audit`: the store
//! chains pending entries inside its durable write ([`Tail::chain`]), and
//! `audit` verifies what the store holds.

use serde::{Deserialize, Serialize};
use witmed_crypto::versioned::{self, Evolving, Layout};
use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey};

/// Version of an audit entry written today (3: hash-chained, optional
/// subject, optional research use; 2 had no research use).
pub const ENTRY_VERSION: u32 = 3;
/// Version of a signed audit head.
pub const HEAD_VERSION: u32 = 1;
/// Signature domain of a signed audit head.
pub const HEAD_DOMAIN: &str = "witmed/audit-head/v1";
/// The hash "before" the first entry.
pub const GENESIS: [u8; 32] = [0; 32];
/// A head is signed in the write that brings the chain this many entries past the last head...
pub const HEAD_EVERY: u64 = 64;
/// ...or in the first write whose newest entry is this much newer than the last head.
pub const HEAD_INTERVAL_SECONDS: i64 = 3600;
/// Largest signed head accepted when reading one back.
pub const MAX_HEAD_BYTES: usize = 1024;

const CONTENT_DOMAIN: &[u8] = b"witmed/audit-content/v2\0";
const USE_CONTENT_DOMAIN: &[u8] = b"witmed/audit-content/v3\0";
const LEGACY_DOMAIN: &[u8] = b"witmed/audit-legacy/v1\0";
const LINK_DOMAIN: &[u8] = b"witmed/audit-link/v1\0";

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    /// Unix seconds.
    pub at: i64,
    /// Stable kind, e.g. `consent.submitted`, `query.answered`.
    pub kind: String,
    /// Who acted: a public key in hex, or `node` / `operator`.
    pub actor: String,
    /// Human-readable detail; never raw patient data.
    pub detail: String,
    /// The patient the entry concerns, if one (their view of the log selects on it).
    pub subject: Option<Pseudonym>,
    /// Its place in the chain; `None` for a legacy (version 1) entry, and
    /// for a new entry until the store's durable write chains it.
    pub chain: Option<Link>,
    /// The research use the entry records (an answer or an encrypted share
    /// computed from patients' data), if it records one.
    pub research: Option<ResearchUse>,
}

/// One research use of patients' data, as an answer's audit entry records
/// it: what a patient whose data was included sees of it.
///
/// It names no patient and no count: which patients it included is kept in
/// their accounts, by `charge` (the journal number of the answer's
/// `accounts::CohortCharge`, unique at this node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResearchUse {
    /// The journal number of the charge to the included patients' accounts.
    pub charge: u64,
    /// The researcher's query id.
    pub query_id: String,
    /// The ledger's keyed digest of the researcher, the code their accounts use.
    pub researcher: [u8; 16],
    /// The researcher's name and institution, from their credential.
    pub researcher_name: String,
    pub institution: String,
    /// The approved project (empty when the credential names none).
    pub project: String,
    /// The DUO purpose code the query declared (e.g. `HMB`).
    pub purpose: String,
    /// The aggregate's kind (`count`, `mean`, `survival`, ...).
    pub aggregate: String,
    /// `dp` or `encrypted`.
    pub mode: String,
    /// The privacy loss charged to every included patient.
    pub epsilon: f64,
    pub delta: f64,
}

/// An entry's place in the hash chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Its sequence number (also its storage key).
    pub seq: u64,
    /// The hash of the entry before it ([`GENESIS`] for the first).
    pub prev: [u8; 32],
    /// Random, so the digest of a low-entropy entry cannot be guessed.
    pub salt: [u8; 16],
    /// [`link_hash`] of `seq`, `prev` and the entry's digest.
    pub hash: [u8; 32],
}

/// The version 1 layout of an entry, frozen as it was written before the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryV1 {
    pub version: u32,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

impl From<EntryV1> for Entry {
    fn from(old: EntryV1) -> Entry {
        Entry {
            version: ENTRY_VERSION,
            at: old.at,
            kind: old.kind,
            actor: old.actor,
            detail: old.detail,
            subject: None,
            chain: None,
            research: None,
        }
    }
}

/// The version 2 layout of an entry, frozen: chained, no research use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryV2 {
    pub version: u32,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub detail: String,
    pub subject: Option<Pseudonym>,
    pub chain: Option<Link>,
}

impl From<EntryV2> for Entry {
    fn from(old: EntryV2) -> Entry {
        Entry {
            version: ENTRY_VERSION,
            at: old.at,
            kind: old.kind,
            actor: old.actor,
            detail: old.detail,
            subject: old.subject,
            chain: old.chain,
            research: None,
        }
    }
}

impl Evolving for Entry {
    const WHAT: &'static str = "audit entry";
    const CURRENT: u32 = ENTRY_VERSION;

    fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, versioned::Error> {
        match version {
            ENTRY_VERSION => layout.read::<Entry>(),
            2 => layout.read::<EntryV2>().map(Entry::from),
            1 => layout.read::<EntryV1>().map(Entry::from),
            other => Err(versioned::unknown::<Entry>(other)),
        }
    }
}

/// The fields an entry's digest covers, in order.
#[derive(Serialize)]
struct Content<'a> {
    at: i64,
    kind: &'a str,
    actor: &'a str,
    detail: &'a str,
    subject: Option<Pseudonym>,
}

impl Entry {
    /// A new entry (chained when its batch is written).
    pub fn new(at: i64, kind: &str, actor: impl Into<String>, detail: impl Into<String>) -> Entry {
        Entry {
            version: ENTRY_VERSION,
            at,
            kind: kind.to_string(),
            actor: actor.into(),
            detail: detail.into(),
            subject: None,
            chain: None,
            research: None,
        }
    }

    /// The same entry, marked as concerning `patient` (it appears in their view).
    pub fn about(mut self, patient: Pseudonym) -> Entry {
        self.subject = Some(patient);
        self
    }

    /// The same entry, recording `research` (it appears in the views of the
    /// patients whose accounts its charge names).
    pub fn recording(mut self, research: ResearchUse) -> Entry {
        self.research = Some(research);
        self
    }

    /// The digest of the entry's content: salted for a chained entry (with
    /// its research use, if any, under its own domain), unsalted (and over
    /// the version 1 fields) for a legacy one.
    pub fn digest(&self) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(64 + self.detail.len());
        match &self.chain {
            Some(link) => {
                // With a research use, its own domain and the use after the
                // version 2 fields (postcard writes a struct as its fields in
                // order, so this is the digest of the fields and the use).
                let domain = match self.research {
                    Some(_) => USE_CONTENT_DOMAIN,
                    None => CONTENT_DOMAIN,
                };
                bytes.extend_from_slice(domain);
                bytes.extend_from_slice(&link.salt);
                let content = Content {
                    at: self.at,
                    kind: &self.kind,
                    actor: &self.actor,
                    detail: &self.detail,
                    subject: self.subject,
                };
                bytes.extend(postcard::to_stdvec(&content).expect("audit content serializes"));
                if let Some(research) = &self.research {
                    bytes.extend(postcard::to_stdvec(research).expect("audit content serializes"));
                }
            }
            None => {
                bytes.extend_from_slice(LEGACY_DOMAIN);
                let legacy = EntryV1 {
                    version: 1,
                    at: self.at,
                    kind: self.kind.clone(),
                    actor: self.actor.clone(),
                    detail: self.detail.clone(),
                };
                bytes.extend(postcard::to_stdvec(&legacy).expect("audit content serializes"));
            }
        }
        witmed_crypto::sha256(&bytes)
    }
}

/// The hash of entry `seq` whose predecessor hashed to `prev` and whose content digests to `digest`.
pub fn link_hash(seq: u64, prev: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(LINK_DOMAIN.len() + 8 + 64);
    bytes.extend_from_slice(LINK_DOMAIN);
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(prev);
    bytes.extend_from_slice(digest);
    witmed_crypto::sha256(&bytes)
}

/// A statement by the node: "entry `seq` of my audit log hashes to `hash`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub version: u32,
    pub seq: u64,
    pub hash: [u8; 32],
    /// Unix seconds (the newest entry's time, or the time it was signed at close).
    pub at: i64,
}

witmed_crypto::single_version!(Head, "audit head", HEAD_VERSION);

impl Head {
    /// Signs this head with the node key.
    pub fn sign(&self, node_key: &KeyPair) -> Envelope {
        Envelope::seal(HEAD_DOMAIN, self, node_key)
    }

    /// Opens a signed head, which must be signed by `node_key`.
    pub fn open(envelope: &Envelope, node_key: &PublicKey) -> Result<Head, String> {
        if envelope.signer != *node_key {
            return Err(format!(
                "signed by {}, not by this node's key {node_key}",
                envelope.signer
            ));
        }
        envelope
            .open::<Head>(HEAD_DOMAIN)
            .map_err(|e| e.to_string())
    }
}

/// The newest point of the chain and of its signed heads, kept by the store
/// under one lock so concurrent writes chain one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Sequence number of the newest entry (0: none).
    pub seq: u64,
    /// Its hash ([`GENESIS`] when there is none).
    pub hash: [u8; 32],
    /// Sequence number covered by the newest signed head (0: none).
    pub head_seq: u64,
    /// Time of the newest signed head.
    pub head_at: i64,
}

impl Tail {
    /// An empty log.
    pub fn empty() -> Tail {
        Tail {
            seq: 0,
            hash: GENESIS,
            head_seq: 0,
            head_at: 0,
        }
    }

    /// Gives `entry` the next place in the chain (a fresh salt, the next
    /// sequence number, a link to the tail) and moves the tail onto it.
    pub fn chain(&mut self, entry: &mut Entry) -> Result<(), ChainFull> {
        let seq = self.seq.checked_add(1).ok_or(ChainFull::Sequence)?;
        let mut salt = [0u8; 16];
        witmed_crypto::fill_random(&mut salt).map_err(|_| ChainFull::Random)?;
        entry.version = ENTRY_VERSION;
        entry.chain = Some(Link {
            seq,
            prev: self.hash,
            salt,
            hash: GENESIS,
        });
        let hash = link_hash(seq, &self.hash, &entry.digest());
        if let Some(link) = entry.chain.as_mut() {
            link.hash = hash;
        }
        self.seq = seq;
        self.hash = hash;
        Ok(())
    }

    /// True when a head should be signed over the tail, whose newest entry is from `newest_at`.
    pub fn head_due(&self, newest_at: i64) -> bool {
        self.seq > self.head_seq
            && (self.seq - self.head_seq >= HEAD_EVERY
                || newest_at.saturating_sub(self.head_at) >= HEAD_INTERVAL_SECONDS)
    }

    /// The head of the tail, at `at`.
    pub fn head(&self, at: i64) -> Head {
        Head {
            version: HEAD_VERSION,
            seq: self.seq,
            hash: self.hash,
            at,
        }
    }
}

/// Why an entry could not be chained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainFull {
    #[error("the audit sequence number is exhausted")]
    Sequence,
    #[error("the operating system gave no random bytes for the entry's salt")]
    Random,
}

/// Meta key of the signed head over entry `seq`.
pub fn head_key(seq: u64) -> Vec<u8> {
    let mut key = HEAD_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Prefix of every signed head's meta key (sorted by sequence number).
pub const HEAD_PREFIX: &[u8] = b"audit_head/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaining_links_each_entry_to_the_one_before() {
        let mut tail = Tail::empty();
        let mut a = Entry::new(1, "a", "node", "first");
        let mut b = Entry::new(2, "b", "node", "second");
        tail.chain(&mut a).unwrap();
        tail.chain(&mut b).unwrap();
        let (la, lb) = (a.chain.unwrap(), b.chain.unwrap());
        assert_eq!((la.seq, lb.seq), (1, 2));
        assert_eq!(la.prev, GENESIS);
        assert_eq!(lb.prev, la.hash);
        assert_eq!(link_hash(2, &la.hash, &b.digest()), lb.hash);
        assert_eq!(tail.hash, lb.hash);
        // The salt makes two identical entries digest differently.
        let mut c = Entry::new(2, "b", "node", "second");
        tail.chain(&mut c).unwrap();
        assert_ne!(b.digest(), c.digest());
    }

    #[test]
    fn a_head_is_due_every_n_entries_or_after_the_interval() {
        let mut tail = Tail::empty();
        assert!(!tail.head_due(0));
        tail.seq = HEAD_EVERY - 1;
        assert!(!tail.head_due(10));
        assert!(tail.head_due(HEAD_INTERVAL_SECONDS));
        tail.seq = HEAD_EVERY;
        assert!(tail.head_due(10));
    }
}

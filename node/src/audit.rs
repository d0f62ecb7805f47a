//! The node's audit log: who did what, when, written in the same atomic batch as the action, hash-chained and signed.
//!
//! Consents, revocations, enrolments, policy changes, imports and every
//! query decision are recorded. Entries are sealed like every other record
//! and keyed by a sequence number, so the log reads back in order.
//!
//! **Tamper evidence.** Each entry is linked to the one before it by hash
//! ([`chain`]); the store chains a batch's entries inside its synced write,
//! under one lock, so concurrent operations chain in the order they reach
//! the disk and a failed write leaves no gap. Every [`chain::HEAD_EVERY`]
//! entries, after [`chain::HEAD_INTERVAL_SECONDS`], at close and for each
//! patient's view, the node signs the chain's head with its key and keeps
//! it in `meta`. [`verify`] (or [`crate::node::Node::verify_audit`]) walks the log from the start and names the first
//! entry that was edited, removed, inserted or moved, and any head that is
//! forged or disagrees with the chain. A patient's view ([`patient_view`],
//! [`crate::node::Node::audit_view`])
//! carries what they need to check their entries against a signed head
//! without seeing anyone else's: the entries about them, and in full the
//! entries of the research uses that included their data (each answer's
//! entry names its charge to the patients' accounts, and each account keeps
//! the numbers of its newest uses).
//!
//! What it proves: anyone holding a signed head can tell whether the log up
//! to that head was changed afterwards. The node key sits in the data dir,
//! so someone who holds both it and the master key can rewrite the log and
//! sign new heads; they cannot make it agree with heads already handed out
//! (to patients, or kept off the machine).
//!
//! **Older stores.** Version 1 entries have no link. They are read as a
//! legacy prefix: hashed from their storage sequence number and content,
//! from [`chain::GENESIS`], and the first chained entry links to that hash,
//! so the prefix cannot be changed unseen once a chained entry follows it.
//! Legacy sequence numbers may have gaps (older witmed spent a number on an
//! entry whose batch then failed); chained ones may not. A legacy entry
//! after a chained one is refused as inserted.

pub mod chain;

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, Pseudonym, PublicKey};

pub use chain::{Entry, EntryV1, EntryV2, Head, Link, ResearchUse};

use crate::store::{cf, Batch, Error, Store};

/// Adds `entry` to `batch`, so it is written atomically with the action it
/// records; it is chained when the batch is written ([`Store::write_durable`]),
/// not here, so a batch that is never written spends no sequence number.
/// (`_store` stays so the many callers need not change.)
pub fn append(batch: &mut Batch<'_>, _store: &Store, entry: &Entry) -> Result<(), Error> {
    batch.push_audit(entry.clone());
    Ok(())
}

/// Every entry in order (optionally only those of a kind prefix).
pub fn read_all(store: &Store, kind_prefix: Option<&str>) -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    store.scan_records(cf::AUDIT, b"", |_, entry: Entry| {
        if kind_prefix.is_none_or(|p| entry.kind.starts_with(p)) {
            out.push(entry);
        }
        Ok(())
    })?;
    Ok(out)
}

/// What a clean walk of the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the log.
    pub entries: u64,
    /// Of which written before the chain existed (the legacy prefix).
    pub legacy: u64,
    /// Sequence number and hash of the newest entry (0 and [`chain::GENESIS`] for none).
    pub last_seq: u64,
    pub last_hash: [u8; 32],
    /// Signed heads checked.
    pub heads: u64,
    /// The newest signed head, if any.
    pub newest_head: Option<Head>,
    /// Entries after the newest signed head: chained, but not yet signed for.
    pub unsigned: u64,
}

/// The first thing wrong with the log. Positions are 1-based places in the
/// log as stored; `seq` is the sequence number the storage key names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The store could not be read.
    #[error("the audit log could not be read: {0}")]
    Store(String),
    /// An entry's key is not a sequence number: something was added beside the log.
    #[error("audit entry at position {position} has a key of {len} bytes, not a sequence number: it was inserted into the log")]
    Malformed { position: u64, len: usize },
    /// An entry does not open with the node's master key.
    #[error("audit entry {seq} (position {position}) does not open: {reason}; it was edited, replaced or moved on disk")]
    Unreadable {
        position: u64,
        seq: u64,
        reason: String,
    },
    /// The content no longer hashes to the hash stored with it.
    #[error("audit entry {seq} (position {position}) was edited: its content does not hash to its recorded hash")]
    Edited { position: u64, seq: u64 },
    /// Sequence numbers jump: entries are missing.
    #[error("audit entries {first}..={last} are missing (removed): the log goes from entry {before} to entry {seq} at position {position}")]
    Removed {
        position: u64,
        before: u64,
        first: u64,
        last: u64,
        seq: u64,
    },
    /// An entry was written with an earlier sequence number than the place it is stored at.
    #[error("audit entry {seq} (position {position}) is not in the original log: the entry stored after it was written as entry {seq}, with the same predecessor (inserted)")]
    Inserted { position: u64, seq: u64 },
    /// An entry is stored at another place than the one it was written at.
    #[error("audit entry stored as {seq} (position {position}) was written as entry {written}: entries were reordered, or shifted by an insertion or a removal")]
    Moved {
        position: u64,
        seq: u64,
        written: u64,
    },
    /// A legacy (unchained) entry after chained ones.
    #[error("audit entry {seq} (position {position}) has no chain link but follows chained entries: it was inserted")]
    LegacyAfterChain { position: u64, seq: u64 },
    /// An entry's link does not match the entry before it.
    #[error("audit entry {seq} (position {position}) does not link to the entry before it: that entry was replaced (its hash recomputed) or removed, or this one inserted")]
    BrokenLink { position: u64, seq: u64 },
    /// A signed head does not verify under the node key.
    #[error("signed audit head at entry {seq} is forged or damaged: {reason}")]
    ForgedHead { seq: u64, reason: String },
    /// A signed head does not match the chain at its entry.
    #[error("signed audit head at entry {seq} does not match the log: entries up to {seq} were changed after it was signed")]
    HeadMismatch { seq: u64 },
    /// A signed head covers entries the log no longer has.
    #[error("signed audit head covers entry {head}, but the log ends at entry {last}: entries {first}..={head} were removed")]
    Truncated { head: u64, last: u64, first: u64 },
}

impl ChainError {
    /// A stable code for scripts and logs.
    pub fn error_code(&self) -> &'static str {
        match self {
            ChainError::Store(_) => "audit_unreadable_store",
            ChainError::Malformed { .. } => "audit_inserted",
            ChainError::Unreadable { .. } => "audit_unreadable",
            ChainError::Edited { .. } => "audit_edited",
            ChainError::Removed { .. } => "audit_removed",
            ChainError::Inserted { .. } => "audit_inserted",
            ChainError::Moved { .. } => "audit_moved",
            ChainError::LegacyAfterChain { .. } => "audit_inserted",
            ChainError::BrokenLink { .. } => "audit_broken_link",
            ChainError::ForgedHead { .. } => "audit_forged_head",
            ChainError::HeadMismatch { .. } => "audit_head_mismatch",
            ChainError::Truncated { .. } => "audit_truncated",
        }
    }

    /// The sequence number of the first bad entry, when one entry is named.
    pub fn first_bad(&self) -> Option<u64> {
        match self {
            ChainError::Unreadable { seq, .. }
            | ChainError::Edited { seq, .. }
            | ChainError::Inserted { seq, .. }
            | ChainError::Moved { seq, .. }
            | ChainError::LegacyAfterChain { seq, .. }
            | ChainError::BrokenLink { seq, .. }
            | ChainError::HeadMismatch { seq } => Some(*seq),
            ChainError::Removed { first, .. } | ChainError::Truncated { first, .. } => Some(*first),
            ChainError::Store(_) | ChainError::Malformed { .. } | ChainError::ForgedHead { .. } => {
                None
            }
        }
    }
}

/// Walks the whole log from its start: every entry must open, hash to its
/// recorded hash, carry the next sequence number and link to the entry
/// before it; every signed head must verify under `node_key` and match the
/// chain at its entry, and none may lie beyond the log's end. Returns the
/// first thing wrong.
pub fn verify(store: &Store, node_key: &PublicKey) -> Result<Verified, ChainError> {
    let heads = read_heads(store, node_key)?;
    let mut walk = Walk::default();
    store
        .scan_prefix(cf::AUDIT, b"", |key, sealed| {
            walk.step(store, key, sealed, &heads);
            Ok(())
        })
        .map_err(|e| ChainError::Store(e.to_string()))?;
    if let Some(error) = walk.error {
        return Err(error);
    }
    if let Some((&seq, _)) = heads.range(walk.last_seq.saturating_add(1)..).next() {
        return Err(ChainError::Truncated {
            head: *heads.keys().next_back().unwrap_or(&seq),
            last: walk.last_seq,
            first: walk.last_seq.saturating_add(1),
        });
    }
    let newest_head = heads.values().next_back().copied();
    Ok(Verified {
        entries: walk.position,
        legacy: walk.legacy,
        last_seq: walk.last_seq,
        last_hash: walk.hash,
        heads: heads.len() as u64,
        unsigned: walk.last_seq - newest_head.map_or(0, |h| h.seq.min(walk.last_seq)),
        newest_head,
    })
}

/// Every signed head in `meta`, verified under `node_key`, by sequence number.
fn read_heads(
    store: &Store,
    node_key: &PublicKey,
) -> Result<std::collections::BTreeMap<u64, Head>, ChainError> {
    let mut heads = std::collections::BTreeMap::new();
    let mut forged = None;
    store
        .scan_prefix(cf::META, chain::HEAD_PREFIX, |key, bytes| {
            let seq = key
                .get(chain::HEAD_PREFIX.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let opened = Envelope::from_bytes(bytes, chain::MAX_HEAD_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|envelope| Head::open(&envelope, node_key))
                .and_then(|head| match head.seq == seq {
                    true => Ok(head),
                    false => Err(format!(
                        "it names entry {} but is stored as {seq}",
                        head.seq
                    )),
                });
            match opened {
                Ok(head) => {
                    heads.insert(seq, head);
                }
                Err(reason) if forged.is_none() => {
                    forged = Some(ChainError::ForgedHead { seq, reason })
                }
                Err(_) => {}
            }
            Ok(())
        })
        .map_err(|e| ChainError::Store(e.to_string()))?;
    match forged {
        Some(error) => Err(error),
        None => Ok(heads),
    }
}

/// The state of a walk along the log; stops at the first error.
#[derive(Default)]
struct Walk {
    position: u64,
    legacy: u64,
    last_seq: u64,
    hash: [u8; 32],
    /// The link of the previous entry, if it was chained.
    previous: Option<Link>,
    error: Option<ChainError>,
}

impl Walk {
    fn step(
        &mut self,
        store: &Store,
        key: &[u8],
        sealed: &[u8],
        heads: &std::collections::BTreeMap<u64, Head>,
    ) {
        if self.error.is_some() {
            return;
        }
        self.position += 1;
        if let Err(error) = self.check(store, key, sealed, heads) {
            self.error = Some(error);
        }
    }

    fn check(
        &mut self,
        store: &Store,
        key: &[u8],
        sealed: &[u8],
        heads: &std::collections::BTreeMap<u64, Head>,
    ) -> Result<(), ChainError> {
        let position = self.position;
        let seq: u64 =
            key.try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| ChainError::Malformed {
                    position,
                    len: key.len(),
                })?;
        let entry: Entry =
            store
                .open_record(cf::AUDIT, key, sealed)
                .map_err(|e| ChainError::Unreadable {
                    position,
                    seq,
                    reason: e.to_string(),
                })?;
        match entry.chain {
            None => self.legacy_step(position, seq, &entry)?,
            Some(link) => self.chained_step(position, seq, &entry, link)?,
        }
        match heads.get(&seq) {
            Some(head) if head.hash != self.hash => Err(ChainError::HeadMismatch { seq }),
            _ => Ok(()),
        }
    }

    fn legacy_step(&mut self, position: u64, seq: u64, entry: &Entry) -> Result<(), ChainError> {
        if self.previous.is_some() {
            return Err(ChainError::LegacyAfterChain { position, seq });
        }
        self.hash = chain::link_hash(seq, &self.hash, &entry.digest());
        self.legacy += 1;
        self.last_seq = seq;
        Ok(())
    }

    fn chained_step(
        &mut self,
        position: u64,
        seq: u64,
        entry: &Entry,
        link: Link,
    ) -> Result<(), ChainError> {
        if link.seq != seq {
            // Written as an earlier entry, with the previous entry's
            // predecessor: the previous entry was slipped in before it.
            let displaced_by_previous = self
                .previous
                .is_some_and(|p| p.seq == link.seq && p.prev == link.prev);
            if displaced_by_previous {
                return Err(ChainError::Inserted {
                    position: position - 1,
                    seq: self.last_seq,
                });
            }
            return Err(ChainError::Moved {
                position,
                seq,
                written: link.seq,
            });
        }
        // The chain starts right after the legacy prefix (or at 1) and has no gaps.
        let expected = self.last_seq.saturating_add(1);
        if seq != expected {
            return Err(ChainError::Removed {
                position,
                before: self.last_seq,
                first: expected,
                last: seq.saturating_sub(1),
                seq,
            });
        }
        if chain::link_hash(seq, &link.prev, &entry.digest()) != link.hash {
            return Err(ChainError::Edited { position, seq });
        }
        if link.prev != self.hash {
            return Err(ChainError::BrokenLink { position, seq });
        }
        self.hash = link.hash;
        self.previous = Some(link);
        self.last_seq = seq;
        Ok(())
    }
}

/// One place in a patient's view of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ViewItem {
    /// An entry about the patient, in full.
    Own(Entry),
    /// Any other entry: only its sequence number and salted content digest.
    Other { seq: u64, digest: [u8; 32] },
    /// The entry of a research use that included the patient's data, in
    /// full (it names no patient; anyone with the log reads the same).
    Use(Entry),
}

/// The entries of the log that concern one patient, with what they need to
/// check them against a head signed by the node: the hash before the first
/// of them, and the digest of every other entry from there to the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientView {
    pub patient: Pseudonym,
    /// Sequence number and hash of the entry before the first item.
    pub start_seq: u64,
    pub start_hash: [u8; 32],
    /// Every entry from `start_seq + 1` to the head's, in order.
    pub items: Vec<ViewItem>,
    /// The node's signed head the items lead to.
    pub head: Envelope,
}

impl PatientView {
    /// The patient's own entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.items.iter().filter_map(|item| match item {
            ViewItem::Own(entry) => Some(entry),
            ViewItem::Other { .. } | ViewItem::Use(_) => None,
        })
    }

    /// The entries of the research uses that included the patient, oldest first.
    pub fn uses(&self) -> impl Iterator<Item = (&Entry, &ResearchUse)> {
        self.items.iter().filter_map(|item| match item {
            ViewItem::Use(entry) => entry.research.as_ref().map(|r| (entry, r)),
            ViewItem::Own(_) | ViewItem::Other { .. } => None,
        })
    }

    /// Checks the view against `node_key`: the head is signed by it, every
    /// item follows the one before, every own entry is about this patient,
    /// every use entry records a research use, each hashes to its link, and
    /// the chain of items ends at the head's hash.
    pub fn verify(&self, node_key: &PublicKey) -> Result<Head, ChainError> {
        let head = Head::open(&self.head, node_key).map_err(|reason| ChainError::ForgedHead {
            seq: self.start_seq,
            reason,
        })?;
        let mut hash = self.start_hash;
        let mut seq = self.start_seq;
        for (index, item) in self.items.iter().enumerate() {
            let position = index as u64 + 1;
            let expected = seq.saturating_add(1);
            hash = match item {
                ViewItem::Other { seq: s, digest } if *s == expected => {
                    chain::link_hash(*s, &hash, digest)
                }
                ViewItem::Other { seq: s, .. } => {
                    return Err(ChainError::Moved {
                        position,
                        seq: expected,
                        written: *s,
                    })
                }
                ViewItem::Own(entry) if entry.subject == Some(self.patient) => {
                    check_link(entry, position, expected, &hash)?
                }
                ViewItem::Use(entry) if entry.research.is_some() => {
                    check_link(entry, position, expected, &hash)?
                }
                ViewItem::Own(_) | ViewItem::Use(_) => {
                    return Err(ChainError::Edited {
                        position,
                        seq: expected,
                    })
                }
            };
            seq = expected;
        }
        if seq != head.seq || hash != head.hash {
            return Err(ChainError::HeadMismatch { seq: head.seq });
        }
        Ok(head)
    }
}

/// An entry shown in full, at `expected`, after `prev`: its new hash.
fn check_link(
    entry: &Entry,
    position: u64,
    expected: u64,
    prev: &[u8; 32],
) -> Result<[u8; 32], ChainError> {
    let Some(link) = entry.chain else {
        return Err(ChainError::Edited {
            position,
            seq: expected,
        });
    };
    if link.seq != expected {
        return Err(ChainError::Moved {
            position,
            seq: expected,
            written: link.seq,
        });
    }
    if chain::link_hash(link.seq, &link.prev, &entry.digest()) != link.hash {
        return Err(ChainError::Edited {
            position,
            seq: expected,
        });
    }
    if link.prev != *prev {
        return Err(ChainError::BrokenLink {
            position,
            seq: expected,
        });
    }
    Ok(link.hash)
}

/// Errors building a patient's view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] Error),
    /// The node holds no signed head to check against (a store opened without its node).
    #[error("the node has signed no audit head yet; open the node with its key and try again")]
    NoHead,
}

/// A patient's view of the log: their entries, the entries of the research
/// uses whose charge numbers are in `uses` (from the patient's account), and
/// the proof material to check them against a head the node signs now (if
/// the newest entries are not yet covered by one) at `now`. `node_key` is
/// the key heads are signed with (the store's signer, [`Store::set_audit_signer`]).
pub fn patient_view(
    store: &Store,
    node_key: &PublicKey,
    patient: Pseudonym,
    uses: &std::collections::BTreeSet<u64>,
    now: i64,
) -> Result<PatientView, ViewError> {
    let head_seq = store.sign_audit_head(now)?;
    let head = store
        .get_meta(&chain::head_key(head_seq))?
        .and_then(|bytes| Envelope::from_bytes(&bytes, chain::MAX_HEAD_BYTES).ok())
        .ok_or(ViewError::NoHead)?;
    let mut view = PatientView {
        patient,
        start_seq: head_seq,
        start_hash: chain::GENESIS,
        items: Vec::new(),
        head,
    };
    let mut pending: Vec<ViewItem> = Vec::new();
    let mut started = false;
    store.scan_records(cf::AUDIT, b"", |key, entry: Entry| {
        let seq = key.try_into().map(u64::from_be_bytes).unwrap_or(0);
        if seq > head_seq {
            return Ok(());
        }
        let own = entry.subject == Some(patient);
        let used = entry
            .research
            .as_ref()
            .is_some_and(|r| uses.contains(&r.charge));
        if !started && (own || used) {
            if let Some(link) = entry.chain {
                started = true;
                view.start_seq = seq.saturating_sub(1);
                view.start_hash = link.prev;
            }
        }
        if started {
            pending.push(match (own, used) {
                (true, _) => ViewItem::Own(entry),
                (false, true) => ViewItem::Use(entry),
                (false, false) => ViewItem::Other {
                    seq,
                    digest: entry.digest(),
                },
            });
        }
        Ok(())
    })?;
    if !started {
        // Nothing about this patient: the view is the head alone.
        let head = Head::open(&view.head, node_key).map_err(|_| ViewError::NoHead)?;
        view.start_hash = head.hash;
    }
    view.items = pending;
    Ok(view)
}

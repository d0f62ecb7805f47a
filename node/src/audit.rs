//! The node's audit log: who did what, when, written in the same atomic batch as the action.
//!
//! Consents, revocations, enrolments, policy changes, imports and every
//! query decision are recorded. Entries are sealed like every other record
//! and keyed by a monotonic sequence number, so the log reads back in order.

use serde::{Deserialize, Serialize};

use crate::store::{cf, Batch, Error, Store, RECORD_VERSION};

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
}

witmed_crypto::single_version!(Entry, "audit entry", RECORD_VERSION);

impl Entry {
    /// A new entry.
    pub fn new(at: i64, kind: &str, actor: impl Into<String>, detail: impl Into<String>) -> Entry {
        Entry {
            version: RECORD_VERSION,
            at,
            kind: kind.to_string(),
            actor: actor.into(),
            detail: detail.into(),
        }
    }
}

/// Adds `entry` to `batch`, so it is written atomically with the action it records.
pub fn append(batch: &mut Batch<'_>, store: &Store, entry: &Entry) -> Result<(), Error> {
    let seq = store.next_audit_seq();
    batch.put(cf::AUDIT, &seq.to_be_bytes(), entry)
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

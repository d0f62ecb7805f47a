//! The durable privacy-budget ledger: charges per researcher per rolling window, and stored answers.
//!
//! Before a result leaves the node, its charge is checked against the
//! researcher's remaining budget and written, together with the answer and
//! an audit entry, in one synced RocksDB batch. A query id is charged once:
//! asking again returns the stored answer (not fresh noise, which would let
//! a researcher average the noise away); a different query under a used id is
//! refused. Callers serialize check-and-commit with the node's ledger lock
//! (one process owns the store, so an in-process lock is enough).

use serde::{Deserialize, Serialize};
use witmed_crypto::PublicKey;

use crate::store::{cf, Batch, Error, Store, Versioned, RECORD_VERSION};

/// One charge against a researcher's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub version: u32,
    pub query_id: String,
    pub epsilon: f64,
    pub delta: f64,
    /// Unix seconds.
    pub at: i64,
}

/// An answer kept so that a replayed query id gets the same answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub version: u32,
    /// Digest of the query the answer belongs to.
    pub query_digest: [u8; 32],
    /// The answer ([`witmed_protocol::Answer`] bytes).
    pub answer: Vec<u8>,
}

impl Versioned for Charge {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for StoredAnswer {
    fn version(&self) -> u32 {
        self.version
    }
}

fn charge_prefix(researcher: &PublicKey) -> Vec<u8> {
    let mut key = b"c/".to_vec();
    key.extend_from_slice(researcher.as_bytes());
    key
}

fn charge_key(researcher: &PublicKey, at: i64, query_id: &str) -> Vec<u8> {
    let mut key = charge_prefix(researcher);
    key.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    key.extend_from_slice(query_id.as_bytes());
    key
}

fn answer_key(researcher: &PublicKey, query_id: &str) -> Vec<u8> {
    let mut key = b"a/".to_vec();
    key.extend_from_slice(researcher.as_bytes());
    key.extend_from_slice(query_id.as_bytes());
    key
}

/// Epsilon `researcher` spent in `(now - window, now]`.
pub fn spent_in_window(
    store: &Store,
    researcher: &PublicKey,
    now: i64,
    window: i64,
) -> Result<f64, Error> {
    let since = now.saturating_sub(window);
    let mut spent = 0.0;
    store.scan_records(cf::BUDGET, &charge_prefix(researcher), |_, c: Charge| {
        if c.at > since {
            spent += c.epsilon;
        }
        Ok(())
    })?;
    Ok(spent)
}

/// Every charge of `researcher`, oldest first.
pub fn charges(store: &Store, researcher: &PublicKey) -> Result<Vec<Charge>, Error> {
    let mut out = Vec::new();
    store.scan_records(cf::BUDGET, &charge_prefix(researcher), |_, c: Charge| {
        out.push(c);
        Ok(())
    })?;
    Ok(out)
}

/// The stored answer for `query_id` from `researcher`, if any.
pub fn stored_answer(
    store: &Store,
    researcher: &PublicKey,
    query_id: &str,
) -> Result<Option<StoredAnswer>, Error> {
    store.get(cf::BUDGET, &answer_key(researcher, query_id))
}

/// Adds the charge and the answer to `batch`.
pub fn record(
    batch: &mut Batch<'_>,
    researcher: &PublicKey,
    charge: &Charge,
    stored: &StoredAnswer,
) -> Result<(), Error> {
    batch.put(
        cf::BUDGET,
        &charge_key(researcher, charge.at, &charge.query_id),
        charge,
    )?;
    batch.put(
        cf::BUDGET,
        &answer_key(researcher, &charge.query_id),
        stored,
    )
}

/// A new charge record.
pub fn charge(query_id: &str, epsilon: f64, delta: f64, at: i64) -> Charge {
    Charge {
        version: RECORD_VERSION,
        query_id: query_id.to_string(),
        epsilon,
        delta,
        at,
    }
}

//! The aggregator's checks: which members are ready (round 1), whether every roster member sealed (round 2), and the total it keeps and answers with.
//!
//! A Ready counts only if the member's response was signed by its directory
//! key (checked by the client that asked) and the Ready inside is signed by
//! the same key, names that member, this query and this researcher. Every
//! other outcome leaves the member out of the roster, named, with the
//! reason. Fewer than `min_hospitals` Readys: nothing is sealed.
//!
//! A sealed share counts only if its receipt is signed by the member's
//! directory key, binds this query, researcher, study, roster and the
//! ciphertext sent, and the ciphertext has the query's shape. The masks
//! cancel only over the whole roster, so a roster member without a valid
//! sealed share fails the query, naming it.
//!
//! The aggregator keeps the total it answered ([`StoredAggregation`]) and
//! answers a re-asked query id with exactly it: one total per (researcher,
//! query id). It never holds a key that decrypts, and what it keeps are
//! masked ciphertexts, each of which decrypts to noise on its own.

use serde::{Deserialize, Serialize};
use witmed_crypto::fhe::Ciphertext;
use witmed_crypto::{Envelope, PublicKey};
use witmed_protocol::encrypted::{
    EncryptedTotal, Included, LeftOut, Ready, Receipt, SealedShare, READY_DOMAIN, RECEIPT_DOMAIN,
    SECAGG_VERSION,
};
use witmed_protocol::query::Query;

use crate::audit;
use crate::node::Node;
use crate::store::{self, cf, RECORD_VERSION};
use witmed_protocol::status::Status;

/// What the aggregator keeps of one encrypted query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAggregation {
    pub version: u32,
    pub query_id: String,
    pub query_digest: [u8; 32],
    pub researcher: PublicKey,
    /// The [`EncryptedTotal`] answered (bytes): roster, masked shares, receipts.
    pub total: Vec<u8>,
    pub at: i64,
}

witmed_crypto::single_version!(StoredAggregation, "stored aggregation", RECORD_VERSION);

fn aggregation_key(node: &Node, researcher: &PublicKey, query_id: &str) -> Vec<u8> {
    node.ledger
        .meta_key("aggregation", researcher, query_id.as_bytes())
}

/// What the aggregator kept of `query_id` from `researcher`, if anything.
pub fn stored(
    node: &Node,
    researcher: &PublicKey,
    query_id: &str,
) -> Result<Option<StoredAggregation>, store::Error> {
    node.store
        .get(cf::META, &aggregation_key(node, researcher, query_id))
}

/// The total already answered for this query id, if any; refused if the id was used for another query.
pub fn replayed_total(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
) -> Result<Option<EncryptedTotal>, Error> {
    let Some(kept) = stored(node, researcher, &query.id)? else {
        return Ok(None);
    };
    if kept.query_digest != query.digest() {
        return Err(Error::IdReused(query.id.clone()));
    }
    EncryptedTotal::from_bytes(&kept.total)
        .map(Some)
        .map_err(Error::Unreadable)
}

/// Why no total was released.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("only {included} hospitals are ready, fewer than the query's min_hospitals = {min}; left out: {left_out}")]
    TooFew {
        included: usize,
        min: usize,
        left_out: String,
    },
    #[error("the roster's masks cannot cancel: {missing}. Members that sealed will only seal this roster again: re-ask the same id once they are all up, or ask with a new id")]
    Incomplete { missing: String },
    #[error("the query's study is not a 64-hex-digit id")]
    BadStudyId,
    #[error("query id {0:?} was already aggregated for a different query; choose a new id")]
    IdReused(String),
    #[error("the kept total is unreadable: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// Stable code for refusals.
    pub fn code(&self) -> &'static str {
        match self {
            Error::TooFew { .. } => "too_few_hospitals",
            Error::Incomplete { .. } => "seal_incomplete",
            Error::BadStudyId => "bad_query",
            Error::IdReused(_) => "query_id_reused",
            Error::Unreadable(_) => "stored_answer_unreadable",
            Error::Store(_) => "store_failed",
        }
    }
}

/// One member asked in a round: its name, directory key, and what it did.
pub struct Outcome {
    pub name: String,
    pub key: PublicKey,
    pub status: Status,
}

fn not_done(status: &Status, what: &str) -> (String, String) {
    (
        status.label().to_string(),
        status.reason().unwrap_or_else(|| format!("no {what}")),
    )
}

fn invalid(reason: impl Into<String>) -> (String, String) {
    ("invalid".to_string(), reason.into())
}

/// Checks one member's round-1 answer; returns its signed Ready or why it is left out.
fn accept_ready(
    outcome: &Outcome,
    digest: &[u8; 32],
    researcher: &PublicKey,
) -> Result<Envelope, (String, String)> {
    let Status::Ready(envelope) = &outcome.status else {
        return Err(not_done(&outcome.status, "Ready"));
    };
    if envelope.signer != outcome.key {
        return Err(invalid("its Ready is not signed by its directory key"));
    }
    let ready: Ready = envelope
        .open(READY_DOMAIN)
        .map_err(|e| invalid(format!("its Ready does not verify: {e}")))?;
    if ready.version != SECAGG_VERSION
        || ready.member != outcome.name
        || ready.query_digest != *digest
        || ready.researcher != *researcher
    {
        return Err(invalid(
            "its Ready is for another member, query, researcher or version",
        ));
    }
    Ok(envelope.clone())
}

/// Round 1: the roster (every valid Ready) and who is left out; refuses below `min_hospitals`.
pub fn roster(
    query: &Query,
    researcher: &PublicKey,
    outcomes: &[Outcome],
) -> Result<(Vec<Envelope>, Vec<LeftOut>), Error> {
    let digest = query.digest();
    let (mut roster, mut left_out) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        match accept_ready(outcome, &digest, researcher) {
            Ok(ready) => roster.push(ready),
            Err((status, reason)) => left_out.push(LeftOut {
                node: outcome.name.clone(),
                status,
                reason,
            }),
        }
    }
    let min = query.privacy.min_hospitals.unwrap_or(1) as usize;
    if roster.is_empty() || roster.len() < min {
        return Err(Error::TooFew {
            included: roster.len(),
            min,
            left_out: describe(&left_out),
        });
    }
    Ok((roster, left_out))
}

fn describe(left_out: &[LeftOut]) -> String {
    left_out
        .iter()
        .map(|l| format!("{} ({}: {})", l.node, l.status, l.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a sealed share must bind.
pub struct Binding<'a> {
    pub query: &'a Query,
    pub researcher: &'a PublicKey,
    pub study: [u8; 32],
    pub roster_hash: [u8; 32],
    pub values: usize,
}

/// Checks one member's sealed share against its receipt and `binding`.
pub fn check_sealed(
    name: &str,
    key: &PublicKey,
    share: &SealedShare,
    binding: &Binding<'_>,
) -> Result<Receipt, String> {
    if share.member != name || share.receipt.signer != *key {
        return Err(format!(
            "the receipt for {name}'s share is not signed by {name}'s directory key"
        ));
    }
    let receipt: Receipt = share
        .receipt
        .open(RECEIPT_DOMAIN)
        .map_err(|e| format!("{name}'s receipt does not verify: {e}"))?;
    if receipt.version != SECAGG_VERSION
        || receipt.member != name
        || receipt.query_digest != binding.query.digest()
        || receipt.researcher != *binding.researcher
    {
        return Err(format!(
            "{name}'s receipt is for another member, query, researcher or version"
        ));
    }
    if receipt.study != binding.study {
        return Err(format!("{name}'s share is encrypted for another study"));
    }
    if receipt.roster_hash != binding.roster_hash {
        return Err(format!(
            "{name} sealed for another roster than this one: the roster was changed"
        ));
    }
    if receipt.ciphertext_hash != witmed_crypto::sha256(&share.ciphertext) {
        return Err(format!(
            "{name}'s ciphertext is not the one {name} sealed: it was substituted"
        ));
    }
    if receipt.values as usize != binding.values {
        return Err(format!(
            "{name}'s share holds {} values, the query needs {}",
            receipt.values, binding.values
        ));
    }
    Ciphertext::from_bytes(&share.ciphertext, binding.values)
        .map_err(|e| format!("{name}'s share: {e}"))?;
    Ok(receipt)
}

/// Round 2: every roster member's checked sealed share, as the researcher will receive them.
pub fn total(
    node: &Node,
    binding: &Binding<'_>,
    roster: Vec<Envelope>,
    outcomes: Vec<Outcome>,
    left_out: Vec<LeftOut>,
    now: i64,
) -> Result<EncryptedTotal, Error> {
    let (mut shares, mut included, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for outcome in outcomes {
        let checked = match &outcome.status {
            Status::Sealed(share) => check_sealed(&outcome.name, &outcome.key, share, binding)
                .map(|r| (share.clone(), r)),
            other => Err(format!(
                "{} ({}: {})",
                outcome.name,
                other.label(),
                other.reason().unwrap_or_default()
            )),
        };
        match checked {
            Ok((share, receipt)) => {
                included.push(Included::from_receipt(&receipt));
                shares.push(share);
            }
            Err(reason) => missing.push(reason),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Incomplete {
            missing: missing.join("; "),
        });
    }
    let total = EncryptedTotal {
        version: SECAGG_VERSION,
        study: binding.study,
        values: binding.values as u32,
        roster,
        shares,
        included,
        left_out,
    };
    record(node, binding.query, binding.researcher, &total, now)?;
    Ok(total)
}

/// Ciphertext slots per share of `query`: one per limb of each value
/// (one value, or one per histogram bin; see `witmed_protocol::limbs`).
pub fn expected_values(query: &Query) -> usize {
    super::shares::layout(query).slots()
}

/// The study id a query names, as bytes.
pub fn study_of(query: &Query) -> Result<[u8; 32], Error> {
    let mut study = [0u8; 32];
    hex::decode_to_slice(
        query.privacy.study.as_deref().unwrap_or_default(),
        &mut study,
    )
    .map_err(|_| Error::BadStudyId)?;
    Ok(study)
}

fn record(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    total: &EncryptedTotal,
    now: i64,
) -> Result<(), store::Error> {
    let names: Vec<&str> = total.included.iter().map(|i| i.node.as_str()).collect();
    let detail = format!(
        "query {} aggregated under encryption: {} masked shares ({})",
        query.id,
        names.len(),
        names.join(", ")
    );
    let stored = StoredAggregation {
        version: RECORD_VERSION,
        query_id: query.id.clone(),
        query_digest: query.digest(),
        researcher: *researcher,
        total: total.to_bytes(),
        at: now,
    };
    let mut batch = node.store.batch();
    batch.put(
        cf::META,
        &aggregation_key(node, researcher, &query.id),
        &stored,
    )?;
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "query.aggregated", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)
}

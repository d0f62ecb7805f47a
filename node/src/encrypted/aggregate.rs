//! The aggregator: checks each hospital's encrypted share and adds them under encryption, holding no key that decrypts.
//!
//! A share counts only if it came back signed by the member the directory
//! lists (checked by the client that asked), answers this query, names this
//! query's study, and deserializes as a ciphertext of the expected shape
//! within the size limit. Every other outcome leaves that hospital out of
//! the total, named, with the reason. Fewer than `min_hospitals` shares
//! release nothing: the noise of the total would be below what each
//! hospital's share was sized for.
//!
//! What the aggregator received and sent is kept ([`StoredAggregation`]):
//! ciphertexts and the names of their senders, nothing else.

use serde::{Deserialize, Serialize};
use witmed_crypto::fhe::Ciphertext;
use witmed_crypto::PublicKey;
use witmed_protocol::encrypted::{
    Contribution, EncryptedTotal, Included, LeftOut, ENCRYPTED_VERSION,
};
use witmed_protocol::query::Query;

use crate::audit;
use crate::net::client::Status;
use crate::node::Node;
use crate::store::{self, cf, Versioned, RECORD_VERSION};

/// What the aggregator keeps of one encrypted query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAggregation {
    pub version: u32,
    pub query_id: String,
    pub query_digest: [u8; 32],
    pub researcher: PublicKey,
    /// Each included hospital and the ciphertext bytes it sent.
    pub received: Vec<(String, Vec<u8>)>,
    /// The encrypted total sent to the researcher.
    pub total: Vec<u8>,
    pub at: i64,
}

impl Versioned for StoredAggregation {
    fn version(&self) -> u32 {
        self.version
    }
}

fn aggregation_key(researcher: &PublicKey, query_id: &str) -> Vec<u8> {
    let mut key = b"aggregation/".to_vec();
    key.extend_from_slice(researcher.as_bytes());
    key.extend_from_slice(query_id.as_bytes());
    key
}

/// What the aggregator kept of `query_id` from `researcher`, if anything.
pub fn stored(
    store: &store::Store,
    researcher: &PublicKey,
    query_id: &str,
) -> Result<Option<StoredAggregation>, store::Error> {
    store.get(cf::META, &aggregation_key(researcher, query_id))
}

/// Why no total was released.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("only {included} hospitals contributed, fewer than the query's min_hospitals = {min}; left out: {left_out}")]
    TooFew {
        included: usize,
        min: usize,
        left_out: String,
    },
    #[error("the query's study is not a 64-hex-digit id")]
    BadStudyId,
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// Stable code for refusals.
    pub fn code(&self) -> &'static str {
        match self {
            Error::TooFew { .. } => "too_few_hospitals",
            Error::BadStudyId => "bad_query",
            Error::Store(_) => "store_failed",
        }
    }
}

/// Checks one hospital's outcome; returns its ciphertext or why it is left out.
fn accept(
    study: &[u8; 32],
    values: usize,
    status: Status,
) -> Result<(Contribution, Ciphertext), (String, String)> {
    let contribution = match status {
        Status::Contributed(c) => c,
        other => {
            return Err((
                other.label().to_string(),
                other
                    .reason()
                    .unwrap_or_else(|| "no encrypted share".into()),
            ))
        }
    };
    let invalid = |reason: String| ("invalid".to_string(), reason);
    if contribution.version != ENCRYPTED_VERSION {
        return Err(invalid(format!(
            "share has version {}, not {ENCRYPTED_VERSION}",
            contribution.version
        )));
    }
    if contribution.study != *study {
        return Err(invalid("share is encrypted for another study".into()));
    }
    if contribution.values as usize != values {
        return Err(invalid(format!(
            "share holds {} values, the query needs {values}",
            contribution.values
        )));
    }
    let ciphertext = Ciphertext::from_bytes(&contribution.ciphertext, values)
        .map_err(|e| invalid(e.to_string()))?;
    Ok((contribution, ciphertext))
}

/// Adds the accepted shares of `outcomes` (hospital name, what it did) and records what was received.
pub fn aggregate(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    outcomes: Vec<(String, Status)>,
    now: i64,
) -> Result<EncryptedTotal, Error> {
    let mut study = [0u8; 32];
    hex::decode_to_slice(
        query.privacy.study.as_deref().unwrap_or_default(),
        &mut study,
    )
    .map_err(|_| Error::BadStudyId)?;
    let values = expected_values(query);
    let mut total: Option<Ciphertext> = None;
    let (mut included, mut left_out, mut received) = (Vec::new(), Vec::new(), Vec::new());
    for (name, status) in outcomes {
        match accept(&study, values, status) {
            Ok((c, ciphertext)) => {
                match total.as_mut() {
                    None => total = Some(ciphertext),
                    Some(t) => t
                        .add_assign(&ciphertext)
                        .expect("shapes were checked against the query"),
                }
                included.push(Included {
                    node: name.clone(),
                    share_scale: c.share_scale,
                    epsilon_spent: c.epsilon_spent,
                    delta_spent: c.delta_spent,
                    budget_left: c.budget_left,
                });
                received.push((name, c.ciphertext));
            }
            Err((status, reason)) => left_out.push(LeftOut {
                node: name,
                status,
                reason,
            }),
        }
    }
    let min = query.privacy.min_hospitals.unwrap_or(1) as usize;
    let total = match total {
        Some(t) if included.len() >= min => t,
        _ => {
            return Err(Error::TooFew {
                included: included.len(),
                min,
                left_out: left_out
                    .iter()
                    .map(|l| format!("{} ({}: {})", l.node, l.status, l.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
    };
    let total_bytes = total.to_bytes();
    record(node, query, researcher, received, &total_bytes, now)?;
    Ok(EncryptedTotal {
        version: ENCRYPTED_VERSION,
        study,
        ciphertext: total_bytes,
        values: values as u32,
        included,
        left_out,
    })
}

/// Ciphertext slots per share of `query`: one per limb of each value
/// (one value, or one per histogram bin; see `witmed_protocol::limbs`).
pub fn expected_values(query: &Query) -> usize {
    super::shares::layout(query).slots()
}

fn record(
    node: &Node,
    query: &Query,
    researcher: &PublicKey,
    received: Vec<(String, Vec<u8>)>,
    total: &[u8],
    now: i64,
) -> Result<(), store::Error> {
    let names: Vec<&str> = received.iter().map(|(n, _)| n.as_str()).collect();
    let detail = format!(
        "query {} aggregated under encryption: {} shares ({})",
        query.id,
        names.len(),
        names.join(", ")
    );
    let stored = StoredAggregation {
        version: RECORD_VERSION,
        query_id: query.id.clone(),
        query_digest: query.digest(),
        researcher: *researcher,
        received,
        total: total.to_vec(),
        at: now,
    };
    let mut batch = node.store.batch();
    batch.put(cf::META, &aggregation_key(researcher, &query.id), &stored)?;
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "query.aggregated", researcher.to_hex(), detail),
    )?;
    node.store.write_durable(batch)
}

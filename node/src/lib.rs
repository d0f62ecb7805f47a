//! witmed node: a hospital's peer in a privacy-preserving federation of medical data.
//!
//! Raw records stay in the node's own encrypted RocksDB [`store`]; what
//! leaves is an aggregate released through the privacy engine ([`dp`]),
//! charged first to the researcher's durable budget ([`ledger`]), over the
//! patients whose signed consent allows it ([`consents`]).
//!
//! * [`node`]: data directory, keys, signed policy, and the open [`node::Node`].
//! * [`store`]: column families, key layout, sealed versioned records.
//! * [`import`]: PhysioNet 2012 and FHIR R4 import.
//! * [`consents`], [`consent_ops`]: enrolment, consent tokens, revocations.
//! * [`admin`]: the local channel through which a running node accepts consent changes.
//! * [`index`]: in-memory columns that queries read.
//! * [`engine`]: one query from policy check to charged answer.
//! * [`dp`]: OpenDP measurements and accuracy.
//! * [`encrypted`]: encrypted mode: study keys, noise shares, the keyless aggregator.
//! * [`ledger`]: privacy budget and stored answers.
//! * [`accounts`]: per-patient privacy accounts and patients' own caps.
//! * [`audit`]: the audit log.

pub mod account_book;
pub mod accounts;
pub mod admin;
pub mod analysis;
pub mod audit;
pub mod consent_ops;
pub mod consents;
pub mod dp;
pub mod encrypted;
pub mod engine;
pub mod import;
pub mod index;
pub mod ledger;
pub mod locks;
pub mod node;
pub mod store;

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

//! What became of one hospital's part in a query, as the researcher's client and the encrypted-mode aggregator both see it.

use witmed_crypto::Envelope;

use crate::answer::Answer;
use crate::encrypted::{EncryptedTotal, SealedShare};

/// What became of one hospital.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Answered(Answer),
    /// Encrypted mode, round 1: a member's signed Ready (seen by the aggregator).
    Ready(Envelope),
    /// Encrypted mode, round 2: a member's masked share and receipt (seen by the aggregator).
    Sealed(SealedShare),
    /// Encrypted mode: the aggregator's encrypted total (seen by the researcher).
    Aggregated(EncryptedTotal),
    /// A study key was installed.
    StudyInstalled,
    Refused {
        code: String,
        reason: String,
    },
    Unreachable(String),
    TimedOut,
    /// A response that failed verification (wrong signer, wrong query...).
    Invalid(String),
}

impl Status {
    /// Short name for tables and JSON.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Answered(_) => "answered",
            Status::Ready(_) => "ready",
            Status::Sealed(_) => "sealed",
            Status::Aggregated(_) => "aggregated",
            Status::StudyInstalled => "installed",
            Status::Refused { .. } => "refused",
            Status::Unreachable(_) => "unreachable",
            Status::TimedOut => "timed out",
            Status::Invalid(_) => "invalid",
        }
    }

    /// The reason, for every status but answered.
    pub fn reason(&self) -> Option<String> {
        match self {
            Status::Answered(_)
            | Status::Ready(_)
            | Status::Sealed(_)
            | Status::Aggregated(_)
            | Status::StudyInstalled => None,
            Status::Refused { code, reason } => Some(format!("[{code}] {reason}")),
            Status::Unreachable(r) | Status::Invalid(r) => Some(r.clone()),
            Status::TimedOut => Some("no answer before the timeout".into()),
        }
    }
}

/// One hospital's result.
#[derive(Debug, Clone)]
pub struct HospitalResult {
    pub name: String,
    pub status: Status,
}

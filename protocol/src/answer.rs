//! What a node releases: noisy components, the value derived from them, and its accuracy.
//!
//! An answer keeps its noisy *components* (a count, a sum, histogram bins)
//! beside the value computed from them, so that a researcher's client can
//! combine answers from many hospitals correctly: counts and sums add, a
//! mean is the combined sum over the combined count, histograms add bin by
//! bin. Each component carries its noise scale and mechanism, from which the
//! combined interval follows.

use serde::{Deserialize, Serialize};

/// Answer format version written today.
pub const ANSWER_VERSION: u32 = 1;

/// The noise a component received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// OpenDP discrete Laplace on integers (counts, histogram bins).
    DiscreteLaplace,
    /// OpenDP Laplace on floats (sums), sampled exactly on a grid.
    Laplace,
}

/// One noisy number a node released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// `count`, `sum` or `bin[i]`.
    pub name: String,
    /// The noisy value.
    pub value: f64,
    /// Laplace scale of its noise.
    pub noise_scale: f64,
    pub mechanism: Mechanism,
    /// Half-width of its 95% interval, from OpenDP's accuracy functions.
    pub accuracy95: f64,
}

/// A released result at one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    /// The scalar answer (count, sum, mean) or `None` for vector answers.
    pub value: Option<f64>,
    /// Vector answers: histogram counts per bin, or quantile estimates.
    pub values: Vec<f64>,
    /// 95% interval of `value`.
    pub ci95: Option<(f64, f64)>,
    /// 95% intervals of each entry of `values`.
    pub ci95s: Vec<(f64, f64)>,
    /// Noisy components the value was derived from.
    pub components: Vec<Component>,
    /// Privacy loss charged (OpenDP's privacy map of the whole measurement).
    pub epsilon_spent: f64,
    /// True when the noisy cohort size fell below the node's minimum: nothing but the fact is released.
    pub suppressed: bool,
}

impl Released {
    /// A suppressed release: the cohort fell below the node's minimum, so
    /// nothing but that fact and the `epsilon` charged for learning it.
    pub fn suppressed(epsilon: f64) -> Released {
        Released {
            value: None,
            values: vec![],
            ci95: None,
            ci95s: vec![],
            components: vec![],
            epsilon_spent: epsilon,
            suppressed: true,
        }
    }
}

/// A node's answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub version: u32,
    pub query_id: String,
    /// SHA-256 of the query's canonical bytes.
    pub query_digest: [u8; 32],
    /// The answering node's name.
    pub node: String,
    pub released: Released,
    /// Researcher's budget left in the current window after this charge.
    pub budget_left: f64,
    /// Unix seconds when the answer was first computed (a replay returns the same).
    pub answered_at: i64,
}

witmed_crypto::single_version!(Answer, "answer", ANSWER_VERSION);

impl Answer {
    /// Compact stored/wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        witmed_crypto::versioned::encode(self)
    }

    /// Parses the stored/wire form, checking the version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Answer, String> {
        witmed_crypto::versioned::decode(bytes).map_err(|e| e.to_string())
    }
}

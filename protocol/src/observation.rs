//! A per-patient observation feature: observations of one code within a time window, reduced to one value.

use serde::{Deserialize, Serialize};

/// Observations of `code` within `window`, reduced to one value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationFeature {
    pub code: String,
    pub reduce: Reduce,
    /// Hours since the patient's index time (ICU admission); whole stay if absent.
    #[serde(default)]
    pub window: Option<Window>,
}

/// A half-open time window `[from_hours, to_hours)` relative to the index time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from_hours: f64,
    pub to_hours: f64,
}

/// How a patient's observations in the window become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    Latest,
    Mean,
    Min,
    Max,
    Count,
}

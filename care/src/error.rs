//! The crate's one error type: why a reading was refused, and what the sender should do.

use crate::vitals::Vital;

/// Everything `witmed-care` refuses. Each message says what to do;
/// [`Error::error_code`] gives a stable name for scripts, logs and HTTP answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The observation code is not a vital sign this node accepts from devices.
    #[error(
        "observation code {code:?} is not a vital sign devices may send; use one of {}",
        Vital::ALL.iter().map(|v| v.code()).collect::<Vec<_>>().join(", ")
    )]
    UnknownCode { code: String },
    /// The unit does not measure this vital sign (or is not UCUM).
    #[error(
        "unit {unit:?} is not accepted for {vital} ({code}); send one of {accepted} (UCUM)",
        vital = vital.name(),
        code = vital.code()
    )]
    WrongUnit {
        vital: Vital,
        unit: String,
        accepted: String,
    },
    /// The number is NaN or infinite.
    #[error("{} value is not a finite number; check the device's encoding", vital.name())]
    NotFinite { vital: Vital },
    /// The value (in the canonical unit) lies outside what a living patient can show:
    /// a device fault, an artefact or a unit mix-up.
    #[error(
        "{} of {value} {unit} is outside the plausible range {low}..={high} {unit}; \
         check the device and the unit, then send the reading again",
        vital.name(),
        unit = vital.canonical_unit()
    )]
    Implausible {
        vital: Vital,
        value: f64,
        low: f64,
        high: f64,
    },
}

impl Error {
    /// A stable name for scripts, logs and metrics.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::UnknownCode { .. } => "care.unknown_code",
            Error::WrongUnit { .. } => "care.wrong_unit",
            Error::NotFinite { .. } => "care.not_finite",
            Error::Implausible { .. } => "care.implausible",
        }
    }
}

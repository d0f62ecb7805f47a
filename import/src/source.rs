//! Source-level records that the import parsers produce, before pseudonymisation.
//!
//! These types still carry the source system's identifiers (PhysioNet
//! RecordIDs, FHIR resource ids). The importer turns them into keyed
//! pseudonyms before anything is stored, so nothing here may leave the node.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use witmed_protocol::vocab::{
    Sex, ATTR_DECEASED, ATTR_HEIGHT_CM, ATTR_ICU_TYPE, ATTR_IN_HOSPITAL_DEATH,
    ATTR_LENGTH_OF_STAY_DAYS, ATTR_SAPS1, ATTR_SOFA, ATTR_SURVIVAL_DAYS, ATTR_WEIGHT_KG,
};

/// One patient as the source describes them; no names, addresses or other
/// direct identifiers besides the source id are ever stored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePatient {
    /// The source's own id, e.g. PhysioNet RecordID "132539" or FHIR Patient.id.
    pub source_id: String,
    /// PhysioNet Age; FHIR: completed years at the patient's index time.
    pub age_years: Option<f64>,
    /// Administrative sex; [`Sex::Unknown`] when the source does not say.
    pub sex: Sex,
    /// Numeric attributes keyed by the names of [`witmed_protocol::vocab::ATTRIBUTES`].
    pub attributes: BTreeMap<String, f64>,
}

impl SourcePatient {
    /// A patient about whom nothing is known yet except the source id.
    pub fn new(source_id: impl Into<String>) -> Self {
        SourcePatient {
            source_id: source_id.into(),
            age_years: None,
            sex: Sex::Unknown,
            attributes: BTreeMap::new(),
        }
    }
}

/// One numeric measurement of one patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceObservation {
    /// [`SourcePatient::source_id`] of the patient measured.
    pub source_patient_id: String,
    /// LOINC code like "8867-4", or "physionet:<Param>" for unmapped PhysioNet params.
    pub code: String,
    /// PhysioNet: seconds since ICU admission; FHIR: unix seconds.
    pub time_s: i64,
    /// The measured value in the source's unit for the code.
    pub value: f64,
    /// Makes (patient, code, time, disambiguator) unique within one source
    /// file, deterministically, so that re-importing yields identical keys.
    pub disambiguator: u32,
}

/// One diagnosis of one patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCondition {
    /// [`SourcePatient::source_id`] of the patient diagnosed.
    pub source_patient_id: String,
    /// Code system URI, e.g. "http://snomed.info/sct".
    pub system: String,
    /// The code within `system`, e.g. SNOMED CT "44054006".
    pub code: String,
    /// Unix seconds of the onset, when the source gives one.
    pub onset_s: Option<i64>,
}

/// A piece of input that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Where in the input, e.g. "set-a/132539.txt:57" or
    /// "patient-003.json: entry[12] (Observation/abc)".
    pub location: String,
    /// What is wrong or why it was left out, for the operator to act on.
    pub reason: String,
}

impl Rejected {
    /// A report of the input at `location`, left out because of `reason`.
    pub fn new(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejected {
            location: location.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

//! Shared vocabulary: sex, data categories, privacy modes, and which codes are vital signs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Administrative sex as recorded by the source system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

/// What kind of patient data a query touches, and a consent or policy exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Age, sex, height.
    Demographics,
    /// Heart rate, blood pressure, temperature, SpO2, respiration, weight, GCS, urine output.
    VitalSigns,
    /// Laboratory results.
    Labs,
    /// Diagnoses (SNOMED CT, ICD).
    Conditions,
    /// The stay itself: ICU type, length of stay, outcome.
    Encounters,
}

impl Category {
    /// Every category, in a stable order.
    pub const ALL: [Category; 5] = [
        Category::Demographics,
        Category::VitalSigns,
        Category::Labs,
        Category::Conditions,
        Category::Encounters,
    ];

    /// The kebab-case name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Demographics => "demographics",
            Category::VitalSigns => "vital-signs",
            Category::Labs => "labs",
            Category::Conditions => "conditions",
            Category::Encounters => "encounters",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a data category.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown data category {0:?}; use demographics, vital-signs, labs, conditions or encounters"
)]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, UnknownCategory> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory(s.to_string()))
    }
}

/// How an answer is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each node releases its own differentially private answer.
    Dp,
    /// Nodes encrypt noisy shares; only the combined total is decrypted.
    Encrypted,
}

impl Mode {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dp => "dp",
            Mode::Encrypted => "encrypted",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a privacy mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown privacy mode {0:?}; use dp or encrypted")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        match s {
            "dp" => Ok(Mode::Dp),
            "encrypted" => Ok(Mode::Encrypted),
            other => Err(UnknownMode(other.to_string())),
        }
    }
}

/// LOINC codes witmed treats as vital signs; any other LOINC code is a lab.
pub const VITAL_SIGN_CODES: &[&str] = &[
    "8867-4",  // heart rate
    "9279-1",  // respiratory rate
    "8310-5",  // body temperature
    "8480-6",  // systolic blood pressure
    "8462-4",  // diastolic blood pressure
    "8478-0",  // mean blood pressure
    "2708-6",  // oxygen saturation in arterial blood
    "59408-5", // oxygen saturation by pulse oximetry
    "29463-7", // body weight
    "8302-2",  // body height
    "39156-5", // body mass index
    "9269-2",  // Glasgow coma score
    "9187-6",  // urine output
    "55284-4", // blood pressure panel
];

/// The category of an observation code.
pub fn category_of_code(code: &str) -> Category {
    if VITAL_SIGN_CODES.contains(&code) {
        Category::VitalSigns
    } else {
        Category::Labs
    }
}

/// Patient attributes a query may filter on or use as a feature, and their category.
pub const ATTRIBUTES: &[(&str, Category)] = &[
    ("age", Category::Demographics),
    ("height_cm", Category::Demographics),
    ("weight_kg", Category::Demographics),
    ("icu_type", Category::Encounters),
    ("saps1", Category::Encounters),
    ("sofa", Category::Encounters),
    ("length_of_stay_days", Category::Encounters),
    ("survival_days", Category::Encounters),
    ("in_hospital_death", Category::Encounters),
    ("deceased", Category::Encounters),
];

/// The category of a patient attribute, or None if witmed does not know it.
pub fn category_of_attribute(name: &str) -> Option<Category> {
    ATTRIBUTES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

//! Shared vocabulary: sex, data categories, privacy modes, which codes are vital signs, and the patient attribute table.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Administrative sex as recorded by the source system: the one enum the
/// importers produce and queries filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// PhysioNet Gender 0; FHIR "female".
    Female,
    /// PhysioNet Gender 1; FHIR "male".
    Male,
    /// FHIR "other".
    Other,
    /// Not recorded, or FHIR "unknown".
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
    "3151-8",  // inhaled oxygen flow rate (device readings)
    "67775-7", // level of responsiveness, ACVPU (device readings)
];

/// The category of an observation code.
pub fn category_of_code(code: &str) -> Category {
    if VITAL_SIGN_CODES.contains(&code) {
        Category::VitalSigns
    } else {
        Category::Labs
    }
}

/// A patient attribute: its name in queries and records, what it means, its
/// unit, the range its values lie in, and the data category it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attribute {
    pub name: &'static str,
    pub meaning: &'static str,
    /// "" for a score, a code or a 0/1 flag.
    pub unit: &'static str,
    /// The plausible values, both ends included: documentation for people
    /// writing bounds and cohorts (importers keep what the source says).
    pub range: (f64, f64),
    pub category: Category,
}

/// Age in completed years (PhysioNet `Age`; FHIR: at the patient's index time).
pub const ATTR_AGE: &str = "age";
/// Body height in centimetres (PhysioNet `Height` descriptor).
pub const ATTR_HEIGHT_CM: &str = "height_cm";
/// Body weight in kilograms at admission (PhysioNet leading `Weight` descriptor).
pub const ATTR_WEIGHT_KG: &str = "weight_kg";
/// PhysioNet ICU type: 1 coronary care, 2 cardiac surgery recovery, 3 medical, 4 surgical.
pub const ATTR_ICU_TYPE: &str = "icu_type";
/// Simplified Acute Physiology Score I (PhysioNet outcomes).
pub const ATTR_SAPS1: &str = "saps1";
/// Sequential Organ Failure Assessment score (PhysioNet outcomes).
pub const ATTR_SOFA: &str = "sofa";
/// Length of hospital stay in days (PhysioNet outcomes).
pub const ATTR_LENGTH_OF_STAY_DAYS: &str = "length_of_stay_days";
/// Days from ICU admission to death (PhysioNet outcomes).
pub const ATTR_SURVIVAL_DAYS: &str = "survival_days";
/// 1 if the patient died in hospital, 0 otherwise (PhysioNet outcomes).
pub const ATTR_IN_HOSPITAL_DEATH: &str = "in_hospital_death";
/// 1 if the source says the patient is deceased, 0 if it says they are not (FHIR).
pub const ATTR_DECEASED: &str = "deceased";

/// Every patient attribute witmed knows: the one table the importers write
/// by and queries are validated against. Age is kept in its own field of a
/// record; every other attribute in the record's attribute map.
pub const ATTRIBUTES: &[Attribute] = &[
    Attribute {
        name: ATTR_AGE,
        meaning: "age in completed years",
        unit: "years",
        range: (0.0, 130.0),
        category: Category::Demographics,
    },
    Attribute {
        name: ATTR_HEIGHT_CM,
        meaning: "body height",
        unit: "cm",
        range: (0.0, 300.0),
        category: Category::Demographics,
    },
    Attribute {
        name: ATTR_WEIGHT_KG,
        meaning: "body weight at admission",
        unit: "kg",
        range: (0.0, 700.0),
        category: Category::Demographics,
    },
    Attribute {
        name: ATTR_ICU_TYPE,
        meaning: "ICU type: 1 coronary care, 2 cardiac surgery recovery, 3 medical, 4 surgical",
        unit: "",
        range: (1.0, 4.0),
        category: Category::Encounters,
    },
    Attribute {
        name: ATTR_SAPS1,
        meaning: "Simplified Acute Physiology Score I",
        unit: "",
        range: (0.0, 163.0),
        category: Category::Encounters,
    },
    Attribute {
        name: ATTR_SOFA,
        meaning: "Sequential Organ Failure Assessment score",
        unit: "",
        range: (0.0, 24.0),
        category: Category::Encounters,
    },
    Attribute {
        name: ATTR_LENGTH_OF_STAY_DAYS,
        meaning: "length of hospital stay",
        unit: "days",
        range: (0.0, 36_500.0),
        category: Category::Encounters,
    },
    Attribute {
        name: ATTR_SURVIVAL_DAYS,
        meaning: "days from ICU admission to death",
        unit: "days",
        range: (-1.0, 36_500.0),
        category: Category::Encounters,
    },
    Attribute {
        name: ATTR_IN_HOSPITAL_DEATH,
        meaning: "1 if the patient died in hospital, 0 otherwise",
        unit: "",
        range: (0.0, 1.0),
        category: Category::Encounters,
    },
    Attribute {
        name: ATTR_DECEASED,
        meaning: "1 if the source says the patient is deceased, 0 if not",
        unit: "",
        range: (0.0, 1.0),
        category: Category::Encounters,
    },
];

/// The attribute called `name`, or None if witmed does not know it.
pub fn attribute(name: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.name == name)
}

/// The category of a patient attribute, or None if witmed does not know it.
pub fn category_of_attribute(name: &str) -> Option<Category> {
    attribute(name).map(|a| a.category)
}

/// The known attribute names, comma-separated, for refusals that list them.
pub fn known_attribute_names() -> String {
    ATTRIBUTES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_are_unique_and_ranges_ordered() {
        for (i, a) in ATTRIBUTES.iter().enumerate() {
            assert!(a.range.0 < a.range.1, "{}: {:?}", a.name, a.range);
            assert!(
                ATTRIBUTES[..i].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
            assert!(!a.meaning.is_empty(), "{} has no meaning", a.name);
        }
    }
}

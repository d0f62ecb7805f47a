//! The vital signs devices send: their LOINC codes, canonical UCUM units, and the ACVPU coding of consciousness.
//!
//! Codes match those the importers already use (`witmed_import::physionet::loinc_for`,
//! `witmed_protocol::vocab::VITAL_SIGN_CODES`), so device readings and imported records of
//! the same quantity share one code. Three codes are new to witmed:
//!
//! * `3150-0` *Inhaled oxygen concentration* (the importer's FiO2 code), canonical `%`;
//! * `3151-8` *Inhaled oxygen flow rate*, canonical `L/min`;
//! * `67775-7` *Level of responsiveness*, carried as a number: the [`Acvpu`] ordinal
//!   (0 alert, 1 new confusion, 2 voice, 3 pain, 4 unresponsive), unit `{ACVPU}`. Each level's
//!   SNOMED CT answer code is [`Acvpu::snomed`], for FHIR export.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A vital sign a device may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vital {
    /// LOINC 9279-1, breaths per minute.
    RespiratoryRate,
    /// LOINC 59408-5, SpO2 by pulse oximetry, %.
    OxygenSaturationPulse,
    /// LOINC 2708-6, SaO2 in arterial blood, % (PhysioNet's SaO2).
    OxygenSaturationArterial,
    /// LOINC 8867-4, beats per minute.
    HeartRate,
    /// LOINC 8480-6, mm[Hg].
    SystolicBloodPressure,
    /// LOINC 8310-5, degrees Celsius.
    BodyTemperature,
    /// LOINC 3150-0, inhaled oxygen concentration (FiO2), %; 21 is room air.
    InhaledOxygenConcentration,
    /// LOINC 3151-8, inhaled oxygen flow rate, L/min; 0 is room air.
    InhaledOxygenFlow,
    /// LOINC 67775-7, level of responsiveness as the [`Acvpu`] ordinal.
    Consciousness,
}

impl Vital {
    /// Every vital sign, in a stable order.
    pub const ALL: [Vital; 9] = [
        Vital::RespiratoryRate,
        Vital::OxygenSaturationPulse,
        Vital::OxygenSaturationArterial,
        Vital::HeartRate,
        Vital::SystolicBloodPressure,
        Vital::BodyTemperature,
        Vital::InhaledOxygenConcentration,
        Vital::InhaledOxygenFlow,
        Vital::Consciousness,
    ];

    /// The LOINC code.
    pub fn code(self) -> &'static str {
        match self {
            Vital::RespiratoryRate => "9279-1",
            Vital::OxygenSaturationPulse => "59408-5",
            Vital::OxygenSaturationArterial => "2708-6",
            Vital::HeartRate => "8867-4",
            Vital::SystolicBloodPressure => "8480-6",
            Vital::BodyTemperature => "8310-5",
            Vital::InhaledOxygenConcentration => "3150-0",
            Vital::InhaledOxygenFlow => "3151-8",
            Vital::Consciousness => "67775-7",
        }
    }

    /// The canonical UCUM unit values are stored in.
    pub fn canonical_unit(self) -> &'static str {
        match self {
            Vital::RespiratoryRate | Vital::HeartRate => "/min",
            Vital::OxygenSaturationPulse
            | Vital::OxygenSaturationArterial
            | Vital::InhaledOxygenConcentration => "%",
            Vital::SystolicBloodPressure => "mm[Hg]",
            Vital::BodyTemperature => "Cel",
            Vital::InhaledOxygenFlow => "L/min",
            Vital::Consciousness => "{ACVPU}",
        }
    }

    /// A short name for people.
    pub fn name(self) -> &'static str {
        match self {
            Vital::RespiratoryRate => "respiratory rate",
            Vital::OxygenSaturationPulse => "SpO2",
            Vital::OxygenSaturationArterial => "SaO2",
            Vital::HeartRate => "heart rate",
            Vital::SystolicBloodPressure => "systolic blood pressure",
            Vital::BodyTemperature => "temperature",
            Vital::InhaledOxygenConcentration => "inhaled oxygen concentration",
            Vital::InhaledOxygenFlow => "inhaled oxygen flow",
            Vital::Consciousness => "consciousness (ACVPU)",
        }
    }

    /// The vital sign of a LOINC code, if devices may send it.
    pub fn from_code(code: &str) -> Option<Vital> {
        Vital::ALL.into_iter().find(|v| v.code() == code)
    }
}

impl fmt::Display for Vital {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The ACVPU scale of consciousness NEWS2 uses; anything but `Alert` scores 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acvpu {
    /// A: alert.
    Alert,
    /// C: new confusion (new disorientation, delirium or any new alteration of mentation).
    NewConfusion,
    /// V: responds to voice.
    Voice,
    /// P: responds to pain.
    Pain,
    /// U: unresponsive.
    Unresponsive,
}

impl Acvpu {
    /// Every level, in order (the index is the ordinal carried as the reading's value).
    pub const ALL: [Acvpu; 5] = [
        Acvpu::Alert,
        Acvpu::NewConfusion,
        Acvpu::Voice,
        Acvpu::Pain,
        Acvpu::Unresponsive,
    ];

    /// The ordinal sent as the value of a `67775-7` reading.
    pub fn ordinal(self) -> u8 {
        match self {
            Acvpu::Alert => 0,
            Acvpu::NewConfusion => 1,
            Acvpu::Voice => 2,
            Acvpu::Pain => 3,
            Acvpu::Unresponsive => 4,
        }
    }

    /// The level of a reading's value: exactly one of the ordinals 0..=4, anything else is `None`.
    pub fn from_value(value: f64) -> Option<Acvpu> {
        Acvpu::ALL
            .into_iter()
            .find(|level| f64::from(level.ordinal()) == value)
    }

    /// The SNOMED CT answer code (new confusion is the UK extension's concept).
    pub fn snomed(self) -> &'static str {
        match self {
            Acvpu::Alert => "248234008",
            Acvpu::NewConfusion => "1104301000000104",
            Acvpu::Voice => "300202002",
            Acvpu::Pain => "450847001",
            Acvpu::Unresponsive => "422768004",
        }
    }

    /// The letter on the chart.
    pub fn letter(self) -> char {
        match self {
            Acvpu::Alert => 'A',
            Acvpu::NewConfusion => 'C',
            Acvpu::Voice => 'V',
            Acvpu::Pain => 'P',
            Acvpu::Unresponsive => 'U',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for vital in Vital::ALL {
            assert_eq!(Vital::from_code(vital.code()), Some(vital));
        }
        assert_eq!(Vital::from_code("2339-0"), None);
    }

    #[test]
    fn acvpu_values_are_exact_ordinals() {
        for level in Acvpu::ALL {
            assert_eq!(Acvpu::from_value(f64::from(level.ordinal())), Some(level));
        }
        for bad in [-1.0, 0.5, 5.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Acvpu::from_value(bad), None, "{bad}");
        }
    }
}

//! Physiological ranges per vital sign: a value outside is refused with a reason, never stored.
//!
//! The ranges are deliberately wide (what a living, possibly very ill, patient can show, in the
//! canonical unit); they catch device faults, artefacts and unit mix-ups (a heart rate of 900,
//! a temperature of 60 °C, a saturation of 140 %), not clinical abnormality, which NEWS2 scores.

use crate::error::Error;
use crate::vitals::{Acvpu, Vital};

/// The plausible range of a vital sign in its canonical unit, both ends included.
pub fn range(vital: Vital) -> (f64, f64) {
    match vital {
        Vital::RespiratoryRate => (0.0, 80.0),
        Vital::HeartRate => (0.0, 300.0),
        Vital::OxygenSaturationPulse | Vital::OxygenSaturationArterial => (20.0, 100.0),
        Vital::SystolicBloodPressure => (20.0, 300.0),
        Vital::BodyTemperature => (25.0, 45.0),
        Vital::InhaledOxygenConcentration => (21.0, 100.0),
        Vital::InhaledOxygenFlow => (0.0, 70.0),
        Vital::Consciousness => (0.0, 4.0),
    }
}

/// Accepts a canonical value the patient could really have; refuses it with the range otherwise.
///
/// Consciousness must be one of the exact ACVPU ordinals 0..=4.
pub fn check(vital: Vital, value: f64) -> Result<(), Error> {
    if !value.is_finite() {
        return Err(Error::NotFinite { vital });
    }
    let (low, high) = range(vital);
    let in_range = (low..=high).contains(&value);
    let coded = vital != Vital::Consciousness || Acvpu::from_value(value).is_some();
    if in_range && coded {
        Ok(())
    } else {
        Err(Error::Implausible {
            vital,
            value,
            low,
            high,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_values_are_refused_with_the_range() {
        let err = check(Vital::HeartRate, 900.0).unwrap_err();
        assert_eq!(err.error_code(), "care.implausible");
        assert!(err.to_string().contains("0..=300"), "{err}");
        assert!(check(Vital::BodyTemperature, 60.0).is_err());
        assert!(check(Vital::OxygenSaturationPulse, 140.0).is_err());
        assert!(check(Vital::SystolicBloodPressure, -5.0).is_err());
        assert!(check(Vital::Consciousness, 1.5).is_err());
        assert!(check(Vital::InhaledOxygenConcentration, 15.0).is_err());
        assert_eq!(
            check(Vital::HeartRate, f64::NAN).unwrap_err().error_code(),
            "care.not_finite"
        );
    }

    #[test]
    fn range_ends_are_accepted_and_just_beyond_refused() {
        for vital in Vital::ALL {
            let (low, high) = range(vital);
            assert!(check(vital, low).is_ok(), "{vital} {low}");
            assert!(check(vital, high).is_ok(), "{vital} {high}");
            assert!(check(vital, low - 0.01).is_err(), "{vital} below");
            assert!(check(vital, high + 0.01).is_err(), "{vital} above");
        }
    }

    #[test]
    fn very_ill_but_real_values_pass() {
        assert!(check(Vital::HeartRate, 220.0).is_ok());
        assert!(check(Vital::BodyTemperature, 41.5).is_ok());
        assert!(check(Vital::BodyTemperature, 31.0).is_ok());
        assert!(check(Vital::OxygenSaturationPulse, 62.0).is_ok());
        assert!(check(Vital::RespiratoryRate, 45.0).is_ok());
    }
}

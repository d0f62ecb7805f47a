//! The units accepted for each vital sign (UCUM, case-sensitive) and conversion to the canonical one.
//!
//! A unit that does not measure the quantity is refused with the list of accepted ones, never
//! guessed: a temperature in `mm[Hg]` is a device or mapping fault, not a number to keep.

use crate::error::Error;
use crate::vitals::Vital;

/// One accepted unit: its UCUM string and how a value in it becomes canonical.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    unit: &'static str,
    convert: Conversion,
}

/// The conversions witmed needs, all exact or defined by UCUM.
#[derive(Debug, Clone, Copy)]
enum Conversion {
    /// Already canonical.
    Same,
    /// A fraction (0..1) to percent.
    FractionToPercent,
    /// Degrees Fahrenheit to Celsius.
    FahrenheitToCelsius,
    /// Kelvin to Celsius.
    KelvinToCelsius,
    /// Kilopascal to millimetres of mercury (UCUM: 1 mm[Hg] = 133.322 Pa).
    KilopascalToMmHg,
    /// Per second to per minute.
    PerSecondToPerMinute,
    /// Millilitres per minute to litres per minute.
    MillilitresToLitres,
}

const MM_HG_IN_PA: f64 = 133.322;

impl Conversion {
    fn apply(self, value: f64) -> f64 {
        match self {
            Conversion::Same => value,
            Conversion::FractionToPercent => value * 100.0,
            Conversion::FahrenheitToCelsius => (value - 32.0) * 5.0 / 9.0,
            Conversion::KelvinToCelsius => value - 273.15,
            Conversion::KilopascalToMmHg => value * 1000.0 / MM_HG_IN_PA,
            Conversion::PerSecondToPerMinute => value * 60.0,
            Conversion::MillilitresToLitres => value / 1000.0,
        }
    }
}

fn accepted(vital: Vital) -> &'static [Accepted] {
    use Conversion::*;
    match vital {
        Vital::RespiratoryRate => &[
            Accepted {
                unit: "/min",
                convert: Same,
            },
            Accepted {
                unit: "{breaths}/min",
                convert: Same,
            },
            Accepted {
                unit: "/s",
                convert: PerSecondToPerMinute,
            },
        ],
        Vital::HeartRate => &[
            Accepted {
                unit: "/min",
                convert: Same,
            },
            Accepted {
                unit: "{beats}/min",
                convert: Same,
            },
            Accepted {
                unit: "/s",
                convert: PerSecondToPerMinute,
            },
        ],
        Vital::OxygenSaturationPulse
        | Vital::OxygenSaturationArterial
        | Vital::InhaledOxygenConcentration => &[
            Accepted {
                unit: "%",
                convert: Same,
            },
            Accepted {
                unit: "1",
                convert: FractionToPercent,
            },
        ],
        Vital::SystolicBloodPressure => &[
            Accepted {
                unit: "mm[Hg]",
                convert: Same,
            },
            Accepted {
                unit: "kPa",
                convert: KilopascalToMmHg,
            },
        ],
        Vital::BodyTemperature => &[
            Accepted {
                unit: "Cel",
                convert: Same,
            },
            Accepted {
                unit: "[degF]",
                convert: FahrenheitToCelsius,
            },
            Accepted {
                unit: "K",
                convert: KelvinToCelsius,
            },
        ],
        Vital::InhaledOxygenFlow => &[
            Accepted {
                unit: "L/min",
                convert: Same,
            },
            Accepted {
                unit: "mL/min",
                convert: MillilitresToLitres,
            },
        ],
        Vital::Consciousness => &[Accepted {
            unit: "{ACVPU}",
            convert: Same,
        }],
    }
}

/// The units accepted for a vital sign, canonical first.
pub fn accepted_units(vital: Vital) -> Vec<&'static str> {
    accepted(vital).iter().map(|a| a.unit).collect()
}

/// A value in `unit` converted to the vital sign's canonical unit, or why not.
///
/// Refuses a unit that does not measure the vital sign, and a non-finite value (before or after
/// conversion). Plausibility is a separate step: [`crate::plausibility::check`].
pub fn to_canonical(vital: Vital, value: f64, unit: &str) -> Result<f64, Error> {
    let Some(found) = accepted(vital).iter().find(|a| a.unit == unit) else {
        return Err(Error::WrongUnit {
            vital,
            unit: unit.chars().take(32).collect(),
            accepted: accepted_units(vital).join(", "),
        });
    };
    let canonical = found.convert.apply(value);
    if !value.is_finite() || !canonical.is_finite() {
        return Err(Error::NotFinite { vital });
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vital: Vital, value: f64, unit: &str, expected: f64) {
        let got = to_canonical(vital, value, unit).unwrap();
        assert!(
            (got - expected).abs() < 1e-9,
            "{vital} {value} {unit}: {got} != {expected}"
        );
    }

    #[test]
    fn conversions_reach_the_canonical_unit() {
        check(Vital::BodyTemperature, 98.6, "[degF]", 37.0);
        check(Vital::BodyTemperature, 212.0, "[degF]", 100.0);
        check(Vital::BodyTemperature, 310.15, "K", 37.0);
        check(Vital::BodyTemperature, 36.6, "Cel", 36.6);
        check(
            Vital::SystolicBloodPressure,
            16.0,
            "kPa",
            16_000.0 / 133.322,
        );
        check(Vital::SystolicBloodPressure, 120.0, "mm[Hg]", 120.0);
        check(Vital::OxygenSaturationPulse, 0.97, "1", 97.0);
        check(Vital::InhaledOxygenConcentration, 0.4, "1", 40.0);
        check(Vital::HeartRate, 1.5, "/s", 90.0);
        check(Vital::RespiratoryRate, 18.0, "{breaths}/min", 18.0);
        check(Vital::InhaledOxygenFlow, 2000.0, "mL/min", 2.0);
        check(Vital::Consciousness, 2.0, "{ACVPU}", 2.0);
    }

    #[test]
    fn a_unit_of_another_quantity_is_refused_with_the_accepted_list() {
        let err = to_canonical(Vital::BodyTemperature, 37.0, "mm[Hg]").unwrap_err();
        assert_eq!(err.error_code(), "care.wrong_unit");
        let message = err.to_string();
        assert!(
            message.contains("Cel") && message.contains("[degF]"),
            "{message}"
        );
        // UCUM is case-sensitive: "cel" is not Celsius, and "mmHg" is not UCUM.
        assert!(to_canonical(Vital::BodyTemperature, 37.0, "cel").is_err());
        assert!(to_canonical(Vital::SystolicBloodPressure, 120.0, "mmHg").is_err());
        assert!(to_canonical(Vital::HeartRate, 80.0, "%").is_err());
    }

    #[test]
    fn non_finite_values_are_refused() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = to_canonical(Vital::HeartRate, value, "/min").unwrap_err();
            assert_eq!(err.error_code(), "care.not_finite");
        }
        // Finite in, infinite out: refused too.
        assert!(to_canonical(Vital::HeartRate, f64::MAX, "/s").is_err());
    }
}

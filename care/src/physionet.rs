//! The PhysioNet/CinC 2012 time series as device readings: which parameter feeds which vital sign.
//!
//! The mapping (one stay, rows in time order):
//!
//! | PhysioNet | reading |
//! |---|---|
//! | `HR` | heart rate 8867-4, `/min` |
//! | `RespRate` | respiratory rate 9279-1, `/min` |
//! | `SysABP` (invasive) or `NISysABP` (cuff) | systolic blood pressure 8480-6, `mm[Hg]` |
//! | `Temp` | body temperature 8310-5, `Cel` |
//! | `SaO2` | arterial saturation 2708-6, `%`: the stand-in for SpO2 (the set has no pulse oximetry) |
//! | `FiO2` (a fraction) | inhaled oxygen concentration 3150-0, unit `1`; above 0.21 is supplemental oxygen |
//! | `GCS` | level of responsiveness 67775-7: 15 alert; below 15 not alert (13–14 C, 9–12 V, 4–8 P, 3 U, an approximation; NEWS2 scores every non-alert level 3) |
//!
//! Air or oxygen needs a reading at every time a set may be scored, but the set charts FiO2
//! only when it changes, and nothing for patients on room air. So at each time a stay has a
//! mapped vital sign but no `FiO2` row, the mapping repeats the stay's latest FiO2; a stay with
//! no FiO2 yet is on room air (0.21) unless a `MechVent` row says it is ventilated, in which case
//! the oxygen it receives is unknown and no oxygen reading is sent until a FiO2 row comes (84 of
//! the 2,529 ventilated stays in set-a chart no FiO2 at all; they never get a complete set).
//!
//! Values a real device could not send (refused by [`crate::units`] or
//! [`crate::plausibility`], e.g. PhysioNet's occasional temperature of 0) are dropped and counted.

use serde::Serialize;

use crate::news2::Reading;
use crate::plausibility;
use crate::units;
use crate::vitals::{Acvpu, Vital};

/// One reading as a device would send it: the vital sign, when (seconds since ICU admission),
/// the value and its UCUM unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeviceReading {
    pub vital: Vital,
    pub at: i64,
    pub value: f64,
    pub unit: &'static str,
}

impl DeviceReading {
    /// The reading in canonical units, as the node stores it (None if it would be refused).
    pub fn canonical(&self) -> Option<Reading> {
        let value = units::to_canonical(self.vital, self.value, self.unit).ok()?;
        plausibility::check(self.vital, value).ok()?;
        Some(Reading {
            vital: self.vital,
            at: self.at,
            value,
        })
    }
}

/// A stay's readings, in time order, and how many rows were dropped as implausible.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MappedStay {
    pub readings: Vec<DeviceReading>,
    pub dropped_implausible: u64,
}

/// FiO2 of room air, as a fraction.
const ROOM_AIR_FIO2: f64 = 0.21;

/// The reading one PhysioNet row maps to directly (FiO2 and MechVent are handled by [`map_stay`]).
pub fn direct(param: &str, at: i64, value: f64) -> Option<DeviceReading> {
    let (vital, value, unit) = match param {
        "HR" => (Vital::HeartRate, value, "/min"),
        "RespRate" => (Vital::RespiratoryRate, value, "/min"),
        "SysABP" | "NISysABP" => (Vital::SystolicBloodPressure, value, "mm[Hg]"),
        "Temp" => (Vital::BodyTemperature, value, "Cel"),
        "SaO2" => (Vital::OxygenSaturationArterial, value, "%"),
        "GCS" => (
            Vital::Consciousness,
            f64::from(acvpu_of_gcs(value).ordinal()),
            "{ACVPU}",
        ),
        _ => return None,
    };
    Some(DeviceReading {
        vital,
        at,
        value,
        unit,
    })
}

/// An ACVPU level for a Glasgow coma score (15 alert; see the module table).
pub fn acvpu_of_gcs(gcs: f64) -> Acvpu {
    let gcs = gcs.round();
    if gcs >= 15.0 {
        Acvpu::Alert
    } else if gcs >= 13.0 {
        Acvpu::NewConfusion
    } else if gcs >= 9.0 {
        Acvpu::Voice
    } else if gcs >= 4.0 {
        Acvpu::Pain
    } else {
        // Below 4 (and NaN, which compares false everywhere above): the least responsive level.
        Acvpu::Unresponsive
    }
}

/// Maps one stay's rows `(seconds since admission, parameter, value)` to device readings.
/// Rows need not be sorted; other parameters (labs, weight, urine, ...) are ignored.
pub fn map_stay<'a>(rows: impl IntoIterator<Item = (i64, &'a str, f64)>) -> MappedStay {
    let mut rows: Vec<(i64, &str, f64)> = rows.into_iter().collect();
    rows.sort_by_key(|(at, _, _)| *at);
    let mut out = MappedStay::default();
    let mut latest_fio2: Option<f64> = None;
    let mut ventilated = false;
    let mut start = 0;
    while start < rows.len() {
        let at = rows[start].0;
        let end = start + rows[start..].iter().take_while(|r| r.0 == at).count();
        let mut any_vital = false;
        let mut fio2_here = false;
        for &(_, param, value) in &rows[start..end] {
            let reading = match param {
                "FiO2" => {
                    fio2_here = true;
                    latest_fio2 = Some(value);
                    Some(fio2_reading(at, value))
                }
                "MechVent" => {
                    ventilated |= value >= 1.0;
                    None
                }
                _ => direct(param, at, value),
            };
            if let Some(reading) = reading {
                if reading.canonical().is_some() {
                    any_vital |= reading.vital != Vital::InhaledOxygenConcentration;
                    out.readings.push(reading);
                } else {
                    out.dropped_implausible += 1;
                }
            }
        }
        if any_vital && !fio2_here {
            let carried = latest_fio2.or((!ventilated).then_some(ROOM_AIR_FIO2));
            if let Some(reading) = carried.map(|f| fio2_reading(at, f)) {
                if reading.canonical().is_some() {
                    out.readings.push(reading);
                }
            }
        }
        start = end;
    }
    out
}

fn fio2_reading(at: i64, fraction: f64) -> DeviceReading {
    DeviceReading {
        vital: Vital::InhaledOxygenConcentration,
        at,
        value: fraction,
        unit: "1",
    }
}

/// The canonical readings of a mapped stay, for scoring.
pub fn canonical_readings(stay: &MappedStay) -> Vec<Reading> {
    stay.readings
        .iter()
        .filter_map(DeviceReading::canonical)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vitals_at(stay: &MappedStay, at: i64) -> Vec<(Vital, f64)> {
        stay.readings
            .iter()
            .filter(|r| r.at == at)
            .map(|r| (r.vital, r.value))
            .collect()
    }

    #[test]
    fn the_documented_mapping() {
        let stay = map_stay([
            (0, "HR", 88.0),
            (0, "RespRate", 19.0),
            (0, "NISysABP", 118.0),
            (0, "Temp", 37.2),
            (0, "SaO2", 97.0),
            (0, "GCS", 15.0),
            (0, "Glucose", 130.0),
            (3600, "GCS", 11.0),
            (3600, "FiO2", 0.5),
            (7200, "SysABP", 95.0),
        ]);
        assert_eq!(
            vitals_at(&stay, 0),
            vec![
                (Vital::HeartRate, 88.0),
                (Vital::RespiratoryRate, 19.0),
                (Vital::SystolicBloodPressure, 118.0),
                (Vital::BodyTemperature, 37.2),
                (Vital::OxygenSaturationArterial, 97.0),
                (Vital::Consciousness, 0.0),
                // No FiO2 yet, not ventilated: room air.
                (Vital::InhaledOxygenConcentration, 0.21),
            ]
        );
        assert_eq!(
            vitals_at(&stay, 3600),
            vec![
                (Vital::Consciousness, 2.0),
                (Vital::InhaledOxygenConcentration, 0.5)
            ]
        );
        // The latest FiO2 is carried to later times.
        assert_eq!(
            vitals_at(&stay, 7200),
            vec![
                (Vital::SystolicBloodPressure, 95.0),
                (Vital::InhaledOxygenConcentration, 0.5)
            ]
        );
    }

    #[test]
    fn a_ventilated_stay_without_fio2_sends_no_oxygen_reading() {
        let stay = map_stay([(0, "MechVent", 1.0), (0, "HR", 80.0), (60, "HR", 82.0)]);
        assert!(stay
            .readings
            .iter()
            .all(|r| r.vital != Vital::InhaledOxygenConcentration));
    }

    #[test]
    fn implausible_rows_are_dropped_and_counted() {
        let stay = map_stay([(0, "Temp", 0.0), (0, "HR", 900.0), (0, "HR", 70.0)]);
        assert_eq!(stay.dropped_implausible, 2);
        assert_eq!(vitals_at(&stay, 0)[0], (Vital::HeartRate, 70.0), "{stay:?}");
    }

    #[test]
    fn gcs_levels() {
        let levels: Vec<char> = [15.0, 14.0, 13.0, 12.0, 9.0, 8.0, 4.0, 3.0, f64::NAN]
            .into_iter()
            .map(|g| acvpu_of_gcs(g).letter())
            .collect();
        assert_eq!(levels, ['A', 'C', 'C', 'V', 'V', 'P', 'P', 'U', 'U']);
    }
}

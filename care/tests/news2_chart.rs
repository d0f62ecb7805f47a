//! NEWS2 against the RCP 2017 chart: both sides of every band boundary of every parameter, SpO2 scale 2, the bands and the single-parameter-3 rule, the fresh-set rule, totality.

use proptest::prelude::*;
use witmed_care::news2::{
    self, air_or_oxygen_score, consciousness_score, fresh_set, pulse_score, respiration_rate_score,
    series, spo2_scale1_score, spo2_scale2_score, systolic_bp_score, temperature_score, Band,
    Observations, Oxygen, Parameter, Reading, SpO2Scale, Trend,
};
use witmed_care::{Acvpu, Vital};

/// Checks a scoring function at each (value, expected sub-score) pair.
fn check(name: &str, score: impl Fn(f64) -> u8, cases: &[(f64, u8)]) {
    for &(value, expected) in cases {
        assert_eq!(score(value), expected, "{name} at {value}");
    }
}

#[test]
fn respiration_rate_both_sides_of_every_boundary() {
    // ≤8 → 3 | 9–11 → 1 | 12–20 → 0 | 21–24 → 2 | ≥25 → 3
    check(
        "respiration rate",
        respiration_rate_score,
        &[
            (0.0, 3),
            (8.0, 3),
            (9.0, 1),
            (11.0, 1),
            (12.0, 0),
            (20.0, 0),
            (21.0, 2),
            (24.0, 2),
            (25.0, 3),
            (60.0, 3),
        ],
    );
}

#[test]
fn spo2_scale_1_both_sides_of_every_boundary() {
    // ≤91 → 3 | 92–93 → 2 | 94–95 → 1 | ≥96 → 0
    check(
        "SpO2 scale 1",
        spo2_scale1_score,
        &[
            (50.0, 3),
            (91.0, 3),
            (92.0, 2),
            (93.0, 2),
            (94.0, 1),
            (95.0, 1),
            (96.0, 0),
            (100.0, 0),
        ],
    );
}

#[test]
fn spo2_scale_2_on_air_both_sides_of_every_boundary() {
    // ≤83 → 3 | 84–85 → 2 | 86–87 → 1 | 88–92 → 0 | ≥93 on air → 0
    check(
        "SpO2 scale 2 on air",
        |v| spo2_scale2_score(v, Oxygen::Air),
        &[
            (50.0, 3),
            (83.0, 3),
            (84.0, 2),
            (85.0, 2),
            (86.0, 1),
            (87.0, 1),
            (88.0, 0),
            (92.0, 0),
            (93.0, 0),
            (97.0, 0),
            (100.0, 0),
        ],
    );
}

#[test]
fn spo2_scale_2_on_oxygen_scores_high_saturations() {
    // ... 88–92 → 0 | 93–94 on oxygen → 1 | 95–96 on oxygen → 2 | ≥97 on oxygen → 3
    check(
        "SpO2 scale 2 on oxygen",
        |v| spo2_scale2_score(v, Oxygen::Supplemental),
        &[
            (83.0, 3),
            (84.0, 2),
            (85.0, 2),
            (86.0, 1),
            (87.0, 1),
            (88.0, 0),
            (92.0, 0),
            (93.0, 1),
            (94.0, 1),
            (95.0, 2),
            (96.0, 2),
            (97.0, 3),
            (100.0, 3),
        ],
    );
}

#[test]
fn air_or_oxygen() {
    assert_eq!(air_or_oxygen_score(Oxygen::Air), 0);
    assert_eq!(air_or_oxygen_score(Oxygen::Supplemental), 2);
}

#[test]
fn systolic_bp_both_sides_of_every_boundary() {
    // ≤90 → 3 | 91–100 → 2 | 101–110 → 1 | 111–219 → 0 | ≥220 → 3
    check(
        "systolic BP",
        systolic_bp_score,
        &[
            (40.0, 3),
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
            (280.0, 3),
        ],
    );
}

#[test]
fn pulse_both_sides_of_every_boundary() {
    // ≤40 → 3 | 41–50 → 1 | 51–90 → 0 | 91–110 → 1 | 111–130 → 2 | ≥131 → 3
    check(
        "pulse",
        pulse_score,
        &[
            (20.0, 3),
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
            (220.0, 3),
        ],
    );
}

#[test]
fn consciousness_alert_or_cvpu() {
    assert_eq!(consciousness_score(Acvpu::Alert), 0);
    for level in [
        Acvpu::NewConfusion,
        Acvpu::Voice,
        Acvpu::Pain,
        Acvpu::Unresponsive,
    ] {
        assert_eq!(consciousness_score(level), 3, "{level:?}");
    }
}

#[test]
fn temperature_both_sides_of_every_boundary() {
    // ≤35.0 → 3 | 35.1–36.0 → 1 | 36.1–38.0 → 0 | 38.1–39.0 → 1 | ≥39.1 → 2
    check(
        "temperature",
        temperature_score,
        &[
            (30.0, 3),
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
            (42.0, 2),
        ],
    );
}

#[test]
fn measured_values_are_rounded_to_the_charts_resolution() {
    // Half away from zero, as a bedside observer reads a monitor.
    assert_eq!(pulse_score(90.4), 0);
    assert_eq!(pulse_score(90.5), 1);
    assert_eq!(respiration_rate_score(20.49), 0);
    assert_eq!(respiration_rate_score(20.5), 2);
    assert_eq!(spo2_scale1_score(95.5), 0);
    assert_eq!(systolic_bp_score(110.6), 0);
    assert_eq!(temperature_score(38.04), 0);
    assert_eq!(temperature_score(38.06), 1);
    assert_eq!(temperature_score(35.04), 3);
}

fn normal() -> Observations {
    Observations {
        respiration_rate: 16.0,
        spo2: 97.0,
        oxygen: Oxygen::Air,
        systolic_bp: 125.0,
        pulse: 72.0,
        consciousness: Acvpu::Alert,
        temperature: 36.8,
    }
}

#[test]
fn a_normal_patient_scores_zero() {
    let score = news2::score(&normal(), SpO2Scale::One);
    assert_eq!(score.total, 0);
    assert_eq!(score.band, Band::Zero);
}

#[test]
fn bands_at_both_sides_of_every_aggregate_boundary() {
    // Aggregates built from 1s and 2s only (no single 3), so only the total decides.
    let cases = [
        (
            Observations {
                pulse: 95.0,
                ..normal()
            },
            1,
            Band::Low,
        ),
        (
            Observations {
                pulse: 95.0,
                temperature: 39.5,
                respiration_rate: 10.0,
                ..normal()
            },
            4,
            Band::Low,
        ),
        (
            Observations {
                pulse: 115.0,
                temperature: 39.5,
                respiration_rate: 10.0,
                ..normal()
            },
            5,
            Band::Medium,
        ),
        (
            Observations {
                pulse: 115.0,
                temperature: 39.5,
                respiration_rate: 22.0,
                ..normal()
            },
            6,
            Band::Medium,
        ),
        (
            Observations {
                pulse: 115.0,
                temperature: 39.5,
                respiration_rate: 22.0,
                systolic_bp: 105.0,
                ..normal()
            },
            7,
            Band::High,
        ),
    ];
    for (observations, total, band) in cases {
        let score = news2::score(&observations, SpO2Scale::One);
        assert_eq!((score.total, score.band), (total, band), "{observations:?}");
        assert!(score.sub_scores.each().iter().all(|(_, s)| *s < 3));
    }
}

#[test]
fn a_three_in_any_single_parameter_is_low_medium_below_five() {
    let single_threes = [
        Observations {
            respiration_rate: 25.0,
            ..normal()
        },
        Observations {
            spo2: 91.0,
            ..normal()
        },
        Observations {
            systolic_bp: 90.0,
            ..normal()
        },
        Observations {
            pulse: 131.0,
            ..normal()
        },
        Observations {
            consciousness: Acvpu::NewConfusion,
            ..normal()
        },
        Observations {
            temperature: 35.0,
            ..normal()
        },
    ];
    for observations in single_threes {
        let score = news2::score(&observations, SpO2Scale::One);
        assert_eq!(score.total, 3, "{observations:?}");
        assert_eq!(score.band, Band::LowMedium, "{observations:?}");
    }
    // A 3 plus a 1 is still low-medium (4); a 3 plus a 2 is medium (5): the aggregate rules.
    let four = Observations {
        pulse: 131.0,
        temperature: 38.5,
        ..normal()
    };
    assert_eq!(news2::score(&four, SpO2Scale::One).band, Band::LowMedium);
    let five = Observations {
        pulse: 131.0,
        temperature: 39.5,
        ..normal()
    };
    assert_eq!(news2::score(&five, SpO2Scale::One).band, Band::Medium);
    // Totals of 3 made of smaller scores are only low.
    let three_ones = Observations {
        pulse: 95.0,
        temperature: 38.5,
        respiration_rate: 10.0,
        ..normal()
    };
    assert_eq!(news2::score(&three_ones, SpO2Scale::One).band, Band::Low);
}

#[test]
fn scale_2_changes_only_the_saturation_row() {
    let on_oxygen_97 = Observations {
        spo2: 97.0,
        oxygen: Oxygen::Supplemental,
        ..normal()
    };
    let one = news2::score(&on_oxygen_97, SpO2Scale::One);
    let two = news2::score(&on_oxygen_97, SpO2Scale::Two);
    assert_eq!(one.sub_scores.oxygen_saturation, 0);
    assert_eq!(two.sub_scores.oxygen_saturation, 3);
    assert_eq!(one.sub_scores.air_or_oxygen, 2);
    assert_eq!(two.sub_scores.air_or_oxygen, 2);
    assert_eq!((one.total, two.total), (2, 5));
    assert_eq!(two.band, Band::Medium);
    assert_eq!(two.scale, SpO2Scale::Two);
    // A COPD patient at 89 % on air: alarming on scale 1, on target on scale 2.
    let copd = Observations {
        spo2: 89.0,
        ..normal()
    };
    assert_eq!(news2::score(&copd, SpO2Scale::One).band, Band::LowMedium);
    assert_eq!(news2::score(&copd, SpO2Scale::Two).band, Band::Zero);
}

fn reading(vital: Vital, at: i64, value: f64) -> Reading {
    Reading { vital, at, value }
}

/// A complete normal set at time `at`.
fn normal_set(at: i64) -> Vec<Reading> {
    vec![
        reading(Vital::RespiratoryRate, at, 16.0),
        reading(Vital::OxygenSaturationPulse, at, 97.0),
        reading(Vital::InhaledOxygenConcentration, at, 21.0),
        reading(Vital::SystolicBloodPressure, at, 125.0),
        reading(Vital::HeartRate, at, 72.0),
        reading(Vital::Consciousness, at, 0.0),
        reading(Vital::BodyTemperature, at, 36.8),
    ]
}

#[test]
fn a_fresh_set_takes_each_parameters_newest_reading_in_the_window() {
    let mut readings = normal_set(1_000);
    readings.push(reading(Vital::HeartRate, 1_500, 135.0));
    readings.push(reading(Vital::InhaledOxygenFlow, 1_600, 2.0));
    readings.push(reading(Vital::HeartRate, 2_500, 60.0)); // after `now`: ignored
    let set = fresh_set(&readings, 2_000, 1_000).unwrap();
    assert_eq!(set.observations.pulse, 135.0);
    assert_eq!(set.observations.oxygen, Oxygen::Supplemental);
    assert_eq!((set.oldest, set.newest), (1_000, 1_600));
    let score = news2::score(&set.observations, SpO2Scale::One);
    assert_eq!(score.sub_scores.pulse, 3);
    assert_eq!(score.total, 5);
}

#[test]
fn a_set_with_a_reading_outside_the_window_names_what_is_missing() {
    let mut readings = normal_set(1_500);
    readings.retain(|r| r.vital != Vital::BodyTemperature);
    readings.push(reading(Vital::BodyTemperature, 500, 36.8));
    let missing = fresh_set(&readings, 2_000, 1_000).unwrap_err();
    assert_eq!(missing.parameters, vec![Parameter::Temperature]);
    assert!(missing.to_string().contains("temperature"), "{missing}");
    // The window's start is included.
    assert!(fresh_set(&readings, 1_500, 1_000).is_ok());
    let nothing = fresh_set(&[], 0, 60).unwrap_err();
    assert_eq!(nothing.parameters, Parameter::ALL.to_vec());
}

#[test]
fn duplicate_readings_at_one_time_keep_the_alarming_one() {
    let mut readings = normal_set(100);
    readings.push(reading(Vital::HeartRate, 100, 140.0));
    readings.push(reading(Vital::OxygenSaturationArterial, 100, 90.0));
    let set = fresh_set(&readings, 100, 60).unwrap();
    assert_eq!(set.observations.pulse, 140.0);
    assert_eq!(set.observations.spo2, 90.0);
}

#[test]
fn unreadable_readings_are_skipped_not_scored() {
    let mut readings = normal_set(100);
    readings.push(reading(Vital::Consciousness, 200, 1.5));
    readings.push(reading(Vital::HeartRate, 200, f64::NAN));
    let set = fresh_set(&readings, 200, 1_000).unwrap();
    assert_eq!(set.observations.consciousness, Acvpu::Alert);
    assert_eq!(set.observations.pulse, 72.0);
}

#[test]
fn the_series_scores_each_time_with_a_fresh_set() {
    let mut readings = normal_set(0);
    readings.push(reading(Vital::HeartRate, 600, 120.0)); // 2
    readings.push(reading(Vital::Consciousness, 1_200, 2.0)); // + 3
    readings.push(reading(Vital::RespiratoryRate, 5_000, 16.0)); // others now stale
    let scores: Vec<(i64, u8, Band)> = series(&readings, 3_600, SpO2Scale::One)
        .into_iter()
        .map(|(at, s)| (at, s.total, s.band))
        .collect();
    assert_eq!(
        scores,
        vec![
            (0, 0, Band::Zero),
            (600, 2, Band::Low),
            (1_200, 5, Band::Medium)
        ]
    );
    assert_eq!(Trend::between(2, 5), Trend::Rising);
    assert_eq!(Trend::between(5, 5), Trend::Steady);
    assert_eq!(Trend::between(5, 0), Trend::Falling);
}

#[test]
fn band_order_is_urgency() {
    assert!(Band::Zero < Band::Low);
    assert!(Band::Low < Band::LowMedium);
    assert!(Band::LowMedium < Band::Medium);
    assert!(Band::Medium < Band::High);
}

fn any_vital() -> impl Strategy<Value = Vital> {
    prop::sample::select(Vital::ALL.to_vec())
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e3f64..1e3,
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY)
    ]
}

proptest! {
    #[test]
    fn scoring_is_total_and_bounded(
        rr in any_f64(), spo2 in any_f64(), sbp in any_f64(), pulse in any_f64(), temp in any_f64(),
        on_oxygen: bool, level in 0usize..5, scale_two: bool,
    ) {
        let observations = Observations {
            respiration_rate: rr,
            spo2,
            oxygen: if on_oxygen { Oxygen::Supplemental } else { Oxygen::Air },
            systolic_bp: sbp,
            pulse,
            consciousness: Acvpu::ALL[level],
            temperature: temp,
        };
        let scale = if scale_two { SpO2Scale::Two } else { SpO2Scale::One };
        let score = news2::score(&observations, scale);
        prop_assert!(score.total <= 20);
        prop_assert!(score.sub_scores.each().iter().all(|(_, s)| *s <= 3));
        let any_three = score.sub_scores.each().iter().any(|(_, s)| *s == 3);
        prop_assert_eq!(score.band, Band::of(score.total, any_three));
    }

    #[test]
    fn fresh_set_and_series_are_total(
        readings in prop::collection::vec((any_vital(), any::<i64>(), any_f64()), 0..40),
        now: i64, window: u32,
    ) {
        let readings: Vec<Reading> = readings
            .into_iter()
            .map(|(vital, at, value)| Reading { vital, at, value })
            .collect();
        if let Ok(set) = fresh_set(&readings, now, window) {
            prop_assert!(set.oldest <= set.newest && set.newest <= now);
        }
        for (_, score) in series(&readings, window, SpO2Scale::Two) {
            prop_assert!(score.total <= 20);
        }
    }
}

#[test]
fn codes_match_the_importers_and_the_vital_sign_vocabulary() {
    use witmed_import::physionet::loinc_for;
    assert_eq!(loinc_for("HR"), Some(Vital::HeartRate.code()));
    assert_eq!(loinc_for("RespRate"), Some(Vital::RespiratoryRate.code()));
    assert_eq!(
        loinc_for("SysABP"),
        Some(Vital::SystolicBloodPressure.code())
    );
    assert_eq!(
        loinc_for("NISysABP"),
        Some(Vital::SystolicBloodPressure.code())
    );
    assert_eq!(loinc_for("Temp"), Some(Vital::BodyTemperature.code()));
    assert_eq!(
        loinc_for("SaO2"),
        Some(Vital::OxygenSaturationArterial.code())
    );
    assert_eq!(
        loinc_for("FiO2"),
        Some(Vital::InhaledOxygenConcentration.code())
    );
    for vital in [
        Vital::RespiratoryRate,
        Vital::OxygenSaturationPulse,
        Vital::OxygenSaturationArterial,
        Vital::HeartRate,
        Vital::SystolicBloodPressure,
        Vital::BodyTemperature,
    ] {
        assert!(
            witmed_protocol::vocab::VITAL_SIGN_CODES.contains(&vital.code()),
            "{vital}"
        );
    }
}

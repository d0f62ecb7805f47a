//! Bad specs and unusable sums are refused with a stable code and a message that says what to do; every request path is total (no panic on any input).

use proptest::prelude::*;
use witmed_protocol::analysis::regression::{
    LinearPatient, LinearSpec, LogisticPatient, LogisticSpec, Variable,
};
use witmed_protocol::analysis::{
    survival, table, Bounds, Error, Noise, NoiseKind, MAX_CELLS, MAX_COVARIATES, MAX_TIME_BINS,
};

/// Asserts the error's code, and that its message gives a remedy after the cause.
fn refused<T: std::fmt::Debug>(result: Result<T, Error>, code: &str) {
    let error = result.expect_err("should be refused");
    assert_eq!(error.error_code(), code, "{error}");
    let message = error.to_string();
    assert!(message.contains(';'), "no remedy in: {message}");
}

fn bounded(name: &str, lower: f64, upper: f64) -> Variable {
    Variable {
        name: name.into(),
        bounds: Some(Bounds { lower, upper }),
    }
}

fn edges(n: usize) -> Vec<f64> {
    (0..n).map(|e| e as f64).collect()
}

#[test]
fn survival_specs_are_refused() {
    let spec = |bin_edges: Vec<f64>, groups| survival::Spec { bin_edges, groups };
    refused(spec(vec![], 1).validate(), "bad_bins");
    refused(spec(vec![1.0], 1).validate(), "bad_bins");
    refused(spec(vec![0.0, 2.0, 1.0], 1).validate(), "bad_bins");
    refused(spec(vec![0.0, 1.0, 1.0], 1).validate(), "bad_bins");
    refused(spec(vec![0.0, f64::NAN], 1).validate(), "bad_bins");
    refused(spec(vec![0.0, f64::INFINITY], 1).validate(), "bad_bins");
    refused(spec(edges(MAX_TIME_BINS + 2), 1).validate(), "too_large");
    refused(spec(edges(3), 0).validate(), "too_small");
    refused(spec(edges(3), 9).validate(), "too_large");
    assert!(spec(edges(MAX_TIME_BINS + 1), 8).validate().is_ok());
    let ok = spec(edges(3), 2);
    let nan = survival::Patient {
        time: f64::NAN,
        event: true,
        group: 0,
    };
    refused(ok.contribution(&nan), "bad_patient");
    let stranger = survival::Patient {
        time: 1.0,
        event: true,
        group: 2,
    };
    refused(ok.contribution(&stranger), "bad_patient");
    refused(
        ok.from_sums(&[0.0; 3], &[Noise::NONE; 3], 0),
        "wrong_length",
    );
    let mut sums = vec![1.0; ok.len()];
    refused(ok.from_sums(&sums, &[Noise::NONE; 3], 0), "wrong_length");
    refused(
        ok.from_sums(&sums, &vec![Noise::laplace(-1.0); ok.len()], 0),
        "bad_noise",
    );
    let nobody = Noise {
        contributors: 0,
        ..Noise::laplace(1.0)
    };
    refused(ok.from_sums(&sums, &vec![nobody; ok.len()], 0), "bad_noise");
    sums[0] = f64::NAN;
    refused(
        ok.from_sums(&sums, &vec![Noise::NONE; ok.len()], 0),
        "unusable",
    );
}

#[test]
fn table_specs_are_refused() {
    let spec = |levels: &[(&str, usize)]| table::Spec {
        variables: levels
            .iter()
            .map(|(name, levels)| table::Variable {
                name: name.to_string(),
                levels: *levels,
            })
            .collect(),
    };
    refused(spec(&[("sex", 2)]).validate(), "too_small");
    refused(
        spec(&[("a", 2), ("b", 2), ("c", 2), ("d", 2)]).validate(),
        "too_large",
    );
    refused(spec(&[("a", 8), ("b", 9)]).validate(), "too_large");
    refused(
        spec(&[("a", usize::MAX), ("b", usize::MAX)]).validate(),
        "too_large",
    );
    refused(spec(&[("a", 1), ("b", 2)]).validate(), "too_small");
    refused(
        spec(&[("sex", 2), ("sex", 2)]).validate(),
        "unknown_variable",
    );
    refused(spec(&[("", 2), ("sex", 2)]).validate(), "unknown_variable");
    assert!(spec(&[("a", 8), ("b", MAX_CELLS / 8)]).validate().is_ok());
    let ok = spec(&[("sex", 2), ("death", 2)]);
    refused(
        ok.contribution(&table::Patient { levels: vec![0, 2] }),
        "bad_patient",
    );
    refused(
        ok.contribution(&table::Patient { levels: vec![0] }),
        "wrong_length",
    );
}

#[test]
fn regression_specs_are_refused() {
    let linear = |covariates: Vec<Variable>| LinearSpec {
        covariates,
        outcome: bounded("los", 0.0, 30.0),
    };
    refused(linear(vec![]).validate(), "too_small");
    let many = (0..=MAX_COVARIATES)
        .map(|i| bounded(&format!("x{i}"), 0.0, 1.0))
        .collect();
    refused(linear(many).validate(), "too_large");
    let unbounded = Variable {
        name: "age".into(),
        bounds: None,
    };
    refused(linear(vec![unbounded.clone()]).validate(), "missing_bounds");
    refused(
        linear(vec![bounded("age", 5.0, 5.0)]).validate(),
        "bad_bounds",
    );
    refused(
        linear(vec![bounded("age", 9.0, 5.0)]).validate(),
        "bad_bounds",
    );
    refused(
        linear(vec![bounded("age", f64::NAN, 5.0)]).validate(),
        "bad_bounds",
    );
    refused(
        linear(vec![bounded("age", 0.0, f64::INFINITY)]).validate(),
        "bad_bounds",
    );
    refused(
        linear(vec![bounded("los", 0.0, 1.0)]).validate(),
        "unknown_variable",
    );
    let mut no_outcome_bounds = linear(vec![bounded("age", 0.0, 100.0)]);
    no_outcome_bounds.outcome.bounds = None;
    refused(no_outcome_bounds.validate(), "missing_bounds");

    let logistic = |rounds| LogisticSpec {
        covariates: vec![bounded("age", 0.0, 100.0)],
        outcome: "death".into(),
        rounds,
    };
    refused(logistic(0).validate(), "too_small");
    refused(logistic(7).validate(), "too_large");
    let spec = logistic(3);
    let patient = LogisticPatient {
        covariates: vec![50.0],
        outcome: true,
    };
    refused(spec.contribution(&patient, &[0.0]), "wrong_length");
    refused(
        spec.contribution(&patient, &[0.0, f64::NAN]),
        "bad_coefficients",
    );
    refused(spec.contribution(&patient, &[0.0, 1e6]), "bad_coefficients");
    let nan = LogisticPatient {
        covariates: vec![f64::NAN],
        outcome: true,
    };
    refused(spec.contribution(&nan, &spec.start()), "bad_patient");
}

/// Sums of identical covariates: X'X is singular, whatever the patients.
#[test]
fn singular_designs_and_too_few_patients_are_refused() {
    let spec = LinearSpec {
        covariates: vec![bounded("a", 0.0, 10.0), bounded("b", 0.0, 10.0)],
        outcome: bounded("y", 0.0, 10.0),
    };
    let total = |patients: &[LinearPatient]| {
        let mut sum = vec![0.0; spec.len()];
        for p in patients {
            for (s, v) in sum.iter_mut().zip(spec.contribution(p).unwrap()) {
                *s += v;
            }
        }
        sum
    };
    let collinear: Vec<LinearPatient> = (0..50)
        .map(|i| LinearPatient {
            covariates: vec![f64::from(i % 10); 2],
            outcome: 1.0,
        })
        .collect();
    let silent = vec![Noise::NONE; spec.len()];
    refused(spec.from_sums(&total(&collinear), &silent), "unusable");
    let few: Vec<LinearPatient> = (0..3)
        .map(|i| LinearPatient {
            covariates: vec![f64::from(i), 1.0],
            outcome: 1.0,
        })
        .collect();
    refused(spec.from_sums(&total(&few), &silent), "unusable");

    let logistic = LogisticSpec {
        covariates: vec![bounded("a", 0.0, 10.0), bounded("b", 0.0, 10.0)],
        outcome: "death".into(),
        rounds: 3,
    };
    let start = logistic.start();
    let mut sums = vec![0.0; logistic.len()];
    for i in 0..50 {
        let p = LogisticPatient {
            covariates: vec![f64::from(i % 10); 2],
            outcome: i % 3 == 0,
        };
        for (s, v) in sums
            .iter_mut()
            .zip(logistic.contribution(&p, &start).unwrap())
        {
            *s += v;
        }
    }
    refused(
        logistic.from_sums(&start, &sums, &vec![Noise::NONE; logistic.len()]),
        "unusable",
    );
}

/// The largest specs the limits allow, with noise (so every simulation
/// runs), finish well within a second in release and a few in debug.
#[test]
fn the_largest_specs_finish_quickly() {
    let started = std::time::Instant::now();
    let spec = survival::Spec {
        bin_edges: edges(MAX_TIME_BINS + 1),
        groups: witmed_protocol::analysis::MAX_GROUPS,
    };
    let sums: Vec<f64> = (0..spec.len()).map(|i| 50.0 + (i % 7) as f64).collect();
    let noises = vec![Noise::laplace(2.0); spec.len()];
    let result = spec.from_sums(&sums, &noises, 1).unwrap();
    assert!(result.log_rank.is_some());
    let table = table::Spec {
        variables: [("a", 4), ("b", 4), ("c", 4)]
            .iter()
            .map(|(name, levels)| table::Variable {
                name: name.to_string(),
                levels: *levels,
            })
            .collect(),
    };
    assert_eq!(table.len(), MAX_CELLS);
    let sums: Vec<f64> = (0..MAX_CELLS).map(|i| 30.0 + (i % 5) as f64).collect();
    let noises = vec![
        Noise {
            contributors: 100,
            ..Noise::laplace(2.0)
        };
        MAX_CELLS
    ];
    assert!(table
        .from_sums(&sums, &noises, 1)
        .unwrap()
        .chi_square
        .is_some());
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs_f64() < 20.0, "{elapsed:?}");
    eprintln!("largest survival and table analyses: {elapsed:?}");
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::ANY,
        -1e4..1e4f64,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::MAX),
        Just(0.0),
    ]
}

fn any_noise() -> impl Strategy<Value = Noise> {
    (
        any::<bool>(),
        any_f64(),
        prop_oneof![Just(1u32), Just(3u32), any::<u32>()],
    )
        .prop_map(|(laplace, scale, contributors)| Noise {
            kind: if laplace {
                NoiseKind::Laplace
            } else {
                NoiseKind::Gaussian
            },
            scale: scale.abs(),
            contributors,
        })
}

/// Curves stay in [0, 1] and non-increasing, bands inside [0, 1] around them.
fn check_curves(result: &survival::Survival) -> Result<(), TestCaseError> {
    for curve in &result.curves {
        for pair in curve.survival.windows(2) {
            prop_assert!(pair[1] <= pair[0], "{pair:?}");
        }
        for (s, (lo, hi)) in curve.survival.iter().zip(&curve.band) {
            prop_assert!((0.0..=1.0).contains(s), "{s}");
            prop_assert!(0.0 <= *lo && lo <= hi && *hi <= 1.0, "{lo} {hi}");
        }
        for pair in curve.at_risk.windows(2) {
            prop_assert!(pair[1] <= pair[0], "{pair:?}");
        }
    }
    if let Some(test) = result.log_rank {
        prop_assert!((0.0..=1.0).contains(&test.p_value), "{}", test.p_value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn survival_is_total(
        edges in prop::collection::vec(any_f64(), 0..6),
        groups in 0usize..4,
        sums in prop::collection::vec(any_f64(), 0..40),
        noise in any_noise(),
        time in any_f64(),
        seed in any::<u64>(),
    ) {
        let spec = survival::Spec { bin_edges: edges, groups };
        let _ = spec.contribution(&survival::Patient { time, event: true, group: 0 });
        let noises = vec![noise; sums.len()];
        if let Ok(result) = spec.from_sums(&sums, &noises, seed) {
            check_curves(&result)?;
        }
    }

    #[test]
    fn survival_sums_of_the_right_length_are_total(
        sums in prop::collection::vec(any_f64(), 2 * (2 * 4 + 1)),
        scale in 0.0..1e6f64,
        seed in any::<u64>(),
    ) {
        let spec = survival::Spec { bin_edges: edges(5), groups: 2 };
        let noises = vec![Noise::laplace(scale); spec.len()];
        for noises in [noises, vec![Noise::NONE; spec.len()]] {
            if let Ok(result) = spec.from_sums(&sums, &noises, seed) {
                check_curves(&result)?;
            }
        }
    }

    #[test]
    fn tables_are_total(
        levels in prop::collection::vec(0usize..10, 0..4),
        cell in prop::collection::vec(any::<usize>(), 0..4),
        sums in prop::collection::vec(any_f64(), 4),
        noise in any_noise(),
        seed in any::<u64>(),
    ) {
        let spec = table::Spec {
            variables: levels.iter().enumerate().map(|(i, l)| table::Variable { name: format!("v{i}"), levels: *l }).collect(),
        };
        let _ = spec.contribution(&table::Patient { levels: cell });
        let _ = spec.from_sums(&sums, &[noise; 4], seed);
        let two_by_two = table::Spec {
            variables: vec![
                table::Variable { name: "a".into(), levels: 2 },
                table::Variable { name: "b".into(), levels: 2 },
            ],
        };
        if let Ok(result) = two_by_two.from_sums(&sums, &[noise; 4], seed) {
            if let Some(test) = result.chi_square {
                prop_assert!((0.0..=1.0).contains(&test.p_value), "{}", test.p_value);
            }
        }
    }

    #[test]
    fn regressions_are_total(
        lower in any_f64(),
        upper in any_f64(),
        values in prop::collection::vec(any_f64(), 3),
        sums in prop::collection::vec(any_f64(), 10),
        scaled in prop::collection::vec(any_f64(), 3),
        noise in any_noise(),
    ) {
        let linear = LinearSpec {
            covariates: vec![bounded("a", lower, upper), bounded("b", -1.0, 1.0)],
            outcome: bounded("y", 0.0, 1.0),
        };
        let _ = linear.contribution(&LinearPatient { covariates: values[..2].to_vec(), outcome: values[2] });
        let _ = linear.from_sums(&sums, &[noise; 10]);
        let fine = LinearSpec { covariates: vec![bounded("a", 0.0, 1.0), bounded("b", -1.0, 1.0)], ..linear };
        let _ = fine.from_sums(&sums, &[noise; 10]);
        let logistic = LogisticSpec {
            covariates: vec![bounded("a", 0.0, 1.0), bounded("b", lower, upper)],
            outcome: "death".into(),
            rounds: 3,
        };
        let _ = logistic.contribution(&LogisticPatient { covariates: values[..2].to_vec(), outcome: true }, &scaled);
        let _ = logistic.from_sums(&scaled, &sums[..9], &[noise; 9]);
        let _ = logistic.from_sums(&logistic.start(), &sums[..9], &[noise; 9]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn exact_references_are_total(
        subjects in prop::collection::vec((any_f64(), any::<bool>(), 0usize..12), 0..20),
        groups in 0usize..12,
        rows in prop::collection::vec(prop::collection::vec(any_f64(), 0..3), 0..12),
        y in prop::collection::vec(any_f64(), 0..12),
        cells in prop::collection::vec(any_f64(), 0..9),
        levels in prop::collection::vec(0usize..4, 0..3),
    ) {
        use witmed_protocol::analysis::exact;
        let subjects: Vec<exact::Subject> = subjects
            .into_iter()
            .map(|(time, event, group)| exact::Subject { time, event, group })
            .collect();
        let _ = exact::kaplan_meier(&subjects);
        let _ = exact::log_rank(&subjects, groups);
        let _ = exact::chi_square_independence(&levels, &cells);
        let _ = exact::ols(&rows, &y);
        let outcomes: Vec<bool> = y.iter().map(|v| *v > 0.0).collect();
        let _ = exact::logistic_irls(&rows, &outcomes);
        if let [a, b, c, d, ..] = cells[..] {
            let _ = exact::odds_ratio_woolf(a, b, c, d);
        }
    }
}

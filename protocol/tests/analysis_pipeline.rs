//! The noisy pipeline with zero noise equals the exact references, and no patient's vector exceeds the stated sensitivity.

mod analysis_support;

use analysis_support::{close, rng, total};
use rand::Rng;
use witmed_protocol::analysis::exact::{self, Subject};
use witmed_protocol::analysis::regression::{
    LinearPatient, LinearSpec, LogisticPatient, LogisticSpec, Variable,
};
use witmed_protocol::analysis::stats::z_level;
use witmed_protocol::analysis::{survival, table, Bounds, Noise};

const EDGES: usize = 11; // bins [0,1), ..., [9,10)

fn survival_spec(groups: usize) -> survival::Spec {
    survival::Spec {
        bin_edges: (0..EDGES).map(|e| e as f64).collect(),
        groups,
    }
}

/// Integer times 0..=13 with group-dependent hazards, censoring about one in four.
fn survival_cohort(seed: u64, n: usize) -> Vec<survival::Patient> {
    let mut rng = rng(seed);
    (0..n)
        .map(|i| {
            let group = i % 2;
            let hazard = if group == 0 { 0.10 } else { 0.16 };
            let mut time = 0.0;
            let event = loop {
                if rng.gen_bool(hazard) {
                    break true;
                }
                if rng.gen_bool(0.04) || time >= 13.0 {
                    break false;
                }
                time += 1.0;
            };
            survival::Patient { time, event, group }
        })
        .collect()
}

#[test]
fn survival_without_noise_is_kaplan_meier_greenwood_and_log_rank() {
    let spec = survival_spec(2);
    let patients = survival_cohort(1, 400);
    let sums = total(
        patients.iter().map(|p| spec.contribution(p).unwrap()),
        spec.len(),
    );
    let result = spec
        .from_sums(&sums, &vec![Noise::NONE; spec.len()], 9)
        .unwrap();
    // Follow-up ends at the last edge: later times are censored there.
    let last = (EDGES - 1) as f64;
    let subjects: Vec<Subject> = patients
        .iter()
        .map(|p| Subject {
            time: p.time.min(last),
            event: p.event && p.time < last,
            group: p.group,
        })
        .collect();
    let z = z_level();
    for (group, curve) in result.curves.iter().enumerate() {
        let own: Vec<Subject> = subjects
            .iter()
            .copied()
            .filter(|s| s.group == group)
            .collect();
        let steps = exact::kaplan_meier(&own);
        assert!(!steps.is_empty());
        let mut s = 1.0;
        let mut log_variance = 0.0;
        for bin in 0..EDGES - 1 {
            let at_risk = own.iter().filter(|x| x.time >= bin as f64).count() as f64;
            close(curve.at_risk[bin], at_risk, 1e-12, "at risk");
            if let Some(step) = steps.iter().find(|st| st.time == bin as f64) {
                s = step.survival;
                log_variance = step.greenwood_variance / (s * s);
                close(curve.events[bin], step.events, 1e-12, "events");
            }
            close(curve.survival[bin], s, 1e-12, "survival");
            let spread = z * log_variance.sqrt() / s.ln().abs();
            let (lo, hi) = curve.band[bin];
            close(lo, s.powf(spread.exp()), 1e-9, "band lower");
            close(hi, s.powf((-spread).exp()), 1e-9, "band upper");
        }
    }
    let want = exact::log_rank(&subjects, 2).unwrap();
    let got = result.log_rank.unwrap();
    close(got.statistic, want.statistic, 1e-9, "log-rank");
    close(got.p_value, want.p_value, 1e-9, "log-rank p");
    assert_eq!(got.df, 1);
}

fn table_spec(levels: &[usize]) -> table::Spec {
    table::Spec {
        variables: levels
            .iter()
            .enumerate()
            .map(|(i, l)| table::Variable {
                name: format!("v{i}"),
                levels: *l,
            })
            .collect(),
    }
}

#[test]
fn tables_without_noise_are_chi_square_and_woolf() {
    let mut rng = rng(2);
    for levels in [vec![2, 2], vec![2, 3], vec![2, 3, 2]] {
        let spec = table_spec(&levels);
        let patients: Vec<table::Patient> = (0..500)
            .map(|_| table::Patient {
                levels: levels.iter().map(|l| rng.gen_range(0..*l)).collect(),
            })
            .collect();
        let sums = total(
            patients.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let result = spec
            .from_sums(&sums, &vec![Noise::NONE; spec.len()], 3)
            .unwrap();
        assert_eq!(result.counts, sums);
        let want = exact::chi_square_independence(&levels, &sums).unwrap();
        let got = result.chi_square.unwrap();
        close(got.statistic, want.statistic, 1e-12, "chi-square");
        close(got.p_value, want.p_value, 1e-12, "p");
        assert_eq!(got.df, want.df);
        if levels == [2, 2] {
            let (or, ci) = exact::odds_ratio_woolf(sums[0], sums[1], sums[2], sums[3]).unwrap();
            let got = result.odds_ratio.unwrap();
            close(got.estimate, or, 1e-12, "OR");
            close(got.ci95.0, ci.0, 1e-12, "OR lower");
            close(got.ci95.1, ci.1, 1e-12, "OR upper");
        } else {
            assert!(result.odds_ratio.is_none());
        }
    }
}

fn bounded(name: &str, lower: f64, upper: f64) -> Variable {
    Variable {
        name: name.into(),
        bounds: Some(Bounds { lower, upper }),
    }
}

/// Age in [18, 90] and a lab value in [0, 10]; outcome in [-50, 150].
fn linear_cohort(seed: u64, n: usize) -> Vec<LinearPatient> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let age = r.gen_range(18.0..90.0);
            let lab = r.gen_range(0.0..10.0);
            let outcome = 20.0 + 0.6 * age - 2.5 * lab + 8.0 * analysis_support::normal(&mut r);
            LinearPatient {
                covariates: vec![age, lab],
                outcome,
            }
        })
        .collect()
}

pub fn linear_spec() -> LinearSpec {
    LinearSpec {
        covariates: vec![bounded("age", 18.0, 90.0), bounded("lab", 0.0, 10.0)],
        outcome: bounded("outcome", -50.0, 150.0),
    }
}

#[test]
fn linear_regression_without_noise_is_ols() {
    let spec = linear_spec();
    let patients = linear_cohort(3, 300);
    let sums = total(
        patients.iter().map(|p| spec.contribution(p).unwrap()),
        spec.len(),
    );
    let fit = spec
        .from_sums(&sums, &vec![Noise::NONE; spec.len()])
        .unwrap();
    let rows: Vec<Vec<f64>> = patients.iter().map(|p| p.covariates.clone()).collect();
    let y: Vec<f64> = patients.iter().map(|p| p.outcome).collect();
    let want = exact::ols(&rows, &y).unwrap();
    assert_eq!(fit.patients, Some(300.0));
    for (got, (b, se)) in fit
        .coefficients
        .iter()
        .zip(want.coefficients.iter().zip(&want.standard_errors))
    {
        close(got.estimate, *b, 1e-8, &got.name);
        close(got.standard_error, *se, 1e-8, &got.name);
        close(got.ci95.0, b - z_level() * se, 1e-8, &got.name);
    }
}

fn logistic_cohort(seed: u64, n: usize) -> Vec<LogisticPatient> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let age = r.gen_range(18.0..90.0);
            let ventilated = if r.gen_bool(0.4) { 1.0 } else { 0.0 };
            let logit: f64 = -3.0 + 0.04 * age + 0.8 * ventilated;
            let outcome = r.gen_bool(1.0 / (1.0 + (-logit).exp()));
            LogisticPatient {
                covariates: vec![age, ventilated],
                outcome,
            }
        })
        .collect()
}

pub fn logistic_spec(rounds: u32) -> LogisticSpec {
    LogisticSpec {
        covariates: vec![bounded("age", 18.0, 90.0), bounded("ventilated", 0.0, 1.0)],
        outcome: "in_hospital_death".into(),
        rounds,
    }
}

#[test]
fn logistic_regression_without_noise_converges_to_irls() {
    let spec = logistic_spec(6);
    let patients = logistic_cohort(4, 600);
    let mut scaled = spec.start();
    let mut fit = None;
    for _ in 0..spec.rounds {
        let sums = total(
            patients
                .iter()
                .map(|p| spec.contribution(p, &scaled).unwrap()),
            spec.len(),
        );
        let step = spec
            .from_sums(&scaled, &sums, &vec![Noise::NONE; spec.len()])
            .unwrap();
        scaled = step.next_scaled;
        fit = Some(step.fit);
    }
    let fit = fit.unwrap();
    let rows: Vec<Vec<f64>> = patients.iter().map(|p| p.covariates.clone()).collect();
    let y: Vec<bool> = patients.iter().map(|p| p.outcome).collect();
    let want = exact::logistic_irls(&rows, &y).unwrap();
    for (got, (b, se)) in fit
        .coefficients
        .iter()
        .zip(want.coefficients.iter().zip(&want.standard_errors))
    {
        close(got.estimate, *b, 1e-7, &got.name);
        close(got.standard_error, *se, 1e-6, &got.name);
    }
}

#[test]
fn no_patient_vector_exceeds_the_stated_sensitivity() {
    let mut r = rng(5);
    let extreme = [f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300, 0.0, 55.0];
    let pick = |r: &mut rand_chacha::ChaCha20Rng| {
        if r.gen_bool(0.3) {
            extreme[r.gen_range(0..extreme.len())]
        } else {
            r.gen_range(-200.0..200.0)
        }
    };
    let norms = |v: &[f64]| {
        (
            v.iter().map(|x| x.abs()).sum::<f64>(),
            v.iter().map(|x| x * x).sum::<f64>().sqrt(),
        )
    };
    let within = |v: &[f64], l1: f64, l2: f64| {
        let (a, b) = norms(v);
        assert!(a <= l1 + 1e-9 && b <= l2 + 1e-9, "{a} > {l1} or {b} > {l2}");
    };
    let s = survival_spec(3);
    let t = table_spec(&[3, 2, 2]);
    let lin = linear_spec();
    let log = logistic_spec(3);
    for _ in 0..2000 {
        let patient = survival::Patient {
            time: pick(&mut r),
            event: r.gen(),
            group: r.gen_range(0..3),
        };
        let sens = s.sensitivity();
        within(&s.contribution(&patient).unwrap(), sens.l1, sens.l2);
        let cell = table::Patient {
            levels: vec![r.gen_range(0..3), r.gen_range(0..2), r.gen_range(0..2)],
        };
        let sens = t.sensitivity();
        within(&t.contribution(&cell).unwrap(), sens.l1, sens.l2);
        let patient = LinearPatient {
            covariates: vec![pick(&mut r), pick(&mut r)],
            outcome: pick(&mut r),
        };
        let sens = lin.sensitivity();
        within(&lin.contribution(&patient).unwrap(), sens.l1, sens.l2);
        let patient = LogisticPatient {
            covariates: vec![pick(&mut r), pick(&mut r)],
            outcome: r.gen(),
        };
        let beta = [pick(&mut r).clamp(-20.0, 20.0), r.gen_range(-5.0..5.0), 1.0];
        let sens = log.sensitivity();
        within(
            &log.contribution(&patient, &beta).unwrap(),
            sens.l1,
            sens.l2,
        );
    }
}

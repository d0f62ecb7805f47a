//! Coverage of the noisy 95% intervals and bands over 200 seeded runs on synthetic cohorts with known truth, and the calibration of the noise-aware p-values under the null.

mod analysis_support;

use analysis_support::{noisy, normal, rng, total};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use witmed_protocol::analysis::regression::{
    LinearPatient, LinearSpec, LogisticPatient, LogisticSpec, Variable,
};
use witmed_protocol::analysis::{survival, table, Bounds, Noise};

const RUNS: u64 = 200;
/// At least this fraction of nominal 95% intervals must cover (200 runs:
/// a true 95% falls below 92% with probability under 3%).
const MIN_COVERAGE: f64 = 0.92;
/// A valid 5% test rejects a true null in at most this fraction of 200 runs
/// (a true 5% exceeds 9% with probability about 1%).
const MAX_REJECTIONS: f64 = 0.09;

fn covers((lo, hi): (f64, f64), truth: f64) -> bool {
    lo <= truth && truth <= hi
}

/// Discrete times: an event with probability `hazard` at each integer time,
/// otherwise censoring with probability 0.04, follow-up capped at 13.
fn discrete_survival(r: &mut ChaCha20Rng, hazard: f64, group: usize) -> survival::Patient {
    let mut time = 0.0;
    let event = loop {
        if r.gen_bool(hazard) {
            break true;
        }
        if r.gen_bool(0.04) || time >= 13.0 {
            break false;
        }
        time += 1.0;
    };
    survival::Patient { time, event, group }
}

fn survival_spec(groups: usize) -> survival::Spec {
    survival::Spec {
        bin_edges: (0..=10).map(f64::from).collect(),
        groups,
    }
}

#[test]
fn kaplan_meier_bands_cover_the_true_survival() {
    let spec = survival_spec(1);
    let hazard = 0.1;
    // Three hospitals, each Laplace noise of scale 4 (epsilon 0.25,
    // sensitivity 1), next to 300 patients: the noise matters.
    let noise = Noise {
        contributors: 3,
        ..Noise::laplace(4.0)
    };
    let noises = vec![noise; spec.len()];
    let mut covered = [0u32; 10];
    let mut ignoring = 0;
    for run in 0..RUNS {
        let mut r = rng(run);
        let patients: Vec<survival::Patient> = (0..300)
            .map(|_| discrete_survival(&mut r, hazard, 0))
            .collect();
        let sums = total(
            patients.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let released = noisy(&sums, &noises, &mut r);
        let result = spec.from_sums(&released, &noises, run).unwrap();
        let curve = &result.curves[0];
        // The same sums with Greenwood's band alone, for comparison only.
        let silent = vec![Noise::NONE; spec.len()];
        let blind = spec.from_sums(&released, &silent, run).unwrap();
        ignoring += (0..10)
            .filter(|&bin| {
                covers(
                    blind.curves[0].band[bin],
                    (1.0 - hazard).powi(bin as i32 + 1),
                )
            })
            .count();
        for (bin, count) in covered.iter_mut().enumerate() {
            let truth = (1.0 - hazard).powi(bin as i32 + 1);
            if covers(curve.band[bin], truth) {
                *count += 1;
            }
            assert!(bin == 0 || curve.survival[bin] <= curve.survival[bin - 1]);
            assert!(bin == 0 || curve.at_risk[bin] <= curve.at_risk[bin - 1]);
        }
    }
    let overall = covered.iter().sum::<u32>() as f64 / (10 * RUNS) as f64;
    eprintln!(
        "Kaplan-Meier band coverage per bin {covered:?}, overall {overall:.3}; Greenwood alone {:.3}",
        ignoring as f64 / (10 * RUNS) as f64
    );
    assert!(overall >= 0.93, "{overall}");
    for count in covered {
        assert!(count as f64 / RUNS as f64 >= 0.90, "{covered:?}");
    }
}

#[test]
fn log_rank_p_value_is_calibrated_under_the_null_and_has_power() {
    let spec = survival_spec(2);
    let noises = vec![Noise::laplace(3.0); spec.len()];
    let mut rejections = 0;
    let mut naive_rejections = 0;
    let mut detected = 0;
    for run in 0..RUNS {
        let mut r = rng(1000 + run);
        let same: Vec<survival::Patient> = (0..600)
            .map(|i| discrete_survival(&mut r, 0.1, i % 2))
            .collect();
        let sums = total(
            same.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let released = noisy(&sums, &noises, &mut r);
        let result = spec.from_sums(&released, &noises, run).unwrap();
        if result.log_rank.unwrap().p_value < 0.05 {
            rejections += 1;
        }
        // The same sums with a p-value that ignores the noise, for comparison only.
        let silent = vec![Noise::NONE; spec.len()];
        let naive = spec.from_sums(&released, &silent, run).unwrap();
        if naive.log_rank.unwrap().p_value < 0.05 {
            naive_rejections += 1;
        }
        let differ: Vec<survival::Patient> = (0..600)
            .map(|i| discrete_survival(&mut r, if i % 2 == 0 { 0.08 } else { 0.16 }, i % 2))
            .collect();
        let sums = total(
            differ.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let result = spec
            .from_sums(&noisy(&sums, &noises, &mut r), &noises, run)
            .unwrap();
        if result.log_rank.unwrap().p_value < 0.05 {
            detected += 1;
        }
    }
    let rate = rejections as f64 / RUNS as f64;
    eprintln!(
        "log-rank: null rejections {rate:.3} (ignoring the noise {:.3}), power {:.3}",
        naive_rejections as f64 / RUNS as f64,
        detected as f64 / RUNS as f64
    );
    assert!(rate <= MAX_REJECTIONS, "{rate}");
    assert!(detected as f64 / RUNS as f64 >= 0.8, "{detected}");
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
fn chi_square_p_value_is_calibrated_under_noise() {
    let spec = table_spec(&[2, 3]);
    // Strong noise (epsilon 0.2) next to 1000 patients.
    let noises = vec![Noise::laplace(5.0); spec.len()];
    let mut rejections = 0;
    let mut naive_rejections = 0;
    for run in 0..RUNS {
        let mut r = rng(2000 + run);
        let patients: Vec<table::Patient> = (0..1000)
            .map(|_| table::Patient {
                levels: vec![
                    usize::from(r.gen_bool(0.3)),
                    [0, 1, 1, 2, 2, 2][r.gen_range(0..6)],
                ],
            })
            .collect();
        let sums = total(
            patients.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let released = noisy(&sums, &noises, &mut r);
        let result = spec.from_sums(&released, &noises, run).unwrap();
        let test = result.chi_square.unwrap();
        if test.p_value < 0.05 {
            rejections += 1;
        }
        let naive = spec
            .from_sums(&released, &vec![Noise::NONE; spec.len()], run)
            .unwrap();
        if naive.chi_square.unwrap().p_value < 0.05 {
            naive_rejections += 1;
        }
    }
    let rate = rejections as f64 / RUNS as f64;
    eprintln!(
        "chi-square under the null: noise-aware rejections {rate:.3}, ignoring the noise {:.3}",
        naive_rejections as f64 / RUNS as f64
    );
    assert!(rate <= MAX_REJECTIONS, "{rate}");
}

#[test]
fn odds_ratio_intervals_cover_the_true_odds_ratio() {
    let spec = table_spec(&[2, 2]);
    let noises = vec![Noise::laplace(5.0); spec.len()];
    let (p_exposed, p_event_exposed, p_event_unexposed) = (0.4, 0.3, 0.15);
    // Rows: unexposed, exposed; columns: no event, event. OR of the event for the exposed.
    let truth = (p_event_exposed / (1.0 - p_event_exposed))
        / (p_event_unexposed / (1.0 - p_event_unexposed));
    let mut covered = 0;
    for run in 0..RUNS {
        let mut r = rng(3000 + run);
        let patients: Vec<table::Patient> = (0..2000)
            .map(|_| {
                let exposed = r.gen_bool(p_exposed);
                let p = if exposed {
                    p_event_exposed
                } else {
                    p_event_unexposed
                };
                table::Patient {
                    levels: vec![usize::from(exposed), usize::from(r.gen_bool(p))],
                }
            })
            .collect();
        let sums = total(
            patients.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let result = spec
            .from_sums(&noisy(&sums, &noises, &mut r), &noises, run)
            .unwrap();
        if covers(result.odds_ratio.unwrap().ci95, truth) {
            covered += 1;
        }
    }
    let coverage = covered as f64 / RUNS as f64;
    eprintln!("odds ratio coverage {coverage:.3}");
    assert!(coverage >= MIN_COVERAGE, "{coverage}");
}

fn bounded(name: &str, lower: f64, upper: f64) -> Variable {
    Variable {
        name: name.into(),
        bounds: Some(Bounds { lower, upper }),
    }
}

#[test]
fn linear_regression_intervals_cover_the_true_coefficients() {
    let spec = LinearSpec {
        covariates: vec![bounded("age", 18.0, 90.0), bounded("lab", 0.0, 10.0)],
        outcome: bounded("outcome", -50.0, 150.0),
    };
    let truth = [20.0, 0.6, -2.5];
    // Encrypted mode's Gaussian: sigma about L2 sqrt(2 ln(1.25/delta)) / epsilon at epsilon 1, delta 1e-6.
    let sigma = spec.sensitivity().l2 * (2.0 * (1.25e6f64).ln()).sqrt();
    let noises = vec![Noise::gaussian(sigma); spec.len()];
    let mut covered = [0u32; 3];
    let mut ignoring = [0u32; 3];
    for run in 0..RUNS {
        let mut r = rng(4000 + run);
        let patients: Vec<LinearPatient> = (0..2000)
            .map(|_| {
                let age = r.gen_range(18.0..90.0);
                let lab = r.gen_range(0.0..10.0);
                let outcome = truth[0] + truth[1] * age + truth[2] * lab + 8.0 * normal(&mut r);
                LinearPatient {
                    covariates: vec![age, lab],
                    outcome,
                }
            })
            .collect();
        let sums = total(
            patients.iter().map(|p| spec.contribution(p).unwrap()),
            spec.len(),
        );
        let released = noisy(&sums, &noises, &mut r);
        let fit = spec.from_sums(&released, &noises).unwrap();
        for (count, (c, t)) in covered.iter_mut().zip(fit.coefficients.iter().zip(truth)) {
            if covers(c.ci95, t) {
                *count += 1;
            }
        }
        // The same sums with intervals that ignore the noise, for comparison only.
        let blind = spec
            .from_sums(&released, &vec![Noise::NONE; spec.len()])
            .unwrap();
        for (count, (c, t)) in ignoring
            .iter_mut()
            .zip(blind.coefficients.iter().zip(truth))
        {
            if covers(c.ci95, t) {
                *count += 1;
            }
        }
    }
    eprintln!("linear regression coverage {covered:?} of {RUNS}; ignoring the noise {ignoring:?}");
    for count in covered {
        assert!(count as f64 / RUNS as f64 >= MIN_COVERAGE, "{covered:?}");
    }
}

#[test]
fn logistic_regression_intervals_cover_the_true_coefficients() {
    let spec = LogisticSpec {
        covariates: vec![bounded("age", 18.0, 90.0), bounded("ventilated", 0.0, 1.0)],
        outcome: "in_hospital_death".into(),
        rounds: 3,
    };
    let truth = [-3.0, 0.04, 0.8];
    // Epsilon 1 in all, split equally over the rounds; Laplace at L1 / epsilon_round.
    let scale = spec.sensitivity().l1 / spec.epsilon_per_round(1.0);
    let noises = vec![Noise::laplace(scale); spec.len()];
    let mut covered = [0u32; 3];
    for run in 0..RUNS {
        let mut r = rng(5000 + run);
        let patients: Vec<LogisticPatient> = (0..3000)
            .map(|_| {
                let age = r.gen_range(18.0..90.0);
                let ventilated = if r.gen_bool(0.4) { 1.0 } else { 0.0 };
                let logit: f64 = truth[0] + truth[1] * age + truth[2] * ventilated;
                LogisticPatient {
                    covariates: vec![age, ventilated],
                    outcome: r.gen_bool(1.0 / (1.0 + (-logit).exp())),
                }
            })
            .collect();
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
                .from_sums(&scaled, &noisy(&sums, &noises, &mut r), &noises)
                .unwrap();
            scaled = step.next_scaled;
            fit = Some(step.fit);
        }
        for (count, (c, t)) in covered
            .iter_mut()
            .zip(fit.unwrap().coefficients.iter().zip(truth))
        {
            if covers(c.ci95, t) {
                *count += 1;
            }
        }
    }
    eprintln!("logistic regression coverage {covered:?} of {RUNS}");
    for count in covered {
        assert!(count as f64 / RUNS as f64 >= MIN_COVERAGE, "{covered:?}");
    }
}

//! Property test: `distributed_rho` against exact Rényi divergences of sums of discrete Gaussians.
//!
//! zCDP means `D_alpha(P || Q) <= rho * alpha` for every order `alpha > 1`,
//! where `P` is the noise of the total and `Q` the same noise shifted by what
//! one patient can change. For a grid of scales, member counts, dimensions
//! and shifts small enough to compute exactly, this takes the pmf of a sum of
//! `t` discrete Gaussians by convolution, computes the divergence, and checks
//! the bound. Product noise over `d` coordinates has the sum of the
//! coordinates' divergences.
//!
//! Truncation: each discrete Gaussian is cut at `±k` with the mass beyond
//! bounded by a geometric series (asserted below 1e-30), and the divergence's
//! sum is checked to have decayed below 1e-20 of its value at both ends of
//! the window, so what was cut off cannot change a divergence in the digits
//! compared. The comparison allows 1e-9 relative for floating-point error.

use super::{distributed_rho, Sensitivity};

/// Scales at and above the theorem's sigma >= 1/2, where its tau term matters.
const SIGMAS: [f64; 6] = [0.5, 0.6, 0.75, 1.0, 1.5, 2.5];
const MEMBERS: [usize; 5] = [1, 2, 3, 5, 8];
const ORDERS: [f64; 6] = [1.1, 1.5, 2.0, 4.0, 8.0, 16.0];
/// Per-coordinate shifts by one patient (d = 1, 2, 3).
const SHIFTS: [&[i64]; 6] = [&[1], &[2], &[3], &[1, 1], &[2, 1], &[1, 1, 1]];

/// Log-sum-exp accumulator: divergences at small sigma reach exp(4000),
/// far beyond f64, so every probability is handled as its logarithm.
#[derive(Clone, Copy)]
struct LogSum {
    max: f64,
    scaled: f64,
}

impl LogSum {
    const EMPTY: LogSum = LogSum {
        max: f64::NEG_INFINITY,
        scaled: 0.0,
    };

    fn add(&mut self, log: f64) {
        if log > self.max {
            self.scaled = self.scaled * (self.max - log).exp() + 1.0;
            self.max = log;
        } else {
            self.scaled += (log - self.max).exp();
        }
    }

    fn ln(&self) -> f64 {
        self.max + self.scaled.ln()
    }
}

/// The log-pmf of N_Z(0, sigma^2) on [-k, k] (index x + k) and an upper bound on the mass cut off.
fn discrete_gaussian(sigma: f64, k: i64) -> (Vec<f64>, f64) {
    let log_weight = |x: i64| -((x * x) as f64) / (2.0 * sigma * sigma);
    let mut kept = LogSum::EMPTY;
    (-k..=k).for_each(|x| kept.add(log_weight(x)));
    // Beyond k the ratio of neighbours is at most exp(-(k + 1) / sigma^2).
    let ratio = (-((k + 1) as f64) / (sigma * sigma)).exp();
    let cut = 2.0 * (log_weight(k + 1) - kept.ln()).exp() / (1.0 - ratio);
    ((-k..=k).map(|x| log_weight(x) - kept.ln()).collect(), cut)
}

fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![LogSum::EMPTY; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j].add(x + y);
        }
    }
    out.iter().map(LogSum::ln).collect()
}

/// The log-pmf of a sum of `t` discrete Gaussians (centred: index `len / 2` is 0).
fn summed(sigma: f64, t: usize, k: i64) -> Vec<f64> {
    let (one, cut) = discrete_gaussian(sigma, k);
    assert!(cut * t as f64 <= 1e-30, "window too small: {cut}");
    (1..t).fold(one.clone(), |acc, _| convolve(&acc, &one))
}

/// Exact `D_alpha(P || P shifted by shift)` from P's log-pmf.
fn renyi(log_pmf: &[f64], shift: i64, alpha: f64) -> f64 {
    let at = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| log_pmf.get(i))
            .copied()
    };
    let terms: Vec<f64> = (0..log_pmf.len() as i64)
        .filter_map(|i| Some(alpha * at(i)? + (1.0 - alpha) * at(i - shift)?))
        .collect();
    let mut total = LogSum::EMPTY;
    terms.iter().for_each(|t| total.add(*t));
    let ends = terms[0].max(terms[terms.len() - 1]);
    assert!(
        ends <= total.ln() + (1e-20f64).ln(),
        "the window did not capture the divergence"
    );
    total.ln() / (alpha - 1.0)
}

/// Every point of the grid where `bound(sigma, t, sensitivity) * alpha` is below the exact divergence.
fn violations(bound: impl Fn(f64, usize, Sensitivity) -> f64) -> Vec<String> {
    let mut found = Vec::new();
    for sigma in SIGMAS {
        for t in MEMBERS {
            // Wide enough for the largest order and shift (the tilted mass
            // sits near -(alpha - 1) shift) and 14 standard deviations.
            let k = (14.0 * sigma).ceil() as i64 + 16 * 3 + 8;
            let pmf = summed(sigma, t, k);
            for shift in SHIFTS {
                let l1 = shift.iter().map(|s| s.abs() as f64).sum();
                let l2 = shift.iter().map(|s| (s * s) as f64).sum::<f64>().sqrt();
                let sens = Sensitivity {
                    l1,
                    l2,
                    dims: shift.len(),
                };
                let rho = bound(sigma, t, sens);
                for alpha in ORDERS {
                    let exact: f64 = shift.iter().map(|s| renyi(&pmf, *s, alpha)).sum();
                    if exact > rho * alpha * (1.0 + 1e-9) {
                        found.push(format!(
                            "sigma {sigma}, t {t}, shift {shift:?}, alpha {alpha}: D = {exact:.6e} > rho alpha = {:.6e}",
                            rho * alpha
                        ));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn distributed_rho_bounds_every_exact_renyi_divergence_on_the_grid() {
    let found = violations(distributed_rho);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_bound_a_tenth_of_a_percent_too_small_is_caught() {
    let found = violations(|sigma, t, s| 0.999 * distributed_rho(sigma, t, s));
    assert!(!found.is_empty());
}

#[test]
fn one_discrete_gaussian_matches_its_known_divergence() {
    // t = 1: D_alpha of N_Z(0, s^2) against an integer shift is alpha shift^2 / (2 s^2) exactly.
    let pmf = summed(1.5, 1, 80);
    let exact = renyi(&pmf, 2, 4.0);
    let known = 4.0 * 4.0 / (2.0 * 1.5 * 1.5);
    assert!((exact - known).abs() < 1e-9 * known, "{exact} vs {known}");
}

#[test]
fn the_sum_is_not_a_gaussian_a_bound_without_the_tau_term_is_caught() {
    // rho of one discrete Gaussian of the total's variance: exact for one
    // share, too small for a sum of several at small scales.
    let found = violations(|sigma, t, s| s.l2 * s.l2 / (2.0 * t as f64 * sigma * sigma));
    assert!(!found.is_empty());
    assert!(found.iter().all(|v| !v.contains(", t 1,")), "{found:#?}");
}

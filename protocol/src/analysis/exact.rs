//! Exact, non-private textbook statistics from individual records: the references the tests compare the noisy pipeline with.
//!
//! Each function is the plain definition, written for clarity rather than
//! speed, and never used on the private path.

use super::linalg::{cholesky, cholesky_inverse, cholesky_solve, Matrix};
use super::stats::{chi_square_upper_tail, z_level};
use super::Interval;

/// One patient of a survival analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subject {
    /// Time of the event or of censoring.
    pub time: f64,
    /// True for an event, false for censoring.
    pub event: bool,
    /// Group index (0 when there is one group).
    pub group: usize,
}

/// One step of the Kaplan-Meier curve, at a time with at least one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KaplanMeierStep {
    pub time: f64,
    /// Patients with time >= `time`.
    pub at_risk: f64,
    /// Events at exactly `time`.
    pub events: f64,
    /// S(time): the product of (1 - d/n) over event times up to `time`.
    pub survival: f64,
    /// Greenwood (1926): S^2 * sum over those times of d / (n (n - d)).
    pub greenwood_variance: f64,
}

/// Kaplan-Meier (1958) with Greenwood's variance, censoring at a time
/// counted after the events at that time (the usual convention).
pub fn kaplan_meier(subjects: &[Subject]) -> Vec<KaplanMeierStep> {
    let mut times: Vec<f64> = subjects
        .iter()
        .filter(|s| s.event && !s.time.is_nan())
        .map(|s| s.time)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let mut survival = 1.0;
    let mut greenwood_sum = 0.0;
    let mut steps = Vec::new();
    for time in times {
        let at_risk = subjects.iter().filter(|s| s.time >= time).count() as f64;
        let events = subjects
            .iter()
            .filter(|s| s.event && s.time == time)
            .count() as f64;
        survival *= 1.0 - events / at_risk;
        if at_risk > events {
            greenwood_sum += events / (at_risk * (at_risk - events));
        }
        steps.push(KaplanMeierStep {
            time,
            at_risk,
            events,
            survival,
            greenwood_variance: survival * survival * greenwood_sum,
        });
    }
    steps
}

/// A chi-square test: statistic, degrees of freedom and p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquare {
    pub statistic: f64,
    pub df: usize,
    pub p_value: f64,
}

/// The log-rank test (Mantel 1966; Peto & Peto 1972) between `groups`
/// groups: at each distinct event time t, with n_g at risk and d_g events in
/// group g, n and d in all, U_g = sum (d_g - n_g d / n) and
/// V_gh = sum d (n - d) / (n - 1) * (n_g / n) (1[g = h] - n_h / n);
/// the statistic is U' V^-1 U over the first groups - 1 groups, chi-square
/// with groups - 1 degrees of freedom. `None` when V is singular, or with
/// fewer than 2 or more than [`super::MAX_GROUPS`] groups.
pub fn log_rank(subjects: &[Subject], groups: usize) -> Option<ChiSquare> {
    let free = groups
        .checked_sub(1)
        .filter(|f| *f > 0 && groups <= super::MAX_GROUPS)?;
    let mut times: Vec<f64> = subjects
        .iter()
        .filter(|s| s.event && !s.time.is_nan())
        .map(|s| s.time)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let mut u = vec![0.0; free];
    let mut v = Matrix::zeros(free);
    for time in times {
        let at_risk = |g: usize| {
            subjects
                .iter()
                .filter(|s| s.group == g && s.time >= time)
                .count() as f64
        };
        let events = |g: usize| {
            subjects
                .iter()
                .filter(|s| s.group == g && s.event && s.time == time)
                .count() as f64
        };
        let n: f64 = (0..groups).map(at_risk).sum();
        let d: f64 = (0..groups).map(events).sum();
        for (g, u_g) in u.iter_mut().enumerate() {
            *u_g += events(g) - at_risk(g) * d / n;
            if n > 1.0 {
                let spread = d * (n - d) / (n - 1.0);
                for h in 0..free {
                    let same = if g == h { 1.0 } else { 0.0 };
                    v.add(g, h, spread * at_risk(g) / n * (same - at_risk(h) / n));
                }
            }
        }
    }
    let l = cholesky(&v)?;
    let statistic: f64 = u
        .iter()
        .zip(cholesky_solve(&l, &u))
        .map(|(a, b)| a * b)
        .sum();
    Some(ChiSquare {
        statistic,
        df: free,
        p_value: chi_square_upper_tail(statistic, free),
    })
}

/// Pearson's chi-square test of (mutual) independence of the variables of
/// a table with the given levels, counts in row-major order (last variable
/// fastest): expected count = N * product of the margins' proportions;
/// df = (cells) - sum (levels - 1) - 1, over levels whose margin is not empty.
/// `None` when the table is empty or its shape does not match.
pub fn chi_square_independence(levels: &[usize], counts: &[f64]) -> Option<ChiSquare> {
    let cells = levels.iter().try_fold(1usize, |a, l| a.checked_mul(*l))?;
    if cells != counts.len() || levels.is_empty() {
        return None;
    }
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let margins: Vec<Vec<f64>> = levels
        .iter()
        .enumerate()
        .map(|(v, &l)| {
            (0..l)
                .map(|level| {
                    (0..cells)
                        .filter(|&c| cell_level(levels, c, v) == level)
                        .map(|c| counts[c])
                        .sum()
                })
                .collect()
        })
        .collect();
    let mut statistic = 0.0;
    for (c, observed) in counts.iter().enumerate() {
        let expected = total
            * (0..levels.len())
                .map(|v| margins[v][cell_level(levels, c, v)] / total)
                .product::<f64>();
        if expected > 0.0 {
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    let used: Vec<usize> = margins
        .iter()
        .map(|m| m.iter().filter(|x| **x > 0.0).count())
        .collect();
    let used_cells: usize = used.iter().product();
    let constrained: usize = used.iter().map(|u| u.saturating_sub(1)).sum();
    let df = used_cells.checked_sub(constrained + 1).filter(|d| *d > 0)?;
    Some(ChiSquare {
        statistic,
        df,
        p_value: chi_square_upper_tail(statistic, df),
    })
}

/// Level of variable `v` in cell `c` (row-major, last variable fastest).
pub(crate) fn cell_level(levels: &[usize], c: usize, v: usize) -> usize {
    let stride: usize = levels.iter().skip(v + 1).product();
    let level = levels.get(v).copied().unwrap_or(1).max(1);
    (c / stride.max(1)) % level
}

/// The odds ratio of a 2x2 table [[a, b], [c, d]], a d / (b c), with
/// Woolf's (1955) 95% interval exp(log OR ± z sqrt(1/a + 1/b + 1/c + 1/d)).
/// `None` with a zero cell.
pub fn odds_ratio_woolf(a: f64, b: f64, c: f64, d: f64) -> Option<(f64, Interval)> {
    if [a, b, c, d].iter().any(|x| x.is_nan() || *x <= 0.0) {
        return None;
    }
    let log_or = (a * d / (b * c)).ln();
    let se = (1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d).sqrt();
    let z = z_level();
    Some((
        log_or.exp(),
        ((log_or - z * se).exp(), (log_or + z * se).exp()),
    ))
}

/// A regression fit: intercept first, then one coefficient per covariate.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub coefficients: Vec<f64>,
    pub standard_errors: Vec<f64>,
}

/// Ordinary least squares with an intercept: b = (X'X)^-1 X'y, standard
/// errors sqrt(diag(s^2 (X'X)^-1)) with s^2 = RSS / (n - p). `None` when
/// X'X is singular, n <= p, or the rows differ in length.
pub fn ols(rows: &[Vec<f64>], y: &[f64]) -> Option<Fit> {
    let p = rows.first()?.len() + 1;
    if rows.len() != y.len() || rows.len() <= p || rows.iter().any(|r| r.len() + 1 != p) {
        return None;
    }
    let design: Vec<Vec<f64>> = rows.iter().map(|r| with_intercept(r)).collect();
    let mut xtx = Matrix::zeros(p);
    let mut xty = vec![0.0; p];
    for (x, yi) in design.iter().zip(y) {
        for i in 0..p {
            xty[i] += x[i] * yi;
            for j in 0..p {
                xtx.add(i, j, x[i] * x[j]);
            }
        }
    }
    let l = cholesky(&xtx)?;
    let coefficients = cholesky_solve(&l, &xty);
    let rss: f64 = design
        .iter()
        .zip(y)
        .map(|(x, yi)| (yi - dot(x, &coefficients)).powi(2))
        .sum();
    let s2 = rss / (rows.len() - p) as f64;
    let inverse = cholesky_inverse(&l);
    let standard_errors = (0..p).map(|i| (s2 * inverse.get(i, i)).sqrt()).collect();
    Some(Fit {
        coefficients,
        standard_errors,
    })
}

/// Logistic regression with an intercept by iteratively reweighted least
/// squares (Newton-Raphson on the log-likelihood), from zero until the
/// step is below 1e-10 (at most 100 steps); standard errors from the
/// inverse Fisher information (X' W X)^-1. `None` when X' W X is singular
/// or the fit does not converge (separation).
pub fn logistic_irls(rows: &[Vec<f64>], y: &[bool]) -> Option<Fit> {
    let p = rows.first()?.len() + 1;
    if rows.len() != y.len() || rows.iter().any(|r| r.len() + 1 != p) {
        return None;
    }
    let design: Vec<Vec<f64>> = rows.iter().map(|r| with_intercept(r)).collect();
    let mut beta = vec![0.0; p];
    for _ in 0..100 {
        let mut information = Matrix::zeros(p);
        let mut score = vec![0.0; p];
        for (x, &yi) in design.iter().zip(y) {
            let prob = 1.0 / (1.0 + (-dot(x, &beta)).exp());
            let weight = prob * (1.0 - prob);
            let residual = if yi { 1.0 } else { 0.0 } - prob;
            for i in 0..p {
                score[i] += x[i] * residual;
                for j in 0..p {
                    information.add(i, j, weight * x[i] * x[j]);
                }
            }
        }
        let l = cholesky(&information)?;
        let step = cholesky_solve(&l, &score);
        for (b, s) in beta.iter_mut().zip(&step) {
            *b += s;
        }
        if step.iter().all(|s| s.abs() < 1e-10) {
            let inverse = cholesky_inverse(&l);
            return Some(Fit {
                standard_errors: (0..p).map(|i| inverse.get(i, i).sqrt()).collect(),
                coefficients: beta,
            });
        }
    }
    None
}

fn with_intercept(row: &[f64]) -> Vec<f64> {
    std::iter::once(1.0).chain(row.iter().copied()).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

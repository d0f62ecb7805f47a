//! One-shot logistic regression from a noisy cell table: every covariate categorical or binned, each patient one count, the whole epsilon in one round.
//!
//! **The model.** Every covariate takes finitely many values: `sex` (0/1),
//! indicators `NAME=VALUE` (0/1; indicators of one attribute, such as
//! `icu_type=2`, `icu_type=3`, `icu_type=4`, form one factor whose levels
//! are "none of them" and each value), or a bounded number cut into `bins`
//! equal bins over its bounds and **entered as its bin's midpoint** (age
//! 15-90 in 5 bins: 22.5, 37.5, ..., 82.5; values are clamped into the
//! bounds first). The coefficients are those of the logistic regression of
//! the outcome on these covariates; "the non-private coefficient" the tests
//! compare with is the IRLS fit on the same binned covariates
//! ([`super::exact::logistic_irls`]), which for a discrete design is exactly
//! what the counts below determine.
//!
//! **Hospital side.** The covariates' levels cross into cells; a patient
//! is one count in (cell, outcome): a one-hot vector of length 2 x cells
//! (survivor at `2c`, outcome at `2c + 1`), L1 = L2 = 1, the same path as a
//! contingency table (discrete Laplace in DP mode, Gaussian shares in
//! encrypted mode), charged once, one round, the whole epsilon.
//!
//! **Researcher side.** With noisy deaths d_c and survivors s_c (not
//! clamped, so the score stays unbiased) and n_c = d_c + s_c, maximise
//! sum_c [d_c x_c'b - n_c log(1 + e^{x_c'b})], i.e. solve its score
//! equation, by Fisher scoring from zero (the information with each cell's
//! count clamped at zero, so a sparse cell's negative noisy count cannot
//! make a step indefinite; the root is the unclamped score's), refusing
//! when the fit does not converge or diverges. Covariance: the sampling part
//! I^-1 (I from the noisy counts; clamped when that is not positive
//! definite) plus the noise part by the
//! implicit-function delta method, db/dd_c = I^-1 x_c (1 - p_c) and
//! db/ds_c = -I^-1 x_c p_c, so I^-1 [sum_c x_c x_c' (v_d (1 - p_c)^2 +
//! v_s p_c^2)] I^-1 with v the cells' noise variances. Fitted on covariates
//! scaled to [-1, 1] by their bounds, mapped back like the other regressions.
//!
//! The query ([`super::query::LogisticQuery`]) builds the [`Spec`]. Cells
//! grow multiplicatively: a query with more than
//! [`super::MAX_LOGISTIC_CELLS`] covariate cells is refused, as is a design that
//! can never be solved (a covariate constant over the cells, an indicator
//! repeated), before anything is charged.
//!
//! ```toml
//! version = 3
//! [aggregate.logistic]
//! outcome = "in_hospital_death"
//! covariates = [
//!   { name = "age", bounds = { lower = 15.0, upper = 90.0 }, bins = 5 },
//!   { name = "sex" },
//!   { name = "icu_type=2" },
//! ]
//! ```

use super::linalg::{cholesky, cholesky_inverse, cholesky_solve, Matrix};
use super::noise::{self, Noise};
use super::regression::{dot, logistic, Fit, ToOriginal, Variable};
use super::{check_sums, Bounds, Error, Sensitivity};

/// Most bins one bounded covariate may be cut into.
pub const MAX_BINS: u32 = 32;
/// Newton steps the researcher's fit may take before it is refused as not converging.
const MAX_ITERATIONS: usize = 200;
/// Largest coefficient on the [-1, 1] scale: beyond it the fit is separating or drowned in noise.
const MAX_SCALED_COEFFICIENT: f64 = 20.0;

/// How one factor of the cell table maps a raw value to a level.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A bounded number in equal bins; the covariate is the bin's midpoint.
    Binned { bounds: Bounds, bins: u32 },
    /// `sex`: 0 or 1.
    Flag,
    /// Indicators of one attribute: level 0 is none of `values`, level i + 1 is `values[i]`.
    Indicators { values: Vec<f64> },
}

/// One factor of the cell table and the covariates it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// Positions of the covariates (in the query's order) this factor sets.
    pub covariates: Vec<usize>,
    pub kind: Kind,
}

/// The numerics' spec: the covariates' names and scales and the factors crossed into cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub names: Vec<String>,
    /// Each covariate's bounds, by which it is scaled to [-1, 1] for the fit.
    pub scales: Vec<Bounds>,
    pub factors: Vec<Factor>,
}

impl Factor {
    /// Number of levels.
    pub fn levels(&self) -> usize {
        match &self.kind {
            Kind::Binned { bins, .. } => *bins as usize,
            Kind::Flag => 2,
            Kind::Indicators { values } => values.len() + 1,
        }
    }

    /// The level of a raw value; `None` when it has none (NaN, or not 0/1 for a flag).
    pub fn level(&self, raw: f64) -> Option<usize> {
        if raw.is_nan() {
            return None;
        }
        match &self.kind {
            Kind::Binned { bounds, bins } => {
                let clamped = raw.clamp(bounds.lower, bounds.upper);
                let position =
                    (clamped - bounds.lower) * f64::from(*bins) / (bounds.upper - bounds.lower);
                // In [0, bins]; the upper bound joins the last bin.
                Some((position.floor() as usize).min((*bins as usize).saturating_sub(1)))
            }
            Kind::Flag => [0.0, 1.0].iter().position(|v| *v == raw),
            Kind::Indicators { values } => {
                Some(values.iter().position(|v| *v == raw).map_or(0, |i| i + 1))
            }
        }
    }

    /// The values of this factor's covariates at `level`, in their own units.
    pub fn values(&self, level: usize) -> Vec<f64> {
        match &self.kind {
            Kind::Binned { bounds, bins } => {
                let width = (bounds.upper - bounds.lower) / f64::from(*bins);
                vec![bounds.lower + (level as f64 + 0.5) * width]
            }
            Kind::Flag => vec![level as f64],
            Kind::Indicators { values } => (0..values.len())
                .map(|i| f64::from(u8::from(level == i + 1)))
                .collect(),
        }
    }
}

impl Spec {
    /// Covariate cells: the product of the factors' levels (saturating, so a huge one is refused).
    pub fn cells(&self) -> usize {
        self.factors
            .iter()
            .fold(1usize, |n, f| n.saturating_mul(f.levels()))
    }

    /// Length of one patient's vector: survivors and outcomes per cell.
    pub fn len(&self) -> usize {
        self.cells().saturating_mul(2)
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A one-hot vector: L1 = L2 = 1.
    pub fn sensitivity(&self) -> Sensitivity {
        Sensitivity { l1: 1.0, l2: 1.0 }
    }

    pub fn one_hot(&self, at: usize) -> Vec<f64> {
        let mut v = vec![0.0; self.len()];
        if let Some(x) = v.get_mut(at) {
            *x = 1.0;
        }
        v
    }

    /// The cell of a patient's raw covariate values (the first factor varies slowest).
    pub fn cell(&self, raws: &[f64]) -> Option<usize> {
        if raws.len() != self.names.len() {
            return None;
        }
        self.factors.iter().try_fold(0usize, |cell, f| {
            let raw = raws.get(*f.covariates.first()?)?;
            cell.checked_mul(f.levels())?.checked_add(f.level(*raw)?)
        })
    }

    /// Each covariate's value in `cell`, in its own units.
    pub fn row(&self, cell: usize) -> Vec<f64> {
        let mut row = vec![0.0; self.names.len()];
        let mut rest = cell;
        for f in self.factors.iter().rev() {
            let level = rest % f.levels();
            rest /= f.levels();
            for (i, v) in f.covariates.iter().zip(f.values(level)) {
                if let Some(x) = row.get_mut(*i) {
                    *x = v;
                }
            }
        }
        row
    }

    /// [1, covariates scaled to [-1, 1]] of every cell.
    fn scaled_rows(&self) -> Vec<Vec<f64>> {
        (0..self.cells())
            .map(|c| {
                std::iter::once(1.0)
                    .chain(self.scales.iter().zip(self.row(c)).map(|(b, v)| b.scale(v)))
                    .collect()
            })
            .collect()
    }

    /// Refuses a design no counts can solve: an indicator's value repeated
    /// (no patient can reach its second cell), or cell rows without full rank.
    pub fn check_solvable(&self) -> Result<(), Error> {
        for f in &self.factors {
            if let Kind::Indicators { values } = &f.kind {
                if values
                    .iter()
                    .enumerate()
                    .any(|(i, v)| values[..i].contains(v))
                {
                    return Err(Error::Singular(format!(
                        "the indicators {:?} repeat a value of one attribute",
                        f.covariates
                            .iter()
                            .filter_map(|i| self.names.get(*i))
                            .collect::<Vec<_>>()
                    )));
                }
            }
        }
        let rows = self.scaled_rows();
        let weights = vec![1.0; rows.len()];
        if cholesky(&weighted_gram(&rows, &weights)).is_none() {
            return Err(Error::Singular(format!(
                "the covariates {:?} are collinear over the cells (a covariate constant, e.g. one bin, or an indicator repeated)",
                self.names
            )));
        }
        Ok(())
    }

    /// The researcher's side: coefficients, standard errors and intervals
    /// (sampling and noise) from the combined noisy counts.
    pub fn from_sums(&self, sums: &[f64], noises: &[Noise]) -> Result<Fit, Error> {
        check_sums(sums, self.len())?;
        noise::check(noises, self.len())?;
        let rows = self.scaled_rows();
        let survivors: Vec<f64> = sums.iter().step_by(2).copied().collect();
        let deaths: Vec<f64> = sums.iter().skip(1).step_by(2).copied().collect();
        let totals: Vec<f64> = survivors.iter().zip(&deaths).map(|(s, d)| s + d).collect();
        let b = newton(&rows, &deaths, &totals)?;
        let probabilities: Vec<f64> = rows.iter().map(|x| logistic(dot(x, &b))).collect();
        // The information at the fit, from the noisy counts (what the delta
        // method differentiates); where a cell's noisy count below zero
        // makes it not positive definite, the counts clamped at zero.
        let information = |clamp: bool| {
            let weights: Vec<f64> = totals
                .iter()
                .zip(&probabilities)
                .map(|(n, p)| if clamp { n.max(0.0) } else { *n } * p * (1.0 - p))
                .collect();
            cholesky(&weighted_gram(&rows, &weights))
        };
        let l = information(false)
            .or_else(|| information(true))
            .ok_or_else(not_positive_definite)?;
        let inverse = cholesky_inverse(&l);
        let noise_weights: Vec<f64> = probabilities
            .iter()
            .enumerate()
            .map(|(c, p)| {
                let variance = |k: usize| noises.get(k).map_or(0.0, Noise::variance);
                variance(2 * c + 1) * (1.0 - p) * (1.0 - p) + variance(2 * c) * p * p
            })
            .collect();
        let middle = weighted_gram(&rows, &noise_weights);
        let mut covariance = sandwich(&inverse, &middle);
        for (t, v) in covariance.data.iter_mut().zip(&inverse.data) {
            *t += v;
        }
        let variables: Vec<Variable> = self
            .names
            .iter()
            .map(|name| Variable {
                name: name.clone(),
                bounds: None,
            })
            .collect();
        Ok(Fit {
            coefficients: ToOriginal::new(&self.scales, 1.0, 0.0).coefficients(
                &variables,
                &b,
                &covariance,
            ),
            patients: None,
        })
    }
}

fn not_positive_definite() -> Error {
    Error::Unusable(
        "the noisy Fisher information of the cell table is not positive definite (cells too sparse for the noise)".into(),
    )
}

/// Solves the noisy-table score equation sum_c x_c (d_c - n_c p_c) = 0 from
/// zero (scaled covariates) by Fisher scoring with each cell's count clamped
/// at zero in the information: the root is the one of the unclamped score
/// (unbiased), and the clamped information stays positive definite where
/// a sparse cell's noise would make the noisy one indefinite.
fn newton(rows: &[Vec<f64>], deaths: &[f64], totals: &[f64]) -> Result<Vec<f64>, Error> {
    let p = rows.first().map_or(0, Vec::len);
    let mut b = vec![0.0; p];
    for _ in 0..MAX_ITERATIONS {
        let mut score = vec![0.0; p];
        let mut weights = Vec::with_capacity(rows.len());
        for ((x, d), n) in rows.iter().zip(deaths).zip(totals) {
            let prob = logistic(dot(x, &b));
            for (s, xi) in score.iter_mut().zip(x) {
                *s += xi * (d - n * prob);
            }
            weights.push(n.max(0.0) * prob * (1.0 - prob));
        }
        let l = cholesky(&weighted_gram(rows, &weights)).ok_or_else(not_positive_definite)?;
        let step = cholesky_solve(&l, &score);
        for (bi, s) in b.iter_mut().zip(&step) {
            *bi += s;
        }
        if b.iter()
            .any(|v| !(v.is_finite() && v.abs() <= MAX_SCALED_COEFFICIENT))
        {
            return Err(Error::Unusable(
                "the fit to the noisy cell table diverges (an outcome separated by a covariate, or cells drowned in noise)".into(),
            ));
        }
        if step.iter().all(|s| s.abs() < 1e-10) {
            return Ok(b);
        }
    }
    Err(Error::Unusable(format!(
        "the fit to the noisy cell table did not converge in {MAX_ITERATIONS} Newton steps"
    )))
}

/// sum_c w_c x_c x_c'.
fn weighted_gram(rows: &[Vec<f64>], weights: &[f64]) -> Matrix {
    let p = rows.first().map_or(0, Vec::len);
    let mut m = Matrix::zeros(p);
    for (x, w) in rows.iter().zip(weights) {
        for (i, xi) in x.iter().enumerate() {
            for (j, xj) in x.iter().enumerate() {
                m.add(i, j, w * xi * xj);
            }
        }
    }
    m
}

/// A M A for symmetric A.
fn sandwich(a: &Matrix, m: &Matrix) -> Matrix {
    let n = a.n;
    let mut out = Matrix::zeros(n);
    for r in 0..n {
        let row: Vec<f64> = (0..n).map(|k| a.get(r, k)).collect();
        let row_m: Vec<f64> = (0..n)
            .map(|c| (0..n).map(|k| row[k] * m.get(k, c)).sum())
            .collect();
        for c in 0..n {
            out.set(r, c, (0..n).map(|k| row_m[k] * a.get(k, c)).sum());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::exact;
    use crate::analysis::noise::NoiseKind;
    use crate::analysis::query::{CellCovariate, LogisticQuery};

    fn query(text: &str) -> LogisticQuery {
        toml::from_str(text).unwrap()
    }

    fn age_sex_icu() -> LogisticQuery {
        query(
            r#"
            outcome = "in_hospital_death"
            covariates = [
              { name = "age", bounds = { lower = 15.0, upper = 90.0 }, bins = 15 },
              { name = "sex" },
              { name = "icu_type=2" },
              { name = "icu_type=3" },
            ]
            "#,
        )
    }

    /// Deterministic patients: (age, sex, icu type, death) with a real age effect.
    fn patients() -> Vec<(f64, f64, f64, bool)> {
        (0..3000u32)
            .map(|i| {
                let age = 15.0 + f64::from((i * 37) % 80);
                let sex = f64::from(i % 2);
                let icu = f64::from(1 + (i / 3) % 4);
                let risk = -4.0 + 0.04 * age + 0.3 * sex + 0.5 * f64::from(u8::from(icu == 3.0));
                let u = f64::from((i * 7919) % 1000) / 1000.0;
                (age, sex, icu, u < logistic(risk))
            })
            .collect()
    }

    fn table(q: &LogisticQuery) -> Vec<f64> {
        let mut sums = vec![0.0; q.len()];
        for (age, sex, icu, death) in patients() {
            let raws = [age, sex, icu, icu, f64::from(u8::from(death))];
            let v = q.contribution(&raws).unwrap().unwrap();
            assert_eq!(v.iter().sum::<f64>(), 1.0);
            for (s, x) in sums.iter_mut().zip(v) {
                *s += x;
            }
        }
        sums
    }

    #[test]
    fn indicators_of_one_attribute_form_one_factor() {
        let spec = age_sex_icu().spec().unwrap();
        assert_eq!(spec.factors.len(), 3);
        assert_eq!(spec.cells(), 15 * 2 * 3);
        age_sex_icu().validate().unwrap();
        let cell = spec.cell(&[88.0, 1.0, 3.0, 3.0]).unwrap();
        assert_eq!(spec.row(cell), vec![87.5, 1.0, 0.0, 1.0]);
        let cell = spec.cell(&[10.0, 0.0, 4.0, 4.0]).unwrap();
        assert_eq!(spec.row(cell), vec![17.5, 0.0, 0.0, 0.0]);
        assert_eq!(spec.cell(&[f64::NAN, 0.0, 1.0, 1.0]), None);
        assert_eq!(spec.cell(&[40.0, 2.0, 1.0, 1.0]), None);
    }

    #[test]
    fn without_noise_the_fit_is_the_exact_fit_on_the_binned_rows() {
        let q = age_sex_icu();
        let spec = q.spec().unwrap();
        let sums = table(&q);
        let silent = vec![Noise::laplace(0.0); sums.len()];
        let fit = spec.from_sums(&sums, &silent).unwrap();
        let (rows, y): (Vec<Vec<f64>>, Vec<bool>) = patients()
            .into_iter()
            .map(|(age, sex, icu, death)| {
                let cell = spec.cell(&[age, sex, icu, icu]).unwrap();
                (spec.row(cell), death)
            })
            .unzip();
        let exact = exact::logistic_irls(&rows, &y).unwrap();
        for ((c, e), se) in fit
            .coefficients
            .iter()
            .zip(&exact.coefficients)
            .zip(&exact.standard_errors)
        {
            assert!((c.estimate - e).abs() < 1e-6, "{c:?} vs {e}");
            assert!((c.standard_error - se).abs() < 1e-6, "{c:?} vs {se}");
        }
    }

    #[test]
    fn the_noise_widens_the_intervals_by_the_delta_method() {
        let q = age_sex_icu();
        let spec = q.spec().unwrap();
        let sums = table(&q);
        let silent = spec
            .from_sums(&sums, &vec![Noise::laplace(0.0); sums.len()])
            .unwrap();
        let noisy_scale = Noise {
            kind: NoiseKind::Laplace,
            scale: 1.0,
            contributors: 5,
        };
        let noisy = spec
            .from_sums(&sums, &vec![noisy_scale; sums.len()])
            .unwrap();
        for (a, b) in silent.coefficients.iter().zip(&noisy.coefficients) {
            assert_eq!(a.estimate, b.estimate);
            assert!(b.standard_error > a.standard_error, "{a:?} {b:?}");
        }
        // Simulated: the spread of fits over noisy tables matches the noise part.
        let mut rng = noise::rng(7);
        let draws = 300;
        let mut estimates = vec![Vec::new(); silent.coefficients.len()];
        for _ in 0..draws {
            let noisy_sums: Vec<f64> = sums
                .iter()
                .map(|s| s + noisy_scale.sample(&mut rng))
                .collect();
            let fit = spec
                .from_sums(&noisy_sums, &vec![noisy_scale; sums.len()])
                .unwrap();
            for (e, c) in estimates.iter_mut().zip(&fit.coefficients) {
                e.push(c.estimate);
            }
        }
        for ((e, a), b) in estimates
            .iter()
            .zip(&silent.coefficients)
            .zip(&noisy.coefficients)
        {
            let mean = e.iter().sum::<f64>() / draws as f64;
            let simulated = e.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
            let predicted = b.standard_error.powi(2) - a.standard_error.powi(2);
            let ratio = simulated / predicted;
            assert!(
                (0.75..1.33).contains(&ratio),
                "{}: simulated {simulated} predicted {predicted}",
                a.name
            );
        }
    }

    #[test]
    fn bad_designs_are_refused_by_name() {
        let base = age_sex_icu();
        let mut no_bins = base.clone();
        no_bins.covariates[0].bins = None;
        let mut no_bounds = base.clone();
        no_bounds.covariates[0].bounds = None;
        let mut one_bin = base.clone();
        one_bin.covariates[0].bins = Some(1);
        let mut repeated = base.clone();
        repeated.covariates[3].name = "icu_type=2.0".into();
        let mut too_many = base.clone();
        too_many.covariates.push(CellCovariate {
            name: "length_of_stay_days".into(),
            observation: None,
            bounds: Some(Bounds {
                lower: 0.0,
                upper: 30.0,
            }),
            bins: Some(10),
        });
        let mut bins_on_sex = base.clone();
        bins_on_sex.covariates[1].bins = Some(2);
        let mut not_a_flag = base.clone();
        not_a_flag.outcome = "age".into();
        for (i, (q, code)) in [
            (no_bins, "missing_bins"),
            (no_bounds, "missing_bounds"),
            (one_bin, "singular_design"),
            (repeated, "singular_design"),
            (too_many, "too_large"),
            (bins_on_sex, "bad_bins"),
            (not_a_flag, "unknown_variable"),
        ]
        .into_iter()
        .enumerate()
        {
            let error = q.validate().unwrap_err();
            assert_eq!(error.error_code(), code, "case {i}: {error}");
        }
    }

    #[test]
    fn a_table_too_noisy_to_fit_is_refused_not_a_panic() {
        let spec = age_sex_icu().spec().unwrap();
        let mut sums = vec![0.0; spec.len()];
        sums[0] = -5.0;
        let noises = vec![Noise::laplace(1.0); spec.len()];
        assert_eq!(
            spec.from_sums(&sums, &noises).unwrap_err().error_code(),
            "unusable"
        );
        assert!(spec.from_sums(&sums[1..], &noises).is_err());
    }
}

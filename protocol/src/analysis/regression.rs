//! Linear and logistic regression from noisy sufficient statistics, with standard errors and intervals that include the noise.
//!
//! **Scaling.** Every covariate (and a linear outcome) is clamped to its
//! bounds and mapped onto [-1, 1] before it is added, so every entry of a
//! patient's vector is at most 1 in size and one noise scale fits all
//! components. Coefficients are fitted on that scale and mapped back to the
//! variables' own units (a linear map, applied to the covariance too).
//!
//! **Linear** (one round). A patient adds the upper triangle of z z' with
//! z = [1, x, y]: the noisy X'X, X'y, y'y and n (Sheffet 2017; the
//! "noisy sufficient statistics" of Wang 2018). b = (X'X)^-1 X'y; refused
//! when the noisy X'X is not positive definite. Covariance: the sampling part
//! s^2 (X'X)^-1 plus the noise part by the delta method: for each noisy entry
//! e with variance v, db/de = (X'X)^-1 (dX'y/de - dX'X/de b), and the noise
//! adds v (db/de)(db/de)'.
//!
//! **Logistic** (a few rounds). Noisy Newton-Raphson: in each round every
//! hospital adds, at the current coefficients b, each patient's score
//! x (y - p) and Fisher information p (1 - p) x x'; the client takes the
//! Newton step b + I^-1 U. The budget is split equally over the rounds
//! (epsilon / rounds each, basic composition: [`LogisticSpec::epsilon_per_round`]).
//! The last step is Le Cam's one-step estimator, asymptotically efficient
//! once the previous coefficients are close, with covariance I^-1 plus the
//! noise part by the same delta method (U and I noisy, the step in place of b).
//! Three rounds from zero reach the maximum likelihood estimate to well
//! within its standard error for coefficients of moderate size
//! (odds ratios up to about 20 over a covariate's range).

use serde::{Deserialize, Serialize};

use super::linalg::{cholesky, cholesky_inverse, cholesky_solve, upper_triangle, Matrix};
use super::noise::{self, Noise};
use super::stats::z_level;
use super::{at_least, at_most, check_names, check_sums, Bounds, Error, Interval, Sensitivity};
use super::{MAX_COVARIATES, MAX_NEWTON_ROUNDS};

/// Largest coefficient on the [-1, 1] scale a Newton step may reach: an
/// odds ratio of e^40 across a covariate's range means separation or noise,
/// and stopping there keeps the next round's probabilities finite.
const MAX_SCALED_COEFFICIENT: f64 = 20.0;

/// A bounded variable of a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Attribute or per-patient observation feature name.
    pub name: String,
    /// Required: the engine cannot bound a patient's contribution without them.
    pub bounds: Option<Bounds>,
}

/// What a linear regression asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    pub covariates: Vec<Variable>,
    pub outcome: Variable,
}

/// What a logistic regression asks (the outcome is a yes/no attribute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticSpec {
    pub covariates: Vec<Variable>,
    /// Outcome name (e.g. `in_hospital_death`).
    pub outcome: String,
    /// Newton rounds, 1 to [`MAX_NEWTON_ROUNDS`]. 2 or 3: one round from
    /// zero is not enough for the one-step estimator's interval to hold,
    /// and every extra round divides each round's epsilon further.
    pub rounds: u32,
}

/// One patient of a linear regression: covariates in the spec's order, and the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearPatient {
    pub covariates: Vec<f64>,
    pub outcome: f64,
}

/// One patient of a logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticPatient {
    pub covariates: Vec<f64>,
    pub outcome: bool,
}

/// One coefficient, in the variable's own units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coefficient {
    /// `intercept` or the covariate's name.
    pub name: String,
    pub estimate: f64,
    /// Includes the noise.
    pub standard_error: f64,
    pub ci95: Interval,
}

/// A fitted regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Intercept first, then the covariates in the spec's order.
    pub coefficients: Vec<Coefficient>,
    /// Noisy number of patients (linear), or `None` (logistic does not release it).
    pub patients: Option<f64>,
}

/// One logistic round's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticStep {
    /// Coefficients on the [-1, 1] scale, to send with the next round.
    pub next_scaled: Vec<f64>,
    /// The fit after this step; after the last round, the result.
    pub fit: Fit,
}

/// Checks the covariates: 1 to [`MAX_COVARIATES`], distinct names, bounds present and valid.
fn validate_covariates<'a>(
    covariates: &'a [Variable],
    outcome: &'a str,
) -> Result<Vec<Bounds>, Error> {
    at_least("covariates", covariates.len(), 1)?;
    at_most("covariates", covariates.len(), MAX_COVARIATES)?;
    check_names(
        covariates
            .iter()
            .map(|c| c.name.as_str())
            .chain(std::iter::once(outcome)),
    )?;
    covariates.iter().map(bounds_of).collect()
}

fn bounds_of(variable: &Variable) -> Result<Bounds, Error> {
    let bounds = variable
        .bounds
        .ok_or_else(|| Error::MissingBounds(variable.name.clone()))?;
    bounds.validate(&variable.name)?;
    Ok(bounds)
}

/// [1, scaled covariates], refusing a wrong count or NaN.
fn scaled_row(bounds: &[Bounds], values: &[f64]) -> Result<Vec<f64>, Error> {
    if values.len() != bounds.len() {
        return Err(Error::WrongLength {
            what: "patient covariates",
            found: values.len(),
            expected: bounds.len(),
        });
    }
    if values.iter().any(|v| v.is_nan()) {
        return Err(Error::BadPatient {
            what: "covariate",
            value: "NaN".into(),
        });
    }
    Ok(std::iter::once(1.0)
        .chain(bounds.iter().zip(values).map(|(b, v)| b.scale(*v)))
        .collect())
}

impl LinearSpec {
    /// Refuses missing or bad bounds, too many covariates and repeated names.
    pub fn validate(&self) -> Result<(), Error> {
        self.checked_bounds().map(|_| ())
    }

    /// Covariate bounds, then the outcome's.
    fn checked_bounds(&self) -> Result<(Vec<Bounds>, Bounds), Error> {
        let covariates = validate_covariates(&self.covariates, &self.outcome.name)?;
        Ok((covariates, bounds_of(&self.outcome)?))
    }

    /// Parameters: intercept plus covariates.
    fn parameters(&self) -> usize {
        self.covariates.len() + 1
    }

    /// Length of one patient's vector: the upper triangle of a (p+1) x (p+1) matrix.
    pub fn len(&self) -> usize {
        let q = self.parameters() + 1;
        q * (q + 1) / 2
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry is at most 1 in size: L1 = len, L2 = sqrt(len).
    pub fn sensitivity(&self) -> Sensitivity {
        let m = self.len() as f64;
        Sensitivity {
            l1: m,
            l2: m.sqrt(),
        }
    }

    /// The upper triangle of z z', z = [1, scaled covariates, scaled outcome].
    pub fn contribution(&self, patient: &LinearPatient) -> Result<Vec<f64>, Error> {
        let (bounds, outcome) = self.checked_bounds()?;
        if patient.outcome.is_nan() {
            return Err(Error::BadPatient {
                what: "outcome",
                value: "NaN".into(),
            });
        }
        let mut z = scaled_row(&bounds, &patient.covariates)?;
        z.push(outcome.scale(patient.outcome));
        Ok(upper_triangle(z.len())
            .into_iter()
            .map(|(i, j)| z.get(i).copied().unwrap_or(0.0) * z.get(j).copied().unwrap_or(0.0))
            .collect())
    }

    /// The researcher's side: coefficients, standard errors and intervals
    /// from the combined noisy sums and each component's noise.
    pub fn from_sums(&self, sums: &[f64], noises: &[Noise]) -> Result<Fit, Error> {
        let (bounds, outcome) = self.checked_bounds()?;
        check_sums(sums, self.len())?;
        noise::check(noises, self.len())?;
        let p = self.parameters();
        let mut xtx = Matrix::zeros(p);
        let mut xty = vec![0.0; p];
        let mut yty = 0.0;
        let mut xtx_noise = Vec::new();
        let mut xty_noise = vec![0.0; p];
        for (((i, j), value), noise) in upper_triangle(p + 1).into_iter().zip(sums).zip(noises) {
            if j < p {
                xtx.set(i, j, *value);
                xtx.set(j, i, *value);
                xtx_noise.push(((i, j), noise.variance()));
            } else if i < p {
                xty[i] = *value;
                xty_noise[i] = noise.variance();
            } else {
                yty = *value;
            }
        }
        let patients = xtx.get(0, 0);
        let df = patients - p as f64;
        if df.is_nan() || df < 1.0 {
            return Err(Error::Unusable(format!(
                "the noisy number of patients ({patients:.1}) leaves no degrees of freedom for {p} parameters"
            )));
        }
        let solved = NoisySolve::new(&xtx, &xty, &xtx_noise, &xty_noise, "X'X")?;
        let rss = (yty - dot(&solved.solution, &xty)).max(0.0);
        let sigma2 = rss / df;
        let covariance = solved.covariance(sigma2);
        let map = ToOriginal::new(&bounds, outcome.half_width(), outcome.midpoint());
        Ok(Fit {
            coefficients: map.coefficients(&self.covariates, &solved.solution, &covariance),
            patients: Some(patients),
        })
    }
}

impl LogisticSpec {
    /// Refuses missing or bad bounds, too many covariates, repeated names and a bad number of rounds.
    pub fn validate(&self) -> Result<(), Error> {
        self.checked_bounds().map(|_| ())
    }

    fn checked_bounds(&self) -> Result<Vec<Bounds>, Error> {
        let bounds = validate_covariates(&self.covariates, &self.outcome)?;
        let rounds = usize::try_from(self.rounds).unwrap_or(usize::MAX);
        at_least("Newton rounds", rounds, 1)?;
        at_most("Newton rounds", rounds, MAX_NEWTON_ROUNDS as usize)?;
        Ok(bounds)
    }

    fn parameters(&self) -> usize {
        self.covariates.len() + 1
    }

    /// The first round's coefficients (zero: every probability 1/2).
    pub fn start(&self) -> Vec<f64> {
        vec![0.0; self.parameters()]
    }

    /// Each round's share of the query's epsilon: an equal split over the
    /// rounds. The rounds compose sequentially, so the shares add up to the
    /// epsilon charged once per hospital for the whole query.
    pub fn epsilon_per_round(&self, total_epsilon: f64) -> f64 {
        total_epsilon / f64::from(self.rounds.max(1))
    }

    /// Length of one patient's vector: p score entries, then the upper triangle of the p x p information.
    pub fn len(&self) -> usize {
        let p = self.parameters();
        p + p * (p + 1) / 2
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Score entries are at most 1 in size, information entries at most 1/4
    /// (p (1 - p) <= 1/4): L1 = p + t/4, L2 = sqrt(p + t/16), t = p(p+1)/2.
    pub fn sensitivity(&self) -> Sensitivity {
        let p = self.parameters() as f64;
        let t = p * (p + 1.0) / 2.0;
        Sensitivity {
            l1: p + t / 4.0,
            l2: (p + t / 16.0).sqrt(),
        }
    }

    /// One patient's score and information at the round's scaled coefficients.
    pub fn contribution(
        &self,
        patient: &LogisticPatient,
        scaled: &[f64],
    ) -> Result<Vec<f64>, Error> {
        let bounds = self.checked_bounds()?;
        self.check_scaled(scaled)?;
        let x = scaled_row(&bounds, &patient.covariates)?;
        let probability = logistic(dot(&x, scaled));
        let residual = if patient.outcome { 1.0 } else { 0.0 } - probability;
        let weight = probability * (1.0 - probability);
        let score = x.iter().map(|xi| xi * residual);
        let information = upper_triangle(x.len()).into_iter().map(|(i, j)| {
            weight * x.get(i).copied().unwrap_or(0.0) * x.get(j).copied().unwrap_or(0.0)
        });
        Ok(score.chain(information).collect())
    }

    fn check_scaled(&self, scaled: &[f64]) -> Result<(), Error> {
        if scaled.len() != self.parameters() {
            return Err(Error::WrongLength {
                what: "current coefficients",
                found: scaled.len(),
                expected: self.parameters(),
            });
        }
        // The client never steps past the cap, so anything else is not its output.
        if let Some(bad) = scaled
            .iter()
            .find(|b| !(b.is_finite() && b.abs() <= MAX_SCALED_COEFFICIENT))
        {
            return Err(Error::BadCoefficients(format!(
                "coefficient {bad} is not a finite number within ±{MAX_SCALED_COEFFICIENT}"
            )));
        }
        Ok(())
    }

    /// The researcher's side of one round: the Newton step from `scaled`
    /// (the coefficients the round was computed at) and the fit after it.
    pub fn from_sums(
        &self,
        scaled: &[f64],
        sums: &[f64],
        noises: &[Noise],
    ) -> Result<LogisticStep, Error> {
        let bounds = self.checked_bounds()?;
        self.check_scaled(scaled)?;
        check_sums(sums, self.len())?;
        noise::check(noises, self.len())?;
        let p = self.parameters();
        let score: Vec<f64> = sums.iter().take(p).copied().collect();
        let score_noise: Vec<f64> = noises.iter().take(p).map(Noise::variance).collect();
        let mut information = Matrix::zeros(p);
        let mut information_noise = Vec::new();
        for (((i, j), value), noise) in upper_triangle(p)
            .into_iter()
            .zip(sums.iter().skip(p))
            .zip(noises.iter().skip(p))
        {
            information.set(i, j, *value);
            information.set(j, i, *value);
            information_noise.push(((i, j), noise.variance()));
        }
        let solved = NoisySolve::new(
            &information,
            &score,
            &information_noise,
            &score_noise,
            "Fisher information",
        )?;
        let next_scaled: Vec<f64> = scaled
            .iter()
            .zip(&solved.solution)
            .map(|(b, step)| (b + step).clamp(-MAX_SCALED_COEFFICIENT, MAX_SCALED_COEFFICIENT))
            .collect();
        let covariance = solved.covariance(1.0);
        let map = ToOriginal::new(&bounds, 1.0, 0.0);
        Ok(LogisticStep {
            fit: Fit {
                coefficients: map.coefficients(&self.covariates, &next_scaled, &covariance),
                patients: None,
            },
            next_scaled,
        })
    }
}

/// x = A^-1 b from noisy A and b, with what the delta method needs.
struct NoisySolve {
    solution: Vec<f64>,
    inverse: Matrix,
    /// Covariance of the solution due to the noise on A and b.
    noise_covariance: Matrix,
}

impl NoisySolve {
    /// `a_noise` lists each independent noisy entry (i <= j) of A with its
    /// variance (A[i][j] and A[j][i] are one noisy value); `b_noise` each
    /// entry of b's variance.
    fn new(
        a: &Matrix,
        b: &[f64],
        a_noise: &[((usize, usize), f64)],
        b_noise: &[f64],
        what: &str,
    ) -> Result<NoisySolve, Error> {
        let l = cholesky(a).ok_or_else(|| {
            Error::Unusable(format!("the noisy {what} matrix is not positive definite (too few patients for the noise, or collinear covariates)"))
        })?;
        let solution = cholesky_solve(&l, b);
        let inverse = cholesky_inverse(&l);
        let n = a.n;
        let mut noise_covariance = Matrix::zeros(n);
        let mut add = |gradient: Vec<f64>, variance: f64| {
            for r in 0..n {
                for c in 0..n {
                    noise_covariance.add(r, c, variance * gradient[r] * gradient[c]);
                }
            }
        };
        for (i, variance) in b_noise.iter().enumerate() {
            // dx/db_i = A^-1 e_i: column i of the inverse.
            add((0..n).map(|r| inverse.get(r, i)).collect(), *variance);
        }
        for &((i, j), variance) in a_noise {
            // dx/dA_ij = -A^-1 (dA x); dA has 1 at (i, j) and (j, i).
            let mut da_x = vec![0.0; n];
            if let Some(v) = da_x.get_mut(i) {
                *v += solution.get(j).copied().unwrap_or(0.0);
            }
            if i != j {
                if let Some(v) = da_x.get_mut(j) {
                    *v += solution.get(i).copied().unwrap_or(0.0);
                }
            }
            add(
                inverse.times(&da_x).into_iter().map(|v| -v).collect(),
                variance,
            );
        }
        Ok(NoisySolve {
            solution,
            inverse,
            noise_covariance,
        })
    }

    /// sampling_scale * A^-1 + the noise covariance.
    fn covariance(&self, sampling_scale: f64) -> Matrix {
        let mut total = self.noise_covariance.clone();
        for (t, v) in total.data.iter_mut().zip(&self.inverse.data) {
            *t += sampling_scale * v;
        }
        total
    }
}

/// The linear map from coefficients on the [-1, 1] scale to the variables'
/// units: with x_j = m_j + s_j u_j and y = m_y + s_y v,
/// slope_j = s_y c_j / s_j and intercept = m_y + s_y (c_0 - sum c_j m_j / s_j).
pub(super) struct ToOriginal {
    /// Row-major p x p matrix T; original = T scaled + offset.
    t: Matrix,
    offset: Vec<f64>,
}

impl ToOriginal {
    pub(super) fn new(
        bounds: &[Bounds],
        outcome_half_width: f64,
        outcome_midpoint: f64,
    ) -> ToOriginal {
        let p = bounds.len() + 1;
        let mut t = Matrix::zeros(p);
        t.set(0, 0, outcome_half_width);
        for (j, b) in bounds.iter().enumerate() {
            let slope = outcome_half_width / b.half_width();
            t.set(j + 1, j + 1, slope);
            t.set(0, j + 1, -slope * b.midpoint());
        }
        let mut offset = vec![0.0; p];
        offset[0] = outcome_midpoint;
        ToOriginal { t, offset }
    }

    pub(super) fn coefficients(
        &self,
        covariates: &[Variable],
        scaled: &[f64],
        covariance: &Matrix,
    ) -> Vec<Coefficient> {
        let p = self.t.n;
        let estimates: Vec<f64> = self
            .t
            .times(scaled)
            .iter()
            .zip(&self.offset)
            .map(|(v, o)| v + o)
            .collect();
        let z = z_level();
        let names = std::iter::once("intercept").chain(covariates.iter().map(|c| c.name.as_str()));
        names
            .zip(estimates)
            .enumerate()
            .map(|(r, (name, estimate))| {
                // Var(T_r . c) = T_r C T_r'.
                let row: Vec<f64> = (0..p).map(|k| self.t.get(r, k)).collect();
                let variance = dot(&row, &covariance.times(&row)).max(0.0);
                let standard_error = variance.sqrt();
                Coefficient {
                    name: name.to_string(),
                    estimate,
                    standard_error,
                    ci95: (estimate - z * standard_error, estimate + z * standard_error),
                }
            })
            .collect()
    }
}

pub(super) fn logistic(s: f64) -> f64 {
    1.0 / (1.0 + (-s).exp())
}

pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

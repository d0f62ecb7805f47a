//! Knowledge-discovery numerics (issue 16): survival, contingency tables and regression as sums of bounded per-patient vectors. No IO.
//!
//! Every analysis follows one shape, so the engine wires them alike:
//!
//! 1. **Spec.** A plain, validated description of what is asked
//!    ([`survival::Spec`], [`table::Spec`], [`regression::LinearSpec`],
//!    [`regression::LogisticSpec`], [`cells::Spec`]). Validation refuses bad specs before
//!    anything is charged.
//! 2. **Hospital side.** Each patient becomes one bounded vector
//!    (`contribution`); the hospital adds its patients' vectors and asks
//!    OpenDP for noise on the sum, calibrated to the spec's [`Sensitivity`]
//!    (the largest L1 and L2 norm of one patient's vector, so adding or
//!    removing one patient moves the sum by at most that much).
//! 3. **Researcher side.** The client adds the hospitals' noisy sums
//!    component by component and turns them into results (`from_sums`),
//!    given the noise each component carries ([`Noise`]). This is
//!    post-processing only: it costs no privacy.
//!
//! | analysis | one patient's vector | L1; L2 | DP mode (OpenDP) |
//! | --- | --- | --- | --- |
//! | survival | one-hot over (group, event in bin i / censored in bin i / beyond) | 1; 1 | discrete Laplace on integer counts |
//! | table | one-hot over the cells | 1; 1 | discrete Laplace on integer counts |
//! | linear | upper triangle of z z', z = [1, x, y] scaled to [-1, 1] | m; sqrt m | Laplace on floats |
//! | logistic, one shot ([`cells`]) | one-hot over (covariate cell, outcome) | 1; 1 | discrete Laplace on integer counts |
//! | logistic, per round | score x (y - p), information p (1 - p) x x' | p + t/4; sqrt(p + t/16) | Laplace on floats, epsilon / rounds |
//!
//! With k covariates: p = k + 1 parameters, m = (p + 1)(p + 2) / 2 entries,
//! t = p (p + 1) / 2. Each hospital sums its patients' vectors and adds noise
//! calibrated to the sensitivity, once for the whole vector.
//!
//! In encrypted mode the integer vectors (survival, table) are added as
//! they are; the real ones go through [`to_fixed_point`], with the
//! sensitivity of [`Sensitivity::of_fixed_point`], and the client divides the
//! decrypted totals by the resolution (and the noise scale with them).
//!
//! Intervals are at the one level [`crate::interval::ALPHA`] and account for
//! both the sampling variability (the textbook variance) and the added noise.
//! [`exact`] holds the non-private textbook computations the tests compare
//! against.

pub mod cells;
pub mod encoding;
pub mod exact;
mod linalg;
pub mod noise;
pub mod outcome;
pub mod query;
pub mod regression;
pub mod stats;
pub mod survival;
pub mod table;

pub use noise::{Noise, NoiseKind};

use serde::{Deserialize, Serialize};

/// Most time bins a survival analysis may ask for.
pub const MAX_TIME_BINS: usize = 64;
/// Most groups a survival analysis may compare.
pub const MAX_GROUPS: usize = 8;
/// Most cells a contingency table may have (the product of its levels).
pub const MAX_CELLS: usize = 64;
/// Most variables a contingency table may cross.
pub const MAX_TABLE_VARIABLES: usize = 3;
/// Most covariates a regression may have (besides the intercept).
pub const MAX_COVARIATES: usize = 8;
/// Most covariate cells of a one-shot logistic regression ([`cells`]):
/// each cell carries two noisy counts, and past a few hundred sparse cells
/// the noise outweighs the patients.
pub const MAX_LOGISTIC_CELLS: usize = 256;
/// Both counts of every cell fit one encrypted share.
const _: () = assert!(2 * MAX_LOGISTIC_CELLS <= witmed_crypto::fhe::params::MAX_VALUES);
/// Most Newton rounds a logistic regression may take.
pub const MAX_NEWTON_ROUNDS: u32 = 6;
/// The longest vector of any analysis (survival at the most groups and
/// bins) fits one encrypted share, one limb per count.
const _: () =
    assert!(MAX_GROUPS * (2 * MAX_TIME_BINS + 1) <= witmed_crypto::fhe::params::MAX_VALUES);
/// Most hospitals whose noises one combined component may carry.
pub const MAX_CONTRIBUTORS: u32 = 1024;
/// Monte Carlo draws behind a noise-aware p-value: enough that a p-value
/// near 0.05 is known to about ±0.007, few enough to stay well under a second.
pub const SIMULATION_DRAWS: usize = 1000;

/// Largest noisy sum accepted: beyond any number of patients times any
/// bounded value, and small enough that adding a few hundred cannot overflow.
pub const MAX_SUM: f64 = 1e15;

/// The bound of one patient's vector: the sensitivity of the sum to adding or
/// removing one patient, under which OpenDP calibrates the noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// Largest L1 norm of one patient's vector (for Laplace noise).
    pub l1: f64,
    /// Largest L2 norm of one patient's vector (for Gaussian noise).
    pub l2: f64,
}

/// A variable's bounds: values are clamped into `[lower, upper]` before they are added.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub lower: f64,
    pub upper: f64,
}

impl Bounds {
    /// Checks that both bounds are finite and `lower < upper`.
    pub fn validate(&self, variable: &str) -> Result<(), Error> {
        if !self.lower.is_finite() || !self.upper.is_finite() || self.lower >= self.upper {
            return Err(Error::BadBounds {
                variable: variable.to_string(),
                lower: self.lower,
                upper: self.upper,
            });
        }
        Ok(())
    }

    /// Maps `value` (clamped into the bounds) onto `[-1, 1]`. NaN maps to 0
    /// (the midpoint), so a missing value moves no sum.
    pub fn scale(&self, value: f64) -> f64 {
        // Unvalidated bounds (NaN, or lower >= upper) would make clamp panic.
        if value.is_nan() || self.validate("").is_err() {
            return 0.0;
        }
        let clamped = value.clamp(self.lower, self.upper);
        ((clamped - self.midpoint()) / self.half_width()).clamp(-1.0, 1.0)
    }

    /// Middle of the range.
    pub fn midpoint(&self) -> f64 {
        self.lower / 2.0 + self.upper / 2.0
    }

    /// Half the range's width.
    pub fn half_width(&self) -> f64 {
        self.upper / 2.0 - self.lower / 2.0
    }
}

/// Everything the analyses refuse. Each message says what to do;
/// [`Error::error_code`] gives a stable name for scripts, logs and metrics.
/// A refused spec charges nothing: validation runs before any noise.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A variable name the spec uses is empty or repeated.
    #[error("variable {0:?} is unknown or repeated in this analysis; name each variable once, with a name from the attribute table or a declared observation feature")]
    UnknownVariable(String),
    /// Time bins missing, not finite or not strictly increasing.
    #[error("time bin edges are invalid: {0}; give at least two finite edges in strictly increasing order, e.g. [0, 1, 2, 4, 8]")]
    BadBins(String),
    /// More bins, groups, cells or covariates than the named limit allows.
    #[error("{what} asks for {found}, more than the {max} allowed (the noise on so many components would drown the signal); ask for fewer")]
    TooLarge {
        what: &'static str,
        found: usize,
        max: usize,
    },
    /// Too few groups, levels or rounds to compute the statistic.
    #[error("{what} needs at least {min}, got {found}; add more")]
    TooSmall {
        what: &'static str,
        found: usize,
        min: usize,
    },
    /// A variable that is added up without bounds to clamp it.
    #[error("variable {0:?} has no bounds; give [bounds] lower and upper so one patient's contribution is bounded")]
    MissingBounds(String),
    /// A bounded number of a one-shot logistic regression without bins.
    #[error("variable {0:?} is a number without bins; give bins (e.g. bins = 15) so it enters the cell table as its bins' midpoints")]
    MissingBins(String),
    /// A design no data can solve: collinear covariates over the cells.
    #[error("{0}; drop or change the covariate that repeats another or the intercept")]
    Singular(String),
    /// Bounds that are not finite or not increasing.
    #[error(
        "bounds of {variable:?} are [{lower}, {upper}]; give finite bounds with lower < upper"
    )]
    BadBounds {
        variable: String,
        lower: f64,
        upper: f64,
    },
    /// One patient's value that cannot be placed (outside the spec's levels, or NaN where a value is required).
    #[error("a patient's {what} is {value}, outside what the spec allows; the engine should skip such a patient or fix its data mapping")]
    BadPatient { what: &'static str, value: String },
    /// Noisy sums or noise descriptions of the wrong length.
    #[error("{what} has {found} components, the spec needs {expected}; pass the sums and noises computed for this exact spec")]
    WrongLength {
        what: &'static str,
        found: usize,
        expected: usize,
    },
    /// A noise description that is not a finite, non-negative scale.
    #[error("noise of component {index} is invalid ({reason}); pass each component's noise scale as released with it")]
    BadNoise { index: usize, reason: String },
    /// The noisy sums are not usable: a matrix that is not positive definite,
    /// no degrees of freedom left, or values that are not finite.
    #[error("{0}; with more patients, a larger epsilon or fewer covariates the noisy statistics would be usable")]
    Unusable(String),
    /// A logistic round's current coefficients that no previous step can have returned.
    #[error("{0}; start with LogisticSpec::start() and pass each round the coefficients the previous round's step returned")]
    BadCoefficients(String),
}

impl Error {
    /// A stable snake_case name for scripts, logs and metrics; never changes for a variant.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::UnknownVariable(_) => "unknown_variable",
            Error::BadBins(_) => "bad_bins",
            Error::TooLarge { .. } => "too_large",
            Error::TooSmall { .. } => "too_small",
            Error::MissingBounds(_) => "missing_bounds",
            Error::MissingBins(_) => "missing_bins",
            Error::Singular(_) => "singular_design",
            Error::BadBounds { .. } => "bad_bounds",
            Error::BadPatient { .. } => "bad_patient",
            Error::WrongLength { .. } => "wrong_length",
            Error::BadNoise { .. } => "bad_noise",
            Error::Unusable(_) => "unusable",
            Error::BadCoefficients(_) => "bad_coefficients",
        }
    }
}

/// A 95% interval.
pub type Interval = (f64, f64);

/// Most fixed-point steps per unit for encrypted mode's integer slots: 2^12
/// keeps one patient's largest entry (at most 1 in size) at 4096 and a
/// hundred thousand patients' total far inside the limb encoding's range.
pub const MAX_RESOLUTION: u32 = 1 << 12;

/// Encrypted mode adds integers: one patient's vector as integers in steps
/// of 1 / `resolution`, rounded to nearest. Every entry of the analyses'
/// vectors is at most 1 in size, so each integer is at most `resolution`
/// in size and the sensitivity is the real one times `resolution` (plus
/// the rounding, at most 1/2 per entry: see [`Sensitivity::of_fixed_point`]).
/// The client divides the decrypted totals by `resolution`; each patient's
/// rounding moves a total by at most 1 / (2 resolution).
pub fn to_fixed_point(vector: &[f64], resolution: u32) -> Result<Vec<i64>, Error> {
    if resolution == 0 || resolution > MAX_RESOLUTION {
        return Err(Error::TooLarge {
            what: "fixed-point resolution (steps per unit, at least 1)",
            found: resolution as usize,
            max: MAX_RESOLUTION as usize,
        });
    }
    vector
        .iter()
        .map(|v| {
            if !(v.is_finite() && v.abs() <= 1.0) {
                return Err(Error::BadPatient {
                    what: "vector entry",
                    value: v.to_string(),
                });
            }
            // |v * resolution| <= 4096, exactly representable and in range.
            Ok((v * f64::from(resolution)).round() as i64)
        })
        .collect()
}

impl Sensitivity {
    /// The sensitivity of [`to_fixed_point`]'s integers for a vector of
    /// `len` entries: each entry is at most `resolution` in size after
    /// rounding (the real entry is at most 1), so L1 <= min(l1 * resolution
    /// + len / 2, len * resolution) and likewise for L2.
    pub fn of_fixed_point(&self, len: usize, resolution: u32) -> Sensitivity {
        let r = f64::from(resolution);
        let n = len as f64;
        Sensitivity {
            l1: (self.l1 * r + n / 2.0).min(n * r),
            l2: (self.l2 * r + n.sqrt() / 2.0).min(n.sqrt() * r),
        }
    }
}

/// The level of `value` among bins with the given increasing edges (bin i
/// is `[edges[i], edges[i + 1])`, the last bin also takes its upper edge),
/// for age bands and binned observation features of a table. `None` for NaN
/// or a value outside the edges: such a patient is skipped, or the query's
/// edges should cover the feature's bounds.
pub fn level_of(edges: &[f64], value: f64) -> Option<usize> {
    let (first, last) = (*edges.first()?, *edges.last()?);
    if value.is_nan() || value < first || value > last || edges.len() < 2 {
        return None;
    }
    let at_or_below = edges.iter().filter(|e| **e <= value).count();
    Some(at_or_below.saturating_sub(1).min(edges.len() - 2))
}

/// Refuses when `found > max`.
fn at_most(what: &'static str, found: usize, max: usize) -> Result<(), Error> {
    if found > max {
        return Err(Error::TooLarge { what, found, max });
    }
    Ok(())
}

/// Refuses when `found < min`.
fn at_least(what: &'static str, found: usize, min: usize) -> Result<(), Error> {
    if found < min {
        return Err(Error::TooSmall { what, found, min });
    }
    Ok(())
}

/// Refuses sums of the wrong length or with a value that is not finite.
fn check_sums(sums: &[f64], expected: usize) -> Result<(), Error> {
    if sums.len() != expected {
        return Err(Error::WrongLength {
            what: "noisy sums",
            found: sums.len(),
            expected,
        });
    }
    if sums.iter().any(|v| !(v.is_finite() && v.abs() <= MAX_SUM)) {
        return Err(Error::Unusable(format!(
            "a noisy sum is not a finite number within ±{MAX_SUM:e}, so it cannot come from patients"
        )));
    }
    Ok(())
}

/// Checks that names are non-empty and distinct.
fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if name.trim().is_empty() || !seen.insert(name) {
            return Err(Error::UnknownVariable(name.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_read_from_toml_without_bounds_is_refused() {
        let text = r#"
            [outcome]
            name = "length_of_stay"
            bounds = { lower = 0.0, upper = 60.0 }
            [[covariates]]
            name = "age"
        "#;
        let spec: regression::LinearSpec = toml::from_str(text).unwrap();
        let error = spec.validate().unwrap_err();
        assert_eq!(error.error_code(), "missing_bounds");
        assert!(error.to_string().contains("\"age\""), "{error}");
    }

    #[test]
    fn fixed_point_rounds_within_the_stated_sensitivity() {
        let vector = [1.0, -0.3337, 0.0, 0.99999];
        let fixed = to_fixed_point(&vector, 1024).unwrap();
        assert_eq!(fixed, vec![1024, -342, 0, 1024]);
        let l1: i64 = fixed.iter().map(|v| v.abs()).sum();
        let bound = Sensitivity {
            l1: 2.33379,
            l2: 1.5,
        }
        .of_fixed_point(4, 1024);
        assert!(l1 as f64 <= bound.l1);
        assert!(to_fixed_point(&[1.5], 1024).is_err());
        assert!(to_fixed_point(&[f64::NAN], 1024).is_err());
        assert!(to_fixed_point(&[0.5], 0).is_err());
    }

    #[test]
    fn levels_of_binned_values() {
        let age_bands = [18.0, 45.0, 65.0, 80.0, 120.0];
        assert_eq!(level_of(&age_bands, 18.0), Some(0));
        assert_eq!(level_of(&age_bands, 64.9), Some(1));
        assert_eq!(level_of(&age_bands, 65.0), Some(2));
        assert_eq!(level_of(&age_bands, 120.0), Some(3));
        assert_eq!(level_of(&age_bands, 121.0), None);
        assert_eq!(level_of(&age_bands, f64::NAN), None);
        assert_eq!(level_of(&[], 1.0), None);
        assert_eq!(level_of(&[1.0], 1.0), None);
    }
}

//! Contingency tables over two or three categorical variables: noisy counts, a noise-aware chi-square test of independence, and the 2x2 odds ratio.
//!
//! **Per patient.** One patient is a one-hot vector over the table's cells
//! (row-major, last variable fastest), so L1 = L2 = 1.
//!
//! **Chi-square.** Pearson's statistic of mutual independence on the noisy
//! counts (negative counts clamped to zero). Its p-value accounts for the
//! noise by the Monte Carlo test of Gaboardi, Lim, Rogers & Vadhan (2016,
//! "Differentially private chi-squared hypothesis testing"): tables are
//! drawn under independence with the margins estimated from the noisy
//! table (Poisson cells, for which Pearson's test of independence has the
//! same null distribution as under multinomial sampling), noise is added
//! from the released noise's distribution, the statistic is recomputed the
//! same way, and the observed statistic is ranked among
//! [`super::SIMULATION_DRAWS`] seeded draws.
//!
//! **Odds ratio.** For 2x2 tables, Woolf's (1955) interval on log OR with
//! variance sum 1/x over the cells, widened by the noise's variance pushed
//! through log OR (delta method: sum v_x / x^2). Cells the noise left below
//! 0.5 are raised to 0.5 (Haldane 1956), so the ratio stays finite.

use serde::{Deserialize, Serialize};

use super::exact::chi_square_independence;
use super::noise::{self, Noise};
use super::stats::{chi_square_upper_tail, monte_carlo_p, poisson, z_level};
use super::{at_least, at_most, check_names, check_sums, Error, Interval, Sensitivity};
use super::{MAX_CELLS, MAX_TABLE_VARIABLES, SIMULATION_DRAWS};

/// One categorical variable of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Attribute or feature name (e.g. `sex`, `icu_type`, `in_hospital_death`).
    pub name: String,
    /// Number of levels; a patient's level is an index below it.
    pub levels: usize,
}

/// What a table asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub variables: Vec<Variable>,
}

/// One patient's level of each variable, in the spec's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    pub levels: Vec<usize>,
}

/// A chi-square test with a noise-aware p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub df: usize,
    /// Monte Carlo p-value under the noise (the chi-square tail when there is no noise).
    pub p_value: f64,
}

/// A 2x2 table's odds ratio (first row and column are the reference).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OddsRatio {
    pub estimate: f64,
    pub ci95: Interval,
}

/// The researcher's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Noisy counts, clamped to be non-negative, row-major.
    pub counts: Vec<f64>,
    /// Absent when the table is empty or a margin has a single non-empty level.
    pub chi_square: Option<ChiSquare>,
    /// Present for 2x2 tables.
    pub odds_ratio: Option<OddsRatio>,
}

impl Spec {
    /// Refuses fewer than two or more than [`MAX_TABLE_VARIABLES`]
    /// variables, variables with fewer than two levels, more than
    /// [`MAX_CELLS`] cells, and empty or repeated names.
    pub fn validate(&self) -> Result<(), Error> {
        at_least("table variables", self.variables.len(), 2)?;
        at_most("table variables", self.variables.len(), MAX_TABLE_VARIABLES)?;
        check_names(self.variables.iter().map(|v| v.name.as_str()))?;
        for variable in &self.variables {
            at_least("levels of a table variable", variable.levels, 2)?;
        }
        let cells = self
            .variables
            .iter()
            .try_fold(1usize, |a, v| a.checked_mul(v.levels))
            .unwrap_or(usize::MAX);
        at_most("table cells", cells, MAX_CELLS)
    }

    fn levels(&self) -> Vec<usize> {
        self.variables.iter().map(|v| v.levels).collect()
    }

    /// Number of cells (the length of one patient's vector).
    pub fn len(&self) -> usize {
        self.variables
            .iter()
            .try_fold(1usize, |a, v| a.checked_mul(v.levels))
            .unwrap_or(usize::MAX)
    }

    /// Always false for a valid spec.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One-hot: L1 = L2 = 1.
    pub fn sensitivity(&self) -> Sensitivity {
        Sensitivity { l1: 1.0, l2: 1.0 }
    }

    /// One patient's one-hot vector. Refuses a wrong number of levels or a level out of range.
    pub fn contribution(&self, patient: &Patient) -> Result<Vec<f64>, Error> {
        self.validate()?;
        if patient.levels.len() != self.variables.len() {
            return Err(Error::WrongLength {
                what: "patient levels",
                found: patient.levels.len(),
                expected: self.variables.len(),
            });
        }
        let mut cell = 0usize;
        for (level, variable) in patient.levels.iter().zip(&self.variables) {
            if *level >= variable.levels {
                return Err(Error::BadPatient {
                    what: "level",
                    value: format!("{level} for {}", variable.name),
                });
            }
            cell = cell * variable.levels + level;
        }
        let mut vector = vec![0.0; self.len()];
        if let Some(slot) = vector.get_mut(cell) {
            *slot = 1.0;
        }
        Ok(vector)
    }

    /// The researcher's side: counts, chi-square test and (2x2) odds ratio
    /// from the combined noisy counts and each cell's noise. `seed` drives
    /// the Monte Carlo p-value.
    pub fn from_sums(&self, sums: &[f64], noises: &[Noise], seed: u64) -> Result<Table, Error> {
        self.validate()?;
        check_sums(sums, self.len())?;
        noise::check(noises, self.len())?;
        let counts: Vec<f64> = sums.iter().map(|c| c.max(0.0)).collect();
        let levels = self.levels();
        let chi_square = chi_square_independence(&levels, &counts).map(|observed| {
            let p_value = if noise::is_silent(noises) {
                chi_square_upper_tail(observed.statistic, observed.df)
            } else {
                simulated_p_value(&levels, &counts, observed.statistic, noises, seed)
            };
            ChiSquare {
                statistic: observed.statistic,
                df: observed.df,
                p_value,
            }
        });
        let odds_ratio = if levels == [2, 2] {
            odds_ratio(&counts, noises)
        } else {
            None
        };
        Ok(Table {
            counts,
            chi_square,
            odds_ratio,
        })
    }
}

/// Gaboardi et al.'s Monte Carlo test: rank the observed statistic among
/// statistics of noisy tables drawn under independence.
fn simulated_p_value(
    levels: &[usize],
    counts: &[f64],
    observed: f64,
    noises: &[Noise],
    seed: u64,
) -> f64 {
    let expected = independence_means(levels, counts);
    let mut rng = noise::rng(seed);
    let simulated: Vec<f64> = (0..SIMULATION_DRAWS)
        .map(|_| {
            let table: Vec<f64> = expected
                .iter()
                .zip(noises)
                .map(|(mean, noise)| (poisson(&mut rng, *mean) + noise.sample(&mut rng)).max(0.0))
                .collect();
            // A drawn table with an empty margin has no statistic: it
            // counts as not exceeding the observed one only if it is lower,
            // so take 0 (conservative for small p-values).
            chi_square_independence(levels, &table).map_or(0.0, |c| c.statistic)
        })
        .collect();
    monte_carlo_p(observed, &simulated)
}

/// Cell means N * product of margin proportions, from the (clamped) noisy table.
fn independence_means(levels: &[usize], counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return vec![0.0; counts.len()];
    }
    let margins: Vec<Vec<f64>> = levels
        .iter()
        .enumerate()
        .map(|(v, &l)| {
            let mut margin = vec![0.0; l];
            for (c, x) in counts.iter().enumerate() {
                if let Some(m) = margin.get_mut(super::exact::cell_level(levels, c, v)) {
                    *m += x;
                }
            }
            margin
        })
        .collect();
    (0..counts.len())
        .map(|c| {
            total
                * margins
                    .iter()
                    .enumerate()
                    .map(|(v, m)| {
                        m.get(super::exact::cell_level(levels, c, v))
                            .copied()
                            .unwrap_or(0.0)
                            / total
                    })
                    .product::<f64>()
        })
        .collect()
}

/// Woolf's interval widened for the noise, with Haldane's 0.5 floor on cells.
fn odds_ratio(counts: &[f64], noises: &[Noise]) -> Option<OddsRatio> {
    let cells: Vec<f64> = counts.iter().map(|c| c.max(0.5)).collect();
    let [a, b, c, d] = <[f64; 4]>::try_from(cells.as_slice()).ok()?;
    let log_or = (a * d / (b * c)).ln();
    let sampling: f64 = cells.iter().map(|x| 1.0 / x).sum();
    let from_noise: f64 = cells
        .iter()
        .zip(noises)
        .map(|(x, n)| n.variance() / (x * x))
        .sum();
    let se = (sampling + from_noise).sqrt();
    let z = z_level();
    Some(OddsRatio {
        estimate: log_or.exp(),
        ci95: ((log_or - z * se).exp(), (log_or + z * se).exp()),
    })
}

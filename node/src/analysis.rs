//! The hospital's side of an analysis query: each patient's raw values from the index, their bounded vectors, and the exact sum OpenDP adds noise to.
//!
//! [`witmed_protocol::analysis::query`] says where each value comes from and
//! how it becomes a level or a bounded number; this module reads the values
//! ([`raw`]) and adds the patients' vectors ([`add_up`]) in fixed point, in
//! checked `i64`, so the sum is exact and one patient moves it by at most the
//! L1 bound [`crate::dp::VectorPlan`] is calibrated to. A patient with a
//! value missing, or whose vector is zero (a time before the first bin), is
//! left out: the result does not depend on them, and they are not charged.

use witmed_protocol::analysis::query::{Analysis, RegressionSpec, Source};
use witmed_protocol::analysis::regression::{LinearPatient, LogisticPatient};
use witmed_protocol::analysis::{to_fixed_point, Error};
use witmed_protocol::vocab::Sex;

use crate::index::Index;

/// The patients added and the sum of their vectors, in steps of 1 / resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// Index positions of the patients whose vectors are in the sum.
    pub patients: Vec<usize>,
    pub sum: Vec<i64>,
}

/// Patient `i`'s raw value of `source` (NaN when unknown): sex 0 female, 1
/// male; an attribute as stored; conditions 1 or 0; an observation feature reduced.
pub fn raw(index: &Index, i: usize, source: &Source<'_>) -> f64 {
    match source {
        Source::Sex => match index.sex(i) {
            Sex::Female => 0.0,
            Sex::Male => 1.0,
            Sex::Other | Sex::Unknown => f64::NAN,
        },
        Source::Attribute(name) => index.attribute(i, name),
        Source::Conditions(codes) => f64::from(u8::from(index.has_any_condition(i, codes))),
        Source::Observation(feature) => index.observation_value(i, feature).unwrap_or(f64::NAN),
    }
}

/// Patient `i`'s vector, or `None` when a value it needs is missing.
pub fn vector(index: &Index, analysis: &Analysis<'_>, i: usize) -> Result<Option<Vec<f64>>, Error> {
    match analysis {
        Analysis::Survival(q) => {
            let group = q.group.as_ref().map_or(0.0, |g| raw(index, i, &g.source()));
            let time = index.attribute(i, &q.time);
            let event = index.attribute(i, &q.event);
            q.patient(time, event, group)
                .map(|p| q.spec().contribution(&p))
                .transpose()
        }
        Analysis::Table(q) => {
            let raws: Vec<f64> = q
                .variables
                .iter()
                .map(|v| raw(index, i, &v.source()))
                .collect();
            q.patient(&raws)
                .map(|p| q.spec().contribution(&p))
                .transpose()
        }
        Analysis::Logistic(q) => {
            let raws: Vec<f64> = q.sources().iter().map(|s| raw(index, i, s)).collect();
            q.contribution(&raws)
        }
        Analysis::Regression(q) => {
            let covariates: Vec<f64> = q
                .covariates
                .iter()
                .map(|c| c.value(raw(index, i, &c.source())))
                .collect();
            let outcome = q.outcome.value(raw(index, i, &q.outcome.source()));
            if outcome.is_nan() || covariates.iter().any(|v| v.is_nan()) {
                return Ok(None);
            }
            match q.spec() {
                RegressionSpec::Linear(spec) => spec
                    .contribution(&LinearPatient {
                        covariates,
                        outcome,
                    })
                    .map(Some),
                RegressionSpec::Logistic(spec) => {
                    let Some(outcome) = [0.0, 1.0].iter().position(|v| *v == outcome) else {
                        return Ok(None);
                    };
                    let outcome = outcome == 1;
                    spec.contribution(
                        &LogisticPatient {
                            covariates,
                            outcome,
                        },
                        &q.at(),
                    )
                    .map(Some)
                }
            }
        }
    }
}

/// Adds the vectors of the `candidates` (index positions: eligible, in the
/// cohort, under their cap) at `resolution` steps per unit.
pub fn add_up(
    index: &Index,
    analysis: &Analysis<'_>,
    candidates: &[usize],
    resolution: u32,
) -> Result<Vectors, Error> {
    let len = analysis.len();
    let mut sum = vec![0i64; len];
    let mut patients = Vec::new();
    for &i in candidates {
        let Some(vector) = vector(index, analysis, i)? else {
            continue;
        };
        let fixed = to_fixed_point(&vector, resolution)?;
        if fixed.iter().all(|v| *v == 0) {
            continue;
        }
        for (total, v) in sum.iter_mut().zip(&fixed) {
            *total = total
                .checked_add(*v)
                .ok_or_else(|| Error::Unusable("a sum of patients' vectors overflowed".into()))?;
        }
        patients.push(i);
    }
    Ok(Vectors { patients, sum })
}

/// The noisy number of patients in a released vector, compared with the
/// node's minimum cohort: the total of a survival's, table's or cell
/// table's counts; the
/// count entry of a linear regression (the first: 1 x 1); for a logistic
/// round four times the intercept's information (each patient adds
/// p (1 - p) <= 1/4, so the true count is at least that).
pub fn noisy_cohort(analysis: &Analysis<'_>, values: &[f64]) -> f64 {
    let first = values.first().copied().unwrap_or(0.0);
    match analysis {
        Analysis::Survival(_) | Analysis::Table(_) | Analysis::Logistic(_) => values.iter().sum(),
        Analysis::Regression(q) => match q.spec() {
            RegressionSpec::Linear(_) => first,
            RegressionSpec::Logistic(_) => {
                let p = q.covariates.len() + 1;
                4.0 * values.get(p).copied().unwrap_or(0.0)
            }
        },
    }
}

//! The privacy engine: OpenDP measurements for each aggregate, their privacy loss, and accuracy.
//!
//! Each query becomes one OpenDP measurement, built before any data is
//! touched, so the privacy loss to charge is known first: it is what the
//! measurement's privacy map says for neighbouring data sets that differ by
//! one patient (symmetric distance 1), never a number computed by hand.
//!
//! | aggregate  | measurement                                                          |
//! |------------|----------------------------------------------------------------------|
//! | count      | `make_count` then discrete Laplace (`make_laplace` on `i64`)          |
//! | sum, mean  | composition of [clamp, sum, Laplace] and [count, discrete Laplace]    |
//! | histogram  | `make_count_by_categories` over bin indices, discrete Laplace per bin |
//! | quantiles  | a histogram over equal bins of the bounds, post-processed              |
//! | survival, table, regression | [`VectorPlan`]: discrete Laplace on the summed integer vector (`make_laplace` on `i64` vectors, L1) |
//!
//! Each patient contributes exactly one row (the engine reduces patients to
//! one value before calling here), so symmetric distance 1 is one patient.
//! Sums and means shift values by the middle of the bounds before clamping
//! (a per-row map that leaves neighbouring data sets neighbouring). OpenDP's
//! sum over data of unknown size has sensitivity `max(U - L, |L|, |U|)` per
//! patient (plus a float-rounding term); shifted bounds `±(U - L)/2` make it
//! `U - L`. That is a gain only for bounds far from zero (30..200: 200 to
//! 170; 100..110: 110 to 10), never a halving, and none for bounds from 0.
//! The code takes the sensitivity from OpenDP's stability map, not from
//! this reasoning.
//!
//! Intervals come from OpenDP's accuracy functions at level [`ALPHA`] (0.05); a
//! mean combines the sum's and the count's intervals at alpha/2 each (a union
//! bound), so its interval is conservative. The arithmetic that turns
//! half-widths into mean and quantile intervals is shared with the
//! researcher's client ([`witmed_protocol::interval`]), so one node's answer
//! and a one-hospital federation agree.

use opendp::accuracy::{discrete_laplacian_scale_to_accuracy, laplacian_scale_to_accuracy};
use opendp::combinators::{make_chain_mt, make_chain_pm, make_chain_tt, make_composition};
use opendp::core::{Function, Measurement};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::measures::MaxDivergence;
use opendp::metrics::{AbsoluteDistance, L1Distance, SymmetricDistance};
use opendp::transformations::{make_clamp, make_count, make_count_by_categories, make_sum};
use witmed_protocol::answer::{Component, Mechanism, Released};
use witmed_protocol::interval::{mean_with_interval, quantiles_with_intervals, ALPHA};
use witmed_protocol::query::{Aggregate, Query};

/// Errors from the privacy engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// OpenDP refused to build or run the measurement (the message says why).
    #[error("differential privacy mechanism failed: {0}")]
    OpenDp(String),
    /// The query cannot be answered with DP as written.
    #[error("query cannot be answered privately: {0}")]
    Unsupported(String),
}

impl From<opendp::error::Error> for Error {
    fn from(e: opendp::error::Error) -> Self {
        Error::OpenDp(format!(
            "{:?}: {}",
            e.variant,
            e.message.unwrap_or_default()
        ))
    }
}

type Rows = VectorDomain<AtomDomain<f64>>;
type Meas<TO> = Measurement<Rows, SymmetricDistance, MaxDivergence, TO>;
type BinMeas =
    Measurement<VectorDomain<AtomDomain<i64>>, SymmetricDistance, MaxDivergence, Vec<i64>>;

/// A measurement ready to run, with its privacy loss already known.
pub struct Plan {
    kind: PlanKind,
    epsilon: f64,
}

enum PlanKind {
    Count {
        meas: Meas<f64>,
        scale: f64,
    },
    SumAndCount {
        meas: Meas<Vec<f64>>,
        sum_scale: f64,
        count_scale: f64,
        lower: f64,
        upper: f64,
        mean: bool,
    },
    Bins {
        meas: BinMeas,
        scale: f64,
        edges: Vec<f64>,
        quantiles: Option<Vec<f64>>,
    },
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plan(epsilon = {})", self.epsilon)
    }
}

impl Plan {
    /// Builds the measurement for `query`.
    pub fn new(query: &Query) -> Result<Plan, Error> {
        let eps = query.privacy.epsilon;
        let bounds = query.bounds.map(|b| (b.lower, b.upper));
        let kind = match &query.aggregate {
            Aggregate::Count => count_plan(eps)?,
            Aggregate::Sum | Aggregate::Mean => {
                let (lower, upper) =
                    bounds.ok_or_else(|| Error::Unsupported("sum and mean need bounds".into()))?;
                sum_plan(eps, lower, upper, query.aggregate == Aggregate::Mean)?
            }
            Aggregate::Histogram { edges } => bins_plan(eps, edges.clone(), None)?,
            Aggregate::Quantiles {
                probabilities,
                bins,
            } => {
                let (lower, upper) =
                    bounds.ok_or_else(|| Error::Unsupported("quantiles need bounds".into()))?;
                let edges = uniform_edges(lower, upper, *bins as usize);
                bins_plan(eps, edges, Some(probabilities.clone()))?
            }
            Aggregate::Survival(_)
            | Aggregate::Table(_)
            | Aggregate::Regression(_)
            | Aggregate::Logistic(_) => {
                return Err(Error::Unsupported(format!(
                    "a {} query is released through dp::VectorPlan",
                    query.aggregate.kind()
                )))
            }
        };
        let epsilon = kind.privacy_loss()?;
        Ok(Plan { kind, epsilon })
    }

    /// The privacy loss this measurement spends, from OpenDP's privacy map at distance 1.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Runs the measurement on one value per patient.
    ///
    /// `min_cohort`: when the noisy number of patients is below it, nothing
    /// but the fact of suppression is released (the loss is spent all the same).
    pub fn release(&self, values: &[f64], min_cohort: u64) -> Result<Released, Error> {
        let data: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let mut released = match &self.kind {
            PlanKind::Count { meas, scale } => release_count(meas, *scale, &data)?,
            PlanKind::SumAndCount {
                meas,
                sum_scale,
                count_scale,
                lower,
                upper,
                mean,
            } => release_sum(
                meas,
                (*sum_scale, *count_scale),
                (*lower, *upper),
                *mean,
                &data,
            )?,
            PlanKind::Bins {
                meas,
                scale,
                edges,
                quantiles,
            } => release_bins(meas, *scale, edges, quantiles.as_deref(), &data)?,
        };
        released.epsilon_spent = self.epsilon;
        // A minimum of 0 means no suppression, even for a (noisy) negative count.
        if min_cohort > 0 && noisy_cohort_size(&released) < min_cohort as f64 {
            return Ok(Released::suppressed(self.epsilon));
        }
        Ok(released)
    }
}

impl PlanKind {
    fn privacy_loss(&self) -> Result<f64, Error> {
        Ok(match self {
            PlanKind::Count { meas, .. } => meas.map(&1)?,
            PlanKind::SumAndCount { meas, .. } => meas.map(&1)?,
            PlanKind::Bins { meas, .. } => meas.map(&1)?,
        })
    }
}

fn rows() -> Rows {
    VectorDomain::new(AtomDomain::new_non_nan())
}

/// Count of rows with discrete Laplace noise, returned as f64 for composition.
fn count_measurement(eps: f64) -> Result<(Meas<f64>, f64), Error> {
    let count = make_count::<f64, i64>(rows(), SymmetricDistance)?;
    let sensitivity = count.map(&1)? as f64;
    let scale = sensitivity / eps;
    let noise = make_laplace(
        count.output_domain.clone(),
        count.output_metric.clone(),
        scale,
        None,
    )?;
    let noisy = make_chain_mt(&noise, &count)?;
    let as_float = Function::new(|x: &i64| *x as f64);
    Ok((make_chain_pm(&as_float, &noisy)?, scale))
}

fn count_plan(eps: f64) -> Result<PlanKind, Error> {
    let (meas, scale) = count_measurement(eps)?;
    Ok(PlanKind::Count { meas, scale })
}

/// Clamped, shifted sum with Laplace noise.
fn sum_measurement(eps: f64, half_width: f64) -> Result<(Meas<f64>, f64), Error> {
    let clamp = make_clamp(rows(), SymmetricDistance, (-half_width, half_width))?;
    let sum = make_sum(clamp.output_domain.clone(), SymmetricDistance)?;
    let clamped_sum = make_chain_tt(&sum, &clamp)?;
    // OpenDP's sensitivity includes floating-point rounding of the sum.
    let sensitivity = clamped_sum.map(&1)?;
    let scale = sensitivity / eps;
    let noise = make_laplace(
        clamped_sum.output_domain.clone(),
        AbsoluteDistance::<f64>::default(),
        scale,
        None,
    )?;
    Ok((make_chain_mt(&noise, &clamped_sum)?, scale))
}

fn sum_plan(eps: f64, lower: f64, upper: f64, mean: bool) -> Result<PlanKind, Error> {
    // Half the budget to the sum, half to the count.
    let half = eps / 2.0;
    let (sum, sum_scale) = sum_measurement(half, (upper - lower) / 2.0)?;
    let (count, count_scale) = count_measurement(half)?;
    let meas = make_composition(vec![sum, count])?;
    Ok(PlanKind::SumAndCount {
        meas,
        sum_scale,
        count_scale,
        lower,
        upper,
        mean,
    })
}

fn bins_plan(eps: f64, edges: Vec<f64>, quantiles: Option<Vec<f64>>) -> Result<PlanKind, Error> {
    let bins = edges.len() - 1;
    let domain = VectorDomain::new(AtomDomain::<i64>::default());
    let categories: Vec<i64> = (0..bins as i64).collect();
    let counts = make_count_by_categories::<L1Distance<i64>, i64, i64>(
        domain,
        SymmetricDistance,
        categories,
        false,
    )?;
    let sensitivity = counts.map(&1)? as f64;
    let scale = sensitivity / eps;
    let noise = make_laplace(
        counts.output_domain.clone(),
        counts.output_metric.clone(),
        scale,
        None,
    )?;
    let meas = make_chain_mt(&noise, &counts)?;
    Ok(PlanKind::Bins {
        meas,
        scale,
        edges,
        quantiles,
    })
}

fn uniform_edges(lower: f64, upper: f64, bins: usize) -> Vec<f64> {
    (0..=bins)
        .map(|i| lower + (upper - lower) * i as f64 / bins as f64)
        .collect()
}

/// Bin of `v`: `edges[i] <= v < edges[i+1]`; values outside go to the end bins.
pub fn bin_of(v: f64, edges: &[f64]) -> i64 {
    let bins = edges.len() - 1;
    let i = edges.partition_point(|&e| e <= v);
    i.saturating_sub(1).min(bins - 1) as i64
}

fn count_accuracy(scale: f64, alpha: f64) -> Result<f64, Error> {
    Ok(discrete_laplacian_scale_to_accuracy(scale, alpha)?)
}

fn release_count(meas: &Meas<f64>, scale: f64, data: &[f64]) -> Result<Released, Error> {
    let value = meas.invoke(&data.to_vec())?;
    let acc = count_accuracy(scale, ALPHA)?;
    Ok(Released {
        value: Some(value),
        values: vec![],
        ci95: Some((value - acc, value + acc)),
        ci95s: vec![],
        components: vec![component(
            "count",
            value,
            scale,
            Mechanism::DiscreteLaplace,
            acc,
        )],
        epsilon_spent: 0.0,
        suppressed: false,
    })
}

fn release_sum(
    meas: &Meas<Vec<f64>>,
    (sum_scale, count_scale): (f64, f64),
    (lower, upper): (f64, f64),
    mean: bool,
    data: &[f64],
) -> Result<Released, Error> {
    let mid = (lower + upper) / 2.0;
    let shifted: Vec<f64> = data.iter().map(|v| v.clamp(lower, upper) - mid).collect();
    let out = meas.invoke(&shifted)?;
    let (noisy_shifted_sum, noisy_count) = (out[0], out[1]);
    // Each of the two intervals at alpha/2: both hold together with probability >= 1 - alpha.
    let sum_acc = laplacian_scale_to_accuracy(sum_scale, ALPHA / 2.0)?;
    let count_acc = count_accuracy(count_scale, ALPHA / 2.0)?;
    // The released sum is of the unshifted values: add back mid times the noisy count.
    let sum = noisy_shifted_sum + mid * noisy_count;
    let components = vec![
        component(
            "sum_centered",
            noisy_shifted_sum,
            sum_scale,
            Mechanism::Laplace,
            sum_acc,
        ),
        component(
            "count",
            noisy_count,
            count_scale,
            Mechanism::DiscreteLaplace,
            count_acc,
        ),
    ];
    let (value, ci) = if mean {
        mean_with_interval(
            noisy_shifted_sum,
            sum_acc,
            noisy_count,
            count_acc,
            (lower, upper),
        )
    } else {
        let half = sum_acc + mid.abs() * count_acc;
        (sum, (sum - half, sum + half))
    };
    Ok(Released {
        value: Some(value),
        values: vec![],
        ci95: Some(ci),
        ci95s: vec![],
        components,
        epsilon_spent: 0.0,
        suppressed: false,
    })
}

fn release_bins(
    meas: &BinMeas,
    scale: f64,
    edges: &[f64],
    quantiles: Option<&[f64]>,
    data: &[f64],
) -> Result<Released, Error> {
    let bins: Vec<i64> = data.iter().map(|v| bin_of(*v, edges)).collect();
    let noisy: Vec<f64> = meas.invoke(&bins)?.into_iter().map(|c| c as f64).collect();
    let acc = count_accuracy(scale, ALPHA)?;
    let components = noisy
        .iter()
        .enumerate()
        .map(|(i, c)| {
            component(
                &format!("bin[{i}]"),
                *c,
                scale,
                Mechanism::DiscreteLaplace,
                acc,
            )
        })
        .collect();
    let (values, ci95s) = match quantiles {
        None => (
            noisy.clone(),
            noisy.iter().map(|c| (c - acc, c + acc)).collect(),
        ),
        Some(probabilities) => {
            // Union bound over the bins for the quantile intervals.
            let acc_all = count_accuracy(scale, ALPHA / noisy.len() as f64)?;
            quantiles_with_intervals(&noisy, edges, probabilities, acc_all)
        }
    };
    Ok(Released {
        value: None,
        values,
        ci95: None,
        ci95s,
        components,
        epsilon_spent: 0.0,
        suppressed: false,
    })
}

type VectorMeas =
    Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;

/// Fixed-point steps per unit of the regressions' real vectors: each entry
/// (at most 1 in size) becomes an integer of at most 4096, rounded to nearest.
pub const REGRESSION_RESOLUTION: u32 = witmed_protocol::analysis::MAX_RESOLUTION;

/// The measurement of an analysis query: OpenDP's discrete Laplace on the
/// hospital's summed integer vector, calibrated to the L1 bound of one
/// patient's vector.
///
/// The engine adds the patients' vectors itself (exactly, in checked `i64`);
/// the measurement's input metric is the L1 distance between such sums, and
/// one patient moves the sum by at most `l1` (one-hot counts: 1; regressions:
/// every entry's bound times the resolution, which rounding to nearest
/// never exceeds), so the loss charged is OpenDP's privacy map at `d_in = l1`.
pub struct VectorPlan {
    meas: VectorMeas,
    /// Steps per unit (1 for counts); released values are divided by it.
    resolution: u32,
    l1: i64,
    scale: f64,
    epsilon: f64,
    len: usize,
}

impl std::fmt::Debug for VectorPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VectorPlan(len = {}, l1 = {}, epsilon = {})",
            self.len, self.l1, self.epsilon
        )
    }
}

impl VectorPlan {
    /// The plan of `analysis` at `epsilon`, its loss read from OpenDP's privacy map.
    pub fn new(
        analysis: &witmed_protocol::analysis::query::Analysis<'_>,
        epsilon: f64,
    ) -> Result<VectorPlan, Error> {
        let resolution = if analysis.is_integer() {
            1
        } else {
            REGRESSION_RESOLUTION
        };
        let l1_real = analysis.sensitivity().l1 * f64::from(resolution);
        if !(1.0..1e12).contains(&l1_real) {
            return Err(Error::Unsupported(format!(
                "sensitivity {l1_real} is not usable"
            )));
        }
        let l1 = l1_real.ceil() as i64;
        let scale = l1 as f64 / epsilon;
        let meas = make_laplace(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )?;
        let epsilon = meas.map(&l1)?;
        Ok(VectorPlan {
            meas,
            resolution,
            l1,
            scale,
            epsilon,
            len: analysis.len(),
        })
    }

    /// The privacy loss this measurement spends, from OpenDP's privacy map at `d_in = l1`.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Steps per unit of the integer sums (1 for counts).
    pub fn resolution(&self) -> u32 {
        self.resolution
    }

    /// Runs the measurement on the summed vector. `noisy_cohort` reads the
    /// noisy number of patients from the released values, which the node's
    /// minimum is compared with ([`crate::analysis::noisy_cohort`]).
    pub fn release(
        &self,
        sum: &[i64],
        min_cohort: u64,
        noisy_cohort: impl Fn(&[f64]) -> f64,
    ) -> Result<Released, Error> {
        if sum.len() != self.len {
            return Err(Error::Unsupported(format!(
                "summed vector has {} entries, the analysis needs {}",
                sum.len(),
                self.len
            )));
        }
        let noisy = self.meas.invoke(&sum.to_vec())?;
        let r = f64::from(self.resolution);
        let values: Vec<f64> = noisy.iter().map(|v| *v as f64 / r).collect();
        let accuracy = count_accuracy(self.scale, ALPHA)? / r;
        let components = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                component(
                    &witmed_protocol::analysis::outcome::component_name(i),
                    *v,
                    self.scale / r,
                    Mechanism::DiscreteLaplace,
                    accuracy,
                )
            })
            .collect();
        if min_cohort > 0 && noisy_cohort(&values) < min_cohort as f64 {
            return Ok(Released::suppressed(self.epsilon));
        }
        Ok(Released {
            value: None,
            values: vec![],
            ci95: None,
            ci95s: vec![],
            components,
            epsilon_spent: self.epsilon,
            suppressed: false,
        })
    }
}

fn component(
    name: &str,
    value: f64,
    scale: f64,
    mechanism: Mechanism,
    accuracy95: f64,
) -> Component {
    Component {
        name: name.to_string(),
        value,
        noise_scale: scale,
        mechanism,
        accuracy95,
    }
}

/// The noisy number of patients the released result rests on.
fn noisy_cohort_size(released: &Released) -> f64 {
    let count = released.components.iter().find(|c| c.name == "count");
    match count {
        Some(c) => c.value,
        None => released
            .components
            .iter()
            .filter(|c| c.name.starts_with("bin["))
            .map(|c| c.value)
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_send_outliers_to_end_bins() {
        let edges = [0.0, 10.0, 20.0, 30.0];
        assert_eq!(bin_of(-5.0, &edges), 0);
        assert_eq!(bin_of(0.0, &edges), 0);
        assert_eq!(bin_of(10.0, &edges), 1);
        assert_eq!(bin_of(29.9, &edges), 2);
        assert_eq!(bin_of(99.0, &edges), 2);
    }
}

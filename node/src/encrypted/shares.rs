//! Noise shares for encrypted mode: each hospital adds a discrete Gaussian share (OpenDP), sized so the sum protects the total.
//!
//! With `t = privacy.min_hospitals`, each hospital adds discrete Gaussian
//! noise of scale `sigma` to its local aggregate. The aggregator releases
//! no total over fewer than `t` shares, so the total carries the sum of at
//! least `t` independent discrete Gaussians. Such a sum is not itself a
//! discrete Gaussian; Kairouz, Liu and Steinke (ICML 2021, "The Distributed
//! Discrete Gaussian Mechanism for Federated Learning with Secure
//! Aggregation", arXiv 2102.06387, privacy theorem for sums of discrete
//! Gaussians) bound it: for `sigma >= 1/2`, sensitivities `d1` (L1) and
//! `d2` (L2) over `d` coordinates, it is `eps^2/2`-zCDP with
//!
//! ```text
//! eps = min( sqrt(d2^2 / (t sigma^2) + tau d / 2),  d1 / (sqrt(t) sigma) + tau d )
//! tau = 10 * sum_{k=1}^{t-1} exp(-2 pi^2 sigma^2 k / (k+1))
//! ```
//!
//! That rho becomes (epsilon, delta) through OpenDP's zCDP-to-approximate-DP
//! conversion, and the smallest `sigma` whose epsilon fits the query's is
//! chosen with the monotone search the researcher's intervals also use
//! (`combine::smallest_passing`), and remembered, since every query of the
//! same shape needs the same one. The sensitivities are OpenDP's stability maps of the
//! transformations at one patient, the noise is OpenDP's `make_gaussian`,
//! and a share alone (every other hospital's noise missing) still gives the
//! local rho of OpenDP's privacy map, which the audit log records.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;

use opendp::combinators::{make_chain_mt, make_zCDP_to_approxDP};
use opendp::core::{Domain, Measurement, MetricSpace, Transformation};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::{PrivacyProfile, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L1Distance, L2Distance, SymmetricDistance};
use opendp::transformations::{make_clamp, make_count, make_count_by_categories, make_sum};
use witmed_protocol::combine::smallest_passing;
use witmed_protocol::query::{Aggregate, Query};

use crate::dp::{bin_of, Error};

/// Smallest share scale: the sum theorem needs `sigma >= 1/2`.
const MIN_SHARE_SCALE: f64 = 1.0;
/// Largest share scale searched.
const MAX_SHARE_SCALE: f64 = 1e9;

type Ints = VectorDomain<AtomDomain<i64>>;
type Zcdp = ZeroConcentratedDivergence;

enum Kind {
    Count {
        exact: Transformation<
            VectorDomain<AtomDomain<f64>>,
            SymmetricDistance,
            AtomDomain<i64>,
            AbsoluteDistance<i64>,
        >,
        noisy: Measurement<VectorDomain<AtomDomain<f64>>, SymmetricDistance, Zcdp, i64>,
    },
    Sum {
        exact: Transformation<Ints, SymmetricDistance, AtomDomain<i64>, AbsoluteDistance<i64>>,
        noisy: Measurement<Ints, SymmetricDistance, Zcdp, i64>,
    },
    Bins {
        exact: Transformation<Ints, SymmetricDistance, Ints, L2Distance<i64>>,
        noisy: Measurement<Ints, SymmetricDistance, Zcdp, Vec<i64>>,
        edges: Vec<f64>,
    },
}

/// One hospital's noisy share of an encrypted-mode query, with its accounting.
pub struct SharePlan {
    kind: Kind,
    /// Scale (standard deviation parameter) of this hospital's discrete Gaussian.
    pub share_scale: f64,
    /// Privacy loss of the released total, charged at this hospital.
    pub epsilon: f64,
    pub delta: f64,
    /// zCDP rho of this share alone (the guarantee if every other share were missing).
    pub local_rho: f64,
    /// Values per share (1, or the number of bins).
    pub values: usize,
}

impl std::fmt::Debug for SharePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharePlan(sigma = {}, epsilon = {}, delta = {})",
            self.share_scale, self.epsilon, self.delta
        )
    }
}

/// The accounting inputs: sensitivities and dimension.
#[derive(Debug, Clone, Copy)]
struct Sensitivity {
    l1: f64,
    l2: f64,
    dims: usize,
}

impl SharePlan {
    /// Builds the share for `query` (encrypted mode, count, sum or histogram).
    pub fn new(query: &Query) -> Result<SharePlan, Error> {
        let contributors = query
            .privacy
            .min_hospitals
            .ok_or_else(|| Error::Unsupported("encrypted mode needs min_hospitals".into()))?
            as usize;
        let (epsilon, delta) = (query.privacy.epsilon, query.privacy.delta_or_default());
        match &query.aggregate {
            Aggregate::Count => {
                let exact = make_count::<f64, i64>(
                    VectorDomain::new(AtomDomain::new_non_nan()),
                    SymmetricDistance,
                )?;
                let (noisy, sigma, total) = scalar_share(&exact, (epsilon, delta), contributors)?;
                Self::finish(Kind::Count { exact, noisy }, sigma, (total, delta), 1)
            }
            Aggregate::Sum => {
                let b = query
                    .bounds
                    .ok_or_else(|| Error::Unsupported("a sum needs bounds".into()))?;
                let (lower, upper) = (b.lower.ceil() as i64, b.upper.floor() as i64);
                if lower >= upper {
                    return Err(Error::Unsupported(
                        "encrypted sums add whole units: the bounds must contain two integers"
                            .into(),
                    ));
                }
                let clamp = make_clamp(
                    VectorDomain::new(AtomDomain::<i64>::default()),
                    SymmetricDistance,
                    (lower, upper),
                )?;
                let sum = make_sum(clamp.output_domain.clone(), SymmetricDistance)?;
                let exact = opendp::combinators::make_chain_tt(&sum, &clamp)?;
                let (noisy, sigma, total) = scalar_share(&exact, (epsilon, delta), contributors)?;
                Self::finish(Kind::Sum { exact, noisy }, sigma, (total, delta), 1)
            }
            Aggregate::Histogram { edges } => {
                let bins = edges.len() - 1;
                let categories: Vec<i64> = (0..bins as i64).collect();
                let domain = VectorDomain::new(AtomDomain::<i64>::default());
                let exact = make_count_by_categories::<L2Distance<i64>, i64, i64>(
                    domain.clone(),
                    SymmetricDistance,
                    categories.clone(),
                    false,
                )?;
                let l1 = make_count_by_categories::<L1Distance<i64>, i64, i64>(
                    domain,
                    SymmetricDistance,
                    categories,
                    false,
                )?
                .map(&1)? as f64;
                let sens = Sensitivity {
                    l1,
                    l2: exact.map(&1)? as f64,
                    dims: bins,
                };
                let (sigma, total) = share_scale(epsilon, delta, contributors, sens)?;
                let noise = make_gaussian::<_, _, Zcdp>(
                    exact.output_domain.clone(),
                    exact.output_metric.clone(),
                    sigma,
                    None,
                )?;
                let noisy = make_chain_mt(&noise, &exact)?;
                let kind = Kind::Bins {
                    exact,
                    noisy,
                    edges: edges.clone(),
                };
                Self::finish(kind, sigma, (total, delta), bins)
            }
            other => Err(Error::Unsupported(format!(
                "a {} does not add up under encryption; use dp mode",
                other.kind()
            ))),
        }
    }

    fn finish(
        kind: Kind,
        sigma: f64,
        (epsilon, delta): (f64, f64),
        values: usize,
    ) -> Result<SharePlan, Error> {
        let local_rho = match &kind {
            Kind::Count { noisy, .. } => noisy.map(&1)?,
            Kind::Sum { noisy, .. } => noisy.map(&1)?,
            Kind::Bins { noisy, .. } => noisy.map(&1)?,
        };
        Ok(SharePlan {
            kind,
            share_scale: sigma,
            epsilon,
            delta,
            local_rho,
            values,
        })
    }

    /// This hospital's noisy share of one value per patient (`noise = false` only in test builds).
    pub fn release(&self, data: &[f64], noise: bool) -> Result<Vec<i64>, Error> {
        let finite: Vec<f64> = data.iter().copied().filter(|v| v.is_finite()).collect();
        Ok(match &self.kind {
            Kind::Count { exact, noisy } => vec![if noise {
                noisy.invoke(&finite)?
            } else {
                exact.invoke(&finite)?
            }],
            Kind::Sum { exact, noisy } => {
                // Whole units: rounding is a per-patient map, so neighbours stay neighbours.
                let units: Vec<i64> = finite.iter().map(|v| v.round() as i64).collect();
                vec![if noise {
                    noisy.invoke(&units)?
                } else {
                    exact.invoke(&units)?
                }]
            }
            Kind::Bins {
                exact,
                noisy,
                edges,
            } => {
                let bins: Vec<i64> = finite.iter().map(|v| bin_of(*v, edges)).collect();
                if noise {
                    noisy.invoke(&bins)?
                } else {
                    exact.invoke(&bins)?
                }
            }
        })
    }
}

/// A measurement releasing one noisy integer from the rows of `DI`.
type ScalarShare<DI> = Measurement<DI, SymmetricDistance, Zcdp, i64>;

/// The noisy share of a scalar aggregate, its scale and the total's epsilon.
fn scalar_share<DI>(
    exact: &Transformation<DI, SymmetricDistance, AtomDomain<i64>, AbsoluteDistance<i64>>,
    (epsilon, delta): (f64, f64),
    contributors: usize,
) -> Result<(ScalarShare<DI>, f64, f64), Error>
where
    DI: Domain + 'static,
    (DI, SymmetricDistance): MetricSpace,
{
    let d = exact.map(&1)? as f64;
    let sens = Sensitivity {
        l1: d,
        l2: d,
        dims: 1,
    };
    let (sigma, total) = share_scale(epsilon, delta, contributors, sens)?;
    let noise = make_gaussian::<AtomDomain<i64>, AbsoluteDistance<i64>, Zcdp>(
        exact.output_domain.clone(),
        exact.output_metric.clone(),
        sigma,
        None,
    )?;
    let noisy =
        make_chain_mt::<DI, AtomDomain<i64>, i64, SymmetricDistance, AbsoluteDistance<i64>, Zcdp>(
            &noise, exact,
        )?;
    Ok((noisy, sigma, total))
}

/// rho of a sum of `t` discrete Gaussians of scale `sigma` (the theorem in the module docs).
fn distributed_rho(sigma: f64, t: usize, s: Sensitivity) -> f64 {
    use std::f64::consts::PI;
    let tau: f64 = (1..t)
        .map(|k| (-2.0 * PI * PI * sigma * sigma * k as f64 / (k as f64 + 1.0)).exp())
        .sum::<f64>()
        * 10.0;
    let d = s.dims as f64;
    let t = t as f64;
    let eps_a = (s.l2 * s.l2 / (t * sigma * sigma) + tau * d / 2.0).sqrt();
    let eps_b = s.l1 / (t.sqrt() * sigma) + tau * d;
    let eps = eps_a.min(eps_b);
    eps * eps / 2.0
}

/// The (epsilon, delta) privacy profile of a rho-zCDP mechanism, from OpenDP's conversion.
fn profile(rho: f64) -> Result<PrivacyProfile, Error> {
    // A Gaussian mechanism of sensitivity 1 and scale 1/sqrt(2 rho) is exactly
    // rho-zCDP; its converted map is the conversion of rho.
    let scale = 1.0 / (2.0 * rho).sqrt();
    let gaussian = make_gaussian::<_, _, Zcdp>(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        scale,
        None,
    )?;
    Ok(make_zCDP_to_approxDP(gaussian)?.map(&1)?)
}

/// Epsilon at `delta` of the total (OpenDP's smallest epsilon on the profile).
fn total_epsilon(sigma: f64, delta: f64, t: usize, s: Sensitivity) -> Result<f64, Error> {
    Ok(profile(distributed_rho(sigma, t, s))?.epsilon(delta)?)
}

/// True if shares of scale `sigma` keep the total within (epsilon, delta).
fn fits(sigma: f64, epsilon: f64, delta: f64, t: usize, s: Sensitivity) -> Result<bool, Error> {
    // One evaluation of the profile's delta at epsilon: far cheaper than
    // searching the profile for the epsilon at delta.
    Ok(profile(distributed_rho(sigma, t, s))?.delta(epsilon)? <= delta)
}

/// Share scales already found, per (epsilon, delta, contributors, sensitivity):
/// every member solves the same search for every query of the same shape.
/// Bounded: cleared when full.
static SCALES: Mutex<BTreeMap<[u64; 6], (f64, f64)>> = Mutex::new(BTreeMap::new());
const MAX_CACHED_SCALES: usize = 256;

/// The smallest share scale whose total stays within (epsilon, delta), and the total's epsilon.
fn share_scale(epsilon: f64, delta: f64, t: usize, s: Sensitivity) -> Result<(f64, f64), Error> {
    let key = [
        epsilon.to_bits(),
        delta.to_bits(),
        t as u64,
        s.l1.to_bits(),
        s.l2.to_bits(),
        s.dims as u64,
    ];
    if let Some(found) = crate::locks::lock(&SCALES).get(&key) {
        return Ok(*found);
    }
    let found = search_scale(epsilon, delta, t, s)?;
    let mut cache = crate::locks::lock(&SCALES);
    if cache.len() >= MAX_CACHED_SCALES {
        cache.clear();
    }
    cache.insert(key, found);
    Ok(found)
}

fn search_scale(epsilon: f64, delta: f64, t: usize, s: Sensitivity) -> Result<(f64, f64), Error> {
    // The first OpenDP failure, if any, is the error to report.
    let failure = RefCell::new(None);
    let passes = |sigma: f64| {
        (MIN_SHARE_SCALE..=MAX_SHARE_SCALE).contains(&sigma)
            && fits(sigma, epsilon, delta, t, s).unwrap_or_else(|e| {
                failure.borrow_mut().get_or_insert(e);
                false
            })
    };
    let found = smallest_passing(passes, MIN_SHARE_SCALE);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let sigma = found.ok_or_else(|| {
        Error::Unsupported(format!(
            "epsilon {epsilon} at delta {delta} needs more noise than witmed allows"
        ))
    })?;
    Ok((sigma, total_epsilon(sigma, delta, t, s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_query(epsilon: f64, min_hospitals: u32) -> Query {
        Query::from_toml(&format!(
            r#"
version = 1
id = "c"
purpose = "HMB"
aggregate = "count"
[privacy]
mode = "encrypted"
epsilon = {epsilon}
aggregator = "a"
study = "{}"
min_hospitals = {min_hospitals}
"#,
            "0".repeat(64)
        ))
        .unwrap()
    }

    #[test]
    fn one_contributor_is_exactly_opendps_gaussian() {
        let plan = SharePlan::new(&count_query(1.0, 1)).unwrap();
        // t = 1: the sum is the share, so rho is OpenDP's own privacy map.
        let s = Sensitivity {
            l1: 1.0,
            l2: 1.0,
            dims: 1,
        };
        let rho = distributed_rho(plan.share_scale, 1, s);
        assert!((rho - plan.local_rho).abs() < 1e-9 * rho);
        assert!(plan.epsilon <= 1.0 && plan.epsilon > 0.99, "{plan:?}");
    }

    #[test]
    fn shares_shrink_as_contributors_grow_and_total_noise_stays() {
        let one = SharePlan::new(&count_query(1.0, 1)).unwrap();
        let ten = SharePlan::new(&count_query(1.0, 10)).unwrap();
        // Ten shares of variance sigma^2/10 carry the variance of one share of sigma^2.
        let ratio = ten.share_scale * 10f64.sqrt() / one.share_scale;
        assert!((ratio - 1.0).abs() < 0.01, "{ratio}");
        // Each share alone protects less: its local rho is about ten times the total's.
        assert!(ten.local_rho > 9.0 * one.local_rho);
        assert!(ten.epsilon <= 1.0);
    }

    #[test]
    fn sums_round_each_patient_then_clamp() {
        let text = count_query(1.0, 2).to_toml().replace(
            "aggregate = \"count\"",
            "aggregate = \"sum\"\n[feature.attribute]\nname = \"age\"\n[bounds]\nlower = 0.0\nupper = 100.0",
        );
        let plan = SharePlan::new(&Query::from_toml(&text).unwrap()).unwrap();
        // 1.4 -> 1, 2.6 -> 3, 500 -> 100 (clamped), NaN dropped.
        assert_eq!(
            plan.release(&[1.4, 2.6, 500.0, f64::NAN], false).unwrap(),
            vec![104]
        );
        // Sensitivity 100: the share is 100 times wider than a count's.
        let count = SharePlan::new(&count_query(1.0, 2)).unwrap();
        let ratio = plan.share_scale / count.share_scale;
        assert!((ratio - 100.0).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn noise_free_release_is_the_exact_aggregate() {
        let plan = SharePlan::new(&count_query(1.0, 3)).unwrap();
        assert_eq!(plan.release(&[1.0, 2.0, 3.0], false).unwrap(), vec![3]);
        let noisy: Vec<i64> = (0..1000)
            .map(|_| plan.release(&[0.0; 50], true).unwrap()[0] - 50)
            .collect();
        let var = noisy.iter().map(|x| (x * x) as f64).sum::<f64>() / noisy.len() as f64;
        let expected = plan.share_scale * plan.share_scale;
        // 1000 samples: the sample variance is within 40% of sigma^2 but with probability below 1e-15.
        assert!(
            var > 0.6 * expected && var < 1.4 * expected,
            "{var} vs {expected}"
        );
    }
}

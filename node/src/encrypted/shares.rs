//! Noise shares for encrypted mode: each hospital adds a discrete Gaussian share (OpenDP), sized so the sum protects the total.
//!
//! With `t = privacy.min_hospitals`, each hospital adds discrete Gaussian
//! noise of scale `sigma` to its local aggregate. The aggregator releases
//! no total over fewer than `t` shares, so the total carries the sum of at
//! least `t` independent discrete Gaussians. Such a sum is not itself a
//! discrete Gaussian; Kairouz, Liu and Steinke (ICML 2021, "The Distributed
//! Discrete Gaussian Mechanism for Federated Learning with Secure
//! Aggregation", arXiv 2102.06387, Proposition 14, as in the authors'
//! accounting code, google-research/federated `distributed_dp`
//! `compute_rdp_dgaussian`) bound its Rényi divergence: for `sigma >= 1/2`,
//! sensitivities `d1` (L1) and `d2` (L2) over `d` coordinates,
//! `l1 = d1 / (sqrt(t) sigma)`, `l2 = d2 / (sqrt(t) sigma)`, every order
//! `alpha > 1` has
//!
//! ```text
//! D_alpha <= min( alpha/2 l2^2 + tau d,  alpha/2 (l2^2 + 2 l1 tau + tau^2 d),  alpha/2 (l2 + tau sqrt(d))^2 )
//! tau = 10 * sum_{k=1}^{t-1} exp(-2 pi^2 sigma^2 k / (k+1))
//! ```
//!
//! and since `tau d <= alpha tau d` for `alpha >= 1`, the sum is rho-zCDP with
//! `rho = min(l2^2 + 2 tau d, l2^2 + 2 l1 tau + tau^2 d, (l2 + tau sqrt(d))^2) / 2`
//! ([`distributed_rho`]). A property test checks this against exact Rényi
//! divergences of summed discrete Gaussians (`shares/renyi.rs`).
//!
//! That rho becomes (epsilon, delta) through OpenDP's zCDP-to-approximate-DP
//! conversion (`make_zCDP_to_approxDP`, Canonne, Kamath and Steinke 2020),
//! and the smallest `sigma` whose epsilon fits the query's is chosen with
//! the monotone search the researcher's intervals also use
//! (`interval::smallest_passing`), and remembered, since every query of the
//! same shape needs the same one. The sensitivities are OpenDP's stability maps of the
//! transformations at one patient, the noise is OpenDP's `make_gaussian`,
//! and a share alone (every other hospital's noise missing) still gives the
//! local rho of OpenDP's privacy map, which the audit log records.
//!
//! Totals must decode: a share is a list of slot values
//! ([`SharePlan::share`]), each value split into the limbs of
//! [`witmed_protocol::limbs`]. Before the noise, a member clamps its exact
//! aggregate to the most [`limbs::MAX_PATIENTS_PER_MEMBER`] patients can
//! give (`Layout::member_cap`); a clamp of the aggregate is 1-Lipschitz, so
//! the sensitivity, and the whole privacy argument, is unchanged. The plan
//! refuses a query unless the noise of [`MAX_CONTRIBUTIONS`] shares stays
//! within the room the limbs leave above the largest true total but with
//! probability below [`OVERFLOW_CHANCE`] (a sub-Gaussian tail bound). Nothing
//! is clamped after the noise.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;

use opendp::combinators::{make_chain_mt, make_chain_tt, make_zCDP_to_approxDP};
use opendp::core::{Domain, Function, Measurement, MetricSpace, StabilityMap, Transformation};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::{PrivacyProfile, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L1Distance, L2Distance, SymmetricDistance};
use opendp::transformations::{make_clamp, make_count, make_count_by_categories, make_sum};
use witmed_crypto::fhe::params::MAX_CONTRIBUTIONS;
use witmed_protocol::interval::{gaussian_sum_halfwidth, smallest_passing};
use witmed_protocol::limbs::{self, Layout};
use witmed_protocol::query::{Aggregate, Query};

use crate::dp::{bin_of, Error};

/// Smallest share scale: the sum theorem needs `sigma >= 1/2`.
const MIN_SHARE_SCALE: f64 = 1.0;
/// Largest share scale searched.
const MAX_SHARE_SCALE: f64 = 1e9;
/// Most probability with which the noise of the most shares may push a
/// total out of what its limbs carry; a query that needs more is refused.
pub const OVERFLOW_CHANCE: f64 = 1e-9;

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
    /// How the values are laid out in ciphertext slots.
    pub layout: Layout,
}

impl std::fmt::Debug for SharePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharePlan(sigma = {}, epsilon = {}, delta = {}, {:?})",
            self.share_scale, self.epsilon, self.delta, self.layout
        )
    }
}

/// The accounting inputs: sensitivities and dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sensitivity {
    pub(crate) l1: f64,
    pub(crate) l2: f64,
    pub(crate) dims: usize,
}

/// A scalar aggregate clamped to a member's cap.
type Capped =
    Transformation<AtomDomain<i64>, AbsoluteDistance<i64>, AtomDomain<i64>, AbsoluteDistance<i64>>;

/// Clamps a scalar aggregate to `±cap`, before the noise. Clamping is
/// 1-Lipschitz (`|clamp(x) - clamp(y)| <= |x - y|`), so the stability map is
/// the identity and the noise's privacy map is unchanged.
fn cap_scalar(domain: AtomDomain<i64>, cap: i64) -> Result<Capped, Error> {
    Ok(Transformation::new(
        domain.clone(),
        AbsoluteDistance::default(),
        domain,
        AbsoluteDistance::default(),
        Function::new(move |x: &i64| (*x).clamp(-cap, cap)),
        StabilityMap::new(|d_in: &i64| *d_in),
    )?)
}

/// Clamps every bin to `±cap`, before the noise: 1-Lipschitz per coordinate, so in L2 too.
fn cap_bins(
    domain: Ints,
    metric: L2Distance<i64>,
    cap: i64,
) -> Result<Transformation<Ints, L2Distance<i64>, Ints, L2Distance<i64>>, Error> {
    Ok(Transformation::new(
        domain.clone(),
        metric.clone(),
        domain,
        metric,
        Function::new(move |bins: &Vec<i64>| bins.iter().map(|b| (*b).clamp(-cap, cap)).collect()),
        StabilityMap::new(|d_in: &i64| *d_in),
    )?)
}

impl SharePlan {
    /// Builds the share for `query` (encrypted mode, count, sum or histogram).
    pub fn new(query: &Query) -> Result<SharePlan, Error> {
        let contributors = query
            .privacy
            .min_hospitals
            .ok_or_else(|| Error::Unsupported("encrypted mode needs min_hospitals".into()))?
            as usize;
        let layout = Layout::of(query).map_err(Error::Unsupported)?;
        let cap = layout.member_cap;
        let (epsilon, delta) = (query.privacy.epsilon, query.privacy.delta_or_default());
        match &query.aggregate {
            Aggregate::Count => {
                let count = make_count::<f64, i64>(
                    VectorDomain::new(AtomDomain::new_non_nan()),
                    SymmetricDistance,
                )?;
                let exact = make_chain_tt(&cap_scalar(count.output_domain.clone(), cap)?, &count)?;
                let (noisy, sigma, total) = scalar_share(&exact, (epsilon, delta), contributors)?;
                Self::finish(Kind::Count { exact, noisy }, sigma, (total, delta), layout)
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
                let clamped_sum = make_chain_tt(&sum, &clamp)?;
                let exact = make_chain_tt(
                    &cap_scalar(clamped_sum.output_domain.clone(), cap)?,
                    &clamped_sum,
                )?;
                let (noisy, sigma, total) = scalar_share(&exact, (epsilon, delta), contributors)?;
                Self::finish(Kind::Sum { exact, noisy }, sigma, (total, delta), layout)
            }
            Aggregate::Histogram { edges } => {
                let bins = edges.len() - 1;
                let categories: Vec<i64> = (0..bins as i64).collect();
                let domain = VectorDomain::new(AtomDomain::<i64>::default());
                let counts = make_count_by_categories::<L2Distance<i64>, i64, i64>(
                    domain.clone(),
                    SymmetricDistance,
                    categories.clone(),
                    false,
                )?;
                let capped = cap_bins(
                    counts.output_domain.clone(),
                    counts.output_metric.clone(),
                    cap,
                )?;
                let exact = make_chain_tt(&capped, &counts)?;
                // The clamp is 1-Lipschitz in L1 as well: the counts' L1 map bounds it.
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
                Self::finish(kind, sigma, (total, delta), layout)
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
        layout: Layout,
    ) -> Result<SharePlan, Error> {
        check_noise_fits(&layout, sigma)?;
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
            values: layout.values,
            layout,
        })
    }

    /// This hospital's noisy values, one per value of the answer (`noise = false` only in test builds).
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

    /// The slot values to encrypt: [`SharePlan::release`] with each value split into the query's limbs.
    pub fn share(&self, data: &[f64], noise: bool) -> Result<Vec<i64>, Error> {
        Ok(limbs::encode(
            &self.release(data, noise)?,
            self.layout.limbs,
        ))
    }
}

/// The slot layout of `query`'s shares. A query encrypted mode cannot add
/// up gets one limb per value here; every member refuses it anyway.
pub fn layout(query: &Query) -> Layout {
    Layout::of(query).unwrap_or_else(|_| Layout {
        values: match &query.aggregate {
            Aggregate::Histogram { edges } => edges.len().saturating_sub(1),
            _ => 1,
        },
        limbs: 1,
        member_cap: 0,
    })
}

/// Refuses shares of scale `sigma` if the noise of [`MAX_CONTRIBUTIONS`] of
/// them could leave the room `layout` keeps for noise with probability
/// [`OVERFLOW_CHANCE`] or more. A discrete Gaussian of scale sigma is
/// sigma-sub-Gaussian, so the sum of `c` of them exceeds `x` in absolute
/// value with probability at most `2 exp(-x^2 / (2 c sigma^2))`.
fn check_noise_fits(layout: &Layout, sigma: f64) -> Result<(), Error> {
    let reach = gaussian_sum_halfwidth(sigma, MAX_CONTRIBUTIONS, OVERFLOW_CHANCE);
    let room = layout.noise_room();
    if reach.is_finite() && reach <= room as f64 {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "the noise of up to {MAX_CONTRIBUTIONS} shares of scale {sigma:.1} could reach {reach:.0} \
         (chance {OVERFLOW_CHANCE:e}), past the {room} an encrypted total of {} limb(s) has left \
         above its largest true total: raise epsilon, narrow the bounds or use dp mode",
        layout.limbs
    )))
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

/// rho of a sum of `t` discrete Gaussians of scale `sigma` (KLS21, Proposition 14; see the module docs).
pub(crate) fn distributed_rho(sigma: f64, t: usize, s: Sensitivity) -> f64 {
    use std::f64::consts::PI;
    let tau: f64 = (1..t)
        .map(|k| (-2.0 * PI * PI * sigma * sigma * k as f64 / (k as f64 + 1.0)).exp())
        .sum::<f64>()
        * 10.0;
    let d = s.dims as f64;
    let spread = (t as f64).sqrt() * sigma;
    let (l1, l2) = (s.l1 / spread, s.l2 / spread);
    // Each term is 2 D_alpha / alpha for every alpha >= 1; the first is
    // alpha/2 l2^2 + tau d, and tau d <= alpha tau d there.
    let additive = l2 * l2 + 2.0 * tau * d;
    let mixed = l2 * l2 + 2.0 * l1 * tau + tau * tau * d;
    let shifted = (l2 + tau * d.sqrt()).powi(2);
    additive.min(mixed).min(shifted) / 2.0
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
    // OpenDP's conversion fails where it cannot bound delta: at scales far
    // too small, rho is so large that its `exp((alpha - 1)(alpha rho - epsilon))`
    // overflows (a sum with bounds 0..1000 at sigma = 1 has rho = 250000).
    // The search passes through such scales on its way up; they cannot be
    // used, so they do not fit. The scale chosen is always one where OpenDP's
    // conversion succeeded and bounded delta. The first failure is reported
    // only if no scale fits at all.
    let failure = RefCell::new(None);
    let passes = |sigma: f64| {
        (MIN_SHARE_SCALE..=MAX_SHARE_SCALE).contains(&sigma)
            && fits(sigma, epsilon, delta, t, s).unwrap_or_else(|e| {
                failure.borrow_mut().get_or_insert(e);
                false
            })
    };
    let Some(sigma) = smallest_passing(passes, MIN_SHARE_SCALE) else {
        return Err(failure.into_inner().unwrap_or_else(|| {
            Error::Unsupported(format!(
                "epsilon {epsilon} at delta {delta} needs more noise than witmed allows"
            ))
        }));
    };
    Ok((sigma, total_epsilon(sigma, delta, t, s)?))
}

#[cfg(test)]
mod renyi;
pub mod vector;

#[cfg(test)]
mod tests {
    use super::*;
    use witmed_crypto::fhe::{self, ClientKey};

    pub(super) fn count_query(epsilon: f64, min_hospitals: u32) -> Query {
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

    fn sum_query(lower: f64, upper: f64, epsilon: f64, min_hospitals: u32) -> Query {
        let text = count_query(epsilon, min_hospitals).to_toml().replace(
            "aggregate = \"count\"",
            &format!(
                "aggregate = \"sum\"\n[feature.attribute]\nname = \"age\"\n[bounds]\nlower = {lower:?}\nupper = {upper:?}"
            ),
        );
        Query::from_toml(&text).unwrap()
    }

    #[test]
    fn a_sum_with_bounds_0_to_1000_plans_although_small_scales_overflow_opendps_conversion() {
        // sigma = 1 gives rho = 1000^2 / 4: OpenDP's conversion overflows there.
        let s = Sensitivity {
            l1: 1000.0,
            l2: 1000.0,
            dims: 1,
        };
        assert!(fits(1.0, 1.0, 1e-6, 2, s).is_err());
        for (epsilon, members) in [(1.0, 2), (0.1, 3), (0.01, 127)] {
            let plan = SharePlan::new(&sum_query(0.0, 1000.0, epsilon, members)).unwrap();
            assert!(
                plan.epsilon <= epsilon && plan.epsilon > 0.99 * epsilon,
                "{plan:?}"
            );
            assert_eq!(plan.layout.limbs, 2, "{plan:?}");
        }
    }

    /// 127 shares of a sum of 0..1000 over 5,000 patients each, split into
    /// limbs, encrypted, added under encryption, decrypted and recombined.
    #[test]
    fn a_sum_of_0_to_1000_over_5000_patients_and_127_members_decodes_exactly() {
        let members = fhe::params::MAX_CONTRIBUTIONS;
        let plan = SharePlan::new(&sum_query(0.0, 1000.0, 0.1, members as u32)).unwrap();
        let patients: Vec<f64> = (0..5000).map(|i| ((i * 7919) % 1001) as f64).collect();
        let (client, public) = ClientKey::generate();
        let mut expected = 0i64;
        let mut total: Option<fhe::Ciphertext> = None;
        for _ in 0..members {
            let values = plan.release(&patients, true).unwrap();
            expected += values[0];
            let slots = limbs::encode(&values, plan.layout.limbs);
            let ciphertext = public.encrypt(&slots).unwrap();
            match total.as_mut() {
                None => total = Some(ciphertext),
                Some(t) => t.add_assign(&ciphertext).unwrap(),
            }
        }
        // Far beyond one slot: 127 * 5000 * ~500.
        assert!(expected > fhe::params::MAX_ABS_TOTAL * 4, "{expected}");
        let slots = client.decrypt(&total.unwrap(), members).unwrap();
        assert_eq!(
            limbs::decode(&slots, plan.layout.limbs),
            Some(vec![expected])
        );
    }

    /// The largest total the layout promises (every member at its cap, plus
    /// all the noise room, negative or positive) still decodes exactly.
    #[test]
    fn totals_at_the_edge_of_the_layout_decode_exactly() {
        let members = fhe::params::MAX_CONTRIBUTIONS;
        let plan = SharePlan::new(&sum_query(0.0, 1000.0, 0.1, 3)).unwrap();
        let edge = limbs::capacity(plan.layout.limbs);
        let (client, public) = ClientKey::generate();
        for sign in [1i64, -1] {
            // Shares as uneven as the top limb's rounding allows.
            let each = sign * (edge / members as i64);
            let last = sign * edge - each * (members as i64 - 1);
            let mut total = public.encrypt(&limbs::encode(&[last], 2)).unwrap();
            for _ in 1..members {
                total
                    .add_assign(&public.encrypt(&limbs::encode(&[each], 2)).unwrap())
                    .unwrap();
            }
            let slots = client.decrypt(&total, members).unwrap();
            assert_eq!(limbs::decode(&slots, 2), Some(vec![sign * edge]));
        }
    }

    #[test]
    fn a_query_whose_total_could_overflow_is_refused_with_the_reason() {
        let err = SharePlan::new(&sum_query(0.0, 1e15, 1.0, 2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("narrow the bounds"), "{err}");
        // So little epsilon that the noise of 127 shares could overflow a
        // count's slot: refused, not clamped.
        // (At delta 1e-6 the scale levels off near 6e5 as epsilon goes to
        // zero: one share, min_hospitals = 1, carries it all.)
        let err = SharePlan::new(&count_query(1e-8, 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("could reach") && err.contains("raise epsilon"),
            "{err}"
        );
    }

    #[test]
    fn the_exact_aggregate_is_capped_before_the_noise() {
        let plan = SharePlan::new(&count_query(1.0, 2)).unwrap();
        let cap = plan.layout.member_cap;
        let many = vec![0.0; cap as usize + 10];
        assert_eq!(plan.release(&many, false).unwrap(), vec![cap]);
        // The cap leaves the sensitivity, hence the accounting, unchanged.
        assert!((plan.local_rho - 1.0 / (2.0 * plan.share_scale.powi(2))).abs() < 1e-9);
    }

    #[test]
    fn the_rho_follows_proposition_14_and_is_never_below_the_gaussian_rho() {
        let s = Sensitivity {
            l1: 3.0,
            l2: 5f64.sqrt(),
            dims: 2,
        };
        for t in [1usize, 2, 5, 127] {
            for sigma in [0.5, 1.0, 3.0] {
                let gaussian = s.l2 * s.l2 / (2.0 * t as f64 * sigma * sigma);
                let rho = distributed_rho(sigma, t, s);
                assert!(rho >= gaussian * (1.0 - 1e-12), "{t} {sigma}");
                if t == 1 {
                    assert!(
                        (rho - gaussian).abs() <= 1e-12 * gaussian,
                        "{rho} vs {gaussian}"
                    );
                }
            }
        }
        // At sigma = 1/2 and two shares tau = 10 exp(-pi^2 / 4) = 0.848:
        // the additive term 2 tau d, not tau d / 2, is what the bound adds.
        let one = Sensitivity {
            l1: 1.0,
            l2: 1.0,
            dims: 1,
        };
        let tau = 10.0 * (-std::f64::consts::PI.powi(2) / 4.0).exp();
        let l = 1.0 / (2f64.sqrt() * 0.5);
        let expected = (l * l + 2.0 * tau).min(l * l + 2.0 * l * tau + tau * tau) / 2.0;
        assert!((distributed_rho(0.5, 2, one) - expected).abs() < 1e-12);
    }
}

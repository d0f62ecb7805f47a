//! Noise shares of a bounded per-patient vector (issue 16's analyses in encrypted mode): one discrete Gaussian share per coordinate, calibrated to the vector's L1 and L2 bound over its dimension.
//!
//! Each patient gives one integer vector ([`Encoding::encode`]). The sum of
//! those vectors is an OpenDP transformation whose stability map is the
//! vector bound: a row whose length, L1 norm, L2 norm or largest entry is
//! over the encoding's bound counts as the zero vector (a per-patient map,
//! so adding or removing one patient still moves the sum by at most the
//! bound, whatever the engine handed in). Each coordinate of the sum is
//! then clamped to the layout's member cap (1-Lipschitz per coordinate, as
//! for histograms) and OpenDP's `make_gaussian` adds the share. The total's
//! accounting is the module's [`distributed_rho`](super::distributed_rho) at
//! the encoding's sensitivity over `len` coordinates, with the same scale
//! search, cache and overflow check as a histogram's.

use opendp::combinators::make_chain_mt;
use opendp::core::{Function, Measurement, StabilityMap, Transformation};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::metrics::{L2Distance, SymmetricDistance};
use witmed_protocol::analysis::encoding::Encoding;
use witmed_protocol::analysis::query::Analysis;
use witmed_protocol::limbs::{self, Layout};

use crate::index::Index;

use super::{check_noise_fits, share_scale, Sensitivity, Zcdp};
use crate::dp::Error;

/// One integer vector per patient.
type Rows = VectorDomain<VectorDomain<AtomDomain<i64>>>;
type Ints = VectorDomain<AtomDomain<i64>>;
type Sum = Transformation<Rows, SymmetricDistance, Ints, L2Distance<f64>>;

/// One hospital's noisy share of an analysis vector, with its accounting.
pub struct VectorPlan {
    exact: Sum,
    noisy: Measurement<Rows, SymmetricDistance, Zcdp, Vec<i64>>,
    /// Scale of this hospital's discrete Gaussian on every coordinate, in integer units.
    pub share_scale: f64,
    /// Privacy loss of the released total, charged at this hospital.
    pub epsilon: f64,
    pub delta: f64,
    /// zCDP rho of this share alone (OpenDP's privacy map).
    pub local_rho: f64,
    /// How the values are laid out in ciphertext slots.
    pub layout: Layout,
    /// How patients' vectors became integers.
    pub encoding: Encoding,
}

impl std::fmt::Debug for VectorPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VectorPlan(sigma = {}, epsilon = {}, delta = {}, {:?}, {:?})",
            self.share_scale, self.epsilon, self.delta, self.encoding, self.layout
        )
    }
}

impl VectorPlan {
    /// The share of vectors encoded by `encoding`, for a total of at least
    /// `contributors` shares within `(epsilon, delta)`.
    pub fn new(
        encoding: Encoding,
        (epsilon, delta): (f64, f64),
        contributors: usize,
    ) -> Result<VectorPlan, Error> {
        let layout =
            Layout::of_vector(encoding.len, encoding.largest).map_err(Error::Unsupported)?;
        let exact = bounded_sum(&encoding, layout.member_cap)?;
        let sens = Sensitivity {
            l1: encoding.sensitivity.l1,
            l2: exact.map(&1)?,
            dims: encoding.len,
        };
        let (sigma, total) = share_scale(epsilon, delta, contributors, sens)?;
        check_noise_fits(&layout, sigma)?;
        let noise = make_gaussian::<_, _, Zcdp>(
            exact.output_domain.clone(),
            exact.output_metric.clone(),
            sigma,
            None,
        )?;
        let noisy = make_chain_mt(&noise, &exact)?;
        let local_rho = noisy.map(&1)?;
        Ok(VectorPlan {
            exact,
            noisy,
            share_scale: sigma,
            epsilon: total,
            delta,
            local_rho,
            layout,
            encoding,
        })
    }

    /// This hospital's noisy sum of `rows` (`noise = false` only in test builds).
    pub fn release(&self, rows: &[Vec<i64>], noise: bool) -> Result<Vec<i64>, Error> {
        let rows = rows.to_vec();
        Ok(if noise {
            self.noisy.invoke(&rows)?
        } else {
            self.exact.invoke(&rows)?
        })
    }

    /// The slot values to encrypt: [`VectorPlan::release`] split into the layout's limbs.
    pub fn share(&self, rows: &[Vec<i64>], noise: bool) -> Result<Vec<i64>, Error> {
        Ok(limbs::encode(
            &self.release(rows, noise)?,
            self.layout.limbs,
        ))
    }
}

/// The integer vectors of the `candidates` (index positions: eligible, in
/// the cohort, under their cap) and the patients they belong to. A patient
/// with a value missing, or whose vector is zero, is left out and not
/// charged, as in DP mode ([`crate::analysis::add_up`]).
pub fn rows_of(
    index: &Index,
    analysis: &Analysis<'_>,
    candidates: &[usize],
    encoding: &Encoding,
) -> Result<(Vec<usize>, Vec<Vec<i64>>), witmed_protocol::analysis::Error> {
    let mut patients = Vec::new();
    let mut rows = Vec::new();
    for &i in candidates {
        let Some(vector) = crate::analysis::vector(index, analysis, i)? else {
            continue;
        };
        let row = encoding.encode(&vector)?;
        if row.iter().all(|v| *v == 0) {
            continue;
        }
        patients.push(i);
        rows.push(row);
    }
    Ok((patients, rows))
}

/// Whether one patient's integer vector is within the encoding's bound.
fn within(row: &[i64], e: &Encoding) -> bool {
    let (mut l1, mut l2) = (0f64, 0f64);
    for v in row {
        if v.unsigned_abs() > e.largest.unsigned_abs() {
            return false;
        }
        let v = *v as f64;
        l1 += v.abs();
        l2 += v * v;
    }
    row.len() == e.len && l1 <= e.sensitivity.l1 && l2.sqrt() <= e.sensitivity.l2
}

/// The sum of the patients' vectors, rows out of bound counting as zero,
/// every coordinate clamped to `±cap`: L2 sensitivity the encoding's L2 bound.
fn bounded_sum(e: &Encoding, cap: i64) -> Result<Sum, Error> {
    let encoding = *e;
    let l2 = encoding.sensitivity.l2;
    if !(l2.is_finite() && l2 > 0.0) {
        return Err(Error::Unsupported(format!(
            "a vector bound of L2 {l2} cannot calibrate noise; the analysis must state a positive, finite bound"
        )));
    }
    Ok(Transformation::new(
        VectorDomain::new(VectorDomain::new(AtomDomain::default())),
        SymmetricDistance,
        VectorDomain::new(AtomDomain::default()),
        L2Distance::default(),
        Function::new(move |rows: &Vec<Vec<i64>>| {
            let mut sum = vec![0i64; encoding.len];
            for row in rows.iter().filter(|r| within(r, &encoding)) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s = s.saturating_add(*v);
                }
            }
            sum.into_iter().map(|s| s.clamp(-cap, cap)).collect()
        }),
        StabilityMap::new_fallible(move |d_in: &u32| {
            let d_out = f64::from(*d_in) * l2;
            // Round up: the map must never understate the sensitivity.
            Ok(d_out.next_up())
        }),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use witmed_crypto::fhe::{self, ClientKey};
    use witmed_protocol::analysis::{survival, Sensitivity as Bound};

    fn survival_encoding(groups: usize, bins: usize) -> Encoding {
        let spec = survival::Spec {
            bin_edges: (0..=bins).map(|b| b as f64).collect(),
            groups,
        };
        Encoding::counts(spec.len(), spec.sensitivity())
    }

    #[test]
    fn a_one_hot_vector_share_costs_what_a_count_costs_and_sums_exactly() {
        let e = survival_encoding(2, 3);
        let plan = VectorPlan::new(e, (1.0, 1e-6), 5).unwrap();
        let count =
            super::super::SharePlan::new(&super::super::tests::count_query(1.0, 5)).unwrap();
        // L2 = 1 as for a count; the 14 coordinates add only tau d, negligible at this scale.
        assert!(
            (plan.share_scale / count.share_scale - 1.0).abs() < 0.01,
            "{plan:?}"
        );
        assert!(plan.epsilon <= 1.0 && plan.epsilon > 0.99, "{plan:?}");
        let mut rows = vec![vec![0i64; e.len]; 3];
        rows[0][1] = 1;
        rows[1][1] = 1;
        rows[2][13] = 1;
        let mut expected = vec![0i64; e.len];
        expected[1] = 2;
        expected[13] = 1;
        assert_eq!(plan.release(&rows, false).unwrap(), expected);
        assert_eq!(plan.layout.limbs, 1);
        assert_eq!(plan.share(&rows, false).unwrap(), expected);
    }

    #[test]
    fn rows_over_the_bound_count_as_zero() {
        let e = survival_encoding(1, 2);
        let plan = VectorPlan::new(e, (1.0, 1e-6), 3).unwrap();
        let good = vec![0, 0, 1, 0, 0];
        let rows = vec![
            good.clone(),
            vec![1, 1, 0, 0, 0],  // L1 2
            vec![0, 2, 0, 0, 0],  // entry 2
            vec![0, 0, 0, 0],     // short
            vec![-1, 0, 0, 0, 0], // allowed: within every bound
        ];
        assert_eq!(plan.release(&rows, false).unwrap(), vec![-1, 0, 1, 0, 0]);
    }

    #[test]
    fn fixed_point_shares_scale_with_the_resolution_and_use_two_limbs() {
        let bound = Bound {
            l1: 5.25,
            l2: 2.5f64.sqrt(),
        };
        let e = Encoding::fixed_point(5, bound);
        let plan = VectorPlan::new(e, (1.0, 1e-6), 5).unwrap();
        assert_eq!(plan.layout.limbs, 2);
        let unit = VectorPlan::new(Encoding::counts(5, bound), (1.0, 1e-6), 5).unwrap();
        let ratio = plan.share_scale / unit.share_scale;
        let expected = e.sensitivity.l2 / bound.l2;
        assert!(
            (ratio / expected - 1.0).abs() < 0.01,
            "{ratio} vs {expected}"
        );
        // Per coordinate, the noise in real units is sigma / resolution.
        assert!(plan.share_scale / f64::from(e.resolution) < 1.1 * unit.share_scale);
    }

    #[test]
    fn the_accounting_is_proposition_14_over_every_coordinate() {
        let e = survival_encoding(8, 64);
        for t in [1usize, 3, 10] {
            let plan = VectorPlan::new(e, (1.0, 1e-6), t).unwrap();
            let s = Sensitivity {
                l1: 1.0,
                l2: 1f64.next_up(),
                dims: e.len,
            };
            let rho = super::super::distributed_rho(plan.share_scale, t, s);
            let gaussian = 1.0 / (2.0 * t as f64 * plan.share_scale.powi(2));
            assert!(rho >= gaussian, "{t}");
            // The share alone is OpenDP's Gaussian map at L2 = 1.
            let alone = 1.0 / (2.0 * plan.share_scale.powi(2));
            assert!((plan.local_rho / alone - 1.0).abs() < 1e-9, "{t}");
            assert!(plan.epsilon <= 1.0);
        }
    }

    #[test]
    fn noisy_coordinates_have_the_share_variance() {
        let e = survival_encoding(1, 8);
        let plan = VectorPlan::new(e, (1.0, 1e-6), 2).unwrap();
        let rows = vec![vec![0i64; e.len]; 10];
        let mut sum_sq = 0.0;
        let runs = 200;
        for _ in 0..runs {
            for v in plan.release(&rows, true).unwrap() {
                sum_sq += (v * v) as f64;
            }
        }
        let var = sum_sq / (runs * e.len) as f64;
        let expected = plan.share_scale.powi(2);
        // 3400 draws: within 20% but with probability far below 1e-9.
        assert!((var / expected - 1.0).abs() < 0.2, "{var} vs {expected}");
    }

    /// Real TFHE: 127 members' shares of the longest vector add up and decode.
    #[test]
    fn the_longest_vector_of_the_most_members_decodes_exactly() {
        let e = survival_encoding(8, 64);
        let members = fhe::params::MAX_CONTRIBUTIONS;
        let plan = VectorPlan::new(e, (1.0, 1e-6), members).unwrap();
        let rows: Vec<Vec<i64>> = (0..300)
            .map(|i| {
                let mut row = vec![0; e.len];
                row[(i * 7) % e.len] = 1;
                row
            })
            .collect();
        let (client, public) = ClientKey::generate();
        let mut expected = vec![0i64; e.len];
        let mut total: Option<fhe::Ciphertext> = None;
        for _ in 0..members {
            let values = plan.release(&rows, true).unwrap();
            for (x, v) in expected.iter_mut().zip(&values) {
                *x += v;
            }
            let ciphertext = public
                .encrypt(&limbs::encode(&values, plan.layout.limbs))
                .unwrap();
            match total.as_mut() {
                None => total = Some(ciphertext),
                Some(t) => t.add_assign(&ciphertext).unwrap(),
            }
        }
        let slots = client.decrypt(&total.unwrap(), members).unwrap();
        assert_eq!(limbs::decode(&slots, plan.layout.limbs), Some(expected));
    }
}

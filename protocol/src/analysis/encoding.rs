//! Encrypted mode's form of an analysis vector: integers at a fixed resolution, their sensitivity, and back to real sums with the noise they carry.
//!
//! Encrypted totals add integers, so every analysis vector travels as one:
//! * **counts** (survival, table): one-hot vectors of 0 and 1 are already
//!   integers; they travel as they are, with the spec's own sensitivity
//!   (L1 = L2 = 1) and resolution 1;
//! * **fixed point** (linear, logistic): real entries in [-1, 1] become
//!   integers in steps of 1 / [`RESOLUTION`] ([`super::to_fixed_point`]),
//!   with the sensitivity of [`Sensitivity::of_fixed_point`].
//!
//! Each member adds its patients' integer vectors, adds a discrete Gaussian
//! share of scale sigma to every coordinate (calibrated to the integer
//! sensitivity over [`Encoding::len`] coordinates), and encrypts. The
//! researcher decrypts the total of `k` shares and divides by the
//! resolution ([`Encoding::decode`]): each component then carries the sum
//! of `k` discrete Gaussians of scale sigma / resolution, which is what
//! [`Noise`] describes and what `from_sums` takes.
//!
//! Rounding moves each patient's real entry by at most 1 / (2 resolution),
//! so a sum over n patients by at most n / 8192: a bias far below the
//! noise and the sampling error of any analysis worth running, and not
//! counted in the intervals.

use super::outcome::Summed;
use super::query::Analysis;
use super::{to_fixed_point, Error, Noise, NoiseKind, Sensitivity, MAX_RESOLUTION};

/// Steps per unit of encrypted mode's fixed point: the finest allowed, so
/// rounding costs least; one patient's entry is then at most 4096 in size.
pub const RESOLUTION: u32 = MAX_RESOLUTION;

/// How one analysis's vectors are encoded as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding {
    /// Components of one patient's vector (and of the sums).
    pub len: usize,
    /// Integer steps per unit: 1 for counts.
    pub resolution: u32,
    /// Bound of one patient's integer vector (L1 and L2), which the noise is calibrated to.
    pub sensitivity: Sensitivity,
    /// Largest size of one integer entry.
    pub largest: i64,
}

impl Encoding {
    /// How `analysis` travels: counts for survival and tables, fixed point for regressions.
    pub fn of(analysis: &Analysis<'_>) -> Encoding {
        if analysis.is_integer() {
            Encoding::counts(analysis.len(), analysis.sensitivity())
        } else {
            Encoding::fixed_point(analysis.len(), analysis.sensitivity())
        }
    }

    /// One-hot count vectors (survival, table) of `len` components, sent as they are.
    pub fn counts(len: usize, sensitivity: Sensitivity) -> Encoding {
        Encoding {
            len,
            resolution: 1,
            sensitivity,
            largest: 1,
        }
    }

    /// Real vectors with entries in [-1, 1] (regressions), at [`RESOLUTION`].
    pub fn fixed_point(len: usize, sensitivity: Sensitivity) -> Encoding {
        Encoding {
            len,
            resolution: RESOLUTION,
            sensitivity: sensitivity.of_fixed_point(len, RESOLUTION),
            largest: i64::from(RESOLUTION),
        }
    }

    /// One patient's integer vector. Refuses a vector of the wrong length,
    /// and for counts an entry that is not a whole number within `largest`.
    pub fn encode(&self, vector: &[f64]) -> Result<Vec<i64>, Error> {
        if vector.len() != self.len {
            return Err(Error::WrongLength {
                what: "patient vector",
                found: vector.len(),
                expected: self.len,
            });
        }
        if self.resolution != 1 {
            return to_fixed_point(vector, self.resolution);
        }
        let largest = self.largest as f64;
        vector
            .iter()
            .map(|v| {
                if !v.is_finite() || v.fract() != 0.0 || v.abs() > largest {
                    return Err(Error::BadPatient {
                        what: "count entry",
                        value: v.to_string(),
                    });
                }
                // A whole number within ±largest: exactly an i64.
                Ok(*v as i64)
            })
            .collect()
    }

    /// The real sums and their noises from the decrypted integer totals of
    /// `shares` shares, each of discrete Gaussian scale `share_scale` in
    /// integer units.
    pub fn decode(
        &self,
        totals: &[i64],
        share_scale: f64,
        shares: u32,
    ) -> Result<(Vec<f64>, Vec<Noise>), Error> {
        if totals.len() != self.len {
            return Err(Error::WrongLength {
                what: "decrypted totals",
                found: totals.len(),
                expected: self.len,
            });
        }
        let r = f64::from(self.resolution.max(1));
        let sums = totals.iter().map(|t| *t as f64 / r).collect();
        let noise = Noise {
            kind: NoiseKind::Gaussian,
            scale: share_scale / r,
            contributors: shares,
        };
        let noises = vec![noise; self.len];
        super::noise::check(&noises, self.len)?;
        Ok((sums, noises))
    }
}

impl Encoding {
    /// What the researcher's analysis takes from a decrypted total of
    /// `shares` shares: the real sums, each with the sum of `shares`
    /// discrete Gaussians of `share_scale` (integer units) as its noise.
    pub fn summed(
        &self,
        totals: &[i64],
        share_scale: f64,
        shares: usize,
        epsilon_spent_max: f64,
    ) -> Result<Summed, Error> {
        let contributors = u32::try_from(shares).unwrap_or(u32::MAX);
        let (sums, noises) = self.decode(totals, share_scale, contributors)?;
        Ok(Summed {
            sums,
            noises,
            nodes: shares,
            suppressed_nodes: vec![],
            epsilon_spent_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{regression, survival};

    #[test]
    fn counts_travel_as_they_are_and_refuse_fractions() {
        let spec = survival::Spec {
            bin_edges: vec![0.0, 1.0, 2.0],
            groups: 1,
        };
        let e = Encoding::counts(spec.len(), spec.sensitivity());
        let patient = survival::Patient {
            time: 1.5,
            event: true,
            group: 0,
        };
        let ints = e.encode(&spec.contribution(&patient).unwrap()).unwrap();
        assert_eq!(ints, vec![0, 1, 0, 0, 0]);
        assert_eq!(e.sensitivity, Sensitivity { l1: 1.0, l2: 1.0 });
        assert!(e.encode(&[0.5, 0.0, 0.0, 0.0, 0.0]).is_err());
        assert!(e.encode(&[2.0, 0.0, 0.0, 0.0, 0.0]).is_err());
        assert!(e.encode(&[f64::NAN, 0.0, 0.0, 0.0, 0.0]).is_err());
        assert_eq!(
            e.encode(&[0.0; 4]).unwrap_err().error_code(),
            "wrong_length"
        );
    }

    #[test]
    fn fixed_point_vectors_stay_within_the_stated_sensitivity_and_decode_back() {
        let spec = regression::LogisticSpec {
            covariates: vec![regression::Variable {
                name: "age".into(),
                bounds: Some(crate::analysis::Bounds {
                    lower: 15.0,
                    upper: 95.0,
                }),
            }],
            outcome: "in_hospital_death".into(),
            rounds: 2,
        };
        let e = Encoding::fixed_point(spec.len(), spec.sensitivity());
        let mut total = vec![0i64; e.len];
        let mut exact = vec![0.0; e.len];
        for (i, age) in [20.0, 47.3, 88.8, 95.0].iter().enumerate() {
            let patient = regression::LogisticPatient {
                covariates: vec![*age],
                outcome: i % 2 == 0,
            };
            let real = spec.contribution(&patient, &[0.3, -0.2]).unwrap();
            let ints = e.encode(&real).unwrap();
            let l1: i64 = ints.iter().map(|v| v.abs()).sum();
            let l2: f64 = ints.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
            assert!(l1 as f64 <= e.sensitivity.l1 && l2 <= e.sensitivity.l2);
            assert!(ints.iter().all(|v| v.abs() <= e.largest));
            for k in 0..e.len {
                total[k] += ints[k];
                exact[k] += real[k];
            }
        }
        let (sums, noises) = e.decode(&total, 8192.0, 5).unwrap();
        for (s, x) in sums.iter().zip(&exact) {
            // Four patients round by at most 1/8192 each.
            assert!((s - x).abs() <= 4.0 / 8192.0, "{s} vs {x}");
        }
        assert_eq!(noises[0].scale, 2.0);
        assert_eq!(noises[0].contributors, 5);
        assert_eq!(noises[0].kind, NoiseKind::Gaussian);
        assert!(e.decode(&total[1..], 1.0, 5).is_err());
        assert!(e.decode(&total, 1.0, 0).is_err());
    }
}

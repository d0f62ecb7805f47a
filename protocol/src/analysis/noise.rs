//! The noise a combined component carries, its variance, and seeded draws from it for Monte Carlo p-values.
//!
//! A component of the combined sum is the sum of each hospital's noisy
//! component, so its noise is the sum of `contributors` independent draws
//! of one mechanism at one scale. This mirrors [`crate::answer::Component`]
//! (which carries a Laplace scale) and encrypted mode's distributed discrete
//! Gaussian (whose shares add up to one Gaussian of the summed variance).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::{Error, MAX_CONTRIBUTORS};

/// The distribution of one hospital's noise on one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// Laplace, or OpenDP's discrete Laplace: `scale` is b, variance taken
    /// as 2b². The discrete one's variance 2q/(1-q)², q = e^(-1/b), is never
    /// larger (2 sinh(1/2b) >= 1/b) and within 2% from b = 2 on, so
    /// intervals stay valid, slightly conservative at small scales.
    Laplace,
    /// Gaussian, or the discrete Gaussian of encrypted mode: `scale` is
    /// sigma. The discrete Gaussian's variance is at most sigma²
    /// (Canonne, Kamath & Steinke 2020), so the same holds.
    Gaussian,
}

/// The noise on one component of the combined sums.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    pub kind: NoiseKind,
    /// Laplace b or Gaussian sigma of each hospital's noise.
    pub scale: f64,
    /// How many hospitals' noises were added into the component (at least 1).
    pub contributors: u32,
}

/// Above this many contributors a sum of Laplace draws is sampled as a
/// Gaussian of the same variance (their difference in distribution is then
/// below 1% by Berry-Esseen), so a simulation's cost stays bounded.
const EXACT_SUM_LIMIT: u32 = 16;

impl Noise {
    /// No noise (for tests and for components released exactly, such as public counts).
    pub const NONE: Noise = Noise {
        kind: NoiseKind::Gaussian,
        scale: 0.0,
        contributors: 1,
    };

    /// One hospital's Laplace noise of scale `b`.
    pub fn laplace(b: f64) -> Noise {
        Noise {
            kind: NoiseKind::Laplace,
            scale: b,
            contributors: 1,
        }
    }

    /// One hospital's (or the distributed total's) Gaussian noise of standard deviation `sigma`.
    pub fn gaussian(sigma: f64) -> Noise {
        Noise {
            kind: NoiseKind::Gaussian,
            scale: sigma,
            contributors: 1,
        }
    }

    /// Variance of the summed noise.
    pub fn variance(&self) -> f64 {
        let one = match self.kind {
            NoiseKind::Laplace => 2.0 * self.scale * self.scale,
            NoiseKind::Gaussian => self.scale * self.scale,
        };
        one * f64::from(self.contributors)
    }

    /// One draw of the summed noise.
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        if self.scale == 0.0 {
            return 0.0;
        }
        match self.kind {
            NoiseKind::Laplace if self.contributors <= EXACT_SUM_LIMIT => (0..self.contributors)
                .map(|_| laplace(rng, self.scale))
                .sum(),
            _ => self.variance().sqrt() * standard_normal(rng),
        }
    }
}

/// Checks every component's noise: a finite, non-negative scale (at most
/// [`super::MAX_SUM`], so variances stay finite) and 1 to
/// [`MAX_CONTRIBUTORS`] contributors, one per sum.
pub fn check(noises: &[Noise], expected: usize) -> Result<(), Error> {
    if noises.len() != expected {
        return Err(Error::WrongLength {
            what: "noise descriptions",
            found: noises.len(),
            expected,
        });
    }
    for (index, noise) in noises.iter().enumerate() {
        if !(noise.scale.is_finite() && (0.0..=super::MAX_SUM).contains(&noise.scale)) {
            return Err(Error::BadNoise {
                index,
                reason: format!("scale {}", noise.scale),
            });
        }
        if noise.contributors == 0 || noise.contributors > MAX_CONTRIBUTORS {
            return Err(Error::BadNoise {
                index,
                reason: format!(
                    "{} contributors, expected 1 to {MAX_CONTRIBUTORS}",
                    noise.contributors
                ),
            });
        }
    }
    Ok(())
}

/// True when no component carries noise: results are then exact and no simulation is needed.
pub fn is_silent(noises: &[Noise]) -> bool {
    noises.iter().all(|n| n.scale == 0.0)
}

/// The seeded generator behind every simulated p-value, so a result is reproducible.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Laplace(0, b) by inversion of its CDF.
fn laplace(rng: &mut impl Rng, b: f64) -> f64 {
    // u in (-1/2, 1/2]; ln(1 - 2|u|) is finite except at |u| = 1/2, which
    // gen::<f64>() (in [0, 1)) never gives for u = 0.5 - v with v > 0.
    let u: f64 = 0.5 - rng.gen::<f64>();
    let magnitude = -(1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln();
    b * magnitude * u.signum()
}

/// Standard normal by Box-Muller (one of the pair is enough here).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // in (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

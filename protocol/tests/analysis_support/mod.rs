//! Shared helpers of the analysis tests: summing per-patient vectors, and simulated Laplace or Gaussian noise (the product's noise comes from OpenDP in the node).
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Exp, Normal};
use witmed_protocol::analysis::{Noise, NoiseKind};

/// A seeded generator for one simulated run.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Component-wise sum of the vectors (the exact, noiseless total).
pub fn total(vectors: impl IntoIterator<Item = Vec<f64>>, len: usize) -> Vec<f64> {
    let mut sum = vec![0.0; len];
    for vector in vectors {
        assert_eq!(vector.len(), len);
        for (s, v) in sum.iter_mut().zip(vector) {
            *s += v;
        }
    }
    sum
}

/// One draw of the noise a component carries: Laplace(b) as the difference
/// of two exponentials of rate 1/b, Gaussian through rand_distr's Normal.
pub fn draw(noise: &Noise, rng: &mut impl Rng) -> f64 {
    if noise.scale == 0.0 {
        return 0.0;
    }
    (0..noise.contributors)
        .map(|_| match noise.kind {
            NoiseKind::Laplace => {
                let exp = Exp::new(1.0 / noise.scale).unwrap();
                exp.sample(rng) - exp.sample(rng)
            }
            NoiseKind::Gaussian => Normal::new(0.0, noise.scale).unwrap().sample(rng),
        })
        .sum()
}

/// The sums with each component's noise added.
pub fn noisy(sums: &[f64], noises: &[Noise], rng: &mut impl Rng) -> Vec<f64> {
    sums.iter()
        .zip(noises)
        .map(|(s, n)| s + draw(n, rng))
        .collect()
}

/// A standard normal draw.
pub fn normal(rng: &mut impl Rng) -> f64 {
    Normal::new(0.0, 1.0).unwrap().sample(rng)
}

/// Asserts |got - want| <= tolerance * max(1, |want|).
pub fn close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

//! Distribution functions the analyses need: normal quantiles and tails, the chi-square tail, Monte Carlo p-values.

use rand::Rng;

use crate::interval::ALPHA;

/// The normal quantile of the two-sided 95% level: z with P(|Z| > z) = ALPHA.
pub fn z_level() -> f64 {
    normal_quantile(1.0 - ALPHA / 2.0)
}

/// Quantile of the standard normal, through the inverse complementary error
/// function: Phi^-1(p) = -sqrt(2) erfc^-1(2p). NaN for p outside (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return f64::NAN;
    }
    -std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * p)
}

/// Two-sided normal p-value of a z statistic: P(|Z| >= |z|) = erfc(|z|/sqrt 2).
pub fn normal_two_sided(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    statrs::function::erf::erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// Upper tail of the chi-square distribution with `df` degrees of freedom:
/// P(X >= x) = Q(df/2, x/2), the regularised upper incomplete gamma
/// function. 1 for x <= 0; NaN for NaN input or df = 0.
pub fn chi_square_upper_tail(x: f64, df: usize) -> f64 {
    if x.is_nan() || df == 0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    let a = df as f64 / 2.0;
    // A statistic this far past the mean (df) has a tail below 1e-300: the
    // series would only spend time confirming it.
    if x > 2.0 * (df as f64) + 2000.0 {
        return 0.0;
    }
    statrs::function::gamma::checked_gamma_ur(a, x / 2.0)
        .unwrap_or(f64::NAN)
        .clamp(0.0, 1.0)
}

/// Monte Carlo p-value (1 + #{simulated >= observed}) / (1 + draws), which
/// is a valid p-value for any number of draws (Davison & Hinkley 1997, 4.2).
pub fn monte_carlo_p(observed: f64, simulated: &[f64]) -> f64 {
    let at_least = simulated.iter().filter(|s| **s >= observed).count();
    (1.0 + at_least as f64) / (1.0 + simulated.len() as f64)
}

/// A Poisson draw of mean `mean`: by multiplying uniforms (Knuth) for small
/// means, by the normal approximation with continuity correction above 64,
/// where the two differ by under 1% in distribution. Means that are not
/// finite or not positive give 0.
pub fn poisson(rng: &mut impl Rng, mean: f64) -> f64 {
    if !(mean > 0.0 && mean.is_finite()) {
        return 0.0;
    }
    if mean > 64.0 {
        let draw = mean + mean.sqrt() * super::noise::standard_normal(rng);
        return draw.round().max(0.0);
    }
    let limit = (-mean).exp();
    let mut product: f64 = rng.gen();
    let mut count = 0.0;
    // The loop ends: each step multiplies by a uniform below 1, and the
    // cap bounds it even against a generator stuck at 1 (mean <= 64, so
    // 10_000 steps are far in the tail).
    while product > limit && count < 10_000.0 {
        product *= rng.gen::<f64>();
        count += 1.0;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_inverts_the_two_sided_tail() {
        let z = z_level();
        assert!((normal_two_sided(z) - ALPHA).abs() < 1e-9, "{z}");
        for p in [0.001, 0.2, 0.5, 0.9] {
            let q = normal_quantile(p);
            // Phi(q) = erfc(-q / sqrt 2) / 2.
            let back = statrs::function::erf::erfc(-q / std::f64::consts::SQRT_2) / 2.0;
            assert!((back - p).abs() < 1e-9, "{p}: {back}");
        }
        assert!(normal_quantile(0.0).is_nan() && normal_quantile(f64::NAN).is_nan());
    }

    #[test]
    fn chi_square_tail_matches_closed_forms() {
        // df = 2: P(X >= x) = exp(-x/2). df = 1: P(X >= x) = P(|Z| >= sqrt x).
        for x in [0.1, 1.0, 3.84, 10.0, 40.0] {
            assert!((chi_square_upper_tail(x, 2) - (-x / 2.0).exp()).abs() < 1e-12);
            assert!((chi_square_upper_tail(x, 1) - normal_two_sided(x.sqrt())).abs() < 1e-10);
        }
        assert_eq!(chi_square_upper_tail(0.0, 3), 1.0);
        assert!(chi_square_upper_tail(f64::NAN, 3).is_nan());
        assert_eq!(chi_square_upper_tail(1e300, 3), 0.0);
    }

    #[test]
    fn poisson_draws_have_their_mean() {
        let mut rng = super::super::noise::rng(7);
        for mean in [0.5, 5.0, 50.0, 500.0] {
            let n = 4000;
            let total: f64 = (0..n).map(|_| poisson(&mut rng, mean)).sum();
            let average = total / n as f64;
            assert!(
                (average - mean).abs() < 5.0 * (mean / n as f64).sqrt(),
                "{mean}: {average}"
            );
        }
    }
}

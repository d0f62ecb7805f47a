//! Interval numerics: rigorous tail bounds of summed Laplace, discrete Laplace and
//! discrete Gaussian noises, and the intervals of means and quantiles built on them. No IO.
//!
//! [`crate::combine`] uses these to give a combined answer its interval; nodes use
//! [`mean_with_interval`] and [`quantiles_with_intervals`] for their own answers, and
//! encrypted mode uses [`gaussian_sum_halfwidth`] and [`smallest_passing`].
//! Every interval is at the one level [`ALPHA`].

use std::f64::consts::LN_2;

use crate::answer::Mechanism;

/// Confidence level of combined intervals: each is a 95% interval.
pub const ALPHA: f64 = 0.05;

/// Relative allowance for floating-point error in computed tail
/// probabilities: a half-width is accepted only when its computed tail
/// probability is below alpha / (1 + MARGIN). The computations sum at most a
/// few million positive terms, whose relative error is below 1e-9.
const MARGIN: f64 = 1e-6;
/// Golden-section steps for the Chernoff parameter: 0.618^80 < 1e-16.
const GOLDEN_STEPS: usize = 80;
/// Bisection steps on a half-width; stops earlier once relative width is 1e-12.
const BISECTION_STEPS: usize = 200;
/// Most summands for the exact Laplace tail (its cost grows linearly).
const MAX_EXACT_TERMS: usize = 100_000;
/// Longest negative-binomial table for the exact discrete tail (two f64 arrays).
const MAX_TABLE: usize = 1 << 21;
/// Fraction of alpha allowed to the truncation of that table.
const TABLE_TAIL_FRACTION: f64 = 1e-9;

/// Mean `mid + s / c`, clamped to the bounds, and the range it takes over the
/// sum's and count's intervals.
///
/// `mid + s/c` is monotone in `s` and, for a fixed `s`, in `c > 0`, so over
/// the rectangle of the two intervals its extremes are at the corners.
/// Counts are taken as at least 1 (a mean of no patients is undefined), and
/// the true mean lies within the bounds, so clamping keeps the interval valid.
pub fn mean_with_interval(
    shifted_sum: f64,
    sum_halfwidth: f64,
    count: f64,
    count_halfwidth: f64,
    (lower, upper): (f64, f64),
) -> (f64, (f64, f64)) {
    let mid = (lower + upper) / 2.0;
    let clamp = |v: f64| v.clamp(lower, upper);
    let value = clamp(mid + shifted_sum / count.max(1.0));
    let counts = [
        (count - count_halfwidth).max(1.0),
        (count + count_halfwidth).max(1.0),
    ];
    let sums = [shifted_sum - sum_halfwidth, shifted_sum + sum_halfwidth];
    let corners = sums
        .iter()
        .flat_map(|s| counts.iter().map(move |c| mid + s / c));
    let (lo, hi) = corners.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    (value, (clamp(lo), clamp(hi)))
}

/// Quantiles by linear interpolation in the noisy histogram's CDF, as a node
/// computes them, with intervals that hold whenever every bin's noise is
/// within `bin_halfwidth`.
///
/// The interval covers the p-quantile of the patients' values themselves
/// (clamped to the edges), so it is resolved to bin edges: a histogram says
/// nothing about where values lie inside a bin. The true count of bin i is
/// in `[c_i - h, c_i + h]` and not negative; over that box the fraction of
/// patients below edge j, `C / (C + R)`, is largest with the bins below j
/// high and those above low, and smallest the other way round. The quantile
/// is at least every edge j whose largest fraction is below p (fewer than
/// p·N values lie below it), and at most every edge whose smallest fraction
/// reaches p. Since one event (all bins within) covers every p, the
/// intervals hold all together.
///
/// Returns empty vectors unless `edges.len() == noisy_counts.len() + 1`.
pub fn quantiles_with_intervals(
    noisy_counts: &[f64],
    edges: &[f64],
    probabilities: &[f64],
    bin_halfwidth: f64,
) -> (Vec<f64>, Vec<(f64, f64)>) {
    if noisy_counts.is_empty() || edges.len() != noisy_counts.len() + 1 {
        return (vec![], vec![]);
    }
    let clean: Vec<f64> = noisy_counts.iter().map(|c| c.max(0.0)).collect();
    let envelope = CdfEnvelope::new(noisy_counts, bin_halfwidth);
    probabilities
        .iter()
        .map(|&p| {
            let q = quantile_of(&clean, edges, p);
            let (lo, hi) = envelope.quantile_range(edges, p);
            (q, (lo.min(q), hi.max(q)))
        })
        .unzip()
}

/// Largest and smallest fraction of patients below each edge over all
/// true histograms within the per-bin half-width.
struct CdfEnvelope {
    max_below: Vec<f64>,
    min_below: Vec<f64>,
}

impl CdfEnvelope {
    fn new(noisy_counts: &[f64], halfwidth: f64) -> CdfEnvelope {
        let low: Vec<f64> = noisy_counts
            .iter()
            .map(|c| (c - halfwidth).max(0.0))
            .collect();
        let high: Vec<f64> = noisy_counts
            .iter()
            .map(|c| (c + halfwidth).max(0.0))
            .collect();
        let (low_below, low_above) = prefix_and_suffix_sums(&low);
        let (high_below, high_above) = prefix_and_suffix_sums(&high);
        let edges = noisy_counts.len() + 1;
        let max_below = (0..edges)
            .map(|j| max_fraction(high_below[j], low_above[j]))
            .collect();
        let min_below = (0..edges)
            .map(|j| min_fraction(low_below[j], high_above[j]))
            .collect();
        CdfEnvelope {
            max_below,
            min_below,
        }
    }

    /// The range of the p-quantile, at bin-edge resolution.
    fn quantile_range(&self, edges: &[f64], p: f64) -> (f64, f64) {
        let last = edges.len() - 1;
        let lower = self.max_below.iter().rposition(|&f| f < p).unwrap_or(0);
        let upper = self.min_below.iter().position(|&f| f >= p).unwrap_or(last);
        (edges[lower], edges[upper])
    }
}

/// Largest fraction below an edge: with no patient possible below, it is 0.
fn max_fraction(below: f64, above: f64) -> f64 {
    if below > 0.0 {
        below / (below + above)
    } else {
        0.0
    }
}

/// Smallest fraction below an edge: with no patient possible above, every
/// patient is below, so it is 1.
fn min_fraction(below: f64, above: f64) -> f64 {
    if above > 0.0 {
        below / (below + above)
    } else {
        1.0
    }
}

/// For each edge j: the sum of the bins below it and of those above it.
fn prefix_and_suffix_sums(bins: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut below = Vec::with_capacity(bins.len() + 1);
    let mut acc = 0.0;
    below.push(acc);
    for b in bins {
        acc += b;
        below.push(acc);
    }
    let mut above = vec![0.0; bins.len() + 1];
    for j in (0..bins.len()).rev() {
        above[j] = above[j + 1] + bins[j];
    }
    (below, above)
}

/// The p-quantile of a histogram, interpolating linearly within the bin.
fn quantile_of(counts: &[f64], edges: &[f64], p: f64) -> f64 {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return (edges[0] + edges[edges.len() - 1]) / 2.0;
    }
    let target = p * total;
    let mut cumulative = 0.0;
    for (i, c) in counts.iter().enumerate() {
        if cumulative + c >= target && *c > 0.0 {
            let within = (target - cumulative) / c;
            return edges[i] + within * (edges[i + 1] - edges[i]);
        }
        cumulative += c;
    }
    edges[edges.len() - 1]
}

/// Half-width h such that P(|X_1 + ... + X_k| > h) <= alpha for independent
/// noises with these mechanisms and scales.
///
/// Rigorous: h is the smallest of several half-widths, each of which is
/// valid on its own, so the smallest is valid too.
///
/// 1. **Chernoff**, for any mix: P(S >= x) <= exp(-t x) Π M_i(t) for *every*
///    t in (0, 1/max scale), with the exact moment generating functions
///    M(t) = 1/(1 - b²t²) for Laplace(b) and
///    (1-p)² / ((1 - p e^t)(1 - p e^-t)), p = exp(-1/s), for discrete
///    Laplace(s). The noises are symmetric, so P(|S| >= x) <= 2·that. The
///    minimisation over t (golden section on the log, which is convex) only
///    picks a good t; whatever t it finds, the bound holds. When every noise
///    is discrete, S is an integer and h may be rounded down: P(|S| >
///    floor(h)) = P(|S| >= floor(h) + 1) <= P(|S| >= h).
/// 2. **Exact tail, all Laplace**: k Laplace(b) noises sum to a difference
///    of two Gamma(k, b) variables, whose tail is a finite sum (see
///    `laplace_iid_log_tail`). Different scales b_i <= b_max are covered by
///    b_max: each b_i·L is more peaked than b_max·L, both symmetric and
///    unimodal, and peakedness is kept under independent sums (Birnbaum,
///    Ann. Math. Statist. 19 (1948) 76-81), so P(|Σ b_i L_i| > x) <=
///    P(|Σ b_max L_i| > x).
/// 3. **Exact tail, equal-scale discrete Laplace**: a sum of k discrete
///    Laplace noises is a difference of two negative binomials, tabulated
///    with the truncated tail bounded and counted as exceeding (see
///    `NegativeBinomial`); for k = 1 the tail is 2p^(h+1)/(1+p).
///
/// Chernoff alone is 40-95% wider than needed at alpha = 0.05 (it covers
/// 99.4-99.7%), which is why the exact tails are used where they apply.
/// Computed probabilities must be below alpha / (1 + 1e-6), which absorbs
/// floating-point error. OpenDP's float Laplace is a discrete Laplace on a
/// grid of 2^-1074 and its output a float: both add errors far below what
/// the half-widths are reported to.
///
/// Degenerate inputs: zero scales add no noise; an empty list gives 0;
/// `alpha >= 1` gives 0; `alpha <= 0`, NaN, or a negative or non-finite
/// scale gives infinity (no finite bound).
pub fn noise_sum_halfwidth(noises: &[(Mechanism, f64)], alpha: f64) -> f64 {
    if alpha.is_nan() || alpha <= 0.0 || noises.iter().any(|&(_, s)| !(s.is_finite() && s >= 0.0)) {
        return f64::INFINITY;
    }
    if alpha >= 1.0 {
        return 0.0;
    }
    let noisy: Vec<(Mechanism, f64)> = noises.iter().copied().filter(|&(_, s)| s > 0.0).collect();
    if noisy.is_empty() {
        return 0.0;
    }
    let all_discrete = noisy.iter().all(|&(m, _)| m == Mechanism::DiscreteLaplace);
    let mut chernoff = chernoff_halfwidth(&noisy, alpha);
    if all_discrete {
        chernoff = chernoff.floor();
    }
    match exact_halfwidth(&noisy, alpha) {
        Some(exact) => exact.min(chernoff),
        None => chernoff,
    }
}

/// The exact-tail half-width where one applies (cases 2 and 3 of
/// [`noise_sum_halfwidth`]).
fn exact_halfwidth(noises: &[(Mechanism, f64)], alpha: f64) -> Option<f64> {
    let k = noises.len();
    let max_scale = noises.iter().map(|&(_, s)| s).fold(0.0, f64::max);
    let all = |m: Mechanism| noises.iter().all(|&(n, _)| n == m);
    if all(Mechanism::Laplace) {
        return laplace_iid_halfwidth(k, alpha).map(|x| x * max_scale);
    }
    let equal_scales = noises.iter().all(|&(_, s)| s == max_scale);
    if all(Mechanism::DiscreteLaplace) && equal_scales {
        return discrete_iid_halfwidth(k, max_scale, alpha);
    }
    None
}

/// The largest log-probability a half-width may leave, after the margin.
fn log_target(alpha: f64) -> f64 {
    (alpha / (1.0 + MARGIN)).ln()
}

/// Smallest x >= 0 (to a relative 1e-12) at which `passes` holds, searching
/// up from `start`; `None` if no x below f64::MAX passes. Only an x that was
/// seen to pass is returned, so the result is valid even if `passes` is not
/// perfectly monotone in floating point.
pub fn smallest_passing(passes: impl Fn(f64) -> bool, start: f64) -> Option<f64> {
    let mut hi = start;
    while !passes(hi) {
        hi *= 2.0;
        if !hi.is_finite() {
            return None;
        }
    }
    let mut lo = 0.0;
    for _ in 0..BISECTION_STEPS {
        if hi - lo <= hi * 1e-12 {
            break;
        }
        let mid = lo + (hi - lo) / 2.0;
        if passes(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Smallest integer h >= 0 at which `passes` holds (assumed monotone; the
/// returned h was seen to pass), or `None` beyond 2^62.
fn smallest_passing_integer(passes: impl Fn(u64) -> bool) -> Option<u64> {
    if passes(0) {
        return Some(0);
    }
    let (mut lo, mut hi) = (0_u64, 1_u64);
    while !passes(hi) {
        lo = hi;
        hi = hi.checked_mul(2).filter(|h| *h <= 1 << 62)?;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if passes(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

// ---- Chernoff ----------------------------------------------------------

/// Case 1 of [`noise_sum_halfwidth`]: valid for any mix of noises.
fn chernoff_halfwidth(noises: &[(Mechanism, f64)], alpha: f64) -> f64 {
    let max_scale = noises.iter().map(|&(_, s)| s).fold(0.0, f64::max);
    let t_max = 1.0 / max_scale;
    // Two tails: 2·bound <= alpha.
    let target = log_target(alpha) - LN_2;
    let groups = group_identical(noises);
    let passes = |x: f64| chernoff_log_bound(&groups, t_max, x) <= target;
    smallest_passing(passes, max_scale).unwrap_or(f64::INFINITY)
}

/// Distinct (mechanism, scale) pairs with how often each occurs: hospitals
/// answering one query mostly share a scale, so this saves most of the work.
fn group_identical(noises: &[(Mechanism, f64)]) -> Vec<(Mechanism, f64, f64)> {
    let mut groups: Vec<(Mechanism, f64, f64)> = Vec::new();
    for &(m, s) in noises {
        match groups.iter_mut().find(|(gm, gs, _)| *gm == m && *gs == s) {
            Some(group) => group.2 += 1.0,
            None => groups.push((m, s, 1.0)),
        }
    }
    groups
}

/// log of inf over t in (0, t_max) of exp(-t x) Π M_i(t), or rather of the
/// smallest value found: any t gives a valid bound. `groups` as from
/// [`group_identical`].
fn chernoff_log_bound(groups: &[(Mechanism, f64, f64)], t_max: f64, x: f64) -> f64 {
    let objective = |u: f64| {
        let t = u * t_max;
        let log_mgf: f64 = groups.iter().map(|&(m, s, n)| n * log_mgf(m, s, t)).sum();
        let v = -t * x + log_mgf;
        // At or past the pole (rounding of t), there is no bound: skip it.
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    };
    golden_section_min(objective)
}

/// log E[exp(t X)] of one noise, for 0 < t < 1/scale.
fn log_mgf(mechanism: Mechanism, scale: f64, t: f64) -> f64 {
    match mechanism {
        Mechanism::Laplace => -((-scale * t).ln_1p() + (scale * t).ln_1p()),
        Mechanism::DiscreteLaplace => {
            // p = exp(-1/s); expm1 keeps 1 - p e^(±t) accurate for large s.
            let one_minus_p = -(-1.0 / scale).exp_m1();
            2.0 * one_minus_p.ln()
                - (-(t - 1.0 / scale).exp_m1()).ln()
                - (-(-t - 1.0 / scale).exp_m1()).ln()
        }
    }
}

/// Smallest value of `f` seen by a golden-section search on (0, 1); `f` is
/// convex there, so that is close to its minimum.
fn golden_section_min(f: impl Fn(f64) -> f64) -> f64 {
    let r = (5.0_f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (0.0, 1.0);
    let (mut c, mut d) = (b - r * (b - a), a + r * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    let mut best = fc.min(fd);
    for _ in 0..GOLDEN_STEPS {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - r * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + r * (b - a);
            fd = f(d);
        }
        best = best.min(fc).min(fd);
    }
    best
}

// ---- Exact tail of k Laplace noises -------------------------------------

/// Case 2 of [`noise_sum_halfwidth`], in units of the scale.
fn laplace_iid_halfwidth(k: usize, alpha: f64) -> Option<f64> {
    if k == 0 || k > MAX_EXACT_TERMS {
        return None;
    }
    let log_cdf = half_negative_binomial_log_cdf(k);
    let target = log_target(alpha) - LN_2;
    smallest_passing(|x| laplace_iid_log_tail(&log_cdf, x) <= target, 1.0)
}

/// ln P(L_1 + ... + L_k > x) for iid Laplace(1) and x >= 0.
///
/// The sum is G1 - G2 with G1, G2 iid Gamma(k, 1). Given G2 = g,
/// P(G1 > x + g) = e^-(x+g) Σ_{j<k} (x+g)^j / j!; integrating over g gives
///
///   P(S > x) = e^-x Σ_{a<k} x^a / a! · F(k - 1 - a),
///
/// where F is the CDF of a negative binomial(k, 1/2) (`log_cdf`). Every
/// term is positive, so the sum is computed without cancellation.
fn laplace_iid_log_tail(log_cdf: &[f64], x: f64) -> f64 {
    let k = log_cdf.len();
    let mut log_power = 0.0; // ln(x^a / a!)
    let terms: Vec<f64> = (0..k)
        .map(|a| {
            if a > 0 {
                log_power += (x / a as f64).ln();
            }
            log_power + log_cdf[k - 1 - a]
        })
        .collect();
    -x + log_sum_exp(&terms)
}

/// ln F(r), r = 0..k-1, with F(r) = Σ_{l<=r} C(l+k-1, l) 2^-(l+k).
fn half_negative_binomial_log_cdf(k: usize) -> Vec<f64> {
    let mut log_term = -(k as f64) * LN_2;
    let mut acc = f64::NEG_INFINITY;
    (0..k)
        .map(|l| {
            if l > 0 {
                log_term += ((l + k - 1) as f64 / l as f64).ln() - LN_2;
            }
            acc = log_add(acc, log_term);
            acc
        })
        .collect()
}

fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

// ---- Exact tail of k discrete Laplace noises ----------------------------

/// Case 3 of [`noise_sum_halfwidth`]: smallest integer h with
/// 2·P(S >= h + 1) <= alpha, `None` if the table would be too large.
fn discrete_iid_halfwidth(k: usize, scale: f64, alpha: f64) -> Option<f64> {
    let target = log_target(alpha);
    let h = if k == 1 {
        // P(|K| > h) = 2 p^(h+1) / (1 + p), and ln p = -1/s.
        let log_tail = |h: u64| LN_2 - (h + 1) as f64 / scale - (-1.0 / scale).exp().ln_1p();
        smallest_passing_integer(|h| log_tail(h) <= target)?
    } else {
        let table = NegativeBinomial::tabulate(k, scale, alpha * TABLE_TAIL_FRACTION)?;
        smallest_passing_integer(|h| (2.0 * table.difference_tail(h + 1)).ln() <= target)?
    };
    Some(h as f64)
}

/// Upper bounds on the survival function of N ~ NegativeBinomial(k, p), the
/// number of failures before the k-th success with failure probability
/// p = exp(-1/s): a sum of k geometrics, as a discrete Laplace(s) noise is
/// the difference of two geometrics. So the sum of k noises is N1 - N2 with
/// N1, N2 iid like N, and P(N1 - N2 >= m) = Σ_j P(N2 = j) P(N1 >= m + j).
struct NegativeBinomial {
    pmf: Vec<f64>,
    /// `survival[n]` >= P(N >= n) for n in 0..pmf.len().
    survival: Vec<f64>,
    /// >= P(N >= pmf.len()).
    tail: f64,
}

impl NegativeBinomial {
    /// Tabulates up to where the tail is below `tail_target`; `None` if that
    /// would exceed [`MAX_TABLE`] entries.
    fn tabulate(k: usize, scale: f64, tail_target: f64) -> Option<NegativeBinomial> {
        let log_p = -1.0 / scale;
        let log_q = (-(log_p.exp_m1())).ln();
        let k_f = k as f64;
        let mean = k_f * log_p.exp() / log_p.exp_m1().abs();
        let mut len = (mean.ceil() as usize).max(16);
        let log_tail = loop {
            let bound = negative_binomial_log_tail_bound(k_f, log_p, log_q, len as f64);
            if bound <= tail_target.ln() {
                break bound;
            }
            len = len.checked_mul(2).filter(|n| *n <= MAX_TABLE)?;
        };
        if len > MAX_TABLE {
            return None;
        }
        let mut log_pmf = k_f * log_q;
        let pmf: Vec<f64> = (0..len)
            .map(|n| {
                if n > 0 {
                    log_pmf += ((n + k - 1) as f64 / n as f64).ln() + log_p;
                }
                log_pmf.exp()
            })
            .collect();
        let tail = log_tail.exp();
        let mut survival = vec![0.0; len];
        let mut acc = tail;
        // From the top, so that small terms are added first.
        for n in (0..len).rev() {
            acc += pmf[n];
            survival[n] = acc;
        }
        Some(NegativeBinomial {
            pmf,
            survival,
            tail,
        })
    }

    fn survival(&self, n: usize) -> f64 {
        self.survival.get(n).copied().unwrap_or(self.tail)
    }

    /// An upper bound on P(N1 - N2 >= m): the table's terms, plus the
    /// untabulated P(N2 >= len) counted as if every such case exceeded.
    fn difference_tail(&self, m: u64) -> f64 {
        let m = usize::try_from(m).unwrap_or(usize::MAX);
        let tabulated: f64 = self
            .pmf
            .iter()
            .enumerate()
            .map(|(j, f)| f * self.survival(m.saturating_add(j)))
            .sum();
        tabulated + self.tail
    }
}

/// Chernoff bound on ln P(N >= n) for n above the mean:
/// P(N >= n) <= inf_t e^(-tn) (q / (1 - p e^t))^k, attained at
/// p e^t = n / (n + k), which gives q^k p^n (n+k)^(n+k) / (n^n k^k).
fn negative_binomial_log_tail_bound(k: f64, log_p: f64, log_q: f64, n: f64) -> f64 {
    let log_bound = k * log_q + n * log_p + (n + k) * (n + k).ln() - n * n.ln() - k * k.ln();
    // At or below the mean the optimal t is 0 and the bound is 1.
    log_bound.min(0.0)
}

/// Half-width at level `alpha` of a sum of `contributions` independent
/// discrete Gaussian shares of scale `share_scale`.
///
/// A discrete Gaussian of scale sigma is sigma-sub-Gaussian (Canonne, Kamath
/// and Steinke 2020), so the sum is sub-Gaussian with variance proxy
/// `c * sigma^2` and `P(|Z| >= t) <= 2 exp(-t^2 / (2 c sigma^2))`: the bound is
/// rigorous, not a normal approximation.
pub fn gaussian_sum_halfwidth(share_scale: f64, contributions: usize, alpha: f64) -> f64 {
    let variance = contributions as f64 * share_scale * share_scale;
    (2.0 * variance * (2.0 / alpha).ln()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{RngAlgorithm, TestRng};

    const LAP: Mechanism = Mechanism::Laplace;
    const DL: Mechanism = Mechanism::DiscreteLaplace;

    // ---- samplers (inverse CDF) ----

    fn rng(seed: u8) -> TestRng {
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32])
    }

    /// Uniform in (0, 1].
    fn uniform(rng: &mut TestRng) -> f64 {
        1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn sample(rng: &mut TestRng, mechanism: Mechanism, scale: f64) -> f64 {
        match mechanism {
            // Inverse CDF of Laplace(b): F^-1(u) = -b sign(u - 1/2) ln(1 - 2|u - 1/2|).
            LAP => {
                let u = uniform(rng) - 0.5;
                -scale * u.signum() * (1.0 - 2.0 * u.abs()).ln()
            }
            // Difference of two geometrics, each floor(ln U / ln p) by inverse CDF.
            DL => {
                let geometric = |u: f64| (u.ln() * scale).abs().floor();
                geometric(uniform(rng)) - geometric(uniform(rng))
            }
        }
    }

    /// Sorted |S| for `draws` sums of the given noises.
    fn sorted_abs_sums(noises: &[(Mechanism, f64)], draws: usize, seed: u8) -> Vec<f64> {
        let mut rng = rng(seed);
        let mut sums: Vec<f64> = (0..draws)
            .map(|_| {
                let s: f64 = noises.iter().map(|&(m, b)| sample(&mut rng, m, b)).sum();
                s.abs()
            })
            .collect();
        sums.sort_by(f64::total_cmp);
        sums
    }

    fn exceedance(sorted: &[f64], h: f64) -> f64 {
        let inside = sorted.partition_point(|&v| v <= h);
        (sorted.len() - inside) as f64 / sorted.len() as f64
    }

    // ---- noise_sum_halfwidth ----

    #[test]
    fn monte_carlo_coverage_is_close_to_95_percent() {
        const DRAWS: usize = 100_000;
        // 4 binomial standard deviations at p = 0.05 and 100k draws.
        let tolerance = 4.0 * (0.05_f64 * 0.95 / DRAWS as f64).sqrt();
        for (seed, (mechanism, scale)) in [(LAP, 1.5), (DL, 2.0), (DL, 0.8)].into_iter().enumerate()
        {
            for k in [1, 3, 10, 30] {
                let noises = vec![(mechanism, scale); k];
                let h = noise_sum_halfwidth(&noises, ALPHA);
                let sums = sorted_abs_sums(&noises, DRAWS, seed as u8 * 40 + k as u8);
                let out = exceedance(&sums, h);
                println!("{mechanism:?}({scale}) x{k}: h = {h:.4}, |S| > h in {out:.4}");
                assert!(
                    (0.01..=ALPHA + tolerance).contains(&out),
                    "{mechanism:?}({scale}) x{k}: h = {h}, |S| > h in {out}"
                );
            }
        }
    }

    #[test]
    fn chernoff_fallback_covers_mixed_noises() {
        let cases = [
            vec![(DL, 1.0), (DL, 2.0), (DL, 3.0)],
            vec![(DL, 2.0), (LAP, 2.0), (LAP, 5.0)],
            [vec![(DL, 1.0); 8], vec![(DL, 4.0); 2]].concat(),
        ];
        for (seed, noises) in cases.iter().enumerate() {
            let h = noise_sum_halfwidth(noises, ALPHA);
            let out = exceedance(&sorted_abs_sums(noises, 100_000, 200 + seed as u8), h);
            assert!(out <= ALPHA, "{noises:?}: h = {h}, |S| > h in {out}");
        }
    }

    #[test]
    fn single_laplace_is_exact() {
        for (b, alpha) in [(1.0_f64, 0.05_f64), (3.7, 0.01), (0.2, 0.025)] {
            let exact = b * (1.0 / alpha).ln();
            let h = noise_sum_halfwidth(&[(LAP, b)], alpha);
            assert!(h >= exact && h <= exact * 1.25, "b = {b}: {h} vs {exact}");
            assert!(h <= exact * (1.0 + 1e-5), "b = {b}: {h} vs {exact}");
        }
    }

    #[test]
    fn single_discrete_laplace_is_the_exact_geometric_tail() {
        for s in [0.3_f64, 1.0, 2.0, 20.0] {
            let p = (-1.0 / s).exp();
            let tail = |h: f64| 2.0 * p.powf(h + 1.0) / (1.0 + p);
            let h = noise_sum_halfwidth(&[(DL, s)], ALPHA);
            assert_eq!(h, h.floor());
            assert!(tail(h) <= ALPHA, "s = {s}, h = {h}");
            assert!(h == 0.0 || tail(h - 1.0) > ALPHA, "s = {s}, h = {h}");
        }
    }

    #[test]
    fn two_laplace_tail_matches_closed_form() {
        // The sum of two Laplace(1) has density (1 + |x|) e^-|x| / 4.
        let log_cdf = half_negative_binomial_log_cdf(2);
        for x in [0.0_f64, 0.5, 3.0, 40.0] {
            let closed = ((2.0 + x) * (-x).exp() / 4.0).ln();
            assert!((laplace_iid_log_tail(&log_cdf, x) - closed).abs() < 1e-12);
        }
    }

    /// The exact smallest h for k iid discrete Laplace(s), by convolution.
    fn brute_force_discrete(k: usize, s: f64, alpha: f64) -> f64 {
        let reach = (60.0 * s).ceil() as i64 + 5;
        let p = (-1.0 / s).exp();
        let one: Vec<f64> = (-reach..=reach)
            .map(|x| (1.0 - p) / (1.0 + p) * p.powi(x.abs() as i32))
            .collect();
        let mut dist = vec![1.0];
        for _ in 0..k {
            let mut next = vec![0.0; dist.len() + one.len() - 1];
            for (i, a) in dist.iter().enumerate() {
                for (j, b) in one.iter().enumerate() {
                    next[i + j] += a * b;
                }
            }
            dist = next;
        }
        // tails[h] = P(S > h), summed from the far end.
        let centre = dist.len() / 2;
        let mut tails = vec![0.0; centre + 1];
        let mut above = 0.0;
        for i in (centre + 1..dist.len()).rev() {
            above += dist[i];
            tails[i - centre - 1] = above;
        }
        tails
            .iter()
            .position(|t| 2.0 * t <= alpha)
            .unwrap_or(centre) as f64
    }

    #[test]
    fn discrete_sums_match_brute_force_convolution() {
        for (k, s, alpha) in [
            (2, 0.7, 0.05),
            (3, 2.0, 0.05),
            (5, 1.0, 0.01),
            (4, 3.5, 0.05),
        ] {
            let expected = brute_force_discrete(k, s, alpha);
            let h = noise_sum_halfwidth(&vec![(DL, s); k], alpha);
            assert_eq!(h, expected, "k = {k}, s = {s}, alpha = {alpha}");
        }
    }

    #[test]
    fn many_nodes_and_extreme_scales_stay_finite() {
        for (mechanism, scale) in [(DL, 200.0), (LAP, 1e6), (DL, 1e-3), (DL, 1e7)] {
            let h = noise_sum_halfwidth(&vec![(mechanism, scale); 100], ALPHA / 64.0);
            assert!(h.is_finite() && h >= 0.0, "{mechanism:?}({scale}): {h}");
        }
    }

    #[test]
    fn unequal_laplace_scales_are_bounded_by_the_largest() {
        let mixed = [(LAP, 1.0), (LAP, 2.0), (LAP, 3.0)];
        let h = noise_sum_halfwidth(&mixed, ALPHA);
        assert!(h <= noise_sum_halfwidth(&[(LAP, 3.0); 3], ALPHA));
        let out = exceedance(&sorted_abs_sums(&mixed, 100_000, 250), h);
        assert!((0.01..=ALPHA).contains(&out), "{out}");
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(noise_sum_halfwidth(&[], ALPHA), 0.0);
        assert_eq!(noise_sum_halfwidth(&[(LAP, 0.0), (DL, 0.0)], ALPHA), 0.0);
        assert_eq!(noise_sum_halfwidth(&[(LAP, 1.0)], 1.0), 0.0);
        for alpha in [0.0, -1.0, f64::NAN] {
            assert_eq!(noise_sum_halfwidth(&[(LAP, 1.0)], alpha), f64::INFINITY);
        }
        for scale in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(noise_sum_halfwidth(&[(DL, scale)], ALPHA), f64::INFINITY);
        }
    }

    /// Prints h against the Monte-Carlo 95% quantile of |S| (and Chernoff
    /// alone); run with `--nocapture` to see the figures.
    #[test]
    fn tightness_against_monte_carlo_quantile() {
        println!("mechanism   k  h        chernoff  mc_q95   h/mc_q95");
        for (seed, (mechanism, scale)) in [(LAP, 1.0), (DL, 2.0)].into_iter().enumerate() {
            for k in [1, 3, 10] {
                let noises = vec![(mechanism, scale); k];
                let h = noise_sum_halfwidth(&noises, ALPHA);
                let chernoff = chernoff_halfwidth(&noises, ALPHA);
                let sums = sorted_abs_sums(&noises, 200_000, 100 + seed as u8 * 10 + k as u8);
                let q95 = sums[(sums.len() as f64 * (1.0 - ALPHA)) as usize];
                let ratio = h / q95;
                println!(
                    "{mechanism:?}({scale}) {k:2} {h:8.4} {chernoff:8.4} {q95:8.4} {ratio:.3}"
                );
                // Within Monte-Carlo error, or one integer step for counts.
                let slack = if mechanism == DL { 1.0 } else { 0.02 * q95 };
                assert!((h - q95).abs() <= slack + 0.02 * q95, "{h} vs {q95}");
            }
        }
    }

    // ---- quantiles ----

    /// The p-quantile of the values behind true counts, at bin resolution:
    /// (largest edge with fewer than p·N below, smallest with at least p·N).
    fn true_quantile_bins(counts: &[u32], edges: &[f64], p: f64) -> (f64, f64) {
        let n: f64 = counts.iter().map(|&c| c as f64).sum();
        let mut below = vec![0.0];
        for c in counts {
            below.push(below.last().copied().unwrap_or(0.0) + *c as f64);
        }
        let lo = below.iter().rposition(|&c| c < p * n).unwrap_or(0);
        let hi = below
            .iter()
            .position(|&c| c >= p * n)
            .unwrap_or(counts.len());
        (edges[lo], edges[hi])
    }

    proptest! {
        #[test]
        fn quantile_intervals_cover_every_histogram_within_the_halfwidth(
            truth in prop::collection::vec(0u32..40, 2..10),
            noise in prop::collection::vec(-3i32..=3, 10),
            p in 0.01f64..0.99,
        ) {
            prop_assume!(truth.iter().any(|&c| c > 0));
            let edges: Vec<f64> = (0..=truth.len()).map(|i| 10.0 * i as f64).collect();
            let noisy: Vec<f64> = truth.iter().zip(&noise).map(|(&t, &e)| (t as i32 + e) as f64).collect();
            let (values, intervals) = quantiles_with_intervals(&noisy, &edges, &[p], 3.0);
            let (lo, hi) = intervals[0];
            let (true_lo, true_hi) = true_quantile_bins(&truth, &edges, p);
            let clean: Vec<f64> = truth.iter().map(|&c| c as f64).collect();
            let interpolated = quantile_of(&clean, &edges, p);
            prop_assert!(lo <= true_lo && true_hi <= hi, "{lo}..{hi} vs {true_lo}..{true_hi}");
            prop_assert!(lo <= interpolated && interpolated <= hi);
            prop_assert!(lo <= values[0] && values[0] <= hi);
        }
    }

    #[test]
    fn quantiles_reject_mismatched_edges() {
        let (v, ci) = quantiles_with_intervals(&[1.0, 2.0], &[0.0, 1.0], &[0.5], 1.0);
        assert!(v.is_empty() && ci.is_empty());
    }

    // ---- gaussian_sum_halfwidth ----

    #[test]
    fn halfwidth_grows_with_the_square_root_of_contributions() {
        let one = gaussian_sum_halfwidth(10.0, 1, ALPHA);
        // sqrt(2 ln 40) = 2.716...: wider than the normal 1.96, as a tail bound must be.
        assert!((one / 10.0 - 2.716).abs() < 1e-3, "{one}");
        let four = gaussian_sum_halfwidth(10.0, 4, ALPHA);
        assert!((four / one - 2.0).abs() < 1e-12);
    }
}

//! Survival: Kaplan-Meier curves per group over the query's time bins, with bands and the log-rank test, from noisy one-hot sums.
//!
//! **Per patient.** One patient is one-hot: in its group's block, either
//! "event in bin i", "censored in bin i", or "still followed at the last
//! edge". Patients whose time is before the first edge are outside the
//! window and contribute nothing. So one patient's vector has L1 = L2 = 1
//! whatever the number of bins, and the number at risk at the start of bin i
//! is the tail sum `beyond + sum over j >= i of (events_j + censored_j)`:
//! censoring in bin i is counted after the events of bin i, the usual
//! Kaplan-Meier convention, so with one time value per bin the curve is the
//! textbook one.
//!
//! **Layout.** Group g occupies `[g * (2 bins + 1), (g + 1) * (2 bins + 1))`:
//! `bins` event counts, `bins` censoring counts, then `beyond`.
//!
//! **Monotone post-processing.** At-risk numbers are made non-increasing and
//! not negative (a running maximum from the last bin), events are clamped
//! into `[0, at risk]`, so every hazard is in [0, 1] and every curve is
//! non-increasing. The raw tail sums are not clamped first, which would bias
//! the numbers at risk upwards.
//!
//! **Band.** Greenwood's (1926) variance of log S plus the noise's
//! contribution by the delta method (the gradient of log S with respect to
//! every raw component, times that component's noise variance), on the
//! log(-log) scale of Kalbfleisch & Prentice (1980), which keeps the band in
//! [0, 1]; with noise, joined with the plain log band (clamped to 1), which
//! alone reaches S = 1 while the estimate is below it only by noise, and the
//! log band alone where S is within noise of 1 (z sigma > |log S|): there
//! the log(-log) scale's linearisation fails and its lower end falls towards
//! 0. The delta method rather than simulation because the noise is
//! additive, independent across components and small next to the counts an
//! analysis should be run on, so the linearisation is accurate, exact for
//! zero noise, and cheap and deterministic.
//!
//! **Simultaneous in the noise.** The noise is what separates the released
//! curve from the curve of the hospitals' own patients, and it is read over
//! the whole curve at once: a pointwise 95% band misses somewhere along 30
//! bins far more often than 5% of the time. The client knows the noise's
//! distribution exactly, so it draws it ([`super::SIMULATION_DRAWS`] seeded
//! draws of every raw component), pushes each draw through the same
//! linearisation of log S, and takes the 95% quantile `c` of the largest
//! standardised deviation over the bins: the noise part of the band then
//! holds at every bin at once. The half-width on the log scale is
//! `sqrt(z^2 greenwood + c^2 noise)`: the sampling part stays Greenwood's
//! pointwise band (the textbook one); `c` is never below z, z without
//! noise and about z for one bin. Near S = 1 (no event estimated)
//! Greenwood's part is zero and the noise part alone, through the log band,
//! keeps the band up to 1.
//!
//! **Log-rank.** Mantel's statistic on the bins. Its p-value accounts for
//! the noise by simulation under the null: U is normal with covariance V
//! (the log-rank asymptotics) plus the noise pushed through U's Jacobian,
//! drawn from the noise's own (Laplace or Gaussian) distribution with a
//! seeded generator, [`super::SIMULATION_DRAWS`] times.

use serde::{Deserialize, Serialize};

use super::linalg::{cholesky, cholesky_solve, Matrix};
use super::noise::{self, Noise};
use super::stats::{chi_square_upper_tail, monte_carlo_p, z_level};
use super::{at_least, at_most, check_sums, Error, Interval, Sensitivity, MAX_GROUPS};
use super::{MAX_TIME_BINS, SIMULATION_DRAWS};
use crate::interval::ALPHA;

/// What a survival analysis asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Edges of the time bins, strictly increasing: bin i is `[edges[i], edges[i + 1])`.
    pub bin_edges: Vec<f64>,
    /// Number of groups compared (1 for a single curve).
    pub groups: usize,
}

/// One patient's values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    /// Time of the event or of censoring (e.g. length of stay in days).
    pub time: f64,
    /// True when the event (e.g. in-hospital death) happened at `time`.
    pub event: bool,
    /// Group index, below `Spec::groups`.
    pub group: usize,
}

/// One group's curve, one entry per bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Number at risk at the start of each bin (noisy, non-increasing).
    pub at_risk: Vec<f64>,
    /// Events in each bin (noisy, in [0, at risk]).
    pub events: Vec<f64>,
    /// Survival at the end of each bin (non-increasing, in [0, 1]).
    pub survival: Vec<f64>,
    /// 95% band of each survival value: Greenwood's pointwise, and the
    /// noise's simultaneous over the bins.
    pub band: Vec<Interval>,
}

/// The log-rank test between the groups.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogRank {
    /// Mantel's statistic U' V^-1 U on the noisy counts.
    pub statistic: f64,
    /// U' (V + noise covariance)^-1 U: the statistic the p-value refers to.
    pub noise_adjusted_statistic: f64,
    pub df: usize,
    /// Noise-aware p-value (the chi-square tail when there is no noise).
    pub p_value: f64,
}

/// The researcher's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Survival {
    pub curves: Vec<Curve>,
    /// Present with two or more groups, when the variance is not singular.
    pub log_rank: Option<LogRank>,
}

impl Spec {
    /// Refuses missing, unordered or too many bins, and a bad number of groups.
    pub fn validate(&self) -> Result<(), Error> {
        let edges = &self.bin_edges;
        if edges.len() < 2 {
            return Err(Error::BadBins(format!("{} edge(s)", edges.len())));
        }
        at_most("time bins", edges.len() - 1, MAX_TIME_BINS)?;
        if let Some(bad) = edges.iter().find(|e| !e.is_finite()) {
            return Err(Error::BadBins(format!("edge {bad} is not finite")));
        }
        if let Some(pair) = edges.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::BadBins(format!(
                "edge {} is not below the next edge {}",
                pair[0], pair[1]
            )));
        }
        at_least("groups", self.groups, 1)?;
        at_most("groups", self.groups, MAX_GROUPS)?;
        Ok(())
    }

    /// Number of time bins.
    pub fn bins(&self) -> usize {
        self.bin_edges.len().saturating_sub(1)
    }

    /// Components of one group's block.
    fn block(&self) -> usize {
        2 * self.bins() + 1
    }

    /// Length of one patient's vector (and of the sums).
    pub fn len(&self) -> usize {
        self.groups.saturating_mul(self.block())
    }

    /// Always false for a valid spec; here for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One patient's vector is one-hot (or zero): L1 = L2 = 1.
    pub fn sensitivity(&self) -> Sensitivity {
        Sensitivity { l1: 1.0, l2: 1.0 }
    }

    /// One patient's contribution vector. Refuses a NaN time or a group out
    /// of range; a time before the first edge gives the zero vector.
    pub fn contribution(&self, patient: &Patient) -> Result<Vec<f64>, Error> {
        self.validate()?;
        if patient.time.is_nan() {
            return Err(Error::BadPatient {
                what: "time",
                value: "NaN".into(),
            });
        }
        if patient.group >= self.groups {
            return Err(Error::BadPatient {
                what: "group",
                value: patient.group.to_string(),
            });
        }
        let mut vector = vec![0.0; self.len()];
        if let Some(slot) = self.slot(patient).and_then(|i| vector.get_mut(i)) {
            *slot = 1.0;
        }
        Ok(vector)
    }

    /// Index of the patient's one component, `None` before the first edge.
    fn slot(&self, patient: &Patient) -> Option<usize> {
        let bins = self.bins();
        let base = patient.group * self.block();
        let first = *self.bin_edges.first()?;
        if patient.time < first {
            return None;
        }
        // The number of edges at or below the time, minus one, is its bin.
        let at_or_below = self
            .bin_edges
            .iter()
            .filter(|e| **e <= patient.time)
            .count();
        let bin = at_or_below - 1;
        if bin >= bins {
            return Some(base + 2 * bins);
        }
        Some(base + bin + if patient.event { 0 } else { bins })
    }

    /// The researcher's side: curves, bands and the log-rank test from the
    /// combined noisy sums and each component's noise. `seed` drives the
    /// log-rank simulation.
    pub fn from_sums(&self, sums: &[f64], noises: &[Noise], seed: u64) -> Result<Survival, Error> {
        self.validate()?;
        check_sums(sums, self.len())?;
        noise::check(noises, self.len())?;
        let blocks: Vec<Block> = (0..self.groups)
            .map(|g| self.block_of(sums, noises, g))
            .collect();
        let curves = blocks
            .iter()
            .zip(0u64..)
            .map(|(b, g)| b.curve(band_seed(seed, g)))
            .collect();
        let log_rank = if self.groups >= 2 {
            log_rank(&blocks, self.bins(), noises, seed)
        } else {
            None
        };
        Ok(Survival { curves, log_rank })
    }

    fn block_of(&self, sums: &[f64], noises: &[Noise], g: usize) -> Block {
        let start = g * self.block();
        let range = start..start + self.block();
        Block::new(
            sums.get(range.clone()).unwrap_or_default(),
            noises.get(range).unwrap_or_default(),
            self.bins(),
        )
    }
}

/// One group's raw noisy counts and the noise each carries.
struct Block {
    bins: usize,
    /// `bins` events, `bins` censored, beyond.
    raw: Vec<f64>,
    noises: Vec<Noise>,
}

/// Post-processed numbers of one group: at risk and events per bin.
struct Counts {
    at_risk: Vec<f64>,
    events: Vec<f64>,
}

impl Block {
    fn new(raw: &[f64], noises: &[Noise], bins: usize) -> Block {
        Block {
            bins,
            raw: raw.to_vec(),
            noises: noises.to_vec(),
        }
    }

    fn variance_at(&self, i: usize) -> f64 {
        self.noises.get(i).map_or(0.0, Noise::variance)
    }

    /// Monotone numbers at risk and clamped events from the raw counts.
    fn counts(&self) -> Counts {
        counts_from_raw(&self.raw, self.bins)
    }

    fn curve(&self, seed: u64) -> Curve {
        let Counts { at_risk, events } = self.counts();
        let z = z_level();
        let hazards: Vec<f64> = at_risk
            .iter()
            .zip(&events)
            .map(|(n, d)| if *n > 0.0 { d / n } else { 0.0 })
            .collect();
        let survival: Vec<f64> = hazards
            .iter()
            .scan(1.0, |s, h| {
                *s *= 1.0 - h;
                Some(*s)
            })
            .collect();
        let log_gradients = LogGradients::new(&at_risk, &events);
        let from_noise: Vec<f64> = (0..self.bins)
            .map(|k| self.noise_variance_of_log_survival(&log_gradients, k))
            .collect();
        let c = self.simultaneous_critical_value(&log_gradients, &from_noise, seed);
        // The band functions take one variance and z: (c/z)^2 noise gives
        // z sqrt(greenwood + (c/z)^2 noise) = sqrt(z^2 greenwood + c^2 noise).
        let noise_weight = (c / z).powi(2);
        let mut greenwood = 0.0;
        let mut band = Vec::with_capacity(self.bins);
        let mut previous_upper: f64 = 1.0;
        for (k, noise_variance) in from_noise.iter().enumerate() {
            greenwood += log_gradients.greenwood_term(k);
            let variance = greenwood + noise_weight * noise_variance;
            let s = survival.get(k).copied().unwrap_or(0.0);
            let interval = if *noise_variance > 0.0 {
                noisy_band(s, variance, z, previous_upper)
            } else {
                log_log_band(s, variance, z, previous_upper)
            };
            previous_upper = interval.1;
            band.push(interval);
        }
        Curve {
            at_risk,
            events,
            survival,
            band,
        }
    }

    /// The 95% quantile of the noise's largest standardised deviation of
    /// log S over the bins, by seeded simulation through the delta method's
    /// linearisation; never below z (one bin, or no noise, gives z).
    fn simultaneous_critical_value(&self, g: &LogGradients, from_noise: &[f64], seed: u64) -> f64 {
        let z = z_level();
        let spreads: Vec<f64> = from_noise.iter().map(|v| v.max(0.0).sqrt()).collect();
        if spreads.iter().all(|s| *s == 0.0) {
            return z;
        }
        let mut rng = noise::rng(seed);
        let mut largest: Vec<f64> = (0..SIMULATION_DRAWS)
            .map(|_| {
                let draw: Vec<f64> = self.noises.iter().map(|n| n.sample(&mut rng)).collect();
                largest_standardised(&self.log_deviations(g, &draw), &spreads)
            })
            .collect();
        largest.sort_by(f64::total_cmp);
        let at = ((1.0 - ALPHA) * SIMULATION_DRAWS as f64).ceil() as usize;
        let quantile = largest.get(at.saturating_sub(1)).copied().unwrap_or(z);
        quantile.max(z)
    }

    /// The linearised change of log S at the end of every bin that the raw
    /// noise `draw` (one value per raw component) makes, in O(bins): with
    /// w_j = events_j + censored_j noise, bin k moves by
    /// `sum_{j <= k} (b_j e_j + A_j w_j) + A_k (beyond + sum_{j > k} w_j)`,
    /// A_m the prefix sum of the a_i (see [`LogGradients`]).
    fn log_deviations(&self, g: &LogGradients, draw: &[f64]) -> Vec<f64> {
        let bins = self.bins;
        let at = |i: usize| draw.get(i).copied().unwrap_or(0.0);
        let mut later: f64 = at(2 * bins) + (0..bins).map(|j| at(j) + at(bins + j)).sum::<f64>();
        let mut earlier = 0.0;
        let mut deviations = Vec::with_capacity(bins);
        for k in 0..bins {
            let w = at(k) + at(bins + k);
            later -= w;
            earlier += g.by_events(k) * at(k) + g.prefix(k) * w;
            deviations.push(earlier + g.prefix(k) * later);
        }
        deviations
    }

    /// Delta method: the variance that the noise gives log S at the end of bin k.
    fn noise_variance_of_log_survival(&self, g: &LogGradients, k: usize) -> f64 {
        let bins = self.bins;
        let mut variance = 0.0;
        for j in 0..bins {
            let through = g.prefix(j.min(k));
            let own = if j <= k { g.by_events(j) } else { 0.0 };
            variance += self.variance_at(j) * (own + through).powi(2);
            variance += self.variance_at(bins + j) * through.powi(2);
        }
        variance + self.variance_at(2 * bins) * g.prefix(k).powi(2)
    }
}

/// A distinct, reproducible stream for each group's band simulation (the
/// log-rank simulation uses `seed` itself).
fn band_seed(seed: u64, group: u64) -> u64 {
    seed ^ (group.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// max over bins with noise of |deviation| / spread.
fn largest_standardised(deviations: &[f64], spreads: &[f64]) -> f64 {
    deviations
        .iter()
        .zip(spreads)
        .filter(|(_, s)| **s > 0.0)
        .map(|(d, s)| (d / s).abs())
        .fold(0.0, f64::max)
}

/// Numbers at risk (tail sums made non-increasing and not negative) and
/// events clamped into [0, at risk].
fn counts_from_raw(raw: &[f64], bins: usize) -> Counts {
    let at = |i: usize| raw.get(i).copied().unwrap_or(0.0);
    let mut at_risk = vec![0.0; bins];
    let mut tail = at(2 * bins);
    let mut floor: f64 = 0.0;
    for i in (0..bins).rev() {
        tail += at(i) + at(bins + i);
        floor = floor.max(tail);
        at_risk[i] = floor;
    }
    let events = (0..bins).map(|i| at(i).clamp(0.0, at_risk[i])).collect();
    Counts { at_risk, events }
}

/// Partial derivatives of log S = sum log(1 - d_i / n_i): with respect to
/// n_i, a_i = d_i / (n_i (n_i - d_i)); with respect to d_i, b_i = -1 / (n_i - d_i).
/// Bins where everyone at risk has the event (S = 0) contribute nothing.
struct LogGradients {
    by_at_risk_prefix: Vec<f64>,
    by_events: Vec<f64>,
    greenwood: Vec<f64>,
}

impl LogGradients {
    fn new(at_risk: &[f64], events: &[f64]) -> LogGradients {
        let mut by_at_risk_prefix = Vec::with_capacity(at_risk.len());
        let mut by_events = Vec::with_capacity(at_risk.len());
        let mut greenwood = Vec::with_capacity(at_risk.len());
        let mut prefix = 0.0;
        for (n, d) in at_risk.iter().zip(events) {
            let survivors = n - d;
            let usable = *n > 0.0 && survivors > 0.0;
            let a = if usable { d / (n * survivors) } else { 0.0 };
            prefix += a;
            by_at_risk_prefix.push(prefix);
            by_events.push(if usable { -1.0 / survivors } else { 0.0 });
            greenwood.push(a);
        }
        LogGradients {
            by_at_risk_prefix,
            by_events,
            greenwood,
        }
    }

    /// Sum of a_i over i <= m.
    fn prefix(&self, m: usize) -> f64 {
        self.by_at_risk_prefix.get(m).copied().unwrap_or(0.0)
    }

    fn by_events(&self, j: usize) -> f64 {
        self.by_events.get(j).copied().unwrap_or(0.0)
    }

    /// Greenwood's term d / (n (n - d)) of bin k (equal to a_k).
    fn greenwood_term(&self, k: usize) -> f64 {
        self.greenwood.get(k).copied().unwrap_or(0.0)
    }
}

/// The log(-log) band S^exp(±z sigma / |log S|), sigma^2 the variance of
/// log S. At S = 1 (no event yet) the log scale's band exp(-z sigma) to 1;
/// at S = 0 from 0 to the previous bin's upper end (S cannot rise).
fn log_log_band(s: f64, log_variance: f64, z: f64, previous_upper: f64) -> Interval {
    let sigma = log_variance.max(0.0).sqrt();
    if s <= 0.0 {
        return (0.0, previous_upper.clamp(0.0, 1.0));
    }
    if s >= 1.0 {
        return ((-z * sigma).exp().clamp(0.0, 1.0), 1.0);
    }
    let spread = z * sigma / s.ln().abs();
    let lower = s.powf(spread.exp());
    let upper = s.powf((-spread).exp());
    (lower.clamp(0.0, 1.0), upper.clamp(0.0, 1.0))
}

/// The band of a noisy curve: the hull of the log(-log) band with the plain
/// log band, or the log band alone where the log(-log) scale's
/// linearisation fails, that is where the spread of log S is not small next
/// to log S itself (z sigma > |log S|: S within noise of 1). There the
/// log(-log) band's lower end falls towards 0 (S^e^spread), while the noise
/// is additive on the counts, so log S itself is close to linear in it.
fn noisy_band(s: f64, log_variance: f64, z: f64, previous_upper: f64) -> Interval {
    let sigma = log_variance.max(0.0).sqrt();
    let log_log = log_log_band(s, log_variance, z, previous_upper);
    if s > 0.0 && s < 1.0 && z * sigma > s.ln().abs() {
        return log_band(s, sigma, z);
    }
    with_log_band(log_log, s, log_variance, z)
}

/// The plain log band S e^(±z sigma), clamped into [0, 1].
fn log_band(s: f64, sigma: f64, z: f64) -> Interval {
    let lower = s * (-z * sigma).exp();
    let upper = s * (z * sigma).exp();
    (lower.clamp(0.0, 1.0), upper.clamp(0.0, 1.0))
}

/// The hull of `band` with the plain log band S e^(±z sigma), for noisy
/// curves: the log(-log) band never reaches 1 once any event is estimated,
/// and noise makes events appear where there were none (a curve truly still at 1).
fn with_log_band(band: Interval, s: f64, log_variance: f64, z: f64) -> Interval {
    if s <= 0.0 {
        return band;
    }
    let sigma = log_variance.max(0.0).sqrt();
    let lower = band.0.min(s * (-z * sigma).exp());
    let upper = band.1.max(s * (z * sigma).exp());
    (lower.clamp(0.0, 1.0), upper.clamp(0.0, 1.0))
}

/// U (first groups - 1 entries) and V of Mantel's log-rank from the groups' raw blocks.
fn log_rank_u_v(raws: &[Vec<f64>], bins: usize) -> (Vec<f64>, Matrix) {
    let groups = raws.len();
    let free = groups.saturating_sub(1);
    let counts: Vec<Counts> = raws.iter().map(|r| counts_from_raw(r, bins)).collect();
    let mut u = vec![0.0; free];
    let mut v = Matrix::zeros(free);
    for i in 0..bins {
        let n_g: Vec<f64> = counts
            .iter()
            .map(|c| c.at_risk.get(i).copied().unwrap_or(0.0))
            .collect();
        let d_g: Vec<f64> = counts
            .iter()
            .map(|c| c.events.get(i).copied().unwrap_or(0.0))
            .collect();
        let n: f64 = n_g.iter().sum();
        let d: f64 = d_g.iter().sum();
        if n <= 0.0 {
            continue;
        }
        let spread = if n > 1.0 {
            d * (n - d) / (n - 1.0)
        } else {
            0.0
        };
        for g in 0..free {
            u[g] += d_g[g] - n_g[g] * d / n;
            for h in 0..free {
                let same = if g == h { 1.0 } else { 0.0 };
                v.add(g, h, spread * n_g[g] / n * (same - n_g[h] / n));
            }
        }
    }
    (u, v)
}

fn log_rank(blocks: &[Block], bins: usize, noises: &[Noise], seed: u64) -> Option<LogRank> {
    let raws: Vec<Vec<f64>> = blocks.iter().map(|b| b.raw.clone()).collect();
    let (u, v) = log_rank_u_v(&raws, bins);
    let free = u.len();
    let l = cholesky(&v)?;
    let statistic = quadratic_form(&l, &u);
    if noise::is_silent(noises) {
        return Some(LogRank {
            statistic,
            noise_adjusted_statistic: statistic,
            df: free,
            p_value: chi_square_upper_tail(statistic, free),
        });
    }
    let jacobian = log_rank_jacobian(&raws, bins, &u);
    let variances: Vec<f64> = noises.iter().map(Noise::variance).collect();
    let mut total = v.clone();
    for (column, variance) in jacobian.iter().zip(&variances) {
        for g in 0..free {
            for h in 0..free {
                total.add(g, h, variance * column[g] * column[h]);
            }
        }
    }
    let total_l = cholesky(&total)?;
    let adjusted = quadratic_form(&total_l, &u);
    let mut rng = noise::rng(seed);
    let simulated: Vec<f64> = (0..SIMULATION_DRAWS)
        .map(|_| {
            let normal: Vec<f64> = (0..free)
                .map(|_| noise::standard_normal(&mut rng))
                .collect();
            let mut draw = lower_times(&l, &normal);
            for (column, noise) in jacobian.iter().zip(noises) {
                let eta = noise.sample(&mut rng);
                for (x, c) in draw.iter_mut().zip(column) {
                    *x += c * eta;
                }
            }
            quadratic_form(&total_l, &draw)
        })
        .collect();
    Some(LogRank {
        statistic,
        noise_adjusted_statistic: adjusted,
        df: free,
        p_value: monte_carlo_p(adjusted, &simulated),
    })
}

/// Columns dU/d(raw component), by central differences (U is piecewise
/// smooth in the raw counts; a step of 1e-3 counts, larger for counts
/// beyond one, is far inside any piece for the counts an analysis runs on).
fn log_rank_jacobian(raws: &[Vec<f64>], bins: usize, u: &[f64]) -> Vec<Vec<f64>> {
    let mut columns = Vec::new();
    for g in 0..raws.len() {
        for i in 0..raws.get(g).map_or(0, Vec::len) {
            // Relative for huge counts, where 1e-3 would vanish in rounding.
            let value = raws.get(g).and_then(|r| r.get(i)).copied().unwrap_or(0.0);
            let step = 1e-3 * value.abs().max(1.0).powf(0.5);
            let shifted = |delta: f64| {
                let mut copy = raws.to_vec();
                if let Some(x) = copy.get_mut(g).and_then(|r| r.get_mut(i)) {
                    *x += delta;
                }
                log_rank_u_v(&copy, bins).0
            };
            let (up, down) = (shifted(step), shifted(-step));
            columns.push(
                (0..u.len())
                    .map(|k| {
                        (up.get(k).unwrap_or(&0.0) - down.get(k).unwrap_or(&0.0)) / (2.0 * step)
                    })
                    .collect(),
            );
        }
    }
    columns
}

/// x' A^-1 x from A's Cholesky factor.
fn quadratic_form(l: &Matrix, x: &[f64]) -> f64 {
    x.iter().zip(cholesky_solve(l, x)).map(|(a, b)| a * b).sum()
}

/// L z (a normal draw of covariance L L').
fn lower_times(l: &Matrix, z: &[f64]) -> Vec<f64> {
    (0..l.n)
        .map(|r| {
            (0..=r)
                .map(|c| l.get(r, c) * z.get(c).copied().unwrap_or(0.0))
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of `n` followed over `bins` unit bins with a few events in each.
    fn block(bins: usize, noise: Noise) -> Block {
        let mut raw = vec![0.0; 2 * bins + 1];
        for j in 0..bins {
            raw[j] = 5.0;
            raw[bins + j] = 10.0;
        }
        raw[2 * bins] = 1000.0;
        Block::new(&raw, &vec![noise; raw.len()], bins)
    }

    fn critical_value(bins: usize, noise: Noise) -> f64 {
        let b = block(bins, noise);
        let Counts { at_risk, events } = b.counts();
        let g = LogGradients::new(&at_risk, &events);
        let from_noise: Vec<f64> = (0..bins)
            .map(|k| b.noise_variance_of_log_survival(&g, k))
            .collect();
        b.simultaneous_critical_value(&g, &from_noise, 7)
    }

    #[test]
    fn the_simultaneous_critical_value_is_z_for_one_bin_and_grows_with_the_bins() {
        let z = z_level();
        let noise = Noise {
            contributors: 5,
            ..Noise::gaussian(2.0)
        };
        let one = critical_value(1, noise);
        assert!(one >= z && one < z + 0.15, "{one}");
        let ten = critical_value(10, noise);
        let sixty = critical_value(60, noise);
        eprintln!("critical values: one bin {one:.3}, ten {ten:.3}, sixty {sixty:.3}");
        assert!(ten > one + 0.2 && sixty > ten, "{one} {ten} {sixty}");
        // Below Bonferroni's bound over the bins (the deviations are correlated).
        assert!(sixty < super::super::stats::normal_quantile(1.0 - ALPHA / 120.0));
        // Laplace noise too, through its own draws.
        assert!(critical_value(10, Noise::laplace(1.0)) > one);
    }

    #[test]
    fn without_noise_the_critical_value_is_z_and_the_band_greenwoods() {
        let z = z_level();
        assert_eq!(critical_value(30, Noise::NONE), z);
        let b = block(3, Noise::NONE);
        let curve = b.curve(1);
        let Counts { at_risk, events } = b.counts();
        let mut greenwood = 0.0;
        for k in 0..3 {
            greenwood += events[k] / (at_risk[k] * (at_risk[k] - events[k]));
            let expected = log_log_band(curve.survival[k], greenwood, z, 1.0);
            assert_eq!(curve.band[k], expected, "bin {k}");
        }
    }

    #[test]
    fn the_linearised_deviations_are_the_delta_methods_gradients() {
        // One unit of noise on each raw component in turn moves log S by
        // that component's gradient, whose squares the variance sums.
        let bins = 4;
        let b = block(bins, Noise::gaussian(1.0));
        let Counts { at_risk, events } = b.counts();
        let g = LogGradients::new(&at_risk, &events);
        let mut squares = vec![0.0; bins];
        for component in 0..2 * bins + 1 {
            let mut draw = vec![0.0; 2 * bins + 1];
            draw[component] = 1.0;
            for (sum, d) in squares.iter_mut().zip(b.log_deviations(&g, &draw)) {
                *sum += d * d;
            }
        }
        for (k, sum) in squares.iter().enumerate() {
            let variance = b.noise_variance_of_log_survival(&g, k);
            assert!(
                (sum - variance).abs() <= 1e-12 * variance.max(1e-300),
                "{k}"
            );
        }
    }

    #[test]
    fn with_noise_and_no_event_estimated_the_band_still_spans_down_from_one() {
        // Day 0 with nobody dying, noise on: S = 1 and Greenwood's part is 0.
        let bins = 2;
        let mut raw = vec![0.0; 2 * bins + 1];
        raw[2 * bins] = 4000.0;
        let noise = Noise {
            contributors: 5,
            ..Noise::gaussian(2.0)
        };
        let curve = Block::new(&raw, &vec![noise; raw.len()], bins).curve(3);
        for (s, (lo, hi)) in curve.survival.iter().zip(&curve.band) {
            assert_eq!((*s, *hi), (1.0, 1.0));
            assert!(*lo < 1.0 - 1e-3, "{lo}");
        }
        // Noise alone estimates 4 deaths: S is below 1 by noise, and the band
        // reaches 1 without the log(-log) band's collapse towards 0.
        raw[0] = 4.0;
        let curve = Block::new(&raw, &vec![noise; raw.len()], bins).curve(3);
        let (lo, hi) = curve.band[0];
        assert!(curve.survival[0] < 1.0 && hi == 1.0, "{curve:?}");
        assert!(lo > 0.99 && lo < curve.survival[0], "{curve:?}");
    }
}

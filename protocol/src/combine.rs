//! Combining several hospitals' released answers into one answer with a rigorous 95% interval.
//!
//! Each hospital releases noisy *components* (see [`crate::answer`]). Over
//! disjoint patients the true totals add, so the combination adds the noisy
//! components and the noises add too:
//!
//! | aggregate | combined value                                      | interval from                                 |
//! |-----------|-----------------------------------------------------|-----------------------------------------------|
//! | count     | Σ count                                             | the summed count noises at alpha              |
//! | sum       | Σ sum_centered + mid · Σ count                      | sum and count noises at alpha/2 each          |
//! | mean      | mid + Σ sum_centered / Σ count, clamped to bounds   | sum and count noises at alpha/2 each          |
//! | histogram | Σ `bin[i]`, bin by bin                              | each bin's summed noises at alpha             |
//! | quantiles | from the summed histogram                           | every bin at alpha/bins, all holding together |
//!
//! `mid` is the middle of the query's bounds, by which nodes shift values
//! before summing. Splitting alpha between pieces is a union bound: all
//! pieces hold together with probability at least 1 - alpha.
//!
//! Suppressed answers release nothing and are left out. The privacy loss
//! reported is the largest single node's: each hospital's patients are
//! distinct people, so by parallel composition nobody loses more than at the
//! one hospital that holds their record. (A patient treated at two
//! hospitals is two rows; the client cannot see that, the consortium's
//! patient-linkage policy must.)
//!
//! [`crate::interval::noise_sum_halfwidth`] is the one place where the accuracy comes from;
//! see its documentation for why its bound is rigorous. No IO.

use crate::answer::{Component, Mechanism, Released};
use crate::interval::{mean_with_interval, noise_sum_halfwidth, quantiles_with_intervals, ALPHA};
use crate::query::{Aggregate, Bounds, Query};

/// One hospital's contribution.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The answering node's name, as reported back in `suppressed_nodes`.
    pub node: &'a str,
    pub released: &'a Released,
}

/// The combined answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// Count, sum or mean; `None` for vector answers or when every part was suppressed.
    pub value: Option<f64>,
    /// Histogram counts per bin, or quantile estimates.
    pub values: Vec<f64>,
    /// 95% interval of `value`.
    pub ci95: Option<(f64, f64)>,
    /// 95% intervals of `values`; quantile intervals hold all together at 95%.
    pub ci95s: Vec<(f64, f64)>,
    /// Largest privacy loss of any one node, suppressed ones included (see the module docs).
    pub epsilon_spent_max: f64,
    /// How many answers were combined (suppressed ones are not counted).
    pub nodes: usize,
    /// Nodes whose answers were suppressed, in the order given.
    pub suppressed_nodes: Vec<String>,
}

/// Why answers could not be combined. [`Error::error_code`] is stable for scripts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No answers were given.
    #[error("no answers to combine; collect at least one hospital's answer first")]
    Empty,
    /// An answer's components are not those the query's aggregate releases.
    #[error("answers do not match: {0}; combine only answers to the same query")]
    Mismatch(String),
    /// An answer carries a value no node releases (not finite, negative scale).
    #[error("answer from node {node:?} is malformed: {reason}; ask the node to answer again")]
    Malformed { node: String, reason: String },
    /// The query itself lacks what combining needs (bounds, edges).
    #[error("query cannot be combined: {0}; validate it with Query::validate")]
    InvalidQuery(String),
}

impl Error {
    /// A stable snake_case name for scripts, logs and metrics.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::Empty => "combine_empty",
            Error::Mismatch(_) => "combine_mismatch",
            Error::Malformed { .. } => "combine_malformed",
            Error::InvalidQuery(_) => "combine_invalid_query",
        }
    }
}

/// Combines the answers of several hospitals to `query`. See the module docs.
pub fn combine(query: &Query, parts: &[Part<'_>]) -> Result<Combined, Error> {
    if parts.is_empty() {
        return Err(Error::Empty);
    }
    let names = component_names(&query.aggregate)?;
    let epsilon_spent_max = max_epsilon(parts)?;
    let live: Vec<&Part<'_>> = parts.iter().filter(|p| !p.released.suppressed).collect();
    let suppressed_nodes = parts
        .iter()
        .filter(|p| p.released.suppressed)
        .map(|p| p.node.to_string())
        .collect();
    let mut combined = Combined {
        value: None,
        values: vec![],
        ci95: None,
        ci95s: vec![],
        epsilon_spent_max,
        nodes: live.len(),
        suppressed_nodes,
    };
    if live.is_empty() {
        return Ok(combined);
    }
    let totals = add_components(&names, &live)?;
    estimate(query, &totals, &mut combined)?;
    Ok(combined)
}

/// The component names a node releases for `aggregate`, in release order.
fn component_names(aggregate: &Aggregate) -> Result<Vec<String>, Error> {
    let bins = |n: usize| (0..n).map(|i| format!("bin[{i}]")).collect();
    Ok(match aggregate {
        Aggregate::Count => vec!["count".into()],
        Aggregate::Sum | Aggregate::Mean => vec!["sum_centered".into(), "count".into()],
        Aggregate::Histogram { edges } if edges.len() >= 2 => bins(edges.len() - 1),
        Aggregate::Histogram { .. } => {
            return Err(Error::InvalidQuery(
                "a histogram needs 2 or more edges".into(),
            ))
        }
        Aggregate::Quantiles { bins: n, .. } if *n >= 1 => bins(*n as usize),
        Aggregate::Quantiles { .. } => {
            return Err(Error::InvalidQuery("quantiles need 1 or more bins".into()))
        }
        Aggregate::Survival(_)
        | Aggregate::Table(_)
        | Aggregate::Regression(_)
        | Aggregate::Logistic(_) => {
            return Err(Error::InvalidQuery(format!(
                "a {} query is combined by analysis::outcome::add_up, not as a scalar",
                aggregate.kind()
            )))
        }
    })
}

fn max_epsilon(parts: &[Part<'_>]) -> Result<f64, Error> {
    parts.iter().try_fold(0.0_f64, |max, part| {
        let eps = part.released.epsilon_spent;
        if eps.is_finite() && eps >= 0.0 {
            Ok(max.max(eps))
        } else {
            Err(malformed(part, format!("epsilon_spent is {eps}")))
        }
    })
}

fn malformed(part: &Part<'_>, reason: String) -> Error {
    Error::Malformed {
        node: part.node.to_string(),
        reason,
    }
}

/// One component summed over the parts, with the noises that were added.
#[derive(Debug, Clone, PartialEq)]
struct Total {
    value: f64,
    noises: Vec<(Mechanism, f64)>,
}

impl Total {
    fn halfwidth(&self, alpha: f64) -> f64 {
        noise_sum_halfwidth(&self.noises, alpha)
    }
}

/// Sums each named component over the parts, in the order of `names`.
fn add_components(names: &[String], parts: &[&Part<'_>]) -> Result<Vec<Total>, Error> {
    let mut totals: Vec<Total> = names
        .iter()
        .map(|_| Total {
            value: 0.0,
            noises: Vec::with_capacity(parts.len()),
        })
        .collect();
    for part in parts {
        for (name, total) in names.iter().zip(&mut totals) {
            let component = find_component(part, names, name)?;
            total.value += component.value;
            total
                .noises
                .push((component.mechanism, component.noise_scale));
        }
    }
    Ok(totals)
}

/// The one component called `name`, checked to be well formed. The part
/// must release exactly the expected names, each once.
fn find_component<'p>(
    part: &Part<'p>,
    names: &[String],
    name: &str,
) -> Result<&'p Component, Error> {
    let components: &'p [Component] = &part.released.components;
    let mut matching = components.iter().filter(|c| c.name == name);
    let component = match (matching.next(), matching.next()) {
        (Some(c), None) if components.len() == names.len() => c,
        _ => {
            let found: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::Mismatch(format!(
                "node {:?} released components {found:?}, the query's aggregate releases {names:?}",
                part.node
            )));
        }
    };
    let (value, scale) = (component.value, component.noise_scale);
    if !(value.is_finite() && scale.is_finite() && scale >= 0.0) {
        return Err(malformed(
            part,
            format!("component {name} has value {value} and noise scale {scale}"),
        ));
    }
    Ok(component)
}

/// Fills the value and intervals of `out` from the summed components.
fn estimate(query: &Query, totals: &[Total], out: &mut Combined) -> Result<(), Error> {
    let bounds = || {
        query.bounds.ok_or_else(|| {
            Error::InvalidQuery(format!("a {} needs [bounds]", query.aggregate.kind()))
        })
    };
    match (&query.aggregate, totals) {
        (Aggregate::Count, [count]) => set_scalar(out, count_estimate(count)),
        (Aggregate::Sum, [sum, count]) => set_scalar(out, sum_estimate(sum, count, bounds()?)),
        (Aggregate::Mean, [sum, count]) => set_scalar(out, mean_estimate(sum, count, bounds()?)),
        (Aggregate::Histogram { .. }, bins) => {
            (out.values, out.ci95s) = bins.iter().map(count_estimate).unzip();
        }
        (Aggregate::Quantiles { probabilities, .. }, bins) => {
            (out.values, out.ci95s) = quantile_estimate(bins, bounds()?, probabilities);
        }
        // component_names fixed the number of totals for each aggregate.
        _ => unreachable!("totals match the aggregate's component names"),
    }
    Ok(())
}

fn set_scalar(out: &mut Combined, (value, ci): (f64, (f64, f64))) {
    out.value = Some(value);
    out.ci95 = Some(ci);
}

/// A count or a histogram bin. True counts are never negative, so the
/// interval's lower end is raised to 0 (the value itself is left unbiased).
fn count_estimate(count: &Total) -> (f64, (f64, f64)) {
    let h = count.halfwidth(ALPHA);
    let v = count.value;
    (v, ((v - h).max(0.0), v + h))
}

/// The sum of unshifted values is sum_centered + mid·count, so its noise is
/// the sum noise plus mid times the count noise.
fn sum_estimate(sum: &Total, count: &Total, b: Bounds) -> (f64, (f64, f64)) {
    let mid = (b.lower + b.upper) / 2.0;
    let value = sum.value + mid * count.value;
    let h = sum.halfwidth(ALPHA / 2.0) + mid.abs() * count.halfwidth(ALPHA / 2.0);
    (value, (value - h, value + h))
}

fn mean_estimate(sum: &Total, count: &Total, b: Bounds) -> (f64, (f64, f64)) {
    mean_with_interval(
        sum.value,
        sum.halfwidth(ALPHA / 2.0),
        count.value,
        count.halfwidth(ALPHA / 2.0),
        (b.lower, b.upper),
    )
}

fn quantile_estimate(
    bins: &[Total],
    b: Bounds,
    probabilities: &[f64],
) -> (Vec<f64>, Vec<(f64, f64)>) {
    let counts: Vec<f64> = bins.iter().map(|t| t.value).collect();
    let edges = uniform_edges(b.lower, b.upper, bins.len());
    // Every bin within its half-width at alpha/bins: all at once with 1 - alpha.
    let alpha = ALPHA / bins.len() as f64;
    let halfwidth = bins.iter().map(|t| t.halfwidth(alpha)).fold(0.0, f64::max);
    quantiles_with_intervals(&counts, &edges, probabilities, halfwidth)
}

/// The same equal bins a node builds over the bounds (same arithmetic).
fn uniform_edges(lower: f64, upper: f64, bins: usize) -> Vec<f64> {
    (0..=bins)
        .map(|i| lower + (upper - lower) * i as f64 / bins as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAP: Mechanism = Mechanism::Laplace;
    const DL: Mechanism = Mechanism::DiscreteLaplace;

    // ---- combine ----

    /// README's mean heart rate query with another aggregate.
    fn query(aggregate: &str) -> Query {
        let text = crate::examples::mean_heart_rate_over_65("q", "HMB", 1.0)
            .replace("aggregate = \"mean\"", aggregate);
        Query::from_toml(&text).expect("test query is valid")
    }

    fn component(name: &str, value: f64, mechanism: Mechanism, scale: f64) -> Component {
        Component {
            name: name.into(),
            value,
            noise_scale: scale,
            mechanism,
            accuracy95: 0.0,
        }
    }

    fn released(value: Option<f64>, values: Vec<f64>, components: Vec<Component>) -> Released {
        Released {
            value,
            values,
            ci95: None,
            ci95s: vec![],
            components,
            epsilon_spent: 1.0,
            suppressed: false,
        }
    }

    fn count(v: f64) -> Released {
        released(Some(v), vec![], vec![component("count", v, DL, 1.0)])
    }

    fn sum_parts(s: f64, c: f64) -> Vec<Component> {
        vec![
            component("sum_centered", s, LAP, 170.0),
            component("count", c, DL, 2.0),
        ]
    }

    fn bins(values: &[f64]) -> Released {
        let components = values
            .iter()
            .enumerate()
            .map(|(i, v)| component(&format!("bin[{i}]"), *v, DL, 1.0))
            .collect();
        released(None, values.to_vec(), components)
    }

    fn suppressed() -> Released {
        Released::suppressed(1.5)
    }

    fn parts<'a>(answers: &'a [(&'a str, Released)]) -> Vec<Part<'a>> {
        answers
            .iter()
            .map(|(node, released)| Part { node, released })
            .collect()
    }

    fn check(query: &Query, answers: &[(&str, Released)]) -> Combined {
        combine(query, &parts(answers)).expect("answers combine")
    }

    #[test]
    fn counts_add() {
        let q = query(r#"aggregate = "count""#);
        let c = check(
            &q,
            &[("a", count(10.0)), ("b", count(32.0)), ("c", count(-2.0))],
        );
        assert_eq!(c.value, Some(40.0));
        assert_eq!(c.nodes, 3);
        let h = noise_sum_halfwidth(&[(DL, 1.0); 3], ALPHA);
        assert_eq!(c.ci95, Some((40.0 - h, 40.0 + h)));
        assert_eq!(c.epsilon_spent_max, 1.0);
    }

    #[test]
    fn mean_is_mid_plus_summed_centered_over_summed_count() {
        let q = query(r#"aggregate = "mean""#);
        let a = released(Some(0.0), vec![], sum_parts(500.0, 40.0));
        let b = released(Some(0.0), vec![], sum_parts(-100.0, 60.0));
        let c = check(&q, &[("a", a), ("b", b)]);
        let expected = 115.0 + 400.0 / 100.0;
        assert_eq!(c.value, Some(expected));
        let (lo, hi) = c.ci95.expect("mean has an interval");
        assert!(lo < expected && expected < hi && lo >= 30.0 && hi <= 200.0);
    }

    #[test]
    fn sum_adds_back_mid_times_count() {
        let q = query(r#"aggregate = "sum""#);
        let a = released(Some(0.0), vec![], sum_parts(500.0, 40.0));
        let b = released(Some(0.0), vec![], sum_parts(-100.0, 60.0));
        let c = check(&q, &[("a", a), ("b", b)]);
        assert_eq!(c.value, Some(400.0 + 115.0 * 100.0));
    }

    #[test]
    fn histogram_bins_add() {
        let q = query("[aggregate.histogram]\nedges = [0.0, 1.0, 2.0, 3.0]");
        let c = check(
            &q,
            &[
                ("a", bins(&[1.0, 2.0, 3.0])),
                ("b", bins(&[10.0, 0.0, -1.0])),
            ],
        );
        assert_eq!(c.values, vec![11.0, 2.0, 2.0]);
        assert_eq!(c.ci95s.len(), 3);
        assert!(c.value.is_none() && c.ci95.is_none());
    }

    #[test]
    fn suppressed_answers_are_left_out_but_their_loss_counts() {
        let q = query(r#"aggregate = "count""#);
        let c = check(&q, &[("a", count(10.0)), ("b", suppressed())]);
        assert_eq!(c.value, Some(10.0));
        assert_eq!(c.nodes, 1);
        assert_eq!(c.suppressed_nodes, vec!["b".to_string()]);
        assert_eq!(c.epsilon_spent_max, 1.5);
        let none = check(&q, &[("b", suppressed()), ("c", suppressed())]);
        assert_eq!((none.value, none.nodes, none.ci95), (None, 0, None));
        assert_eq!(none.suppressed_nodes.len(), 2);
    }

    #[test]
    fn mismatched_components_are_refused() {
        let q = query(r#"aggregate = "count""#);
        let mean_answer = released(Some(1.0), vec![], sum_parts(1.0, 1.0));
        let err = combine(&q, &parts(&[("a", count(1.0)), ("b", mean_answer)])).unwrap_err();
        assert!(
            matches!(err, Error::Mismatch(ref m) if m.contains("\"b\"")),
            "{err}"
        );
        let hist = query("[aggregate.histogram]\nedges = [0.0, 1.0, 2.0]");
        let err = combine(&hist, &parts(&[("a", bins(&[1.0, 2.0, 3.0]))])).unwrap_err();
        assert_eq!(err.error_code(), "combine_mismatch");
    }

    #[test]
    fn empty_and_malformed_inputs_are_refused() {
        let q = query(r#"aggregate = "count""#);
        assert_eq!(combine(&q, &[]).unwrap_err(), Error::Empty);
        let err = combine(&q, &parts(&[("a", count(f64::NAN))])).unwrap_err();
        assert_eq!(err.error_code(), "combine_malformed");
    }

    #[test]
    fn a_single_part_reproduces_its_node_value() {
        let q = query(r#"aggregate = "count""#);
        assert_eq!(check(&q, &[("a", count(17.0))]).value, Some(17.0));

        let (s, n) = (1234.5, 97.0);
        let (node_mean, _) = mean_with_interval(s, 1.0, n, 1.0, (30.0, 200.0));
        let mean = released(Some(node_mean), vec![], sum_parts(s, n));
        let c = check(&query(r#"aggregate = "mean""#), &[("a", mean)]);
        assert_eq!(c.value, Some(node_mean));

        let sum = released(Some(s + 115.0 * n), vec![], sum_parts(s, n));
        let c = check(&query(r#"aggregate = "sum""#), &[("a", sum)]);
        assert_eq!(c.value, Some(s + 115.0 * n));

        let hist = query("[aggregate.histogram]\nedges = [0.0, 1.0, 2.0]");
        assert_eq!(
            check(&hist, &[("a", bins(&[4.0, 5.0]))]).values,
            vec![4.0, 5.0]
        );
    }

    #[test]
    fn quantiles_come_from_the_summed_histogram() {
        let q = query("[aggregate.quantiles]\nprobabilities = [0.25, 0.5]\nbins = 4");
        let counts = [5.0, 20.0, 30.0, 5.0];
        let edges = uniform_edges(30.0, 200.0, 4);
        let (node_values, _) = quantiles_with_intervals(&counts, &edges, &[0.25, 0.5], 4.0);
        let single = check(&q, &[("a", bins(&counts))]);
        assert_eq!(single.values, node_values);
        let halves = [bins(&[2.0, 10.0, 15.0, 2.0]), bins(&[3.0, 10.0, 15.0, 3.0])];
        let c = check(&q, &[("a", halves[0].clone()), ("b", halves[1].clone())]);
        assert_eq!(c.values, node_values);
        for (v, (lo, hi)) in c.values.iter().zip(&c.ci95s) {
            assert!(lo <= v && v <= hi && *lo >= 30.0 && *hi <= 200.0);
        }
    }
}

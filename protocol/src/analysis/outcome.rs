//! The researcher's side of an analysis query: add the hospitals' noisy vectors, then turn the sums into curves, tests or coefficients.
//!
//! Each hospital releases its noisy vector as components `v[0]`, `v[1]`...
//! with the Laplace scale of its noise (OpenDP's discrete Laplace on the
//! integer or fixed-point sums). Over disjoint patients the true sums add, so
//! the client adds the components and describes each summed noise as
//! `contributors` Laplace draws ([`Noise`]); everything after that is
//! post-processing in [`super::survival`], [`super::table`] and
//! [`super::regression`], and costs no privacy. Suppressed answers (a cohort
//! below a node's minimum) carry nothing and are left out.

use serde::{Deserialize, Serialize};

use super::noise::{Noise, NoiseKind};
use super::query::{Analysis, RegressionSpec};
use super::regression::{Fit, LogisticStep};
use super::survival::Survival;
use super::table::Table;
use super::{Error, MAX_CONTRIBUTORS};
use crate::answer::Released;
use crate::combine::Part;

/// The name of component `i` of an analysis answer.
pub fn component_name(i: usize) -> String {
    format!("v[{i}]")
}

/// The hospitals' vectors added up, with the noise each sum carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Summed {
    pub sums: Vec<f64>,
    pub noises: Vec<Noise>,
    /// Nodes whose answers were added.
    pub nodes: usize,
    /// Nodes whose answers were suppressed (left out).
    pub suppressed_nodes: Vec<String>,
    /// The largest privacy loss of one node (parallel composition over disjoint patients).
    pub epsilon_spent_max: f64,
}

/// An analysis's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Survival(Survival),
    Table(Table),
    /// A linear fit, the fit after the last logistic round, or a one-shot logistic fit.
    Regression(Fit),
}

/// Adds the parts' vectors of length `len`, refusing parts that do not
/// carry exactly `v[0]..v[len-1]` with finite values and noise scales.
pub fn add_up(len: usize, parts: &[Part<'_>]) -> Result<Summed, Error> {
    let mut sums = vec![0.0; len];
    let mut variances = vec![0.0; len];
    let mut nodes = 0u32;
    let mut suppressed_nodes = Vec::new();
    let mut epsilon_spent_max: f64 = 0.0;
    for part in parts {
        epsilon_spent_max = epsilon_spent_max.max(part.released.epsilon_spent);
        if part.released.suppressed {
            suppressed_nodes.push(part.node.to_string());
            continue;
        }
        check_part(len, part.node, part.released)?;
        for ((sum, variance), c) in sums
            .iter_mut()
            .zip(&mut variances)
            .zip(&part.released.components)
        {
            *sum += c.value;
            *variance += c.noise_scale * c.noise_scale;
        }
        nodes = nodes.saturating_add(1);
    }
    if nodes == 0 {
        return Err(Error::Unusable(format!(
            "no hospital released its part ({} suppressed: cohorts below their minimum)",
            suppressed_nodes.len()
        )));
    }
    if nodes > MAX_CONTRIBUTORS {
        return Err(Error::TooLarge {
            what: "answers combined",
            found: nodes as usize,
            max: MAX_CONTRIBUTORS as usize,
        });
    }
    // Each node's Laplace scale may differ only if nodes disagree on the
    // query; the summed variance is what the numerics use either way.
    let noises = variances
        .iter()
        .map(|v| Noise {
            kind: NoiseKind::Laplace,
            scale: (v / f64::from(nodes)).sqrt(),
            contributors: nodes,
        })
        .collect();
    Ok(Summed {
        sums,
        noises,
        nodes: nodes as usize,
        suppressed_nodes,
        epsilon_spent_max,
    })
}

fn check_part(len: usize, node: &str, released: &Released) -> Result<(), Error> {
    let components = &released.components;
    if components.len() != len {
        return Err(Error::WrongLength {
            what: "a hospital's released vector",
            found: components.len(),
            expected: len,
        });
    }
    for (i, c) in components.iter().enumerate() {
        let valid = c.name == component_name(i)
            && c.value.is_finite()
            && c.noise_scale.is_finite()
            && c.noise_scale >= 0.0;
        if !valid {
            return Err(Error::BadNoise {
                index: i,
                reason: format!(
                    "node {node:?} released component {:?} = {} with noise scale {}",
                    c.name, c.value, c.noise_scale
                ),
            });
        }
    }
    Ok(())
}

/// The result of a survival, table or linear query from the summed vectors;
/// for a logistic round, use [`logistic_step`]. `seed` drives the simulated p-values.
pub fn analyse(analysis: &Analysis<'_>, summed: &Summed, seed: u64) -> Result<Outcome, Error> {
    match analysis {
        Analysis::Survival(q) => q
            .spec()
            .from_sums(&summed.sums, &summed.noises, seed)
            .map(Outcome::Survival),
        Analysis::Table(q) => q
            .spec()
            .from_sums(&summed.sums, &summed.noises, seed)
            .map(Outcome::Table),
        Analysis::Regression(q) => match q.spec() {
            RegressionSpec::Linear(spec) => spec
                .from_sums(&summed.sums, &summed.noises)
                .map(Outcome::Regression),
            RegressionSpec::Logistic(spec) => spec
                .from_sums(&q.at(), &summed.sums, &summed.noises)
                .map(|step| Outcome::Regression(step.fit)),
        },
        Analysis::Logistic(q) => q
            .spec()?
            .from_sums(&summed.sums, &summed.noises)
            .map(Outcome::Regression),
    }
}

/// One logistic round's Newton step from the summed vectors.
pub fn logistic_step(analysis: &Analysis<'_>, summed: &Summed) -> Result<LogisticStep, Error> {
    match analysis {
        Analysis::Regression(q) => match q.spec() {
            RegressionSpec::Logistic(spec) => spec.from_sums(&q.at(), &summed.sums, &summed.noises),
            RegressionSpec::Linear(_) => Err(Error::Unusable(
                "a linear regression takes no Newton steps".into(),
            )),
        },
        _ => Err(Error::Unusable(
            "only a logistic regression takes Newton steps".into(),
        )),
    }
}

/// A fit's coefficients next to a reference's (intercept first): the
/// largest absolute difference, for accuracy tables.
pub fn largest_coefficient_gap(fit: &Fit, reference: &[f64]) -> f64 {
    fit.coefficients
        .iter()
        .zip(reference)
        .map(|(c, r)| (c.estimate - r).abs())
        .fold(0.0, f64::max)
}

/// The largest gap between two survival curves' values, bin by bin.
pub fn largest_survival_gap(curve: &[f64], reference: &[f64]) -> f64 {
    curve
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{Component, Mechanism};

    fn released(values: &[f64], scale: f64) -> Released {
        Released {
            value: None,
            values: vec![],
            ci95: None,
            ci95s: vec![],
            components: values
                .iter()
                .enumerate()
                .map(|(i, v)| Component {
                    name: component_name(i),
                    value: *v,
                    noise_scale: scale,
                    mechanism: Mechanism::DiscreteLaplace,
                    accuracy95: 0.0,
                })
                .collect(),
            epsilon_spent: 1.0,
            suppressed: false,
        }
    }

    #[test]
    fn parts_add_up_and_suppressed_ones_are_left_out() {
        let (a, b) = (released(&[1.0, 2.0], 2.0), released(&[3.0, 4.0], 2.0));
        let hidden = Released::suppressed(1.0);
        let parts = [
            Part {
                node: "a",
                released: &a,
            },
            Part {
                node: "b",
                released: &b,
            },
            Part {
                node: "c",
                released: &hidden,
            },
        ];
        let summed = add_up(2, &parts).unwrap();
        assert_eq!(summed.sums, vec![4.0, 6.0]);
        assert_eq!(summed.noises[0].contributors, 2);
        assert_eq!(summed.noises[0].variance(), 2.0 * 2.0 * 4.0);
        assert_eq!(summed.suppressed_nodes, vec!["c".to_string()]);
        assert_eq!(add_up(3, &parts).unwrap_err().error_code(), "wrong_length");
        let only_hidden = [Part {
            node: "c",
            released: &hidden,
        }];
        assert_eq!(
            add_up(2, &only_hidden).unwrap_err().error_code(),
            "unusable"
        );
    }
}

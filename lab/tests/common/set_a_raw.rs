//! The set-a patients as the raw files say (descriptors and outcomes), read by the analysis tests independently of the importer.

use std::collections::HashMap;
use std::path::Path;

use crate::common::outcomes_a;

/// One patient as the raw files say; NaN where they say -1 or nothing.
#[derive(Debug, Clone, Copy)]
pub struct Raw {
    pub age: f64,
    /// 0 female, 1 male.
    pub sex: f64,
    pub icu: f64,
    pub los: f64,
    pub death: f64,
}

pub fn number(text: &str) -> f64 {
    match text.trim() {
        "" | "-1" => f64::NAN,
        v => v.parse().unwrap_or(f64::NAN),
    }
}

/// Outcomes by record id: (length of stay, in-hospital death).
pub fn outcomes() -> HashMap<String, (f64, f64)> {
    let text = std::fs::read_to_string(outcomes_a()).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Some((
                f.first()?.trim().to_string(),
                (number(f.get(3)?), number(f.get(5)?)),
            ))
        })
        .collect()
}

/// A record file's descriptors, joined with its outcomes.
pub fn raw_of(path: &Path, outcomes: &HashMap<String, (f64, f64)>) -> Raw {
    let text = std::fs::read_to_string(path).unwrap();
    let mut found: HashMap<&str, f64> = HashMap::new();
    let mut id = String::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(param), Some(value)) = (f.get(1), f.get(2)) else {
            continue;
        };
        if *param == "RecordID" && id.is_empty() {
            id = value.trim().to_string();
        }
        if ["Age", "Gender", "ICUType"].contains(param) && !found.contains_key(param) {
            found.insert(param, number(value));
        }
    }
    let (los, death) = outcomes.get(&id).copied().unwrap_or((f64::NAN, f64::NAN));
    let get = |k: &str| found.get(k).copied().unwrap_or(f64::NAN);
    Raw {
        age: get("Age"),
        sex: get("Gender"),
        icu: get("ICUType"),
        los,
        death,
    }
}

/// The level (0 or 1) of a 0/1 descriptor, or None.
pub fn level01(v: f64) -> Option<usize> {
    [0.0, 1.0].iter().position(|x| *x == v)
}

/// The complete patients of a one-shot logistic regression `query` and
/// their rows twice: the covariates as its cells use them (a bounded number
/// as its bin's midpoint; what the noisy table estimates, and what the
/// coverage tests compare with) and as they are (a number clamped to its
/// bounds; how far the binning moves the coefficients). Age, sex and
/// `icu_type` are the covariates the raw files hold.
pub struct LogisticRows {
    pub binned: Vec<Vec<f64>>,
    pub clamped: Vec<Vec<f64>>,
    pub deaths: Vec<bool>,
}

pub fn logistic_rows(
    raws: &[Raw],
    query: &witmed_protocol::analysis::query::LogisticQuery,
) -> LogisticRows {
    use witmed_protocol::analysis::query::Source;
    let spec = query.spec().unwrap();
    let mut rows = LogisticRows {
        binned: vec![],
        clamped: vec![],
        deaths: vec![],
    };
    for r in raws {
        let values: Vec<f64> = query
            .sources()
            .iter()
            .take(query.covariates.len())
            .map(|s| match s {
                Source::Sex => r.sex,
                Source::Attribute("age") => r.age,
                Source::Attribute("icu_type") => r.icu,
                other => panic!("the raw files hold no {other:?}"),
            })
            .collect();
        let (Some(cell), Some(death)) = (spec.cell(&values), level01(r.death)) else {
            continue;
        };
        rows.binned.push(spec.row(cell));
        rows.clamped.push(
            query
                .covariates
                .iter()
                .zip(&values)
                .map(|(c, v)| {
                    let value = c.covariate().value(*v);
                    c.bounds.map_or(value, |b| value.clamp(b.lower, b.upper))
                })
                .collect(),
        );
        rows.deaths.push(death == 1);
    }
    rows
}

//! The federated query: who is counted, what one value each patient gives, how it is aggregated and protected.
//!
//! A query is built to keep the unit of privacy the patient: the cohort
//! selects patients, the feature reduces each patient to exactly one value,
//! the bounds clamp that value, and only then is anything aggregated.
//!
//! TOML form (the README documents it with examples):
//!
//! ```toml
//! version = 1
//! id = "hr-over-65"
//! purpose = "HMB"
//! aggregate = "mean"
//!
//! [cohort]
//! age_min = 65
//!
//! [feature.observation]
//! code = "8867-4"
//! reduce = "mean"
//!
//! [bounds]
//! lower = 30.0
//! upper = 200.0
//!
//! [privacy]
//! mode = "dp"
//! epsilon = 1.0
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use witmed_crypto::versioned;

pub use crate::observation::{ObservationFeature, Reduce, Window};

use crate::analysis::query::{Analysis, LogisticQuery, RegressionQuery, SurvivalQuery, TableQuery};
use crate::vocab::{
    category_of_attribute, category_of_code, known_attribute_names, Category, Mode, Sex,
};

/// Query format version written today: 2 added the analysis aggregates
/// (`survival`, `table`, `regression`), 3 the one-shot `logistic` (a cell
/// table). Each version's layout is the next one's without the variants it
/// added, appended last, so an older query reads with today's layout
/// unchanged (same bytes, same digest) and [`Query::validate`] refuses the
/// newer variants under an older version.
pub const QUERY_VERSION: u32 = 3;
/// The version of the survival, table and (Newton) regression analyses.
pub const QUERY_VERSION_2: u32 = 2;
/// The version of queries without an analysis, which nodes of every release read.
pub const QUERY_VERSION_1: u32 = 1;
/// Longest accepted query id.
pub const MAX_ID_LEN: usize = 128;
/// Most histogram bins a query may ask for.
pub const MAX_BINS: usize = 64;
/// Largest epsilon one query may ask for: beyond this DP protects little.
pub const MAX_EPSILON: f64 = 10.0;
/// Most hospitals one encrypted total may add up (what the encryption decodes exactly).
pub const MAX_CONTRIBUTORS: u32 = 127;
/// Largest query file or wire message accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// A query, as written by a researcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Format version ([`QUERY_VERSION`]).
    pub version: u32,
    /// Unique id chosen by the researcher; a node charges each id once.
    pub id: String,
    /// GA4GH DUO purpose code, e.g. `HMB` or `DS-C0011849`.
    pub purpose: String,
    /// How the per-patient values are combined.
    pub aggregate: Aggregate,
    /// Which patients are counted.
    #[serde(default)]
    pub cohort: Cohort,
    /// The one value per patient; `None` counts patients.
    #[serde(default)]
    pub feature: Option<Feature>,
    /// Clamping bounds of the per-patient value (required unless counting).
    #[serde(default)]
    pub bounds: Option<Bounds>,
    /// Privacy mode and parameters.
    pub privacy: Privacy,
}

/// Patient selection. Every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    /// Minimum age in years, inclusive.
    #[serde(default)]
    pub age_min: Option<f64>,
    /// Maximum age in years, inclusive.
    #[serde(default)]
    pub age_max: Option<f64>,
    /// Only this sex.
    #[serde(default)]
    pub sex: Option<Sex>,
    /// Patient has at least one of these condition codes (SNOMED CT).
    #[serde(default)]
    pub conditions: Vec<String>,
    /// Patient has at least one observation of each of these LOINC codes.
    #[serde(default)]
    pub has_observation: Vec<String>,
    /// Attribute ranges, e.g. `{ name = "icu_type", min = 3, max = 3 }`.
    #[serde(default)]
    pub attributes: Vec<AttributeRange>,
}

/// An inclusive range on a patient attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeRange {
    pub name: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// The one value each patient contributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feature {
    /// Observations of one LOINC code, reduced over a time window.
    Observation(ObservationFeature),
    /// A patient attribute (`age`, `length_of_stay_days`, `in_hospital_death`...).
    Attribute(AttributeFeature),
}

/// A named attribute as the feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeFeature {
    pub name: String,
}

/// How per-patient values are aggregated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Number of patients (with a value of the feature, if one is given).
    Count,
    /// Sum of clamped values.
    Sum,
    /// Mean of clamped values (noisy sum over noisy count).
    Mean,
    /// Counts per bin; `edges` are strictly increasing, values outside go to the end bins.
    Histogram { edges: Vec<f64> },
    /// Quantiles estimated from a noisy histogram of `bins` equal bins over the bounds.
    Quantiles { probabilities: Vec<f64>, bins: u32 },
    /// Kaplan-Meier curves and the log-rank test (version 2).
    Survival(Box<SurvivalQuery>),
    /// A contingency table, chi-square test and odds ratio (version 2).
    Table(Box<TableQuery>),
    /// Linear or logistic regression (version 2).
    Regression(Box<RegressionQuery>),
    /// One-shot logistic regression from a noisy cell table (version 3).
    Logistic(Box<LogisticQuery>),
}

impl Aggregate {
    /// The kind's name, as node policies list the kinds they allow.
    pub fn kind(&self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Mean => "mean",
            Aggregate::Histogram { .. } => "histogram",
            Aggregate::Quantiles { .. } => "quantiles",
            Aggregate::Survival(_) => "survival",
            Aggregate::Table(_) => "table",
            // A kind of regression to node policies.
            Aggregate::Regression(_) | Aggregate::Logistic(_) => "regression",
        }
    }

    /// The analysis this aggregate asks for, if it is one of the three.
    pub fn analysis(&self) -> Option<Analysis<'_>> {
        match self {
            Aggregate::Survival(q) => Some(Analysis::Survival(q)),
            Aggregate::Table(q) => Some(Analysis::Table(q)),
            Aggregate::Regression(q) => Some(Analysis::Regression(q)),
            Aggregate::Logistic(q) => Some(Analysis::Logistic(q)),
            _ => None,
        }
    }
}

/// Clamping bounds of the per-patient value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub lower: f64,
    pub upper: f64,
}

/// Privacy parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    pub mode: Mode,
    /// Privacy-loss parameter the answer may spend at each node.
    pub epsilon: f64,
    /// For approximate-DP mechanisms; witmed's mechanisms are pure DP, so 0.
    #[serde(default)]
    pub delta: Option<f64>,
    /// Encrypted mode: the peer (node name) that sums the ciphertexts.
    #[serde(default)]
    pub aggregator: Option<String>,
    /// Encrypted mode: the study whose public key encrypts the shares (hex id from `witmed study keygen`).
    #[serde(default)]
    pub study: Option<String>,
    /// Encrypted mode: each hospital adds the noise share of `min_hospitals`
    /// contributors, and the aggregator releases no total over fewer.
    #[serde(default)]
    pub min_hospitals: Option<u32>,
}

/// Default delta of encrypted mode when the query gives none.
pub const DEFAULT_ENCRYPTED_DELTA: f64 = 1e-6;
/// Largest delta a query may ask for: beyond this (epsilon, delta)-DP protects little.
pub const MAX_DELTA: f64 = 1e-3;

impl Privacy {
    /// Delta to spend: the query's, or [`DEFAULT_ENCRYPTED_DELTA`] in encrypted mode.
    pub fn delta_or_default(&self) -> f64 {
        match (self.mode, self.delta) {
            (_, Some(delta)) => delta,
            (Mode::Encrypted, None) => DEFAULT_ENCRYPTED_DELTA,
            (Mode::Dp, None) => 0.0,
        }
    }
}

/// Why a query is not well formed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("query file is not valid TOML for a witmed query: {0}")]
    Toml(String),
    #[error("query bytes do not decode: {0}")]
    Wire(String),
    #[error("query is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error(
        "query has version {0}; this witmed reads versions {QUERY_VERSION_1} to {QUERY_VERSION}"
    )]
    UnsupportedVersion(u32),
    #[error("query is invalid: {0}")]
    Invalid(String),
    /// An analysis the numerics refuse; `code` is [`crate::analysis::Error::error_code`].
    #[error("query is invalid ({code}): {message}")]
    Analysis { code: &'static str, message: String },
}

impl versioned::Evolving for Query {
    const WHAT: &'static str = "query";
    const CURRENT: u32 = QUERY_VERSION;
    fn from_version(version: u32, layout: versioned::Layout<'_>) -> Result<Self, versioned::Error> {
        match version {
            // Version 1 is version 2's layout without the analysis variants;
            // validation refuses them under version 1.
            QUERY_VERSION | QUERY_VERSION_2 | QUERY_VERSION_1 => layout.read::<Self>(),
            found => Err(versioned::unknown::<Self>(found)),
        }
    }
}

impl Query {
    /// Parses and validates the TOML form.
    pub fn from_toml(text: &str) -> Result<Query, Error> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(Error::TooLarge {
                len: text.len(),
                max: MAX_QUERY_BYTES,
            });
        }
        let query: Query = toml::from_str(text).map_err(|e| Error::Toml(e.to_string()))?;
        query.validate()?;
        Ok(query)
    }

    /// The TOML form.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("queries serialize to TOML")
    }

    /// Canonical compact bytes (postcard); what is signed and digested.
    pub fn to_wire(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("queries serialize")
    }

    /// Parses and validates the wire form.
    pub fn from_wire(bytes: &[u8]) -> Result<Query, Error> {
        if bytes.len() > MAX_QUERY_BYTES {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: MAX_QUERY_BYTES,
            });
        }
        let query: Query = versioned::decode(bytes).map_err(|e| match e {
            versioned::Error::Newer { found, .. } | versioned::Error::Obsolete { found, .. } => {
                Error::UnsupportedVersion(found)
            }
            other => Error::Wire(other.to_string()),
        })?;
        query.validate()?;
        Ok(query)
    }

    /// SHA-256 of the canonical bytes: a node refuses a second, different query under a used id.
    pub fn digest(&self) -> [u8; 32] {
        witmed_crypto::sha256(&self.to_wire())
    }

    /// The data categories this query reads, for consent and policy checks.
    pub fn categories(&self) -> BTreeSet<Category> {
        let mut out = BTreeSet::new();
        let c = &self.cohort;
        if c.age_min.is_some() || c.age_max.is_some() || c.sex.is_some() {
            out.insert(Category::Demographics);
        }
        if !c.conditions.is_empty() {
            out.insert(Category::Conditions);
        }
        out.extend(c.has_observation.iter().map(|code| category_of_code(code)));
        out.extend(
            c.attributes
                .iter()
                .filter_map(|a| category_of_attribute(&a.name)),
        );
        match &self.feature {
            Some(Feature::Observation(o)) => {
                out.insert(category_of_code(&o.code));
            }
            Some(Feature::Attribute(a)) => out.extend(category_of_attribute(&a.name)),
            None => {}
        }
        if let Some(analysis) = self.aggregate.analysis() {
            out.extend(analysis.categories());
        }
        out
    }

    /// Checks everything that can be checked without data.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::Invalid(msg));
        if !(QUERY_VERSION_1..=QUERY_VERSION).contains(&self.version) {
            return Err(Error::UnsupportedVersion(self.version));
        }
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN {
            return invalid(format!("id must be 1 to {MAX_ID_LEN} characters"));
        }
        if self.purpose.is_empty() {
            return invalid("purpose must name a DUO code such as HMB".into());
        }
        self.validate_privacy()?;
        self.validate_cohort()?;
        self.validate_feature()?;
        match self.aggregate.analysis() {
            Some(analysis) => self.validate_analysis(&analysis),
            None => self.validate_aggregate(),
        }
    }

    /// An analysis reads its own variables: no `[feature]` or `[bounds]`,
    /// and version 2.
    fn validate_analysis(&self, analysis: &Analysis<'_>) -> Result<(), Error> {
        let kind = self.aggregate.kind();
        let (needed, table) = match analysis {
            Analysis::Logistic(_) => (QUERY_VERSION, "logistic"),
            _ => (QUERY_VERSION_2, kind),
        };
        if self.version < needed {
            return Err(Error::Invalid(format!(
                "a query with [aggregate.{table}] needs version = {needed}"
            )));
        }
        if self.feature.is_some() || self.bounds.is_some() {
            return Err(Error::Invalid(format!(
                "a {kind} query names its variables in [aggregate.{table}]; remove [feature] and [bounds]"
            )));
        }
        analysis.validate().map_err(|e| Error::Analysis {
            code: e.error_code(),
            message: e.to_string(),
        })
    }

    fn validate_privacy(&self) -> Result<(), Error> {
        let eps = self.privacy.epsilon;
        if !(eps.is_finite() && eps > 0.0 && eps <= MAX_EPSILON) {
            return Err(Error::Invalid(format!(
                "privacy.epsilon must be in (0, {MAX_EPSILON}], got {eps}"
            )));
        }
        if let Some(delta) = self.privacy.delta {
            if !(0.0..=MAX_DELTA).contains(&delta) {
                return Err(Error::Invalid(format!(
                    "privacy.delta must be in [0, {MAX_DELTA}], got {delta}"
                )));
            }
        }
        match self.privacy.mode {
            Mode::Encrypted => self.validate_encrypted(),
            Mode::Dp => Ok(()),
        }
    }

    fn validate_encrypted(&self) -> Result<(), Error> {
        let invalid = |msg: &str| Err(Error::Invalid(format!("encrypted mode: {msg}")));
        if !matches!(
            self.aggregate,
            Aggregate::Count
                | Aggregate::Sum
                | Aggregate::Histogram { .. }
                | Aggregate::Survival(_)
                | Aggregate::Table(_)
                | Aggregate::Regression(_)
                | Aggregate::Logistic(_)
        ) {
            return invalid(
                "only count, sum, histogram, survival, table and regression add up under encryption",
            );
        }
        let p = &self.privacy;
        if p.aggregator.as_deref().is_none_or(str::is_empty) {
            return invalid("privacy.aggregator must name the member that sums the ciphertexts");
        }
        let study_ok = p
            .study
            .as_deref()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        if !study_ok {
            return invalid(
                "privacy.study must be the 64-hex-digit id printed by `witmed study keygen`",
            );
        }
        if !matches!(p.min_hospitals, Some(1..=MAX_CONTRIBUTORS)) {
            return invalid(&format!(
                "privacy.min_hospitals must be 1 to {MAX_CONTRIBUTORS}: each hospital adds the noise share of that many, and no total over fewer is released"
            ));
        }
        if p.delta_or_default() <= 0.0 {
            return invalid(
                "privacy.delta must be above 0 (the Gaussian shares give (epsilon, delta)-DP)",
            );
        }
        Ok(())
    }

    fn validate_cohort(&self) -> Result<(), Error> {
        // A NaN bound silently selects nobody, and has no faithful TOML form
        // (found by fuzzing: the wire and TOML forms of one query differed).
        let bounds = [
            ("age_min", self.cohort.age_min),
            ("age_max", self.cohort.age_max),
        ]
        .into_iter()
        .chain(
            self.cohort
                .attributes
                .iter()
                .flat_map(|a| [("attribute min", a.min), ("attribute max", a.max)]),
        );
        for (name, bound) in bounds {
            if bound.is_some_and(|b| !b.is_finite()) {
                return Err(Error::Invalid(format!(
                    "cohort {name} must be a finite number; leave it out for no bound"
                )));
            }
        }
        for attr in &self.cohort.attributes {
            if category_of_attribute(&attr.name).is_none() {
                return Err(Error::Invalid(format!(
                    "cohort attribute {:?} is unknown; known attributes: {}",
                    attr.name,
                    known_attribute_names()
                )));
            }
        }
        Ok(())
    }

    fn validate_feature(&self) -> Result<(), Error> {
        match &self.feature {
            Some(Feature::Attribute(a)) if category_of_attribute(&a.name).is_none() => {
                Err(Error::Invalid(format!(
                    "feature attribute {:?} is unknown; known attributes: {}",
                    a.name,
                    known_attribute_names()
                )))
            }
            Some(Feature::Observation(o)) if o.code.is_empty() => {
                Err(Error::Invalid("feature.observation.code is empty".into()))
            }
            Some(Feature::Observation(ObservationFeature {
                window: Some(w), ..
            })) if !(w.from_hours.is_finite()
                && w.to_hours.is_finite()
                && w.from_hours < w.to_hours) =>
            {
                Err(Error::Invalid(
                    "feature window needs from_hours < to_hours".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    fn validate_aggregate(&self) -> Result<(), Error> {
        let needs_value = !matches!(self.aggregate, Aggregate::Count);
        if needs_value && self.feature.is_none() {
            return Err(Error::Invalid(format!(
                "a {} needs a [feature]",
                self.aggregate.kind()
            )));
        }
        let needs_bounds = matches!(
            self.aggregate,
            Aggregate::Sum | Aggregate::Mean | Aggregate::Quantiles { .. }
        );
        if needs_bounds && self.bounds.is_none() {
            return Err(Error::Invalid(format!(
                "a {} needs [bounds] to clamp each patient's value",
                self.aggregate.kind()
            )));
        }
        if let Some(b) = self.bounds {
            if !(b.lower.is_finite() && b.upper.is_finite() && b.lower < b.upper) {
                return Err(Error::Invalid("bounds need finite lower < upper".into()));
            }
        }
        match &self.aggregate {
            Aggregate::Histogram { edges } => validate_edges(edges),
            Aggregate::Quantiles {
                probabilities,
                bins,
            } => validate_quantiles(probabilities, *bins),
            _ => Ok(()),
        }
    }
}

fn validate_edges(edges: &[f64]) -> Result<(), Error> {
    if edges.len() < 2 || edges.len() > MAX_BINS + 1 {
        return Err(Error::Invalid(format!(
            "histogram needs 2 to {} edges",
            MAX_BINS + 1
        )));
    }
    let increasing = edges.windows(2).all(|w| w[0] < w[1]);
    if !increasing || edges.iter().any(|e| !e.is_finite()) {
        return Err(Error::Invalid(
            "histogram edges must be finite and strictly increasing".into(),
        ));
    }
    Ok(())
}

fn validate_quantiles(probabilities: &[f64], bins: u32) -> Result<(), Error> {
    if probabilities.is_empty() || probabilities.iter().any(|p| !(*p > 0.0 && *p < 1.0)) {
        return Err(Error::Invalid(
            "quantile probabilities must be in (0, 1)".into(),
        ));
    }
    if bins < 2 || bins as usize > MAX_BINS {
        return Err(Error::Invalid(format!(
            "quantiles need 2 to {MAX_BINS} bins"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's example query.
    fn hr_over_65() -> String {
        crate::examples::mean_heart_rate_over_65("hr-over-65", "HMB", 1.0)
    }

    /// Regression (fuzz target query-wire, crashes/query-wire-violation-0.bin):
    /// a cohort bound that is NaN passed validation on the wire, and its TOML
    /// form decoded to another query (NaN payloads do not survive TOML).
    #[test]
    fn fuzz_query_wire_nan_cohort_bound_is_refused() {
        let found: [u8; 71] = [
            1, 9, 99, 111, 117, 110, 116, 45, 105, 99, 117, 3, 72, 77, 66, 0, 0, 0, 0, 0, 1, 6, 56,
            56, 54, 55, 45, 52, 1, 8, 105, 99, 117, 95, 116, 121, 112, 101, 1, 0, 102, 102, 1, 255,
            255, 255, 255, 1, 0, 0, 0, 0, 0, 0, 8, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 224, 63, 0, 0, 0,
            0,
        ];
        let err = Query::from_wire(&found).unwrap_err().to_string();
        assert!(
            err.contains("cohort attribute min must be a finite number"),
            "{err}"
        );
        for bound in [
            "age_min = nan",
            "age_max = inf",
            "attributes = [{ name = \"icu_type\", max = -inf }]",
        ] {
            let text = hr_over_65().replace("age_min = 65", bound);
            let err = Query::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains("must be a finite number"), "{bound}: {err}");
        }
    }

    #[test]
    fn readme_example_parses_and_round_trips() {
        let q = Query::from_toml(&hr_over_65()).unwrap();
        assert_eq!(q.aggregate, Aggregate::Mean);
        assert_eq!(Query::from_wire(&q.to_wire()).unwrap(), q);
        assert_eq!(Query::from_toml(&q.to_toml()).unwrap(), q);
        let cats: Vec<_> = q.categories().into_iter().collect();
        assert_eq!(cats, vec![Category::Demographics, Category::VitalSigns]);
    }

    fn check_invalid(edit: &str, needle: &str) {
        let text = hr_over_65().replace("epsilon = 1.0", edit);
        let err = Query::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{edit}: {err}");
    }

    #[test]
    fn invalid_queries_name_what_is_wrong() {
        check_invalid("epsilon = 0.0", "epsilon");
        check_invalid("epsilon = 50.0", "epsilon");
        check_invalid("epsilon = 1.0\ndelta = 2.0", "delta");
        check_invalid("epsilon = 1.0\nbogus = 1", "bogus");
        let no_bounds = hr_over_65().replace("[bounds]\nlower = 30.0\nupper = 200.0\n", "");
        assert!(Query::from_toml(&no_bounds)
            .unwrap_err()
            .to_string()
            .contains("bounds"));
        let bad_edges = hr_over_65().replace(
            "aggregate = \"mean\"",
            "[aggregate.histogram]\nedges = [3.0, 2.0]",
        );
        assert!(Query::from_toml(&bad_edges).is_err());
    }

    const ENCRYPTED_COUNT: &str = r#"
version = 1
id = "n"
purpose = "HMB"
aggregate = "count"

[privacy]
mode = "encrypted"
epsilon = 1.0
aggregator = "north"
study = "0000000000000000000000000000000000000000000000000000000000000000"
min_hospitals = 3
"#;

    #[test]
    fn an_unknown_attribute_is_refused_with_the_known_ones() {
        let cohort = hr_over_65().replace(
            "age_min = 65",
            "attributes = [{ name = \"bmi\", min = 20 }]",
        );
        let feature = hr_over_65().replace(
            "[feature.observation]\ncode = \"8867-4\"\nreduce = \"mean\"",
            "[feature.attribute]\nname = \"bmi\"",
        );
        for (text, what) in [(cohort, "cohort attribute"), (feature, "feature attribute")] {
            let err = Query::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("{what} \"bmi\" is unknown")), "{err}");
            for known in crate::vocab::ATTRIBUTES {
                assert!(
                    err.contains(known.name),
                    "{err} does not list {}",
                    known.name
                );
            }
        }
    }

    #[test]
    fn encrypted_queries_need_aggregator_study_and_min_hospitals() {
        let q = Query::from_toml(ENCRYPTED_COUNT).unwrap();
        assert_eq!(q.privacy.delta_or_default(), DEFAULT_ENCRYPTED_DELTA);
        let cases = [
            ("aggregator = \"north\"\n", "privacy.aggregator"),
            ("min_hospitals = 3\n", "privacy.min_hospitals"),
            (
                "study = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
                "privacy.study",
            ),
        ];
        for (remove, needle) in cases {
            let err = Query::from_toml(&ENCRYPTED_COUNT.replace(remove, ""))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{remove}: {err}");
        }
        let zero = ENCRYPTED_COUNT.replace("min_hospitals = 3", "min_hospitals = 0");
        assert!(Query::from_toml(&zero).is_err());
        let no_delta = ENCRYPTED_COUNT.replace("epsilon = 1.0", "epsilon = 1.0\ndelta = 0.0");
        assert!(Query::from_toml(&no_delta)
            .unwrap_err()
            .to_string()
            .contains("delta"));
        let mean = hr_over_65().replace("mode = \"dp\"", "mode = \"encrypted\"");
        let err = Query::from_toml(&mean).unwrap_err().to_string();
        assert!(err.contains("only count, sum, histogram"), "{err}");
    }

    /// Version 1 queries read exactly as before; the analyses need version 2.
    #[test]
    fn version_1_queries_keep_their_bytes_and_analyses_need_version_2() {
        let old = Query::from_toml(&hr_over_65()).unwrap();
        assert_eq!(old.version, QUERY_VERSION_1);
        assert_eq!(
            Query::from_wire(&old.to_wire()).unwrap().to_wire(),
            old.to_wire()
        );
        let survival = crate::examples::survival_by_icu_type("km", 1.0);
        let as_v1 = survival.replace("version = 2", "version = 1");
        let err = Query::from_toml(&as_v1).unwrap_err().to_string();
        assert!(err.contains("needs version = 2"), "{err}");
        let v4 = survival.replace("version = 2", "version = 4");
        assert_eq!(
            Query::from_toml(&v4).unwrap_err(),
            Error::UnsupportedVersion(4)
        );
        // Version 3 reads version 2's analyses the same, and adds the one-shot logistic.
        let v3 = Query::from_toml(&survival.replace("version = 2", "version = 3")).unwrap();
        let v2 = Query::from_toml(&survival).unwrap();
        assert_eq!(v3.aggregate, v2.aggregate);
        let cells = crate::examples::death_on_age_sex_icu("lr", 1.0);
        let err = Query::from_toml(&cells.replace("version = 3", "version = 2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[aggregate.logistic] needs version = 3"),
            "{err}"
        );
    }

    /// Bad analyses are refused before anything is charged, each with the numerics' stable code.
    #[test]
    fn bad_analyses_are_refused_with_a_stable_code() {
        let survival = crate::examples::survival_by_icu_type("km", 1.0);
        let table = crate::examples::sex_by_death("t", 1.0);
        let logistic = crate::examples::death_on_age_sex_icu_newton("r", 1.0);
        let cells = crate::examples::death_on_age_sex_icu("c", 1.0);
        let many_bins: Vec<String> = (0..70).map(|i| format!("{i}.0")).collect();
        let cases = [
            (survival.replace("\"icu_type\"", "\"bmi\""), "unknown_variable"),
            (survival.replace("event = \"in_hospital_death\"", "event = \"age\""), "unknown_variable"),
            (survival.replace("0.0, 2.0, 4.0", "4.0, 2.0, 0.0"), "bad_bins"),
            (survival.replace("0.0, 2.0, 4.0", &many_bins.join(", ")), "too_large"),
            (table.replace("{ name = \"sex\" }, ", ""), "too_small"),
            (
                table.replace(
                    "{ name = \"sex\" }",
                    "{ name = \"age\", edges = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0] }, { name = \"icu_type\" }",
                ),
                "too_large",
            ),
            (logistic.replace(", bounds = { lower = 15.0, upper = 90.0 }", ""), "missing_bounds"),
            (logistic.replace("lower = 15.0", "lower = 95.0"), "bad_bounds"),
            (logistic.replace("rounds = 3", "rounds = 9"), "too_large"),
            (logistic.replace("\"icu_type=4\"", "\"icu_type=3\""), "unknown_variable"),
            (
                logistic.replace(
                    "{ name = \"sex\" },",
                    "{ name = \"sex\" }, { name = \"sofa\", bounds = { lower = 0.0, upper = 24.0 } }, { name = \"saps1\", bounds = { lower = 0.0, upper = 60.0 } }, { name = \"weight_kg\", bounds = { lower = 30.0, upper = 200.0 } }, { name = \"height_cm\", bounds = { lower = 120.0, upper = 220.0 } },",
                ),
                "too_large",
            ),
            (cells.replace(", bins = 5", ""), "missing_bins"),
            (cells.replace("bins = 5", "bins = 1"), "singular_design"),
            (cells.replace("bins = 5", "bins = 40"), "too_large"),
            (
                cells.replace(
                    "{ name = \"sex\" },",
                    "{ name = \"sex\" }, { name = \"sofa\", bounds = { lower = 0.0, upper = 24.0 }, bins = 24 },",
                ),
                "too_large",
            ),
        ];
        for (text, code) in cases {
            match Query::from_toml(&text) {
                Err(Error::Analysis {
                    code: found,
                    message,
                }) => {
                    assert_eq!(found, code, "{message}\n{text}")
                }
                other => panic!("expected {code}, got {other:?}\n{text}"),
            }
        }
        let with_feature =
            table.replace("[privacy]", "[bounds]\nlower = 0.0\nupper = 1.0\n[privacy]");
        let err = Query::from_toml(&with_feature).unwrap_err().to_string();
        assert!(err.contains("remove [feature] and [bounds]"), "{err}");
    }

    #[test]
    fn digest_changes_with_any_field() {
        let q = Query::from_toml(&hr_over_65()).unwrap();
        let mut other = q.clone();
        other.privacy.epsilon = 1.5;
        assert_ne!(q.digest(), other.digest());
    }
}

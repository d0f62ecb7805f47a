//! The analyses as query aggregates: what a researcher writes in a query's `[aggregate.survival]`, `[aggregate.table]` or `[aggregate.regression]`, validated, and the specs they map to.
//!
//! A variable names where a patient's value comes from; the node reads that
//! raw value (one `f64` per patient, NaN when unknown, see [`Factor::raw`]'s
//! conventions) and these types turn it into a level or a bounded number. So
//! the data mapping is the same at every hospital and checked here, before
//! anything is charged.
//!
//! ```toml
//! [aggregate.survival]
//! time = "length_of_stay_days"
//! event = "in_hospital_death"
//! bin_edges = [0.0, 3.0, 7.0, 14.0, 30.0, 60.0]
//! group = { name = "icu_type" }
//! ```
//!
//! Raw values: `sex` is 0 (female) or 1 (male), NaN otherwise; an attribute
//! is its stored value; `conditions` is 1 when the patient has one of the
//! codes, else 0; an observation feature is its reduced value or NaN.

use serde::{Deserialize, Serialize};

use super::cells::{self, Kind};
use super::regression::{self, LinearSpec, LogisticSpec};
use super::{at_least, at_most, check_names, MAX_COVARIATES, MAX_LOGISTIC_CELLS};
use super::{survival, table, Bounds, Error, Sensitivity, MAX_NEWTON_ROUNDS};
use crate::observation::ObservationFeature;
use crate::vocab::{self, Category};

/// The name that reads a patient's recorded sex (0 female, 1 male).
pub const SEX: &str = "sex";
/// Most levels one variable may list by value.
pub const MAX_LEVELS: usize = 32;
/// Newton rounds of a logistic regression when the query names none.
pub const DEFAULT_ROUNDS: u32 = 3;

/// Where a patient's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source<'a> {
    /// The patient's recorded sex: 0 female, 1 male, NaN otherwise.
    Sex,
    /// A stored attribute (`age` included).
    Attribute(&'a str),
    /// 1 when the patient has one of these condition codes, else 0.
    Conditions(&'a [String]),
    /// A per-patient observation feature.
    Observation(&'a ObservationFeature),
}

/// One categorical variable: a table's dimension or a survival grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factor {
    /// `sex`, an attribute (`icu_type`, `in_hospital_death`, `age`...), or a
    /// label for `conditions` or `observation`.
    pub name: String,
    /// One level per listed value (e.g. icu_type `[1, 2, 3, 4]`); flags and
    /// `icu_type` default to their known values.
    #[serde(default)]
    pub values: Vec<f64>,
    /// Bands instead of values: level i is `[edges[i], edges[i + 1])`, the
    /// last band also takes its upper edge (e.g. age `[18, 45, 65, 80, 120]`).
    #[serde(default)]
    pub edges: Vec<f64>,
    /// Two levels, `no` and `yes`: whether the patient has one of these condition codes.
    #[serde(default)]
    pub conditions: Vec<String>,
    /// A per-patient observation feature, banded by `edges`.
    #[serde(default)]
    pub observation: Option<ObservationFeature>,
}

/// What a survival analysis asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurvivalQuery {
    /// Attribute holding the time of the event or of censoring (e.g. `length_of_stay_days`).
    pub time: String,
    /// 0/1 attribute, 1 when the event happened at `time` (e.g. `in_hospital_death`).
    pub event: String,
    /// Time bin edges, strictly increasing.
    pub bin_edges: Vec<f64>,
    /// One curve per level of this variable; one curve when absent.
    #[serde(default)]
    pub group: Option<Factor>,
}

/// What a contingency table asks: two or three categorical variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableQuery {
    pub variables: Vec<Factor>,
}

/// Linear or logistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Linear,
    Logistic,
}

/// A bounded number of a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Covariate {
    /// An attribute; `sex` (1 male, 0 female); `NAME=VALUE`, 1 when
    /// attribute NAME equals VALUE, else 0 (e.g. `icu_type=3`); or a label for `observation`.
    pub name: String,
    #[serde(default)]
    pub observation: Option<ObservationFeature>,
    /// Clamping bounds; required except for `sex` and `NAME=VALUE`, which are 0/1.
    #[serde(default)]
    pub bounds: Option<Bounds>,
}

/// One Newton round of a logistic regression: which, and at what coefficients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Round {
    /// 1 to `rounds`.
    pub number: u32,
    /// Coefficients on the [-1, 1] scale the previous round's step returned (zero for round 1).
    pub at: Vec<f64>,
}

/// What a regression asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionQuery {
    pub model: Model,
    /// Linear: a bounded number; logistic: a 0/1 attribute (no bounds).
    pub outcome: Covariate,
    pub covariates: Vec<Covariate>,
    /// Logistic: Newton rounds, each a query of its own at epsilon / rounds
    /// (default [`DEFAULT_ROUNDS`]).
    #[serde(default)]
    pub rounds: Option<u32>,
    /// Logistic: the round this query is; the researcher's client fills it in.
    #[serde(default)]
    pub round: Option<Round>,
}

impl Factor {
    /// Where the value comes from.
    pub fn source(&self) -> Source<'_> {
        if let Some(o) = &self.observation {
            Source::Observation(o)
        } else if !self.conditions.is_empty() {
            Source::Conditions(&self.conditions)
        } else if self.name == SEX {
            Source::Sex
        } else {
            Source::Attribute(&self.name)
        }
    }

    /// Checks the variable names a known source and has at least `min_levels` levels.
    pub fn validate(&self, min_levels: usize) -> Result<(), Error> {
        let unknown = || Error::UnknownVariable(self.name.clone());
        if self.name.trim().is_empty() {
            return Err(unknown());
        }
        let given = [
            !self.values.is_empty(),
            !self.edges.is_empty(),
            !self.conditions.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::BadBins(format!(
                "variable {:?} gives more than one of values, edges and conditions; give one",
                self.name
            )));
        }
        match self.source() {
            Source::Observation(o) if o.code.is_empty() || self.edges.is_empty() => {
                return Err(Error::BadBins(format!(
                    "observation variable {:?} needs a code and edges to band it",
                    self.name
                )))
            }
            Source::Sex | Source::Conditions(_)
                if !self.values.is_empty() || !self.edges.is_empty() =>
            {
                return Err(Error::BadBins(format!(
                    "variable {:?} has fixed levels; give no values or edges",
                    self.name
                )))
            }
            Source::Attribute(name) if vocab::attribute(name).is_none() => return Err(unknown()),
            Source::Attribute(name)
                if self.values.is_empty()
                    && self.edges.is_empty()
                    && default_values(name).is_none() =>
            {
                return Err(Error::BadBins(format!(
                    "variable {name:?} is a number; give values (one level each) or edges (bands)"
                )))
            }
            _ => {}
        }
        if !self.edges.is_empty() {
            check_edges(&self.name, &self.edges)?;
        }
        if !self.values.is_empty() {
            check_values(&self.name, &self.values)?;
        }
        super::at_least("levels of a variable", self.levels(), min_levels)
    }

    /// The values listed, or the known ones of a flag or code attribute.
    fn values(&self) -> Vec<f64> {
        if !self.values.is_empty() {
            return self.values.clone();
        }
        default_values(&self.name).unwrap_or_default()
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        match self.source() {
            Source::Sex | Source::Conditions(_) => 2,
            _ if !self.edges.is_empty() => self.edges.len().saturating_sub(1),
            _ => self.values().len(),
        }
    }

    /// The level of a patient's raw value, `None` when it has none (such a
    /// patient is left out of the analysis, and not charged).
    pub fn level(&self, raw: f64) -> Option<usize> {
        if raw.is_nan() {
            return None;
        }
        match self.source() {
            Source::Sex | Source::Conditions(_) => [0.0, 1.0].iter().position(|v| *v == raw),
            _ if !self.edges.is_empty() => super::level_of(&self.edges, raw),
            _ => self.values().iter().position(|v| *v == raw),
        }
    }

    /// A readable label of each level.
    pub fn labels(&self) -> Vec<String> {
        match self.source() {
            Source::Sex => vec!["female".into(), "male".into()],
            Source::Conditions(_) => {
                vec![format!("{}=no", self.name), format!("{}=yes", self.name)]
            }
            _ if !self.edges.is_empty() => self
                .edges
                .windows(2)
                .map(|w| format!("{} [{}, {})", self.name, w[0], w[1]))
                .collect(),
            _ => self
                .values()
                .iter()
                .map(|v| format!("{}={v}", self.name))
                .collect(),
        }
    }

    fn category(&self) -> Option<Category> {
        source_category(&self.source())
    }
}

/// The known levels of flag and code attributes.
fn default_values(name: &str) -> Option<Vec<f64>> {
    match name {
        vocab::ATTR_IN_HOSPITAL_DEATH | vocab::ATTR_DECEASED => Some(vec![0.0, 1.0]),
        vocab::ATTR_ICU_TYPE => Some(vec![1.0, 2.0, 3.0, 4.0]),
        _ => None,
    }
}

fn check_edges(name: &str, edges: &[f64]) -> Result<(), Error> {
    super::at_most("band edges", edges.len(), MAX_LEVELS + 1)?;
    if edges.len() < 2
        || edges.iter().any(|e| !e.is_finite())
        || edges.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(Error::BadBins(format!(
            "edges of {name:?} must be two or more finite numbers in strictly increasing order"
        )));
    }
    Ok(())
}

fn check_values(name: &str, values: &[f64]) -> Result<(), Error> {
    super::at_most("values of a variable", values.len(), MAX_LEVELS)?;
    let distinct = values
        .iter()
        .enumerate()
        .all(|(i, v)| values.iter().skip(i + 1).all(|w| w != v));
    if values.iter().any(|v| !v.is_finite()) || !distinct {
        return Err(Error::BadBins(format!(
            "values of {name:?} must be distinct finite numbers"
        )));
    }
    Ok(())
}

pub(super) fn source_category(source: &Source<'_>) -> Option<Category> {
    match source {
        Source::Sex => Some(Category::Demographics),
        Source::Attribute(name) => vocab::category_of_attribute(name),
        Source::Conditions(_) => Some(Category::Conditions),
        Source::Observation(o) => Some(vocab::category_of_code(&o.code)),
    }
}

/// A 0/1 attribute: a survival event or a logistic outcome.
pub(super) fn check_flag(name: &str) -> Result<(), Error> {
    match vocab::attribute(name) {
        Some(a) if a.range == (0.0, 1.0) => Ok(()),
        _ => Err(Error::UnknownVariable(format!(
            "{name} (not a 0/1 attribute such as in_hospital_death)"
        ))),
    }
}

impl SurvivalQuery {
    /// Checks the names, the bins and the groups.
    pub fn validate(&self) -> Result<(), Error> {
        if vocab::attribute(&self.time).is_none() {
            return Err(Error::UnknownVariable(self.time.clone()));
        }
        check_flag(&self.event)?;
        if let Some(group) = &self.group {
            group.validate(2)?;
        }
        self.spec().validate()
    }

    /// The numerics' spec.
    pub fn spec(&self) -> survival::Spec {
        survival::Spec {
            bin_edges: self.bin_edges.clone(),
            groups: self.group.as_ref().map_or(1, Factor::levels),
        }
    }

    /// A label per group.
    pub fn group_labels(&self) -> Vec<String> {
        self.group
            .as_ref()
            .map_or_else(|| vec!["all".into()], Factor::labels)
    }

    /// One patient from raw time, event and group values; `None` when one is missing.
    pub fn patient(&self, time: f64, event: f64, group: f64) -> Option<survival::Patient> {
        let group = match &self.group {
            Some(factor) => factor.level(group)?,
            None => 0,
        };
        let event = [0.0, 1.0].iter().position(|v| *v == event)? == 1;
        (!time.is_nan()).then_some(survival::Patient { time, event, group })
    }

    fn categories(&self) -> Vec<Option<Category>> {
        let mut out = vec![
            vocab::category_of_attribute(&self.time),
            vocab::category_of_attribute(&self.event),
        ];
        out.extend(self.group.as_ref().map(Factor::category));
        out
    }
}

impl TableQuery {
    /// Checks each variable and the table's size.
    pub fn validate(&self) -> Result<(), Error> {
        for variable in &self.variables {
            variable.validate(2)?;
        }
        self.spec().validate()
    }

    /// The numerics' spec.
    pub fn spec(&self) -> table::Spec {
        table::Spec {
            variables: self
                .variables
                .iter()
                .map(|v| table::Variable {
                    name: v.name.clone(),
                    levels: v.levels(),
                })
                .collect(),
        }
    }

    /// One patient from each variable's raw value; `None` when one has no level.
    pub fn patient(&self, raws: &[f64]) -> Option<table::Patient> {
        if raws.len() != self.variables.len() {
            return None;
        }
        let levels = self
            .variables
            .iter()
            .zip(raws)
            .map(|(v, raw)| v.level(*raw))
            .collect::<Option<Vec<usize>>>()?;
        Some(table::Patient { levels })
    }
}

impl Covariate {
    /// Where the value comes from; an indicator reads its attribute.
    pub fn source(&self) -> Source<'_> {
        if let Some(o) = &self.observation {
            return Source::Observation(o);
        }
        if self.name == SEX {
            return Source::Sex;
        }
        match self.indicator() {
            Some((attribute, _)) => Source::Attribute(attribute),
            None => Source::Attribute(&self.name),
        }
    }

    /// `NAME=VALUE`: the attribute and the value that makes it 1.
    pub fn indicator(&self) -> Option<(&str, f64)> {
        let (name, value) = self.name.split_once('=')?;
        Some((name.trim(), value.trim().parse().ok()?))
    }

    /// The covariate's value from the raw value of its source: an
    /// indicator is 1 when the raw value equals its value, else 0 (NaN stays NaN).
    pub fn value(&self, raw: f64) -> f64 {
        match self.indicator() {
            Some(_) if raw.is_nan() => f64::NAN,
            Some((_, value)) => f64::from(u8::from(raw == value)),
            None => raw,
        }
    }

    /// The bounds given, or [0, 1] for sex and indicators.
    pub fn bounds(&self) -> Option<Bounds> {
        let zero_one =
            self.observation.is_none() && (self.name == SEX || self.indicator().is_some());
        self.bounds.or(zero_one.then_some(Bounds {
            lower: 0.0,
            upper: 1.0,
        }))
    }

    pub(super) fn validate_source(&self) -> Result<(), Error> {
        match self.source() {
            Source::Attribute(name) if vocab::attribute(name).is_none() => {
                Err(Error::UnknownVariable(self.name.clone()))
            }
            Source::Attribute(_) if self.name.contains('=') && self.indicator().is_none() => {
                Err(Error::UnknownVariable(format!(
                    "{} (write an indicator as NAME=VALUE, e.g. icu_type=3)",
                    self.name
                )))
            }
            Source::Observation(o) if o.code.is_empty() => Err(Error::UnknownVariable(format!(
                "{} (observation code is empty)",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    fn variable(&self) -> regression::Variable {
        regression::Variable {
            name: self.name.clone(),
            bounds: self.bounds(),
        }
    }
}

/// What a one-shot logistic regression asks (`[aggregate.logistic]`, query version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticQuery {
    /// A 0/1 attribute (e.g. `in_hospital_death`).
    pub outcome: String,
    pub covariates: Vec<CellCovariate>,
}

/// One covariate of a one-shot logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellCovariate {
    /// `sex`, `NAME=VALUE` (an indicator), an attribute, or a label for `observation`.
    pub name: String,
    #[serde(default)]
    pub observation: Option<ObservationFeature>,
    /// Required for a number (not for `sex` or an indicator).
    #[serde(default)]
    pub bounds: Option<Bounds>,
    /// Equal bins over the bounds, 1 to [`cells::MAX_BINS`]; required for a number.
    #[serde(default)]
    pub bins: Option<u32>,
}

impl CellCovariate {
    /// The covariate as a regression reads it (source, indicator value).
    pub fn covariate(&self) -> Covariate {
        Covariate {
            name: self.name.clone(),
            observation: self.observation.clone(),
            bounds: self.bounds,
        }
    }

    fn is_fixed(&self) -> bool {
        let c = self.covariate();
        self.observation.is_none() && (self.name == SEX || c.indicator().is_some())
    }
}

impl LogisticQuery {
    /// Checks the names, bins, cell count and that the design can be solved.
    pub fn validate(&self) -> Result<(), Error> {
        check_flag(&self.outcome)?;
        at_least("covariates", self.covariates.len(), 1)?;
        at_most("covariates", self.covariates.len(), MAX_COVARIATES)?;
        check_names(
            self.covariates
                .iter()
                .map(|c| c.name.as_str())
                .chain(std::iter::once(self.outcome.as_str())),
        )?;
        for c in &self.covariates {
            c.covariate().validate_source()?;
            check_binning(c)?;
        }
        self.spec()?.check_solvable()
    }

    /// The numerics' spec; refuses a number without bounds or bins, and more than [`MAX_LOGISTIC_CELLS`] cells.
    pub fn spec(&self) -> Result<cells::Spec, Error> {
        let mut factors: Vec<cells::Factor> = Vec::new();
        let mut indicator_of: Vec<(String, usize)> = Vec::new();
        let mut scales = Vec::new();
        for (i, c) in self.covariates.iter().enumerate() {
            let covariate = c.covariate();
            let zero_one = Bounds {
                lower: 0.0,
                upper: 1.0,
            };
            match (c.is_fixed(), covariate.indicator()) {
                (true, Some((attribute, value))) => {
                    scales.push(zero_one);
                    let known = indicator_of.iter().find(|(a, _)| a == attribute);
                    match known.and_then(|(_, f)| factors.get_mut(*f)) {
                        Some(cells::Factor {
                            covariates,
                            kind: Kind::Indicators { values },
                        }) => {
                            covariates.push(i);
                            values.push(value);
                        }
                        _ => {
                            indicator_of.push((attribute.to_string(), factors.len()));
                            factors.push(cells::Factor {
                                covariates: vec![i],
                                kind: Kind::Indicators {
                                    values: vec![value],
                                },
                            });
                        }
                    }
                }
                (true, None) => {
                    scales.push(zero_one);
                    factors.push(cells::Factor {
                        covariates: vec![i],
                        kind: Kind::Flag,
                    });
                }
                (false, _) => {
                    let (bounds, bins) = bounds_and_bins(c)?;
                    scales.push(bounds);
                    factors.push(cells::Factor {
                        covariates: vec![i],
                        kind: Kind::Binned { bounds, bins },
                    });
                }
            }
        }
        let spec = cells::Spec {
            names: self.covariates.iter().map(|c| c.name.clone()).collect(),
            scales,
            factors,
        };
        // Checked here, not only in validate: a spec's vector is allocated from it.
        at_most(
            "covariate cells of a logistic regression",
            spec.cells(),
            MAX_LOGISTIC_CELLS,
        )?;
        Ok(spec)
    }

    /// Every source the engine reads per patient: covariates, then the outcome.
    pub fn sources(&self) -> Vec<Source<'_>> {
        self.covariates
            .iter()
            .map(|c| match (&c.observation, c.name.as_str()) {
                (Some(o), _) => Source::Observation(o),
                (None, SEX) => Source::Sex,
                (None, name) => Source::Attribute(
                    name.split_once('=')
                        .map_or(name, |(attribute, _)| attribute.trim()),
                ),
            })
            .chain(std::iter::once(Source::Attribute(&self.outcome)))
            .collect()
    }

    /// The data categories it reads.
    pub fn categories(&self) -> Vec<Option<Category>> {
        self.sources().iter().map(source_category).collect()
    }

    /// Length of one patient's vector (0 for a query that does not validate).
    pub fn len(&self) -> usize {
        self.spec().map_or(0, |s| s.len())
    }

    /// True for a query that does not validate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One patient's vector from the raw values of [`LogisticQuery::sources`]
    /// (covariates, then the outcome); `None` when one is missing.
    pub fn contribution(&self, raws: &[f64]) -> Result<Option<Vec<f64>>, Error> {
        let spec = self.spec()?;
        let Some((outcome, covariates)) = raws.split_last() else {
            return Ok(None);
        };
        let Some(death) = [0.0, 1.0].iter().position(|v| v == outcome) else {
            return Ok(None);
        };
        Ok(spec
            .cell(covariates)
            .map(|cell| spec.one_hot(cell * 2 + death)))
    }
}

/// A number needs bounds and bins; `sex` and indicators take neither.
fn check_binning(c: &CellCovariate) -> Result<(), Error> {
    if c.is_fixed() {
        if c.bounds.is_some() || c.bins.is_some() {
            return Err(Error::BadBins(format!(
                "{:?} is 0/1; give it no bounds or bins",
                c.name
            )));
        }
        return Ok(());
    }
    bounds_and_bins(c).map(|_| ())
}

fn bounds_and_bins(c: &CellCovariate) -> Result<(Bounds, u32), Error> {
    let bounds = c
        .bounds
        .ok_or_else(|| Error::MissingBounds(c.name.clone()))?;
    bounds.validate(&c.name)?;
    let bins = c.bins.ok_or_else(|| Error::MissingBins(c.name.clone()))?;
    at_least("bins of a covariate", bins as usize, 1)?;
    at_most(
        "bins of a covariate",
        bins as usize,
        cells::MAX_BINS as usize,
    )?;
    Ok((bounds, bins))
}

/// The numerics' spec of a regression.
#[derive(Debug, Clone, PartialEq)]
pub enum RegressionSpec {
    Linear(LinearSpec),
    Logistic(LogisticSpec),
}

impl RegressionQuery {
    /// Checks names, bounds, the number of covariates and the rounds.
    pub fn validate(&self) -> Result<(), Error> {
        for covariate in &self.covariates {
            covariate.validate_source()?;
        }
        self.outcome.validate_source()?;
        match self.model {
            Model::Linear => {
                if self.rounds.is_some() || self.round.is_some() {
                    return Err(Error::TooLarge {
                        what: "Newton rounds of a linear regression (it takes one)",
                        found: self.rounds.unwrap_or(1) as usize,
                        max: 0,
                    });
                }
            }
            Model::Logistic => {
                check_flag(&self.outcome.name)?;
                if self.outcome.bounds.is_some() || self.outcome.observation.is_some() {
                    return Err(Error::UnknownVariable(format!(
                        "{} (a logistic outcome is a 0/1 attribute, without bounds)",
                        self.outcome.name
                    )));
                }
                self.check_round()?;
            }
        }
        match self.spec() {
            RegressionSpec::Linear(spec) => spec.validate(),
            RegressionSpec::Logistic(spec) => spec.validate(),
        }
    }

    fn check_round(&self) -> Result<(), Error> {
        let rounds = self.rounds();
        if rounds == 0 || rounds > MAX_NEWTON_ROUNDS {
            return Err(Error::TooLarge {
                what: "Newton rounds (at least 1)",
                found: rounds as usize,
                max: MAX_NEWTON_ROUNDS as usize,
            });
        }
        if let Some(round) = &self.round {
            if round.number == 0 || round.number > rounds {
                return Err(Error::BadCoefficients(format!(
                    "round {} is not one of 1 to {rounds}",
                    round.number
                )));
            }
            if round.at.len() != self.covariates.len() + 1
                || round.at.iter().any(|b| !(b.is_finite() && b.abs() <= 20.0))
            {
                return Err(Error::BadCoefficients(format!(
                    "round {} is computed at {} coefficients, expected {} finite ones within ±20",
                    round.number,
                    round.at.len(),
                    self.covariates.len() + 1
                )));
            }
        }
        Ok(())
    }

    /// Newton rounds of a logistic regression (1 for linear).
    pub fn rounds(&self) -> u32 {
        match self.model {
            Model::Linear => 1,
            Model::Logistic => self.rounds.unwrap_or(DEFAULT_ROUNDS),
        }
    }

    /// The coefficients this round is computed at (zero before the first step).
    pub fn at(&self) -> Vec<f64> {
        self.round
            .as_ref()
            .map_or_else(|| vec![0.0; self.covariates.len() + 1], |r| r.at.clone())
    }

    /// The numerics' spec.
    pub fn spec(&self) -> RegressionSpec {
        let covariates = self.covariates.iter().map(Covariate::variable).collect();
        match self.model {
            Model::Linear => RegressionSpec::Linear(LinearSpec {
                covariates,
                outcome: self.outcome.variable(),
            }),
            Model::Logistic => RegressionSpec::Logistic(LogisticSpec {
                covariates,
                outcome: self.outcome.name.clone(),
                rounds: self.rounds(),
            }),
        }
    }

    /// Every source the engine reads per patient: covariates, then the outcome.
    pub fn sources(&self) -> Vec<Source<'_>> {
        self.covariates
            .iter()
            .chain(std::iter::once(&self.outcome))
            .map(Covariate::source)
            .collect()
    }

    fn categories(&self) -> Vec<Option<Category>> {
        self.sources().iter().map(source_category).collect()
    }
}

impl RegressionSpec {
    /// Length of one patient's vector.
    pub fn len(&self) -> usize {
        match self {
            RegressionSpec::Linear(s) => s.len(),
            RegressionSpec::Logistic(s) => s.len(),
        }
    }

    /// Always false for a valid spec.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Any of the three analyses, as the engine and the client handle them alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Analysis<'a> {
    Survival(&'a SurvivalQuery),
    Table(&'a TableQuery),
    Regression(&'a RegressionQuery),
    /// A one-shot logistic regression from a cell table ([`super::cells`]).
    Logistic(&'a LogisticQuery),
}

/// The largest size of one entry of each analysis's vector: 1 (one-hot
/// counts, scaled regression entries). Fixed point in DP mode and in
/// encrypted mode uses it to bound each integer.
pub const MAX_ENTRY: f64 = 1.0;

impl Analysis<'_> {
    /// Checks everything that can be checked without data.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Analysis::Survival(q) => q.validate(),
            Analysis::Table(q) => q.validate(),
            Analysis::Regression(q) => q.validate(),
            Analysis::Logistic(q) => q.validate(),
        }
    }

    /// Length of one patient's vector.
    pub fn len(&self) -> usize {
        match self {
            Analysis::Survival(q) => q.spec().len(),
            Analysis::Table(q) => q.spec().len(),
            Analysis::Regression(q) => q.spec().len(),
            Analysis::Logistic(q) => q.len(),
        }
    }

    /// Always false for a valid analysis.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The L1 and L2 bound of one patient's vector.
    pub fn sensitivity(&self) -> Sensitivity {
        match self {
            Analysis::Survival(q) => q.spec().sensitivity(),
            Analysis::Table(q) => q.spec().sensitivity(),
            Analysis::Regression(q) => match q.spec() {
                RegressionSpec::Linear(s) => s.sensitivity(),
                RegressionSpec::Logistic(s) => s.sensitivity(),
            },
            Analysis::Logistic(_) => Sensitivity { l1: 1.0, l2: 1.0 },
        }
    }

    /// True when every entry of a patient's vector is an integer (one-hot counts).
    pub fn is_integer(&self) -> bool {
        !matches!(self, Analysis::Regression(_))
    }

    /// The data categories the analysis reads (for consent and policy).
    pub fn categories(&self) -> Vec<Category> {
        let all = match self {
            Analysis::Survival(q) => q.categories(),
            Analysis::Table(q) => q.variables.iter().map(Factor::category).collect(),
            Analysis::Regression(q) => q.categories(),
            Analysis::Logistic(q) => q.categories(),
        };
        all.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(text: &str) -> Factor {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn factors_map_raw_values_to_levels() {
        let icu = factor("name = \"icu_type\"");
        icu.validate(2).unwrap();
        assert_eq!(icu.levels(), 4);
        assert_eq!(icu.level(3.0), Some(2));
        assert_eq!(icu.level(5.0), None);
        let age = factor("name = \"age\"\nedges = [18.0, 45.0, 65.0, 80.0, 120.0]");
        age.validate(2).unwrap();
        assert_eq!(
            (age.levels(), age.level(70.0), age.level(10.0)),
            (4, Some(2), None)
        );
        let sex = factor("name = \"sex\"");
        assert_eq!((sex.level(1.0), sex.level(f64::NAN)), (Some(1), None));
        let diabetic = factor("name = \"diabetes\"\nconditions = [\"44054006\"]");
        diabetic.validate(2).unwrap();
        assert_eq!(diabetic.labels(), ["diabetes=no", "diabetes=yes"]);
    }

    #[test]
    fn bad_factors_are_refused_by_name() {
        for (text, code) in [
            ("name = \"bmi\"", "unknown_variable"),
            ("name = \"age\"", "bad_bins"),
            ("name = \"age\"\nedges = [3.0, 2.0]", "bad_bins"),
            ("name = \"sex\"\nvalues = [0.0]", "bad_bins"),
            (
                "name = \"hr\"\nobservation = { code = \"8867-4\", reduce = \"mean\" }",
                "bad_bins",
            ),
            ("name = \"icu_type\"\nvalues = [1.0]", "too_small"),
        ] {
            let error = factor(text).validate(2).unwrap_err();
            assert_eq!(error.error_code(), code, "{text}: {error}");
        }
    }

    #[test]
    fn covariates_read_indicators_and_need_bounds() {
        let icu3: Covariate = toml::from_str("name = \"icu_type=3\"").unwrap();
        assert_eq!(icu3.source(), Source::Attribute("icu_type"));
        assert_eq!((icu3.value(3.0), icu3.value(2.0)), (1.0, 0.0));
        assert!(icu3.value(f64::NAN).is_nan());
        assert_eq!(
            icu3.bounds(),
            Some(Bounds {
                lower: 0.0,
                upper: 1.0
            })
        );
        let age: Covariate = toml::from_str("name = \"age\"").unwrap();
        let query = RegressionQuery {
            model: Model::Logistic,
            outcome: toml::from_str("name = \"in_hospital_death\"").unwrap(),
            covariates: vec![age, icu3],
            rounds: None,
            round: None,
        };
        assert_eq!(query.validate().unwrap_err().error_code(), "missing_bounds");
    }
}

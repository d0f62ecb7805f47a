//! The in-memory columnar index of patients and observations that queries read.
//!
//! Decrypting every record for every query would make a query cost seconds;
//! instead the node opens each record once, when the index is built, and
//! keeps columns: one row per patient (age, sex, attributes, conditions) and
//! per observation code a compressed-sparse-row series (offsets per patient,
//! times relative to the patient's index time, values). The node drops the
//! index whenever it writes patient data, so the next query rebuilds it and
//! the index is never out of step with the store.
//!
//! Observation series are found by the keyed digest of their code, as the
//! store keys them: the index never learns a code no query named. A query
//! names codes in clear; [`Index::values_for`] digests each once with the
//! node's code key and looks the series up.

use std::collections::HashMap;

use witmed_crypto::code_digest::{CodeDigest, CodeDigester};
use witmed_crypto::Pseudonym;
use witmed_protocol::query::{Cohort, Feature, ObservationFeature, Query, Reduce};
use witmed_protocol::vocab::Sex;

use crate::store::{
    cf, parse_observation_key, ConditionRecord, Error, ObservationRecord, PatientRecord, Store,
};

/// Observations of one code, laid out by patient.
#[derive(Debug, Default)]
pub struct Series {
    /// `offsets[i]..offsets[i + 1]` are patient i's observations.
    offsets: Vec<u32>,
    /// Seconds since the patient's index time.
    times: Vec<i64>,
    values: Vec<f64>,
}

impl Series {
    /// Patient `i`'s (times, values), in time order.
    pub fn of(&self, i: usize) -> (&[i64], &[f64]) {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        (&self.times[a..b], &self.values[a..b])
    }

    /// Number of observations.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The index.
#[derive(Debug)]
pub struct Index {
    pub pseudonyms: Vec<Pseudonym>,
    by_pseudonym: HashMap<Pseudonym, u32>,
    age: Vec<f64>,
    sex: Vec<Sex>,
    attributes: HashMap<String, Vec<f64>>,
    /// Condition code -> sorted patient indices.
    conditions: HashMap<String, Vec<u32>>,
    /// Code digest -> series.
    observations: HashMap<CodeDigest, Series>,
    codes: CodeDigester,
}

/// A query's per-patient values and the patients (index positions) they came from, in the same order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub patients: Vec<usize>,
    pub values: Vec<f64>,
}

/// A query's observation codes, each looked up once.
struct Resolved<'a> {
    has_observation: Vec<Option<&'a Series>>,
    feature: Option<&'a Series>,
}

/// Builder state: observations arrive sorted by patient, then code, then time.
struct SeriesBuilder {
    rows: Vec<(u32, i64, f64)>,
}

impl Index {
    /// Builds the index by reading and opening every patient, observation and condition.
    pub fn build(store: &Store) -> Result<Index, Error> {
        let mut index = Index {
            pseudonyms: Vec::new(),
            by_pseudonym: HashMap::new(),
            age: Vec::new(),
            sex: Vec::new(),
            attributes: HashMap::new(),
            conditions: HashMap::new(),
            observations: HashMap::new(),
            codes: store.codes().clone(),
        };
        let mut index_times = Vec::new();
        store.scan_records(cf::PATIENTS, b"", |key, p: PatientRecord| {
            let pseudonym = Pseudonym(key.try_into().map_err(|_| Error::Corrupt {
                family: cf::PATIENTS,
                reason: "key is not a pseudonym".into(),
            })?);
            index_times.push(p.index_time);
            index.push_patient(pseudonym, &p);
            Ok(())
        })?;
        index.load_observations(store, &index_times)?;
        index.load_conditions(store)?;
        Ok(index)
    }

    fn push_patient(&mut self, pseudonym: Pseudonym, p: &PatientRecord) {
        let i = self.pseudonyms.len();
        self.by_pseudonym.insert(pseudonym, i as u32);
        self.pseudonyms.push(pseudonym);
        self.age.push(p.age_years.unwrap_or(f64::NAN));
        self.sex.push(p.sex);
        for column in self.attributes.values_mut() {
            column.push(f64::NAN);
        }
        for (name, value) in &p.attributes {
            let column = self
                .attributes
                .entry(name.clone())
                .or_insert_with(|| vec![f64::NAN; i + 1]);
            column[i] = *value;
        }
    }

    fn load_observations(&mut self, store: &Store, index_times: &[i64]) -> Result<(), Error> {
        let mut builders: HashMap<CodeDigest, SeriesBuilder> = HashMap::new();
        store.scan_records(cf::OBSERVATIONS, b"", |key, o: ObservationRecord| {
            let Some((pseudonym, code, time)) = parse_observation_key(key) else {
                return Err(Error::Corrupt {
                    family: cf::OBSERVATIONS,
                    reason: "malformed key".into(),
                });
            };
            // Observations of a patient with no patient record are orphans
            // (a crash between batches can leave none, but be safe): skip.
            let Some(&i) = self.by_pseudonym.get(&pseudonym) else {
                return Ok(());
            };
            let relative = time.saturating_sub(index_times[i as usize]);
            builders
                .entry(code)
                .or_insert_with(|| SeriesBuilder { rows: Vec::new() })
                .rows
                .push((i, relative, o.value));
            Ok(())
        })?;
        let n = self.pseudonyms.len();
        self.observations = builders
            .into_iter()
            .map(|(code, b)| (code, b.finish(n)))
            .collect();
        Ok(())
    }

    fn load_conditions(&mut self, store: &Store) -> Result<(), Error> {
        store.scan_records(cf::CONDITIONS, b"", |key, c: ConditionRecord| {
            let Some(pseudonym) = key.get(..16).and_then(|k| k.try_into().ok()).map(Pseudonym)
            else {
                return Ok(());
            };
            if let Some(&i) = self.by_pseudonym.get(&pseudonym) {
                let patients = self.conditions.entry(c.code).or_default();
                if patients.last() != Some(&i) {
                    patients.push(i);
                }
            }
            Ok(())
        })
    }

    /// Number of patients.
    pub fn len(&self) -> usize {
        self.pseudonyms.len()
    }

    /// True if there are no patients.
    pub fn is_empty(&self) -> bool {
        self.pseudonyms.is_empty()
    }

    /// Number of observations of all codes.
    pub fn observation_count(&self) -> usize {
        self.observations.values().map(Series::len).sum()
    }

    /// Index of a patient.
    pub fn position(&self, p: &Pseudonym) -> Option<usize> {
        self.by_pseudonym.get(p).map(|&i| i as usize)
    }

    /// The series of observation `code`, if any patient has one.
    fn series(&self, code: &str) -> Option<&Series> {
        self.observations.get(&self.codes.observation(code))
    }

    fn resolve(&self, query: &Query) -> Resolved<'_> {
        Resolved {
            has_observation: query
                .cohort
                .has_observation
                .iter()
                .map(|code| self.series(code))
                .collect(),
            feature: match &query.feature {
                Some(Feature::Observation(o)) => self.series(&o.code),
                _ => None,
            },
        }
    }

    /// The per-patient values of `query` over patients for whom `eligible(i)`
    /// holds (one row of 0.0 per patient for a plain count).
    pub fn values_for(&self, query: &Query, eligible: impl Fn(usize) -> bool) -> Vec<f64> {
        self.rows_for(query, eligible).values
    }

    /// [`Index::values_for`], with the position of the patient each value
    /// came from: the patients whose data the answer is computed from.
    pub fn rows_for(&self, query: &Query, eligible: impl Fn(usize) -> bool) -> Rows {
        let resolved = self.resolve(query);
        let mut rows = Rows::default();
        for i in 0..self.len() {
            if !(self.in_resolved_cohort(i, &query.cohort, &resolved) && eligible(i)) {
                continue;
            }
            let value = match &query.feature {
                Some(Feature::Attribute(a)) => {
                    Some(self.attribute(i, &a.name)).filter(|v| v.is_finite())
                }
                Some(Feature::Observation(o)) => reduce_series(resolved.feature, i, o),
                None => Some(0.0),
            };
            if let Some(value) = value {
                rows.patients.push(i);
                rows.values.push(value);
            }
        }
        rows
    }

    /// Whether patient `i` matches every condition of `cohort`.
    pub fn in_cohort(&self, i: usize, cohort: &Cohort) -> bool {
        let has_observation = cohort
            .has_observation
            .iter()
            .map(|code| self.series(code))
            .collect();
        let resolved = Resolved {
            has_observation,
            feature: None,
        };
        self.in_resolved_cohort(i, cohort, &resolved)
    }

    fn in_resolved_cohort(&self, i: usize, cohort: &Cohort, resolved: &Resolved<'_>) -> bool {
        let age = self.age[i];
        // An unknown age is NaN, and every comparison with NaN is false: it
        // never matches an age filter, and passes when there is none.
        let age_ok =
            cohort.age_min.is_none_or(|m| age >= m) && cohort.age_max.is_none_or(|m| age <= m);
        age_ok
            && cohort.sex.is_none_or(|s| self.sex[i] == s)
            && self.matches_attributes(i, cohort)
            && self.matches_conditions(i, cohort)
            && resolved
                .has_observation
                .iter()
                .all(|series| series.is_some_and(|s| !s.of(i).0.is_empty()))
    }

    fn matches_attributes(&self, i: usize, cohort: &Cohort) -> bool {
        cohort.attributes.iter().all(|range| {
            let v = self.attribute(i, &range.name);
            v.is_finite() && range.min.is_none_or(|m| v >= m) && range.max.is_none_or(|m| v <= m)
        })
    }

    fn matches_conditions(&self, i: usize, cohort: &Cohort) -> bool {
        cohort.conditions.is_empty()
            || cohort.conditions.iter().any(|code| {
                self.conditions
                    .get(code)
                    .is_some_and(|ps| ps.binary_search(&(i as u32)).is_ok())
            })
    }

    /// Attribute `name` of patient `i` (NaN when unknown). `age` is an attribute too.
    pub fn attribute(&self, i: usize, name: &str) -> f64 {
        if name == "age" {
            return self.age[i];
        }
        self.attributes.get(name).map_or(f64::NAN, |c| c[i])
    }

    /// Patient `i`'s recorded sex.
    pub fn sex(&self, i: usize) -> Sex {
        self.sex.get(i).copied().unwrap_or(Sex::Unknown)
    }

    /// Whether patient `i` has at least one of `codes`.
    pub fn has_any_condition(&self, i: usize, codes: &[String]) -> bool {
        codes.iter().any(|code| {
            self.conditions
                .get(code)
                .is_some_and(|ps| ps.binary_search(&(i as u32)).is_ok())
        })
    }

    /// Patient `i`'s reduced value of an observation feature, if any.
    pub fn observation_value(&self, i: usize, feature: &ObservationFeature) -> Option<f64> {
        reduce_series(self.series(&feature.code), i, feature)
    }

    /// Patient `i`'s one value of `feature`, or None if the patient has none.
    pub fn feature_value(&self, i: usize, feature: &Feature) -> Option<f64> {
        match feature {
            Feature::Attribute(a) => Some(self.attribute(i, &a.name)).filter(|v| v.is_finite()),
            Feature::Observation(o) => reduce_series(self.series(&o.code), i, o),
        }
    }
}

/// Patient `i`'s observations in `series` (none if no patient has the code), reduced.
fn reduce_series(series: Option<&Series>, i: usize, o: &ObservationFeature) -> Option<f64> {
    let (times, values) = match series {
        Some(series) => series.of(i),
        None => (&[][..], &[][..]),
    };
    let (from, to) = match o.window {
        Some(w) => ((w.from_hours * 3600.0) as i64, (w.to_hours * 3600.0) as i64),
        None => (i64::MIN, i64::MAX),
    };
    let start = times.partition_point(|&t| t < from);
    let end = times.partition_point(|&t| t < to);
    let in_window = &values[start..end];
    reduce(in_window, o.reduce)
}

/// Reduces one patient's values (in time order) to one number.
pub fn reduce(values: &[f64], how: Reduce) -> Option<f64> {
    if how == Reduce::Count {
        return Some(values.len() as f64);
    }
    if values.is_empty() {
        return None;
    }
    Some(match how {
        Reduce::Latest => values[values.len() - 1],
        Reduce::Mean => values.iter().sum::<f64>() / values.len() as f64,
        Reduce::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Reduce::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Count => unreachable!("handled above"),
    })
}

impl SeriesBuilder {
    /// Lays rows (sorted by patient, then time) out as CSR over `n` patients.
    fn finish(self, n: usize) -> Series {
        let mut offsets = Vec::with_capacity(n + 1);
        let mut times = Vec::with_capacity(self.rows.len());
        let mut values = Vec::with_capacity(self.rows.len());
        offsets.push(0u32);
        let mut rows = self.rows.into_iter().peekable();
        for patient in 0..n as u32 {
            while let Some((_, t, v)) = rows.next_if(|r| r.0 == patient) {
                times.push(t);
                values.push(v);
            }
            offsets.push(values.len() as u32);
        }
        Series {
            offsets,
            times,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_cases() {
        let v = [3.0, 1.0, 2.0];
        assert_eq!(reduce(&v, Reduce::Latest), Some(2.0));
        assert_eq!(reduce(&v, Reduce::Mean), Some(2.0));
        assert_eq!(reduce(&v, Reduce::Min), Some(1.0));
        assert_eq!(reduce(&v, Reduce::Max), Some(3.0));
        assert_eq!(reduce(&v, Reduce::Count), Some(3.0));
        assert_eq!(reduce(&[], Reduce::Mean), None);
        assert_eq!(reduce(&[], Reduce::Count), Some(0.0));
    }

    #[test]
    fn csr_layout_keeps_patients_apart() {
        let b = SeriesBuilder {
            rows: vec![(0, 1, 10.0), (0, 2, 11.0), (2, 5, 12.0)],
        };
        let s = b.finish(3);
        assert_eq!(s.of(0).1, &[10.0, 11.0]);
        assert!(s.of(1).1.is_empty());
        assert_eq!(s.of(2), (&[5][..], &[12.0][..]));
    }
}

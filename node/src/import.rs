//! Import of a hospital's existing data (PhysioNet 2012 sets, FHIR R4 bundles) into the encrypted store.
//!
//! Parsing ([`physionet`], [`fhir`]) is pure; this module pseudonymises,
//! seals and writes. Files are written in batches; a batch is acknowledged
//! (counted, reported, appended to the optional acknowledgement log) only
//! after its RocksDB write has been synced. Each imported file leaves a
//! marker keyed by the keyed digest of its content, so importing the same file
//! again adds nothing, and keys are deterministic, so a file that changed
//! replaces what it wrote before instead of adding to it.

pub use witmed_import::{fhir, physionet, source};

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use witmed_crypto::pseudonym::Pseudonymizer;
use witmed_crypto::Pseudonym;

use crate::audit;
use crate::store::{
    cf, condition_key, observation_key, Batch, ConditionRecord, ObservationRecord, PatientRecord,
    Store, RECORD_VERSION,
};
use source::{Rejected, SourceCondition, SourceObservation, SourcePatient};

/// Source system names, part of each pseudonym's input.
pub const PHYSIONET: &str = "physionet2012";
/// See [`PHYSIONET`].
pub const FHIR: &str = "fhir";

/// Errors that stop an import (a bad file or row does not: it is reported and skipped).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the acknowledgement log {path}: {source}")]
    AckLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("outcomes file {0}")]
    Outcomes(String),
}

/// How an import runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files per durable batch.
    pub batch_files: usize,
    /// Appends one line per durable batch, listing its files (crash tests and audits read it).
    pub ack_log: Option<PathBuf>,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Unix seconds, for the audit log.
    pub now: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_files: 64,
            ack_log: None,
            progress: false,
            now: 0,
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub files: u64,
    pub files_unchanged: u64,
    pub batches: u64,
    pub patients: u64,
    pub patients_new: u64,
    pub observations: u64,
    pub conditions: u64,
    pub skipped_missing_values: u64,
    pub skipped_resource_types: BTreeMap<String, u64>,
    pub skipped: Vec<Rejected>,
    pub rejected: Vec<Rejected>,
    pub failed_files: Vec<Rejected>,
}

/// What one source file yields.
struct Parsed {
    patients: Vec<SourcePatient>,
    observations: Vec<SourceObservation>,
    conditions: Vec<SourceCondition>,
}

/// One file's records, pseudonymised and sealed, ready to be written.
struct Sealed {
    /// Every patient the file holds.
    patients: Vec<Pseudonym>,
    /// (family, key, sealed value), patients first.
    rows: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    observations: u64,
    conditions: u64,
}

/// Pseudonymises and seals a parsed file. Needs no write access, so the
/// PhysioNet import runs it on its parsing thread.
fn seal_file(
    store: &Store,
    pseudonyms: &Pseudonymizer,
    system: &'static str,
    parsed: &Parsed,
) -> Result<Sealed, Error> {
    let index_times = index_times(parsed);
    // One HMAC per patient, not per observation.
    let mut cache: BTreeMap<String, Pseudonym> = BTreeMap::new();
    let mut pseudonym_of = |id: &str| -> Pseudonym {
        if let Some(p) = cache.get(id) {
            return *p;
        }
        let p = pseudonyms.pseudonym(system, id);
        cache.insert(id.to_string(), p);
        p
    };
    let mut out = Sealed {
        patients: Vec::new(),
        rows: Vec::with_capacity(
            parsed.patients.len() + parsed.observations.len() + parsed.conditions.len(),
        ),
        observations: parsed.observations.len() as u64,
        conditions: parsed.conditions.len() as u64,
    };
    for patient in &parsed.patients {
        let pseudonym = pseudonym_of(&patient.source_id);
        let index_time = index_times.get(&patient.source_id).copied().unwrap_or(0);
        let record = patient_record(system, patient, index_time);
        let sealed = store.seal_record(cf::PATIENTS, &pseudonym.0, &record)?;
        out.rows.push((cf::PATIENTS, pseudonym.0.to_vec(), sealed));
        if !out.patients.contains(&pseudonym) {
            out.patients.push(pseudonym);
        }
    }
    for o in &parsed.observations {
        let key = observation_key(
            &pseudonym_of(&o.source_patient_id),
            &store.codes().observation(&o.code),
            o.time_s,
            o.disambiguator,
        );
        let record = ObservationRecord {
            version: RECORD_VERSION,
            value: o.value,
        };
        let sealed = store.seal_record(cf::OBSERVATIONS, &key, &record)?;
        out.rows.push((cf::OBSERVATIONS, key, sealed));
    }
    for c in &parsed.conditions {
        let key = condition_key(
            &pseudonym_of(&c.source_patient_id),
            &store.codes().condition(&c.system, &c.code),
            c.onset_s,
        );
        let record = ConditionRecord {
            version: RECORD_VERSION,
            system: c.system.clone(),
            code: c.code.clone(),
            onset: c.onset_s,
        };
        let sealed = store.seal_record(cf::CONDITIONS, &key, &record)?;
        out.rows.push((cf::CONDITIONS, key, sealed));
    }
    Ok(out)
}

/// Writes parsed files in durable batches.
struct Writer<'a> {
    store: &'a Store,
    pseudonyms: &'a Pseudonymizer,
    system: &'static str,
    options: &'a Options,
    batch: Batch<'a>,
    batch_files: Vec<String>,
    summary: Summary,
}

impl<'a> Writer<'a> {
    fn new(
        store: &'a Store,
        pseudonyms: &'a Pseudonymizer,
        system: &'static str,
        options: &'a Options,
    ) -> Self {
        Writer {
            store,
            pseudonyms,
            system,
            options,
            batch: store.batch(),
            batch_files: Vec::new(),
            summary: Summary::default(),
        }
    }

    /// True if a file with this content digest was imported already.
    fn already_imported(&self, marker: &[u8]) -> Result<bool, Error> {
        Ok(self.store.get_meta(marker)?.is_some())
    }

    fn add_file(&mut self, name: &str, marker: Vec<u8>, sealed: Sealed) -> Result<(), Error> {
        for pseudonym in &sealed.patients {
            self.replace_patient(pseudonym)?;
        }
        for (family, key, value) in &sealed.rows {
            self.batch.put_sealed(family, key, value);
        }
        // The marker holds no file name: names carry source ids.
        self.batch.put_meta(&marker, b"imported");
        self.summary.files += 1;
        self.summary.patients += sealed.patients.len() as u64;
        self.summary.observations += sealed.observations;
        self.summary.conditions += sealed.conditions;
        self.batch_files.push(name.to_string());
        if self.batch_files.len() >= self.options.batch_files {
            self.commit()?;
        }
        Ok(())
    }

    /// Counts a new patient, or clears what an earlier version of its file wrote.
    fn replace_patient(&mut self, pseudonym: &Pseudonym) -> Result<(), Error> {
        if self.store.contains(cf::PATIENTS, &pseudonym.0)? {
            let (from, to) = prefix_range(&pseudonym.0);
            self.batch.delete_range(cf::OBSERVATIONS, &from, &to);
            self.batch.delete_range(cf::CONDITIONS, &from, &to);
        } else {
            self.summary.patients_new += 1;
        }
        Ok(())
    }

    /// Writes the batch durably, then acknowledges it.
    fn commit(&mut self) -> Result<(), Error> {
        if self.batch_files.is_empty() {
            return Ok(());
        }
        let detail = format!(
            "{} files from {} source",
            self.batch_files.len(),
            self.system
        );
        let entry = audit::Entry::new(self.options.now, "import.batch", "operator", detail);
        audit::append(&mut self.batch, self.store, &entry)?;
        let batch = std::mem::replace(&mut self.batch, self.store.batch());
        self.store.write_durable(batch)?;
        self.summary.batches += 1;
        self.acknowledge()?;
        self.batch_files.clear();
        Ok(())
    }

    fn acknowledge(&self) -> Result<(), Error> {
        let Some(path) = &self.options.ack_log else {
            return Ok(());
        };
        let fail = |source| Error::AckLog {
            path: path.clone(),
            source,
        };
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        let line = format!(
            "durable batch {}: {}\n",
            self.summary.batches,
            self.batch_files.join(" ")
        );
        log.write_all(line.as_bytes())
            .and_then(|_| log.sync_data())
            .map_err(fail)
    }
}

/// Each patient's index time: 0 for PhysioNet (times are since ICU admission),
/// the earliest observation for absolute (FHIR) times.
fn index_times(parsed: &Parsed) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for o in &parsed.observations {
        let t = out.entry(o.source_patient_id.clone()).or_insert(o.time_s);
        *t = (*t).min(o.time_s);
    }
    out
}

fn patient_record(system: &str, p: &SourcePatient, index_time: i64) -> PatientRecord {
    PatientRecord {
        version: RECORD_VERSION,
        source_system: system.to_string(),
        age_years: p.age_years,
        sex: p.sex,
        attributes: p.attributes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        index_time: if system == PHYSIONET { 0 } else { index_time },
    }
}

/// `[prefix, next prefix)`: every key that starts with `prefix`.
fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    (prefix.to_vec(), vec![0xff; prefix.len() + 1])
}

/// The meta key marking a file as imported: a keyed digest of its content,
/// so the store cannot confirm to someone holding a source file that it was imported.
fn marker(store: &Store, system: &str, bytes: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut key = format!("import/{system}/").into_bytes();
    key.extend_from_slice(&store.codes().imported_file(system, bytes, extra));
    key
}

fn progress_bar(show: bool, total: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} files ({{per_sec}}, eta {{eta}})"
    ))
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Imports a PhysioNet 2012 set directory, with outcomes if given.
pub fn import_physionet(
    store: &Store,
    pseudonyms: &Pseudonymizer,
    set_dir: &Path,
    outcomes: Option<&Path>,
    options: &Options,
) -> Result<Summary, Error> {
    let files = physionet::list_set_files(set_dir).map_err(|source| Error::Read {
        path: set_dir.to_path_buf(),
        source,
    })?;
    let mut rejected = Vec::new();
    let outcomes = load_outcomes(outcomes, &mut rejected)?;
    let sources = files
        .iter()
        .map(|path| Ok((location_of(path), read(path)?)));
    let mut summary =
        import_physionet_sources(store, pseudonyms, files.len(), sources, &outcomes, options)?;
    summary.rejected.splice(0..0, rejected);
    Ok(summary)
}

/// Records parsed ahead of the writer: bounds memory while parsing overlaps writing.
const PARSE_AHEAD: usize = 128;

/// One record file, made ready on the parsing thread.
struct ParsedSource {
    name: String,
    marker: Vec<u8>,
    prepared: Result<Prepared, physionet::Error>,
}

/// A parsed record: what to report, and its sealed rows (None when the file
/// was imported before, so nothing needs sealing).
struct Prepared {
    rejected: Vec<Rejected>,
    skipped_missing: u64,
    sealed: Option<Sealed>,
}

/// Imports PhysioNet record texts given as (location, bytes); the set-directory
/// import and the benchmarks (which generate records in memory) share it.
///
/// Reading, parsing, pseudonymising and sealing run on a second thread, at
/// most [`PARSE_AHEAD`] records ahead, while this thread fills RocksDB
/// batches and syncs them: on two cores the two halves overlap.
pub fn import_physionet_sources(
    store: &Store,
    pseudonyms: &Pseudonymizer,
    total: usize,
    sources: impl Iterator<Item = Result<(String, Vec<u8>), Error>> + Send,
    outcomes: &BTreeMap<String, physionet::Outcome>,
    options: &Options,
) -> Result<Summary, Error> {
    let mut writer = Writer::new(store, pseudonyms, PHYSIONET, options);
    let bar = progress_bar(options.progress, total, "physionet");
    std::thread::scope(|scope| -> Result<(), Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<ParsedSource, Error>>(PARSE_AHEAD);
        scope.spawn(move || {
            for source in sources {
                let prepared = source.and_then(|(name, bytes)| {
                    prepare_source(store, pseudonyms, name, &bytes, outcomes)
                });
                // The writer stopped (an error): stop parsing too.
                if tx.send(prepared).is_err() {
                    break;
                }
            }
        });
        for prepared in rx {
            write_physionet_record(&mut writer, prepared?)?;
            bar.inc(1);
        }
        Ok(())
    })?;
    writer.commit()?;
    bar.finish_and_clear();
    Ok(writer.summary)
}

fn prepare_source(
    store: &Store,
    pseudonyms: &Pseudonymizer,
    name: String,
    bytes: &[u8],
    outcomes: &BTreeMap<String, physionet::Outcome>,
) -> Result<ParsedSource, Error> {
    let record = physionet::parse_record(&name, bytes);
    let outcome = record
        .as_ref()
        .ok()
        .and_then(|r| outcomes.get(&r.patient.source_id));
    let outcome_bytes = outcome.map(|o| format!("{o:?}")).unwrap_or_default();
    let marker = marker(store, PHYSIONET, bytes, outcome_bytes.as_bytes());
    let prepared = match record {
        Ok(mut record) => {
            let unchanged = store.get_meta(&marker)?.is_some();
            let sealed = if unchanged {
                None
            } else {
                if let Some(o) = outcome {
                    physionet::apply_outcome(&mut record.patient, o);
                }
                let parsed = Parsed {
                    patients: vec![record.patient],
                    observations: record.observations,
                    conditions: vec![],
                };
                Some(seal_file(store, pseudonyms, PHYSIONET, &parsed)?)
            };
            Ok(Prepared {
                rejected: record.rejected,
                skipped_missing: record.skipped_missing,
                sealed,
            })
        }
        Err(e) => Err(e),
    };
    Ok(ParsedSource {
        name,
        marker,
        prepared,
    })
}

/// Parses an outcomes file into a map by RecordID.
pub fn load_outcomes(
    path: Option<&Path>,
    rejected: &mut Vec<Rejected>,
) -> Result<BTreeMap<String, physionet::Outcome>, Error> {
    let Some(path) = path else {
        return Ok(BTreeMap::new());
    };
    let bytes = read(path)?;
    let (outcomes, mut bad) = physionet::parse_outcomes(&location_of(path), &bytes[..])
        .map_err(|e| Error::Outcomes(e.to_string()))?;
    rejected.append(&mut bad);
    Ok(outcomes
        .into_iter()
        .map(|o| (o.record_id.clone(), o))
        .collect())
}

fn write_physionet_record(writer: &mut Writer<'_>, source: ParsedSource) -> Result<(), Error> {
    let ParsedSource {
        name,
        marker,
        prepared,
    } = source;
    let mut prepared = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            writer.summary.failed_files.push(Rejected {
                location: name,
                reason: e.to_string(),
            });
            return Ok(());
        }
    };
    writer.summary.rejected.append(&mut prepared.rejected);
    writer.summary.skipped_missing_values += prepared.skipped_missing;
    match prepared.sealed {
        None => {
            writer.summary.files_unchanged += 1;
            Ok(())
        }
        Some(sealed) => writer.add_file(&name, marker, sealed),
    }
}

/// Imports FHIR R4 bundles, single resources or NDJSON files (directories are expanded).
pub fn import_fhir(
    store: &Store,
    pseudonyms: &Pseudonymizer,
    paths: &[PathBuf],
    options: &Options,
) -> Result<Summary, Error> {
    let files = fhir::list_input_files(paths).map_err(|source| Error::Read {
        path: paths.first().cloned().unwrap_or_default(),
        source,
    })?;
    let mut writer = Writer::new(store, pseudonyms, FHIR, options);
    let bar = progress_bar(options.progress, files.len(), "fhir");
    for path in &files {
        import_fhir_file(&mut writer, path)?;
        bar.inc(1);
    }
    writer.commit()?;
    bar.finish_and_clear();
    Ok(writer.summary)
}

fn import_fhir_file(writer: &mut Writer<'_>, path: &Path) -> Result<(), Error> {
    let bytes = read(path)?;
    let name = location_of(path);
    let mut file = match fhir::parse_bytes(&name, &bytes) {
        Ok(file) => file,
        Err(e) => {
            writer.summary.failed_files.push(Rejected {
                location: name,
                reason: e.to_string(),
            });
            return Ok(());
        }
    };
    writer.summary.rejected.append(&mut file.rejected);
    let marker = marker(writer.store, FHIR, &bytes, b"");
    if writer.already_imported(&marker)? {
        // Its skipped values were reported when it was imported; a re-run adds nothing new.
        writer.summary.files_unchanged += 1;
        return Ok(());
    }
    writer.summary.skipped.append(&mut file.skipped);
    for (kind, n) in &file.skipped_types {
        *writer
            .summary
            .skipped_resource_types
            .entry(kind.clone())
            .or_default() += n;
    }
    let parsed = Parsed {
        patients: file.patients,
        observations: file.observations,
        conditions: file.conditions,
    };
    let sealed = seal_file(writer.store, writer.pseudonyms, FHIR, &parsed)?;
    writer.add_file(&name, marker, sealed)
}

/// `set-a/132539.txt`: enough of the path to find the file, no more.
fn location_of(path: &Path) -> String {
    let parts: Vec<_> = path.iter().rev().take(2).collect();
    parts
        .iter()
        .rev()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        let (from, to) = prefix_range(&[1, 2, 0xff]);
        assert_eq!(from, vec![1, 2, 0xff]);
        assert_eq!(to, vec![1, 3]);
        assert!(vec![1, 2, 0xff, 0xff, 9] < to);
        assert!(vec![1, 3] >= to);
    }
}

//! Parser for FHIR R4 JSON as hospitals export it: transaction/collection
//! Bundles, single resources and NDJSON (one resource per line), e.g. Synthea.
//!
//! The parser walks `serde_json::Value`s instead of typed structs so that
//! unknown, legacy (pre-R4) or vendor fields never make a file fail. It reads
//! only what the node needs: Patient id, gender, birth date and deceased
//! status; numeric LOINC Observations; coded Conditions. Names, addresses,
//! telecom and identifiers are never read, so they cannot leak into records,
//! reports or logs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::source::{
    Rejected, Sex, SourceCondition, SourceObservation, SourcePatient, ATTR_DECEASED,
};

const LOINC_SYSTEM: &str = "http://loinc.org";
const SNOMED_SYSTEM: &str = "http://snomed.info/sct";

/// Why a whole file could not be loaded. A bad entry is never an `Error`; it
/// is reported as [`Rejected`] and the rest of the file loads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {location}: {source}; check that the file exists and is readable")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON (or not NDJSON), e.g. because it is truncated.
    #[error(
        "{location}: not valid JSON at line {line}, column {column} ({problem}); \
         the file may be truncated or not FHIR JSON, so export or copy it again"
    )]
    Json {
        location: String,
        line: usize,
        column: usize,
        problem: String,
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON that is not a FHIR resource, Bundle or NDJSON.
    #[error(
        "{location}: {reason}; expected a FHIR R4 Bundle, a single FHIR resource, \
         or NDJSON with one resource per line"
    )]
    NotFhir { location: String, reason: String },
}

/// Everything one input file yields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedFile {
    /// Patients, with age at their latest observation in this file.
    pub patients: Vec<SourcePatient>,
    /// Numeric LOINC observations, panel components split out.
    pub observations: Vec<SourceObservation>,
    /// Coded conditions, SNOMED CT preferred.
    pub conditions: Vec<SourceCondition>,
    /// Resources of types the node does not import, counted per type.
    pub skipped_types: BTreeMap<String, u64>,
    /// Entries ignored for a reason, e.g. an Observation with a coded value;
    /// these are not errors in the input.
    pub skipped: Vec<Rejected>,
    /// Malformed entries: the input is wrong and should be fixed.
    pub rejected: Vec<Rejected>,
}

/// Parses a Bundle, a single resource or NDJSON. `location` names the input
/// in messages (e.g. "patient-003.json"); a `.ndjson` suffix selects NDJSON.
pub fn parse_bytes(location: &str, bytes: &[u8]) -> Result<ParsedFile, Error> {
    let entries = read_entries(location, strip_byte_order_mark(bytes))?;
    let mut builder = FileBuilder::new(location, patient_full_urls(&entries));
    for entry in entries {
        builder.add_entry(entry);
    }
    Ok(builder.finish())
}

/// Reads and parses one file; messages name it by its file name.
pub fn parse_file(path: &Path) -> Result<ParsedFile, Error> {
    let location = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        location: location.clone(),
        source,
    })?;
    parse_bytes(&location, &bytes)
}

/// Files are kept as given, in order; directories are expanded to their
/// `*.json` and `*.ndjson` files, sorted by name for a reproducible import.
pub fn list_input_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|error| with_path(path, error))?;
        if metadata.is_dir() {
            files.extend(fhir_files_in(path).map_err(|error| with_path(path, error))?);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn fhir_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_fhir_json = path
            .extension()
            .is_some_and(|ext| ext == "json" || ext == "ndjson");
        if is_fhir_json && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `std::io::Error` does not say which path failed; the operator needs that.
fn with_path(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Some Windows tools start JSON with a UTF-8 byte order mark, which
/// serde_json refuses.
fn strip_byte_order_mark(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// One entry of the input, before it is interpreted.
struct Entry {
    /// "entry[12]", "line 4" or "resource": where the entry sits in the file.
    label: String,
    /// Bundle.entry.fullUrl, which references may use instead of the id.
    full_url: Option<String>,
    content: EntryContent,
}

enum EntryContent {
    Resource(Value),
    /// Legitimately carries no resource (e.g. a DELETE request entry).
    Empty(String),
    Malformed(String),
}

fn read_entries(location: &str, bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    if location.ends_with(".ndjson") {
        return ndjson_entries(location, bytes);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(document) => document_entries(location, document),
        // NDJSON saved as `.json` fails as one document but parses by line.
        Err(error) => match ndjson_entries_if_every_line_parses(bytes) {
            Some(entries) => Ok(entries),
            None => Err(json_error(location, error, 0)),
        },
    }
}

fn json_error(location: &str, source: serde_json::Error, line_offset: usize) -> Error {
    let problem = match source.classify() {
        serde_json::error::Category::Eof => "the file ends in the middle of a value",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    };
    Error::Json {
        location: location.to_owned(),
        line: source.line() + line_offset,
        column: source.column(),
        problem: problem.to_owned(),
        source,
    }
}

fn document_entries(location: &str, document: Value) -> Result<Vec<Entry>, Error> {
    let not_fhir = |reason: &str| Error::NotFhir {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let Value::Object(mut object) = document else {
        return Err(not_fhir("the top level is not a JSON object"));
    };
    match object.get("resourceType").and_then(Value::as_str) {
        None => Err(not_fhir("the top level has no resourceType")),
        Some("Bundle") => match object.remove("entry") {
            None => Ok(Vec::new()),
            Some(Value::Array(entries)) => Ok(bundle_entries(entries)),
            Some(_) => Err(not_fhir("Bundle.entry is not an array")),
        },
        Some(_) => Ok(vec![Entry {
            label: "resource".to_owned(),
            full_url: None,
            content: EntryContent::Resource(Value::Object(object)),
        }]),
    }
}

fn bundle_entries(entries: Vec<Value>) -> Vec<Entry> {
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| bundle_entry(format!("entry[{index}]"), entry))
        .collect()
}

fn bundle_entry(label: String, entry: Value) -> Entry {
    let Value::Object(mut entry) = entry else {
        return Entry {
            label,
            full_url: None,
            content: EntryContent::Malformed("entry is not a JSON object".to_owned()),
        };
    };
    let full_url = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let content = match entry.remove("resource") {
        Some(resource @ Value::Object(_)) => EntryContent::Resource(resource),
        Some(_) => EntryContent::Malformed("entry.resource is not a JSON object".to_owned()),
        None => EntryContent::Empty("entry has no resource".to_owned()),
    };
    Entry {
        label,
        full_url,
        content,
    }
}

/// For a `.ndjson` file a bad line is one rejected entry, unless no line
/// parses at all: then it is not NDJSON and the whole file fails.
fn ndjson_entries(location: &str, bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    let mut first_error = None;
    let mut any_line_parsed = false;
    for (index, line) in non_blank_lines(bytes) {
        let label = format!("line {}", index + 1);
        match serde_json::from_slice::<Value>(line) {
            Ok(resource) => {
                any_line_parsed = true;
                entries.push(ndjson_entry(label, resource));
            }
            Err(error) => {
                let reason = format!("not valid JSON: {error}");
                first_error.get_or_insert((error, index));
                entries.push(Entry {
                    label,
                    full_url: None,
                    content: EntryContent::Malformed(reason),
                });
            }
        }
    }
    match first_error {
        Some((error, index)) if !any_line_parsed => Err(json_error(location, error, index)),
        _ => Ok(entries),
    }
}

fn ndjson_entries_if_every_line_parses(bytes: &[u8]) -> Option<Vec<Entry>> {
    let lines: Vec<(usize, &[u8])> = non_blank_lines(bytes).collect();
    // One line that fails as a document fails as a line too; two or more
    // lines that each parse can only be NDJSON.
    if lines.len() < 2 {
        return None;
    }
    lines
        .into_iter()
        .map(|(index, line)| {
            let resource = serde_json::from_slice::<Value>(line)
                .ok()
                .filter(Value::is_object)?;
            Some(ndjson_entry(format!("line {}", index + 1), resource))
        })
        .collect()
}

fn ndjson_entry(label: String, resource: Value) -> Entry {
    let content = if resource.is_object() {
        EntryContent::Resource(resource)
    } else {
        EntryContent::Malformed("line is not a JSON object".to_owned())
    };
    Entry {
        label,
        full_url: None,
        content,
    }
}

/// Zero-based line numbers with the lines that hold something.
fn non_blank_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&byte| byte == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
}

/// Bundle references may point at a Patient through its entry's fullUrl,
/// which need not end in the Patient id.
fn patient_full_urls(entries: &[Entry]) -> HashMap<String, String> {
    entries
        .iter()
        .filter_map(|entry| {
            let EntryContent::Resource(resource) = &entry.content else {
                return None;
            };
            if resource_type(resource) != Some("Patient") {
                return None;
            }
            let id = resource_id(resource)?;
            Some((entry.full_url.clone()?, id.to_owned()))
        })
        .collect()
}

fn resource_type(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

fn resource_id(resource: &Value) -> Option<&str> {
    resource
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// What became of one resource that was read without a problem.
enum Handled {
    Imported,
    Skipped(String),
}

/// A Patient waiting for the file's observations, which fix its index time.
struct PendingPatient {
    patient: SourcePatient,
    birth_date: Option<NaiveDate>,
    deceased_s: Option<i64>,
}

struct FileBuilder<'a> {
    location: &'a str,
    patient_full_urls: HashMap<String, String>,
    patients: Vec<PendingPatient>,
    observations: Vec<SourceObservation>,
    conditions: Vec<SourceCondition>,
    /// How many observations each (patient, code, time) has produced so far.
    occurrences: HashMap<(String, String, i64), u32>,
    skipped_types: BTreeMap<String, u64>,
    skipped: Vec<Rejected>,
    rejected: Vec<Rejected>,
}

impl<'a> FileBuilder<'a> {
    fn new(location: &'a str, patient_full_urls: HashMap<String, String>) -> Self {
        FileBuilder {
            location,
            patient_full_urls,
            patients: Vec::new(),
            observations: Vec::new(),
            conditions: Vec::new(),
            occurrences: HashMap::new(),
            skipped_types: BTreeMap::new(),
            skipped: Vec::new(),
            rejected: Vec::new(),
        }
    }

    fn add_entry(&mut self, entry: Entry) {
        let where_in_file = format!("{}: {}", self.location, entry.label);
        match entry.content {
            EntryContent::Malformed(reason) => {
                self.rejected.push(Rejected::new(where_in_file, reason))
            }
            EntryContent::Empty(reason) => self.skipped.push(Rejected::new(where_in_file, reason)),
            EntryContent::Resource(resource) => self.add_resource(where_in_file, &resource),
        }
    }

    fn add_resource(&mut self, where_in_file: String, resource: &Value) {
        let Some(kind) = resource_type(resource) else {
            let reason = "resource has no resourceType";
            self.rejected.push(Rejected::new(where_in_file, reason));
            return;
        };
        let location = match resource_id(resource) {
            Some(id) => format!("{where_in_file} ({kind}/{id})"),
            None => format!("{where_in_file} ({kind})"),
        };
        let result = match kind {
            "Patient" => self.add_patient(resource),
            "Observation" => self.add_observation(resource),
            "Condition" => self.add_condition(resource),
            other => {
                *self.skipped_types.entry(other.to_owned()).or_default() += 1;
                Ok(Handled::Imported)
            }
        };
        match result {
            Ok(Handled::Imported) => {}
            Ok(Handled::Skipped(reason)) => self.skipped.push(Rejected::new(location, reason)),
            Err(reason) => self.rejected.push(Rejected::new(location, reason)),
        }
    }

    /// Reads only id, gender, birthDate and deceased[x]: everything else in a
    /// Patient (names, addresses, telecom, identifiers) identifies people.
    fn add_patient(&mut self, resource: &Value) -> Result<Handled, String> {
        let id = resource_id(resource).ok_or("Patient has no id")?;
        if self.patients.iter().any(|p| p.patient.source_id == id) {
            return Err("Patient id repeats an earlier entry of this file".to_owned());
        }
        let sex = sex_of(resource.get("gender"))?;
        let birth_date = match resource.get("birthDate") {
            Some(value) => Some(birth_date_of(value)?),
            None => None,
        };
        let (deceased, deceased_s) = deceased_of(resource)?;
        let mut patient = SourcePatient::new(id);
        patient.sex = sex;
        if let Some(deceased) = deceased {
            patient
                .attributes
                .insert(ATTR_DECEASED.to_owned(), deceased);
        }
        self.patients.push(PendingPatient {
            patient,
            birth_date,
            deceased_s,
        });
        Ok(Handled::Imported)
    }

    fn add_observation(&mut self, resource: &Value) -> Result<Handled, String> {
        if let Some(status) = status_code(resource.get("status")) {
            if matches!(status, "entered-in-error" | "cancelled") {
                return Ok(Handled::Skipped(format!("status is {status}")));
            }
        }
        let measurements = measurements_of(resource)?;
        if measurements.is_empty() {
            return Ok(Handled::Skipped(no_measurement_reason(resource)));
        }
        let patient_id = self.subject_patient_id(resource)?;
        let time_s = observation_time(resource)?;
        for (code, value) in measurements {
            let disambiguator = self.next_disambiguator(&patient_id, &code, time_s);
            self.observations.push(SourceObservation {
                source_patient_id: patient_id.clone(),
                code,
                time_s,
                value,
                disambiguator,
            });
        }
        Ok(Handled::Imported)
    }

    /// Occurrence index of (patient, code, time) in file order: repeats at
    /// one time are real in Synthea (e.g. two lab panels in one encounter).
    fn next_disambiguator(&mut self, patient_id: &str, code: &str, time_s: i64) -> u32 {
        let key = (patient_id.to_owned(), code.to_owned(), time_s);
        let occurrence = self.occurrences.entry(key).or_insert(0);
        let disambiguator = *occurrence;
        *occurrence = occurrence.saturating_add(1);
        disambiguator
    }

    fn add_condition(&mut self, resource: &Value) -> Result<Handled, String> {
        // R4 codes verificationStatus as a CodeableConcept, STU3 as a string.
        if status_code(resource.get("verificationStatus")) == Some("entered-in-error") {
            return Ok(Handled::Skipped(
                "verificationStatus is entered-in-error".to_owned(),
            ));
        }
        let Some((system, code)) = condition_coding(resource) else {
            return Ok(Handled::Skipped("code has no coding".to_owned()));
        };
        let source_patient_id = self.subject_patient_id(resource)?;
        let onset_s = match resource.get("onsetDateTime") {
            Some(value) => Some(time_field("onsetDateTime", value)?),
            None => None,
        };
        self.conditions.push(SourceCondition {
            source_patient_id,
            system,
            code,
            onset_s,
        });
        Ok(Handled::Imported)
    }

    /// `subject` in R4 and STU3; DSTU2 Conditions called it `patient`.
    fn subject_patient_id(&self, resource: &Value) -> Result<String, String> {
        let subject = resource
            .get("subject")
            .or_else(|| resource.get("patient"))
            .ok_or("no subject")?;
        let reference = subject
            .get("reference")
            .and_then(Value::as_str)
            .ok_or("subject has no reference")?;
        if let Some(id) = self.patient_full_urls.get(reference) {
            return Ok(id.clone());
        }
        patient_id_from_reference(reference)
            .map(str::to_owned)
            .ok_or_else(|| "subject does not reference a Patient".to_owned())
    }

    fn finish(self) -> ParsedFile {
        let latest_observation_s = latest_observation_time_by_patient(&self.observations);
        let patients = self
            .patients
            .into_iter()
            .map(|pending| with_age(pending, &latest_observation_s))
            .collect();
        ParsedFile {
            patients,
            observations: self.observations,
            conditions: self.conditions,
            skipped_types: self.skipped_types,
            skipped: self.skipped,
            rejected: self.rejected,
        }
    }
}

/// "urn:uuid:<id>", "Patient/<id>", "https://host/fhir/Patient/<id>" and
/// "Patient/<id>/_history/<version>" all name the Patient <id>.
fn patient_id_from_reference(reference: &str) -> Option<&str> {
    if let Some(id) = reference.strip_prefix("urn:uuid:") {
        return Some(id).filter(|id| !id.is_empty());
    }
    let without_version = reference.split("/_history/").next()?;
    let (kind, id) = without_version.rsplit_once('/')?;
    let is_patient = kind == "Patient" || kind.ends_with("/Patient");
    Some(id).filter(|id| is_patient && !id.is_empty())
}

fn latest_observation_time_by_patient(observations: &[SourceObservation]) -> HashMap<&str, i64> {
    let mut latest: HashMap<&str, i64> = HashMap::new();
    for observation in observations {
        let time = latest
            .entry(observation.source_patient_id.as_str())
            .or_insert(observation.time_s);
        *time = (*time).max(observation.time_s);
    }
    latest
}

/// Age at the index time: the patient's latest observation in this file,
/// else their death. Never "now", so that re-importing gives the same age.
fn with_age(pending: PendingPatient, latest_observation_s: &HashMap<&str, i64>) -> SourcePatient {
    let mut patient = pending.patient;
    let index_s = latest_observation_s
        .get(patient.source_id.as_str())
        .copied()
        .or(pending.deceased_s);
    patient.age_years = match (pending.birth_date, index_s) {
        (Some(birth_date), Some(index_s)) => completed_years(birth_date, index_s),
        _ => None,
    };
    patient
}

/// Whole years lived, as clinicians count age; `None` if the index time is
/// before birth, which only inconsistent data produces.
fn completed_years(birth_date: NaiveDate, at_s: i64) -> Option<f64> {
    let at = DateTime::from_timestamp(at_s, 0)?.date_naive();
    let birthday_not_yet_reached = (at.month(), at.day()) < (birth_date.month(), birth_date.day());
    let years = at.year() - birth_date.year() - i32::from(birthday_not_yet_reached);
    (years >= 0).then_some(f64::from(years))
}

fn sex_of(gender: Option<&Value>) -> Result<Sex, String> {
    match gender {
        None | Some(Value::Null) => Ok(Sex::Unknown),
        Some(Value::String(gender)) => match gender.as_str() {
            "female" => Ok(Sex::Female),
            "male" => Ok(Sex::Male),
            "other" => Ok(Sex::Other),
            "unknown" => Ok(Sex::Unknown),
            _ => Err("gender is not one of male, female, other, unknown".to_owned()),
        },
        Some(_) => Err("gender is not a string".to_owned()),
    }
}

/// The reason never quotes the value: a birth date helps re-identify people.
fn birth_date_of(value: &Value) -> Result<NaiveDate, String> {
    value
        .as_str()
        .and_then(parse_fhir_date)
        .ok_or_else(|| "birthDate is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)".to_owned())
}

/// (`deceased` attribute, time of death) from deceasedBoolean or deceasedDateTime.
fn deceased_of(resource: &Value) -> Result<(Option<f64>, Option<i64>), String> {
    if let Some(value) = resource.get("deceasedBoolean") {
        let deceased = value.as_bool().ok_or("deceasedBoolean is not a boolean")?;
        return Ok((Some(if deceased { 1.0 } else { 0.0 }), None));
    }
    if let Some(value) = resource.get("deceasedDateTime") {
        let died_s = time_field("deceasedDateTime", value)?;
        return Ok((Some(1.0), Some(died_s)));
    }
    Ok((None, None))
}

/// A FHIR `code` given as a plain string (STU3 and R4 `status`) or as a
/// CodeableConcept (R4 `verificationStatus`).
fn status_code(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(code) => Some(code),
        concept => codings(concept).find_map(|coding| coding.get("code")?.as_str()),
    }
}

fn codings(concept: &Value) -> impl Iterator<Item = &Value> {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn loinc_code(concept: Option<&Value>) -> Option<String> {
    codings(concept?)
        .filter(|coding| coding.get("system").and_then(Value::as_str) == Some(LOINC_SYSTEM))
        .find_map(|coding| coding.get("code")?.as_str())
        .filter(|code| !code.is_empty())
        .map(str::to_owned)
}

/// First SNOMED CT coding, else the first coding that has a code.
fn condition_coding(resource: &Value) -> Option<(String, String)> {
    let coded: Vec<(&str, &str)> = codings(resource.get("code")?)
        .filter_map(|coding| {
            let code = coding
                .get("code")?
                .as_str()
                .filter(|code| !code.is_empty())?;
            let system = coding.get("system").and_then(Value::as_str).unwrap_or("");
            Some((system, code))
        })
        .collect();
    let (system, code) = coded
        .iter()
        .find(|(system, _)| *system == SNOMED_SYSTEM)
        .or_else(|| coded.first())?;
    Some((system.to_string(), code.to_string()))
}

/// `(LOINC code, value)` of the observation itself and of each component
/// that has its own LOINC coding and quantity: a blood-pressure panel
/// (55284-4) has no value itself and yields systolic and diastolic values.
fn measurements_of(resource: &Value) -> Result<Vec<(String, f64)>, String> {
    let mut measurements = Vec::new();
    let own_value = quantity_value("valueQuantity", resource.get("valueQuantity"))?;
    if let (Some(code), Some(value)) = (loinc_code(resource.get("code")), own_value) {
        measurements.push((code, value));
    }
    let components = resource.get("component").and_then(Value::as_array);
    for (index, component) in components.into_iter().flatten().enumerate() {
        let field = format!("component[{index}].valueQuantity");
        let value = quantity_value(&field, component.get("valueQuantity"))?;
        if let (Some(code), Some(value)) = (loinc_code(component.get("code")), value) {
            measurements.push((code, value));
        }
    }
    Ok(measurements)
}

/// `Ok(None)` when there is no quantity or it has no value (e.g. a
/// dataAbsentReason); a value that is not a finite number is malformed.
fn quantity_value(field: &str, quantity: Option<&Value>) -> Result<Option<f64>, String> {
    match quantity.and_then(|quantity| quantity.get("value")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => match number.as_f64() {
            Some(value) if value.is_finite() => Ok(Some(value)),
            _ => Err(format!("{field}.value is not a finite number")),
        },
        Some(_) => Err(format!("{field}.value is not a number")),
    }
}

/// Names the kind of value so the skip report is useful, never the value:
/// a valueString may hold free text about the patient.
fn no_measurement_reason(resource: &Value) -> String {
    let value_field = resource.as_object().and_then(|object| {
        object
            .keys()
            .find(|key| key.starts_with("value") && key.as_str() != "valueQuantity")
    });
    if let Some(field) = value_field {
        format!("{field} is not a numeric quantity")
    } else if quantity_value("valueQuantity", resource.get("valueQuantity")) != Ok(None) {
        "the numeric value has no LOINC code".to_owned()
    } else {
        "no numeric value and no component with a LOINC code and valueQuantity".to_owned()
    }
}

/// effective[x] is when the measurement applies; `issued` (when it was
/// reported) is only a fallback.
fn observation_time(resource: &Value) -> Result<i64, String> {
    for field in ["effectiveDateTime", "effectiveInstant"] {
        if let Some(value) = resource.get(field) {
            return time_field(field, value);
        }
    }
    if let Some(start) = resource.get("effectivePeriod").and_then(|p| p.get("start")) {
        return time_field("effectivePeriod.start", start);
    }
    match resource.get("issued") {
        Some(value) => time_field("issued", value),
        None => Err("no effectiveDateTime, effectivePeriod or issued time".to_owned()),
    }
}

fn time_field(field: &str, value: &Value) -> Result<i64, String> {
    value
        .as_str()
        .and_then(parse_fhir_date_time)
        .ok_or_else(|| format!("{field} is not a FHIR dateTime"))
}

/// Unix seconds of a FHIR dateTime/instant. A partial date means the start
/// of that year, month or day in UTC; a time without a zone (which FHIR
/// forbids but some exporters write) is read as UTC.
fn parse_fhir_date_time(text: &str) -> Option<i64> {
    if !text.contains('T') {
        let date = parse_fhir_date(text)?;
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp());
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|time| time.and_utc().timestamp())
}

/// "YYYY", "YYYY-MM" or "YYYY-MM-DD"; partial dates mean the first day of
/// the period, which is FHIR's usual reading of a partial date's start.
fn parse_fhir_date(text: &str) -> Option<NaiveDate> {
    let number = |part: &str, digits: usize| -> Option<u32> {
        let well_formed = part.len() == digits && part.bytes().all(|b| b.is_ascii_digit());
        well_formed.then(|| part.parse().ok()).flatten()
    };
    let mut parts = text.split('-');
    let year = i32::try_from(number(parts.next()?, 4)?).ok()?;
    let month = parts
        .next()
        .map(|part| number(part, 2))
        .unwrap_or(Some(1))?;
    let day = parts
        .next()
        .map(|part| number(part, 2))
        .unwrap_or(Some(1))?;
    if parts.next().is_some() {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(location: &str, document: &Value) -> ParsedFile {
        let bytes = document.to_string().into_bytes();
        match parse_bytes(location, &bytes) {
            Ok(parsed) => parsed,
            Err(error) => panic!("fixture should parse: {error}"),
        }
    }

    fn bundle(resources: Vec<Value>) -> Value {
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|resource| {
                let id = resource["id"].as_str().unwrap_or("none").to_owned();
                json!({ "fullUrl": format!("urn:uuid:{id}"), "resource": resource,
                        "request": { "method": "POST", "url": "X" } })
            })
            .collect();
        json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
    }

    /// A Patient carrying every kind of identifying data the parser must drop.
    fn patient() -> Value {
        json!({
            "resourceType": "Patient",
            "id": "pat-1",
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": "Mothername Vexillary"
            }],
            "identifier": [{ "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456" }],
            "name": [{ "use": "official", "family": "Quibbleworth", "given": ["Zorblatt"],
                       "prefix": ["Mr."] }],
            "telecom": [{ "system": "phone", "value": "555-0199" }],
            "address": [{ "line": ["42 Wobblewood Lane"], "city": "Snarkville" }],
            "gender": "male",
            "birthDate": "1960-06-15",
            "maritalStatus": { "text": "Married" }
        })
    }

    fn observation(id: &str, code: &str, value: Value, when: &str) -> Value {
        json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "code": { "coding": [{ "system": LOINC_SYSTEM, "code": code }] },
            "subject": { "reference": "urn:uuid:pat-1" },
            "effectiveDateTime": when,
            "issued": when,
            "valueQuantity": { "value": value, "unit": "x" }
        })
    }

    fn blood_pressure(id: &str, when: &str) -> Value {
        let component = |code: &str, value: f64| {
            json!({ "code": { "coding": [{ "system": LOINC_SYSTEM, "code": code }] },
                    "valueQuantity": { "value": value, "unit": "mm[Hg]" } })
        };
        json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "code": { "coding": [{ "system": LOINC_SYSTEM, "code": "55284-4" }] },
            "subject": { "reference": "Patient/pat-1" },
            "effectiveDateTime": when,
            "component": [component("8462-4", 75.4), component("8480-6", 129.7)]
        })
    }

    fn codes(parsed: &ParsedFile) -> Vec<(&str, i64, f64, u32)> {
        parsed
            .observations
            .iter()
            .map(|o| (o.code.as_str(), o.time_s, o.value, o.disambiguator))
            .collect()
    }

    const T_2011: &str = "2011-10-14T23:37:54+00:00";
    const T_2011_S: i64 = 1_318_635_474;

    #[test]
    fn patient_keeps_only_non_identifying_fields() {
        let parsed = parse(
            "patient-001.json",
            &bundle(vec![
                patient(),
                observation("o1", "8302-2", json!(176.3), "2020-06-14T10:00:00Z"),
            ]),
        );
        assert_eq!(parsed.patients.len(), 1);
        let patient = &parsed.patients[0];
        assert_eq!(patient.source_id, "pat-1");
        assert_eq!(patient.sex, Sex::Male);
        // Born 1960-06-15, latest observation 2020-06-14: one day short of 60.
        assert_eq!(patient.age_years, Some(59.0));
        assert!(patient.attributes.is_empty());

        let debug = format!("{parsed:?}");
        let fixture = patient_fixture_strings();
        for identifying in fixture {
            assert!(
                !debug.contains(&identifying),
                "{identifying} leaked: {debug}"
            );
        }
    }

    /// Every string in the fixture Patient's identifying fields.
    fn patient_fixture_strings() -> Vec<String> {
        let patient = patient();
        let mut strings = Vec::new();
        for field in ["extension", "identifier", "name", "telecom", "address"] {
            collect_strings(&patient[field], &mut strings);
        }
        strings.retain(|s| !s.starts_with("http") && s.len() > 3);
        assert!(strings.contains(&"Zorblatt".to_owned()));
        strings
    }

    fn collect_strings(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::String(s) => into.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| collect_strings(v, into)),
            Value::Object(map) => map.values().for_each(|v| collect_strings(v, into)),
            _ => {}
        }
    }

    #[test]
    fn blood_pressure_components_become_two_observations() {
        let parsed = parse(
            "patient-001.json",
            &bundle(vec![patient(), blood_pressure("bp", T_2011)]),
        );
        assert_eq!(
            codes(&parsed),
            vec![
                ("8462-4", T_2011_S, 75.4, 0),
                ("8480-6", T_2011_S, 129.7, 0)
            ]
        );
        assert!(parsed
            .observations
            .iter()
            .all(|o| o.source_patient_id == "pat-1"));
    }

    #[test]
    fn repeats_at_one_time_get_increasing_disambiguators() {
        let parsed = parse(
            "patient-001.json",
            &bundle(vec![
                observation("a", "2093-3", json!(199.0), T_2011),
                observation("b", "2093-3", json!(263.5), T_2011),
                observation("c", "2339-0", json!(90), T_2011),
            ]),
        );
        assert_eq!(
            codes(&parsed),
            vec![
                ("2093-3", T_2011_S, 199.0, 0),
                ("2093-3", T_2011_S, 263.5, 1),
                ("2339-0", T_2011_S, 90.0, 0)
            ]
        );
    }

    #[test]
    fn legacy_and_unknown_fields_are_tolerated() {
        let mut legacy_observation = observation("o1", "29463-7", json!(80.1), "2012-03-04");
        legacy_observation["context"] = json!({ "reference": "urn:uuid:enc-1" });
        legacy_observation["someVendorField"] = json!({ "nested": [1, 2, 3] });
        let legacy_condition = json!({
            "resourceType": "Condition",
            "id": "c1",
            "clinicalStatus": "active",
            "verificationStatus": "confirmed",
            "patient": { "reference": "Patient/pat-1" },
            "context": { "reference": "urn:uuid:enc-1" },
            "code": { "coding": [
                { "system": "http://hl7.org/fhir/sid/icd-10", "code": "E66" },
                { "system": SNOMED_SYSTEM, "code": "162864005", "display": "Obesity" }
            ] },
            "onsetDateTime": "1991-06-07T23:37:54+00:00"
        });
        let parsed = parse(
            "patient-001.json",
            &bundle(vec![patient(), legacy_observation, legacy_condition]),
        );
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        assert_eq!(codes(&parsed), vec![("29463-7", 1_330_819_200, 80.1, 0)]);
        assert_eq!(
            parsed.conditions,
            vec![SourceCondition {
                source_patient_id: "pat-1".into(),
                system: SNOMED_SYSTEM.into(),
                code: "162864005".into(),
                onset_s: Some(676_337_874),
            }]
        );
    }

    #[test]
    fn other_resource_types_are_counted() {
        let parsed = parse(
            "patient-001.json",
            &bundle(vec![
                json!({ "resourceType": "Claim", "id": "x1" }),
                json!({ "resourceType": "Encounter", "id": "x2" }),
                json!({ "resourceType": "Claim", "id": "x3" }),
            ]),
        );
        let expected: BTreeMap<String, u64> =
            [("Claim".to_owned(), 2), ("Encounter".to_owned(), 1)].into();
        assert_eq!(parsed.skipped_types, expected);
        assert!(parsed.rejected.is_empty() && parsed.skipped.is_empty());
    }

    #[test]
    fn observations_without_a_numeric_value_are_skipped_with_a_reason() {
        let mut smoking = observation("s", "72166-2", json!(null), T_2011);
        if let Some(object) = smoking.as_object_mut() {
            object.remove("valueQuantity");
        }
        smoking["valueCodeableConcept"] = json!({ "text": "Never smoker" });
        let mut withdrawn = observation("w", "8867-4", json!(70), T_2011);
        withdrawn["status"] = json!("entered-in-error");
        let parsed = parse("p.json", &bundle(vec![smoking, withdrawn]));
        assert!(parsed.observations.is_empty());
        let skipped: Vec<String> = parsed.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            skipped,
            [
                "p.json: entry[0] (Observation/s): valueCodeableConcept is not a numeric quantity",
                "p.json: entry[1] (Observation/w): status is entered-in-error",
            ]
        );
        assert!(!format!("{parsed:?}").contains("Never smoker"));
    }

    #[test]
    fn malformed_entries_are_rejected_with_location_and_the_rest_loads() {
        let mut no_subject = observation("no-subject", "8867-4", json!(70), T_2011);
        if let Some(object) = no_subject.as_object_mut() {
            object.remove("subject");
        }
        let mut bad_patient = patient();
        bad_patient["id"] = json!("pat-2");
        bad_patient["birthDate"] = json!("15/06/1960");
        let parsed = parse(
            "patient-003.json",
            &bundle(vec![
                patient(),
                no_subject,
                observation("bad-date", "8867-4", json!(70), "yesterday"),
                observation("bad-value", "8867-4", json!("70"), T_2011),
                bad_patient,
                json!({ "id": "typeless" }),
                observation("good", "8867-4", json!(71), T_2011),
            ]),
        );
        let rejected: Vec<String> = parsed.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            rejected,
            [
                "patient-003.json: entry[1] (Observation/no-subject): no subject",
                "patient-003.json: entry[2] (Observation/bad-date): \
                 effectiveDateTime is not a FHIR dateTime",
                "patient-003.json: entry[3] (Observation/bad-value): \
                 valueQuantity.value is not a number",
                "patient-003.json: entry[4] (Patient/pat-2): \
                 birthDate is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
                "patient-003.json: entry[5]: resource has no resourceType",
            ]
        );
        assert_eq!(codes(&parsed), vec![("8867-4", T_2011_S, 71.0, 0)]);
        assert_eq!(parsed.patients.len(), 1);
    }

    #[test]
    fn truncated_or_non_json_files_fail_naming_the_file() {
        let text = bundle(vec![patient(), blood_pressure("bp", T_2011)]).to_string();
        let truncated = &text.as_bytes()[..text.len() / 2];
        let Err(error) = parse_bytes("patient-007.json", truncated) else {
            panic!("a truncated file must fail");
        };
        assert!(matches!(error, Error::Json { line: 1, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("patient-007.json"), "{message}");
        assert!(message.contains("ends in the middle"), "{message}");

        let not_json = parse_bytes("notes.json", b"Dear colleague,\nsee attached.\n");
        assert!(matches!(not_json, Err(Error::Json { .. })));
        let not_fhir = parse_bytes("numbers.json", b"[1, 2, 3]");
        assert!(matches!(not_fhir, Err(Error::NotFhir { .. })));
    }

    #[test]
    fn pretty_printed_truncation_reports_the_line() {
        let text = serde_json::to_string_pretty(&bundle(vec![patient()])).unwrap_or_default();
        let cut = text.len() - 20;
        match parse_bytes("p.json", &text.as_bytes()[..cut]) {
            Err(Error::Json { line, .. }) => assert!(line > 10, "line {line}"),
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn ndjson_is_read_by_extension_and_by_content() {
        let lines = [
            patient().to_string(),
            String::new(),
            blood_pressure("bp", T_2011).to_string(),
            observation("o", "8867-4", json!(70), T_2011).to_string(),
        ];
        let text = lines.join("\n");
        for location in ["Patient.ndjson", "export.json"] {
            let parsed = match parse_bytes(location, text.as_bytes()) {
                Ok(parsed) => parsed,
                Err(error) => panic!("{error}"),
            };
            assert_eq!(parsed.patients.len(), 1, "{location}");
            assert_eq!(parsed.observations.len(), 3, "{location}");
        }

        let with_bad_line = format!("{text}\n{{\"resourceType\": \"Observ");
        let parsed = match parse_bytes("Observation.ndjson", with_bad_line.as_bytes()) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(parsed.observations.len(), 3);
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(parsed.rejected[0].location, "Observation.ndjson: line 5");
    }

    #[test]
    fn single_resource_documents_are_read() {
        let parsed = parse("pat.json", &patient());
        assert_eq!(parsed.patients.len(), 1);
        // No observation and no death: no deterministic index time, no age.
        assert_eq!(parsed.patients[0].age_years, None);
    }

    #[test]
    fn death_sets_the_attribute_and_the_fallback_index_time() {
        let mut dead = patient();
        dead["birthDate"] = json!("1930");
        dead["deceasedDateTime"] = json!("2000-01-01T00:00:00Z");
        let parsed = parse("p.json", &dead);
        assert_eq!(parsed.patients[0].attributes.get(ATTR_DECEASED), Some(&1.0));
        assert_eq!(parsed.patients[0].age_years, Some(70.0));

        let mut alive = patient();
        alive["deceasedBoolean"] = json!(false);
        let parsed = parse("p.json", &alive);
        assert_eq!(parsed.patients[0].attributes.get(ATTR_DECEASED), Some(&0.0));
    }

    #[test]
    fn fhir_dates_and_references_parse() {
        assert_eq!(parse_fhir_date("1970"), NaiveDate::from_ymd_opt(1970, 1, 1));
        assert_eq!(
            parse_fhir_date("1970-05"),
            NaiveDate::from_ymd_opt(1970, 5, 1)
        );
        assert_eq!(
            parse_fhir_date("1970-05-09"),
            NaiveDate::from_ymd_opt(1970, 5, 9)
        );
        assert_eq!(parse_fhir_date("1970-13"), None);
        assert_eq!(parse_fhir_date("70-05-09"), None);
        assert_eq!(parse_fhir_date_time("1970-01-02"), Some(86_400));
        assert_eq!(parse_fhir_date_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_fhir_date_time("1970-01-01T00:00:01.530Z"), Some(1));
        assert_eq!(parse_fhir_date_time("1970-01-01T00:00:02"), Some(2));
        assert_eq!(patient_id_from_reference("urn:uuid:abc"), Some("abc"));
        assert_eq!(patient_id_from_reference("Patient/abc"), Some("abc"));
        assert_eq!(
            patient_id_from_reference("https://h/fhir/Patient/abc/_history/2"),
            Some("abc")
        );
        assert_eq!(patient_id_from_reference("Group/abc"), None);
    }

    fn data_dir() -> PathBuf {
        let dir = std::env::var_os("WITMED_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
            });
        assert!(
            dir.is_dir(),
            "shared data directory {} is missing: set WITMED_DATA_DIR to the directory that \
             holds fhir-r4-synthea/ (see ../shared/data/README.md)",
            dir.display()
        );
        dir
    }

    #[test]
    fn real_synthea_bundles_parse_completely() {
        let dir = data_dir().join("fhir-r4-synthea");
        let files = match list_input_files(std::slice::from_ref(&dir)) {
            Ok(files) => files,
            Err(error) => panic!("cannot list {}: {error}", dir.display()),
        };
        assert_eq!(files.len(), 60, "expected 60 bundles in {}", dir.display());
        let mut patients = 0;
        let mut observations = 0;
        for path in &files {
            let parsed = match parse_file(path) {
                Ok(parsed) => parsed,
                Err(error) => panic!("{error}"),
            };
            let name = path.display();
            assert_eq!(parsed.patients.len(), 1, "{name}");
            assert!(!parsed.observations.is_empty(), "{name}");
            assert!(parsed.rejected.is_empty(), "{name}: {:?}", parsed.rejected);
            let patient = &parsed.patients[0];
            assert!(patient.age_years.is_some(), "{name}");
            assert!(parsed
                .observations
                .iter()
                .all(|o| o.source_patient_id == patient.source_id));
            assert_no_names_leak(path, &parsed);
            patients += parsed.patients.len();
            observations += parsed.observations.len();
        }
        assert_eq!(patients, 60);
        // Counted independently with a script: every valueQuantity of an
        // Observation or of one of its components, all LOINC-coded.
        assert_eq!(observations, 6706);
    }

    fn assert_no_names_leak(path: &Path, parsed: &ParsedFile) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => panic!("cannot read {}: {error}", path.display()),
        };
        let bundle: Value = serde_json::from_str(&text).unwrap_or_default();
        let debug = format!("{parsed:?}");
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        for entry in entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Patient")
        {
            let mut names = Vec::new();
            collect_strings(&entry["resource"]["name"], &mut names);
            names.retain(|name| name.len() > 3 && name != "official");
            assert!(!names.is_empty(), "{}", path.display());
            for name in names {
                assert!(
                    !debug.contains(&name),
                    "{name} leaked from {}",
                    path.display()
                );
            }
        }
    }
}

//! Parser for PhysioNet/CinC Challenge 2012 set files (`set-a/<RecordID>.txt`)
//! and their outcome tables (`Outcomes-a.txt`).
//!
//! A set file is CSV `Time,Parameter,Value`, one ICU stay per file. `Time` is
//! `HH:MM` since ICU admission. The parameters `RecordID`, `Age`, `Gender`,
//! `Height` and `ICUType` describe the patient wherever they occur; `Weight`
//! does so only inside the leading block of `00:00` descriptor rows and is a
//! time series afterwards. Every other valid row becomes exactly one
//! observation, so that counts can be checked against the raw files.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use csv::{ByteRecord, ReaderBuilder, Trim};
use serde::{Deserialize, Serialize};

use super::source::{
    Rejected, Sex, SourceObservation, SourcePatient, ATTR_HEIGHT_CM, ATTR_ICU_TYPE,
    ATTR_IN_HOSPITAL_DEATH, ATTR_LENGTH_OF_STAY_DAYS, ATTR_SAPS1, ATTR_SOFA, ATTR_SURVIVAL_DAYS,
    ATTR_WEIGHT_KG,
};

const RECORD_HEADER: [&str; 3] = ["Time", "Parameter", "Value"];
const OUTCOMES_HEADER: [&str; 6] = [
    "RecordID",
    "SAPS-I",
    "SOFA",
    "Length_of_stay",
    "Survival",
    "In-hospital_death",
];

/// The occurrence index lives in the low 16 bits of the disambiguator.
const MAX_OCCURRENCES_PER_PARAM_AND_TIME: u32 = 1 << 16;

/// Why a whole file could not be loaded. Single bad rows are never an
/// `Error`; they are reported as [`Rejected`] and the rest of the file loads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {location}: {source}; check that the file exists and is readable")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// The CSV reader failed part-way (an I/O error; bad rows are rejected).
    #[error(
        "cannot read {location}: {source}; check that the file is a complete, readable CSV file"
    )]
    Csv {
        location: String,
        #[source]
        source: csv::Error,
    },
    /// The first line is not `Time,Parameter,Value`.
    #[error(
        "{location}: header is {found:?} but a PhysioNet 2012 set file must start with \
         \"Time,Parameter,Value\"; check that this is a set-a/b/c record file, not another CSV"
    )]
    BadHeader { location: String, found: String },
    /// No row gives the RecordID, so the stay belongs to nobody.
    #[error(
        "{location}: no valid RecordID row, so the stay cannot be attributed to a patient; \
         add a `00:00,RecordID,<number>` row or leave the file out of the import"
    )]
    MissingRecordId { location: String },
    /// The first line of an outcomes file is not the expected header.
    #[error(
        "{location}: header is {found:?} but an outcomes file must start with \
         \"RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\"; \
         check that this is an Outcomes-<set>.txt file"
    )]
    BadOutcomesHeader { location: String, found: String },
}

/// Everything one set file yields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedRecord {
    /// The patient, from the descriptor rows.
    pub patient: SourcePatient,
    /// One per valid time-series row, in file order.
    pub observations: Vec<SourceObservation>,
    /// Time-series rows whose value was `-1` or empty.
    pub skipped_missing: u64,
    /// Rows that could not be parsed, located by file and line.
    pub rejected: Vec<Rejected>,
}

/// One row of an outcomes file; `None` where the file says `-1` or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Matches [`SourcePatient::source_id`] of the record's patient.
    pub record_id: String,
    /// `SAPS-I` score.
    pub saps1: Option<f64>,
    /// `SOFA` score.
    pub sofa: Option<f64>,
    /// `Length_of_stay` in days.
    pub length_of_stay_days: Option<f64>,
    /// `Survival`: days from ICU admission to death; the dataset writes -1
    /// for patients not known to have died, so `None` mostly means survivor.
    pub survival_days: Option<f64>,
    /// `In-hospital_death`: 0 survivor, 1 died in hospital.
    pub in_hospital_death: Option<f64>,
}

/// The LOINC code of a PhysioNet 2012 parameter, if it has one.
///
/// Invasive and non-invasive blood pressures share a code on purpose: they
/// measure the same quantity; the disambiguator keeps their rows apart.
pub fn loinc_for(param: &str) -> Option<&'static str> {
    let code = match param {
        "HR" => "8867-4",
        "RespRate" => "9279-1",
        "Temp" => "8310-5",
        "SysABP" | "NISysABP" => "8480-6",
        "DiasABP" | "NIDiasABP" => "8462-4",
        "MAP" | "NIMAP" => "8478-0",
        "SaO2" => "2708-6",
        "Glucose" => "2339-0",
        "Weight" => "29463-7",
        "Height" => "8302-2",
        "GCS" => "9269-2",
        "Urine" => "9187-6",
        "Lactate" => "2524-7",
        "pH" => "2744-1",
        "FiO2" => "3150-0",
        "PaO2" => "2703-7",
        "PaCO2" => "2019-8",
        "HCO3" => "1963-8",
        "BUN" => "3094-0",
        "Creatinine" => "2160-0",
        "Platelets" => "777-3",
        "WBC" => "6690-2",
        "HCT" => "4544-3",
        "K" => "2823-3",
        "Na" => "2951-2",
        "Mg" => "19123-9",
        "Albumin" => "1751-7",
        "ALP" => "6768-6",
        "ALT" => "1742-6",
        "AST" => "1920-8",
        "Bilirubin" => "1975-2",
        "Cholesterol" => "2093-3",
        "TroponinI" => "10839-9",
        "TroponinT" => "6598-7",
        _ => return None,
    };
    Some(code)
}

/// The observation code of a parameter: its LOINC code, else `physionet:<Param>`.
pub fn observation_code_for(param: &str) -> String {
    match loinc_for(param) {
        Some(code) => code.to_owned(),
        None => format!("physionet:{param}"),
    }
}

/// Parses one set file. `location` names it in messages, e.g. "set-a/132539.txt".
pub fn parse_record(location: &str, reader: impl Read) -> Result<ParsedRecord, Error> {
    let mut rows = csv_reader(reader).into_byte_records();
    let header = rows
        .next()
        .transpose()
        .map_err(|e| csv_error(location, e))?;
    check_header(header.as_ref(), &RECORD_HEADER).map_err(|found| Error::BadHeader {
        location: location.to_owned(),
        found,
    })?;

    let mut builder = RecordBuilder::new(location);
    for row in rows {
        let row = row.map_err(|e| csv_error(location, e))?;
        builder.add_row(&row);
    }
    builder.finish()
}

/// Reads and parses one set file; messages name it by its last two path
/// components, e.g. "set-a/132539.txt".
pub fn parse_record_file(path: &Path) -> Result<ParsedRecord, Error> {
    let location = location_of(path);
    let file = File::open(path).map_err(|source| Error::Io {
        location: location.clone(),
        source,
    })?;
    parse_record(&location, file)
}

/// Parses an outcomes table. Bad rows are returned as [`Rejected`]; a repeated
/// RecordID is rejected too, so that each record gets at most one outcome.
pub fn parse_outcomes(
    location: &str,
    reader: impl Read,
) -> Result<(Vec<Outcome>, Vec<Rejected>), Error> {
    let mut rows = csv_reader(reader).into_byte_records();
    let header = rows
        .next()
        .transpose()
        .map_err(|e| csv_error(location, e))?;
    check_header(header.as_ref(), &OUTCOMES_HEADER).map_err(|found| Error::BadOutcomesHeader {
        location: location.to_owned(),
        found,
    })?;

    let mut outcomes = Vec::new();
    let mut rejected = Vec::new();
    let mut seen_ids = HashSet::new();
    for row in rows {
        let row = row.map_err(|e| csv_error(location, e))?;
        let row_location = row_location(location, &row);
        match parse_outcome_row(&row) {
            Ok(outcome) if !seen_ids.insert(outcome.record_id.clone()) => {
                rejected.push(Rejected::new(
                    row_location,
                    "RecordID repeats an earlier row; keeping the first",
                ))
            }
            Ok(outcome) => outcomes.push(outcome),
            Err(reason) => rejected.push(Rejected::new(row_location, reason)),
        }
    }
    Ok((outcomes, rejected))
}

/// Copies the known outcome values into the patient's attributes. The caller
/// matches `outcome.record_id` to `patient.source_id`; unknown values leave
/// the attribute untouched.
pub fn apply_outcome(patient: &mut SourcePatient, outcome: &Outcome) {
    let values = [
        (ATTR_SAPS1, outcome.saps1),
        (ATTR_SOFA, outcome.sofa),
        (ATTR_LENGTH_OF_STAY_DAYS, outcome.length_of_stay_days),
        (ATTR_SURVIVAL_DAYS, outcome.survival_days),
        (ATTR_IN_HOSPITAL_DEATH, outcome.in_hospital_death),
    ];
    for (name, value) in values {
        if let Some(value) = value {
            patient.attributes.insert(name.to_owned(), value);
        }
    }
}

/// The record files of a set directory: `*.txt` without `Outcomes*`, sorted
/// by name so that imports run in a reproducible order.
pub fn list_set_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && is_record_file_name(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_record_file_name(path: &Path) -> bool {
    let has_txt_extension = path.extension().is_some_and(|ext| ext == "txt");
    let is_outcomes = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("Outcomes"));
    has_txt_extension && !is_outcomes
}

/// "set-a/132539.txt" for ".../physionet2012/set-a/132539.txt".
fn location_of(path: &Path) -> String {
    let file = path.file_name().map(|name| name.to_string_lossy());
    let dir = path
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy());
    match (dir, file) {
        (Some(dir), Some(file)) => format!("{dir}/{file}"),
        (None, Some(file)) => file.into_owned(),
        _ => path.display().to_string(),
    }
}

/// Flexible so that a row with the wrong number of fields is one rejected
/// row rather than an error for the whole file; byte records so that a row
/// of invalid UTF-8 is rejected on its own too.
fn csv_reader<R: Read>(reader: R) -> csv::Reader<R> {
    ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(Trim::All)
        .from_reader(reader)
}

fn csv_error(location: &str, source: csv::Error) -> Error {
    Error::Csv {
        location: location.to_owned(),
        source,
    }
}

/// `Err(found header)` unless the first record is exactly `expected`. A UTF-8
/// byte order mark is tolerated because spreadsheet exports add one.
fn check_header(header: Option<&ByteRecord>, expected: &[&str]) -> Result<(), String> {
    let Some(header) = header else {
        return Err(String::new()); // an empty file
    };
    let fields: Vec<String> = header
        .iter()
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .collect();
    let matches = fields.len() == expected.len()
        && fields
            .iter()
            .zip(expected)
            .enumerate()
            .all(|(i, (found, wanted))| {
                let found = if i == 0 {
                    found.trim_start_matches('\u{feff}')
                } else {
                    found
                };
                found == *wanted
            });
    if matches {
        Ok(())
    } else {
        Err(fields.join(","))
    }
}

/// "set-a/132539.txt:57": csv counts lines from 1 with the header as line 1.
fn row_location(location: &str, row: &ByteRecord) -> String {
    match row.position() {
        Some(position) => format!("{location}:{}", position.line()),
        None => location.to_owned(),
    }
}

/// A syntactically valid data row of a set file.
struct Row {
    time_s: i64,
    param: String,
    /// `None` when the file says `-1` or nothing.
    value: Option<f64>,
}

fn parse_row(row: &ByteRecord) -> Result<Row, String> {
    if row.len() != 3 {
        return Err(format!(
            "expected 3 fields (Time,Parameter,Value), found {}",
            row.len()
        ));
    }
    let time = field_str(row, 0, "Time")?;
    let param = field_str(row, 1, "Parameter")?;
    let value = field_str(row, 2, "Value")?;
    if param.is_empty() {
        return Err("empty Parameter".to_owned());
    }
    Ok(Row {
        time_s: parse_elapsed_time(time)?,
        param: param.to_owned(),
        value: parse_optional_value(value)?,
    })
}

fn field_str<'r>(row: &'r ByteRecord, index: usize, name: &str) -> Result<&'r str, String> {
    let bytes = row.get(index).unwrap_or_default();
    std::str::from_utf8(bytes).map_err(|_| format!("{name} is not valid UTF-8"))
}

/// Seconds since ICU admission from `HH:MM`; hours run past 24 (stays last
/// 48 hours), so this is a duration, not a clock time.
fn parse_elapsed_time(time: &str) -> Result<i64, String> {
    let bad_time = || format!("Time {time:?} is not HH:MM since ICU admission");
    let (hours, minutes) = time.split_once(':').ok_or_else(bad_time)?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Three hour digits are plenty for any stay; more would only hide garbage.
    if !all_digits(hours) || hours.len() > 3 || !all_digits(minutes) || minutes.len() != 2 {
        return Err(bad_time());
    }
    let hours: i64 = hours.parse().map_err(|_| bad_time())?;
    let minutes: i64 = minutes.parse().map_err(|_| bad_time())?;
    if minutes >= 60 {
        return Err(bad_time());
    }
    Ok(hours * 3600 + minutes * 60)
}

/// `-1` and the empty string are the dataset's markers for "not measured".
fn parse_optional_value(value: &str) -> Result<Option<f64>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let number: f64 = value
        .parse()
        .map_err(|_| format!("Value {value:?} is not a number"))?;
    if !number.is_finite() {
        return Err(format!("Value {value:?} is not a finite number"));
    }
    Ok(if number == -1.0 { None } else { Some(number) })
}

/// Parameters that describe the patient wherever they occur in the file.
fn is_fixed_descriptor(param: &str) -> bool {
    matches!(param, "RecordID" | "Age" | "Gender" | "Height" | "ICUType")
}

/// Parameters that may appear in the leading block of descriptor rows.
fn is_leading_block_param(param: &str) -> bool {
    is_fixed_descriptor(param) || param == "Weight"
}

/// Accumulates one set file, row by row.
struct RecordBuilder<'a> {
    location: &'a str,
    /// True until the first row that is not a `00:00` descriptor row.
    in_leading_block: bool,
    record_id: Option<String>,
    patient: SourcePatient,
    /// Descriptor values seen so far, to catch contradicting repeats.
    descriptors: HashMap<String, Option<f64>>,
    /// Observations before the RecordID is known, which need not come first.
    observations: Vec<SourceObservation>,
    /// How many observations each (Param, time) pair has produced so far.
    occurrences: HashMap<(String, i64), u32>,
    skipped_missing: u64,
    rejected: Vec<Rejected>,
}

impl<'a> RecordBuilder<'a> {
    fn new(location: &'a str) -> Self {
        RecordBuilder {
            location,
            in_leading_block: true,
            record_id: None,
            patient: SourcePatient::new(String::new()),
            descriptors: HashMap::new(),
            observations: Vec::new(),
            occurrences: HashMap::new(),
            skipped_missing: 0,
            rejected: Vec::new(),
        }
    }

    fn add_row(&mut self, record: &ByteRecord) {
        let result = parse_row(record).and_then(|row| self.add_valid_row(row));
        if let Err(reason) = result {
            let location = row_location(self.location, record);
            self.rejected.push(Rejected::new(location, reason));
        }
    }

    fn add_valid_row(&mut self, row: Row) -> Result<(), String> {
        let is_leading_row = row.time_s == 0 && is_leading_block_param(&row.param);
        self.in_leading_block &= is_leading_row;
        let is_descriptor =
            is_fixed_descriptor(&row.param) || (row.param == "Weight" && self.in_leading_block);
        if is_descriptor {
            self.add_descriptor(&row.param, row.value)
        } else {
            self.add_time_series(row)
        }
    }

    /// A descriptor may repeat with the same value; a different value is
    /// rejected so that the first one wins deterministically.
    fn add_descriptor(&mut self, param: &str, value: Option<f64>) -> Result<(), String> {
        match self.descriptors.get(param) {
            Some(first) if *first == value => return Ok(()),
            Some(_) => {
                return Err(format!(
                    "{param} repeats with a different value; keeping the first"
                ))
            }
            None => {}
        }
        self.apply_descriptor(param, value)?;
        self.descriptors.insert(param.to_owned(), value);
        Ok(())
    }

    fn apply_descriptor(&mut self, param: &str, value: Option<f64>) -> Result<(), String> {
        let Some(value) = value else {
            // A missing descriptor simply stays absent.
            return Ok(());
        };
        match param {
            "RecordID" => self.record_id = Some(record_id_text(value)?),
            "Age" if value < 0.0 => return Err(format!("Age {value} is negative")),
            "Age" => self.patient.age_years = Some(value),
            "Gender" => self.patient.sex = sex_from_gender(value)?,
            "Height" => self.set_attribute(ATTR_HEIGHT_CM, value),
            "Weight" => self.set_attribute(ATTR_WEIGHT_KG, value),
            "ICUType" if is_whole_in_range(value, 1.0, 4.0) => {
                self.set_attribute(ATTR_ICU_TYPE, value)
            }
            "ICUType" => return Err(format!("ICUType {value} is not one of 1, 2, 3, 4")),
            _ => {}
        }
        Ok(())
    }

    fn set_attribute(&mut self, name: &str, value: f64) {
        self.patient.attributes.insert(name.to_owned(), value);
    }

    fn add_time_series(&mut self, row: Row) -> Result<(), String> {
        let Some(value) = row.value else {
            self.skipped_missing += 1;
            return Ok(());
        };
        let disambiguator = self.next_disambiguator(&row.param, row.time_s)?;
        self.observations.push(SourceObservation {
            source_patient_id: String::new(),
            code: observation_code_for(&row.param),
            time_s: row.time_s,
            value,
            disambiguator,
        });
        Ok(())
    }

    /// Param hash in the high half keeps SysABP and NISysABP apart although
    /// they share a LOINC code; the occurrence index in the low half keeps
    /// repeats of one parameter at one time apart. Keyed on seconds, not the
    /// raw text, so "0:07" and "00:07" count as the same time.
    fn next_disambiguator(&mut self, param: &str, time_s: i64) -> Result<u32, String> {
        let occurrence = self
            .occurrences
            .entry((param.to_owned(), time_s))
            .or_insert(0);
        if *occurrence >= MAX_OCCURRENCES_PER_PARAM_AND_TIME {
            return Err(format!(
                "{param} occurs more than {MAX_OCCURRENCES_PER_PARAM_AND_TIME} times at one time"
            ));
        }
        let disambiguator = (u32::from(param_hash16(param)) << 16) | *occurrence;
        *occurrence += 1;
        Ok(disambiguator)
    }

    fn finish(mut self) -> Result<ParsedRecord, Error> {
        let Some(record_id) = self.record_id else {
            return Err(Error::MissingRecordId {
                location: self.location.to_owned(),
            });
        };
        for observation in &mut self.observations {
            observation.source_patient_id.clone_from(&record_id);
        }
        self.patient.source_id = record_id;
        Ok(ParsedRecord {
            patient: self.patient,
            observations: self.observations,
            skipped_missing: self.skipped_missing,
            rejected: self.rejected,
        })
    }
}

/// RecordIDs are whole numbers; printing them back as integers makes
/// "132539" and "132539.0" the same patient in set files and outcomes alike.
fn record_id_text(value: f64) -> Result<String, String> {
    if is_whole_in_range(value, 0.0, u64::MAX as f64) {
        Ok(format!("{}", value as u64))
    } else {
        Err(format!("RecordID {value} is not a whole number"))
    }
}

fn sex_from_gender(value: f64) -> Result<Sex, String> {
    if value == 0.0 {
        Ok(Sex::Female)
    } else if value == 1.0 {
        Ok(Sex::Male)
    } else {
        Err(format!("Gender {value} is not 0 (female) or 1 (male)"))
    }
}

fn is_whole_in_range(value: f64, low: f64, high: f64) -> bool {
    value.fract() == 0.0 && (low..=high).contains(&value)
}

/// Stable 16-bit hash of a parameter name: 32-bit FNV-1a folded in half.
/// Fixed forever, because stored observation keys depend on it.
fn param_hash16(param: &str) -> u16 {
    const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    let hash = param.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    });
    ((hash >> 16) ^ (hash & 0xffff)) as u16
}

fn parse_outcome_row(row: &ByteRecord) -> Result<Outcome, String> {
    if row.len() != OUTCOMES_HEADER.len() {
        return Err(format!(
            "expected {} fields, found {}",
            OUTCOMES_HEADER.len(),
            row.len()
        ));
    }
    let value = |index: usize| -> Result<Option<f64>, String> {
        let name = OUTCOMES_HEADER[index];
        let text = field_str(row, index, name)?;
        parse_optional_value(text).map_err(|reason| format!("{name}: {reason}"))
    };
    let record_id = match value(0)? {
        Some(id) => record_id_text(id)?,
        None => return Err("RecordID is missing".to_owned()),
    };
    let in_hospital_death = value(5)?;
    if in_hospital_death.is_some_and(|death| death != 0.0 && death != 1.0) {
        return Err("In-hospital_death is not 0 or 1".to_owned());
    }
    Ok(Outcome {
        record_id,
        saps1: value(1)?,
        sofa: value(2)?,
        length_of_stay_days: value(3)?,
        survival_days: value(4)?,
        in_hospital_death,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedRecord {
        match parse_record("set-a/1.txt", text.as_bytes()) {
            Ok(record) => record,
            Err(error) => panic!("fixture should parse: {error}"),
        }
    }

    const HEADER: &str = "Time,Parameter,Value\n";

    fn fixture(rows: &[&str]) -> String {
        let mut text = HEADER.to_owned();
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        text
    }

    fn codes(record: &ParsedRecord) -> Vec<(&str, i64, f64)> {
        record
            .observations
            .iter()
            .map(|o| (o.code.as_str(), o.time_s, o.value))
            .collect()
    }

    #[test]
    fn descriptors_fill_the_patient_and_produce_no_observations() {
        let record = parse(&fixture(&[
            "00:00,RecordID,132539",
            "00:00,Age,54",
            "00:00,Gender,0",
            "00:00,Height,170.2",
            "00:00,ICUType,4",
            "00:00,Weight,80.5",
            "00:07,HR,73",
        ]));
        let patient = &record.patient;
        assert_eq!(patient.source_id, "132539");
        assert_eq!(patient.age_years, Some(54.0));
        assert_eq!(patient.sex, Sex::Female);
        assert_eq!(patient.attributes.get(ATTR_HEIGHT_CM), Some(&170.2));
        assert_eq!(patient.attributes.get(ATTR_ICU_TYPE), Some(&4.0));
        assert_eq!(patient.attributes.get(ATTR_WEIGHT_KG), Some(&80.5));
        assert_eq!(codes(&record), vec![("8867-4", 7 * 60, 73.0)]);
        assert_eq!(record.observations[0].source_patient_id, "132539");
        assert!(record.rejected.is_empty());
    }

    #[test]
    fn minus_one_and_empty_mean_missing() {
        let record = parse(&fixture(&[
            "00:00,RecordID,7",
            "00:00,Age,-1",
            "00:00,Gender,",
            "00:00,Height,-1",
            "00:00,Weight,-1",
            "00:10,HR,-1",
            "00:10,Temp,",
            "00:10,Urine,0",
            "00:20,Weight,-1",
        ]));
        assert_eq!(record.patient.age_years, None);
        assert_eq!(record.patient.sex, Sex::Unknown);
        assert!(record.patient.attributes.is_empty());
        assert_eq!(record.skipped_missing, 3);
        // Zero is a real measurement, not a missing marker.
        assert_eq!(codes(&record), vec![("9187-6", 600, 0.0)]);
        assert!(record.rejected.is_empty());
    }

    #[test]
    fn malformed_rows_are_rejected_with_their_line_and_the_rest_loads() {
        let record = parse(&fixture(&[
            "00:00,RecordID,7",  // line 2
            "00:05,HR",          // 3: too few fields
            "0x:05,HR,70",       // 4: bad time
            "00:75,HR,70",       // 5: minutes out of range
            "00:05,HR,seventy",  // 6: not a number
            "00:05,HR,NaN",      // 7: not finite
            "00:05,HR,inf",      // 8: not finite
            "00:05,HR,70,extra", // 9: too many fields
            "00:05,Gender,2",    // 10: not a gender code
            "47:59,HR,71",       // 11: fine
        ]));
        let lines: Vec<&str> = record
            .rejected
            .iter()
            .map(|r| r.location.as_str())
            .collect();
        assert_eq!(
            lines,
            [3, 4, 5, 6, 7, 8, 9, 10].map(|n| format!("set-a/1.txt:{n}"))
        );
        assert_eq!(codes(&record), vec![("8867-4", 47 * 3600 + 59 * 60, 71.0)]);
    }

    #[test]
    fn weight_is_a_descriptor_only_in_the_leading_block() {
        let record = parse(&fixture(&[
            "00:00,RecordID,7",
            "00:00,Weight,80",
            "00:00,HR,90",
            "00:00,Weight,81",
            "00:00,ICUType,2",
            "03:00,Weight,79",
        ]));
        assert_eq!(record.patient.attributes.get(ATTR_WEIGHT_KG), Some(&80.0));
        // ICUType is a descriptor even after the leading block.
        assert_eq!(record.patient.attributes.get(ATTR_ICU_TYPE), Some(&2.0));
        assert_eq!(
            codes(&record),
            vec![
                ("8867-4", 0, 90.0),
                ("29463-7", 0, 81.0),
                ("29463-7", 3 * 3600, 79.0)
            ]
        );
    }

    #[test]
    fn weight_after_an_interleaved_time_series_row_is_a_time_series() {
        // Some real files sort the 00:00 rows alphabetically, so HR comes
        // before Weight; the rule then makes that Weight a measurement.
        let record = parse(&fixture(&[
            "00:00,RecordID,7",
            "00:00,Age,60",
            "00:00,HR,111",
            "00:00,Height,162.6",
            "00:00,Weight,48.4",
        ]));
        assert_eq!(record.patient.attributes.get(ATTR_HEIGHT_CM), Some(&162.6));
        assert_eq!(record.patient.attributes.get(ATTR_WEIGHT_KG), None);
        assert_eq!(
            codes(&record),
            vec![("8867-4", 0, 111.0), ("29463-7", 0, 48.4)]
        );
    }

    #[test]
    fn unmapped_params_keep_their_name() {
        let record = parse(&fixture(&["00:00,RecordID,7", "01:00,MechVent,1"]));
        assert_eq!(codes(&record), vec![("physionet:MechVent", 3600, 1.0)]);
    }

    #[test]
    fn disambiguators_make_keys_unique_and_are_deterministic() {
        let text = fixture(&[
            "00:00,RecordID,7",
            "01:00,SysABP,120",
            "01:00,NISysABP,118",
            "01:00,SysABP,121",
            "01:00,MAP,90",
            "01:00,NIMAP,91",
            "01:00,DiasABP,70",
            "01:00,NIDiasABP,71",
            "1:00,SysABP,122",
            "02:00,SysABP,119",
        ]);
        let first = parse(&text);
        let keys: HashSet<(String, i64, u32)> = first
            .observations
            .iter()
            .map(|o| (o.code.clone(), o.time_s, o.disambiguator))
            .collect();
        assert_eq!(keys.len(), first.observations.len());
        assert_eq!(first, parse(&text));
        let low_halves: Vec<u32> = first
            .observations
            .iter()
            .map(|o| o.disambiguator & 0xffff)
            .collect();
        assert_eq!(low_halves, [0, 0, 1, 0, 0, 0, 0, 2, 0]);
    }

    #[test]
    fn params_sharing_a_code_hash_apart() {
        for (invasive, non_invasive) in [
            ("SysABP", "NISysABP"),
            ("DiasABP", "NIDiasABP"),
            ("MAP", "NIMAP"),
        ] {
            assert_eq!(loinc_for(invasive), loinc_for(non_invasive));
            assert_ne!(param_hash16(invasive), param_hash16(non_invasive));
        }
        // Pinned: stored keys depend on these values never changing.
        assert_eq!(param_hash16(""), 0x811c ^ 0x9dc5);
        assert_eq!(param_hash16("HR"), 0x2154);
        assert_eq!(param_hash16("SysABP"), 0x5d2f);
        assert_eq!(param_hash16("NISysABP"), 0x3691);
    }

    #[test]
    fn missing_record_id_or_bad_header_fails_the_file() {
        let no_id = parse_record("set-a/9.txt", fixture(&["00:05,HR,70"]).as_bytes());
        assert!(matches!(no_id, Err(Error::MissingRecordId { .. })));
        let bad_id = parse_record("set-a/9.txt", fixture(&["00:00,RecordID,-1"]).as_bytes());
        assert!(matches!(bad_id, Err(Error::MissingRecordId { .. })));

        let bad_header = parse_record("set-a/9.txt", "Time;Parameter;Value\n".as_bytes());
        let Err(error) = bad_header else {
            panic!("a bad header must fail the file");
        };
        assert!(matches!(error, Error::BadHeader { .. }));
        assert!(error.to_string().contains("set-a/9.txt"));

        let empty = parse_record("set-a/9.txt", "".as_bytes());
        assert!(matches!(empty, Err(Error::BadHeader { .. })));
    }

    #[test]
    fn crlf_bom_and_padding_are_tolerated() {
        let text = "\u{feff}Time,Parameter,Value\r\n00:00,RecordID, 7\r\n 00:05 , HR , 70 \r\n";
        let record = parse(text);
        assert_eq!(record.patient.source_id, "7");
        assert_eq!(codes(&record), vec![("8867-4", 300, 70.0)]);
    }

    #[test]
    fn contradicting_descriptor_is_rejected_and_the_first_kept() {
        let record = parse(&fixture(&[
            "00:00,RecordID,7",
            "00:00,Age,54",
            "00:00,Age,54",
            "00:00,Age,55",
        ]));
        assert_eq!(record.patient.age_years, Some(54.0));
        assert_eq!(record.rejected.len(), 1);
        assert_eq!(record.rejected[0].location, "set-a/1.txt:5");
    }

    #[test]
    fn outcomes_parse_with_missing_values_and_bad_rows() {
        let text = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n\
                    132539,6,1,5,-1,0\n\
                    132543,7,,9,575,1\n\
                    132544,x,1,5,-1,0\n\
                    132545,6,1,5,-1,2\n\
                    132539,6,1,5,-1,0\n";
        let (outcomes, rejected) = match parse_outcomes("Outcomes-a.txt", text.as_bytes()) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(
            outcomes[0],
            Outcome {
                record_id: "132539".into(),
                saps1: Some(6.0),
                sofa: Some(1.0),
                length_of_stay_days: Some(5.0),
                survival_days: None,
                in_hospital_death: Some(0.0),
            }
        );
        assert_eq!(outcomes[1].sofa, None);
        assert_eq!(outcomes[1].survival_days, Some(575.0));
        assert_eq!(outcomes.len(), 2);
        let locations: Vec<&str> = rejected.iter().map(|r| r.location.as_str()).collect();
        assert_eq!(
            locations,
            ["Outcomes-a.txt:4", "Outcomes-a.txt:5", "Outcomes-a.txt:6"]
        );

        let mut patient = SourcePatient::new("132543");
        apply_outcome(&mut patient, &outcomes[1]);
        assert_eq!(patient.attributes.get(ATTR_SAPS1), Some(&7.0));
        assert_eq!(patient.attributes.get(ATTR_SOFA), None);
        assert_eq!(patient.attributes.get(ATTR_IN_HOSPITAL_DEATH), Some(&1.0));

        let bad = parse_outcomes("Outcomes-a.txt", "RecordID,SOFA\n".as_bytes());
        assert!(matches!(bad, Err(Error::BadOutcomesHeader { .. })));
    }

    #[test]
    fn location_is_the_last_two_path_components() {
        let path = Path::new("/data/physionet2012/set-a/132539.txt");
        assert_eq!(location_of(path), "set-a/132539.txt");
        assert_eq!(location_of(Path::new("132539.txt")), "132539.txt");
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
             holds physionet2012/ (see ../shared/data/README.md)",
            dir.display()
        );
        dir
    }

    /// Counts observation-producing rows straight from the text, by the rule
    /// in the module docs, without using the parser's helpers.
    fn count_valid_time_series_rows(text: &str) -> usize {
        let descriptors = ["RecordID", "Age", "Gender", "Height", "ICUType"];
        let mut leading = true;
        let mut count = 0;
        for line in text.lines().skip(1).filter(|line| !line.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            let [time, param, value] = fields[..] else {
                continue;
            };
            leading &= time == "00:00" && (descriptors.contains(&param) || param == "Weight");
            let descriptor = descriptors.contains(&param) || (param == "Weight" && leading);
            let present = !value.is_empty() && value.parse::<f64>().ok() != Some(-1.0);
            if !descriptor && present {
                count += 1;
            }
        }
        count
    }

    #[test]
    fn real_set_a_files_match_an_independent_row_count() {
        let dir = data_dir().join("physionet2012/set-a");
        let files = match list_set_files(&dir) {
            Ok(files) => files,
            Err(error) => panic!("cannot list {}: {error}", dir.display()),
        };
        assert_eq!(files.len(), 4000, "set-a should hold 4000 record files");
        for path in files.iter().take(50) {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(error) => panic!("cannot read {}: {error}", path.display()),
            };
            let record = match parse_record_file(path) {
                Ok(record) => record,
                Err(error) => panic!("{error}"),
            };
            assert_eq!(
                record.observations.len(),
                count_valid_time_series_rows(&text),
                "{}",
                path.display()
            );
            assert!(record.rejected.is_empty(), "{:?}", record.rejected);
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            assert_eq!(Some(record.patient.source_id.clone()), stem);
            let keys: HashSet<(&str, i64, u32)> = record
                .observations
                .iter()
                .map(|o| (o.code.as_str(), o.time_s, o.disambiguator))
                .collect();
            assert_eq!(keys.len(), record.observations.len(), "{}", path.display());
        }
    }

    #[test]
    fn real_outcomes_parse_completely() {
        let path = data_dir().join("physionet2012/Outcomes-a.txt");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => panic!("cannot open {}: {error}", path.display()),
        };
        let (outcomes, rejected) = match parse_outcomes("Outcomes-a.txt", file) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(outcomes.len(), 4000);
        assert!(rejected.is_empty(), "{rejected:?}");
    }
}

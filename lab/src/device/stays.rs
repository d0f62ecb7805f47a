//! PhysioNet 2012 stays as device readings (through `witmed_care::physionet`), and the search for a patient whose NEWS2 deteriorates.

use std::path::{Path, PathBuf};

use witmed_care::news2::{self, Band, SpO2Scale};
use witmed_care::physionet::{self, MappedStay};

/// The NEWS2 window the simulator and the demo assume: a set is fresh when all seven parameters
/// were read within this many seconds (PhysioNet charts GCS and temperature every 1 to 4 hours).
pub const WINDOW_SECONDS: u32 = 4 * 3600;

/// One ICU stay: its RecordID and its readings.
#[derive(Debug, Clone)]
pub struct Stay {
    pub record_id: String,
    pub mapped: MappedStay,
}

/// The PhysioNet parameter an imported observation code came from (`SysABP` stands for both
/// systolic pressures; they map to the same reading).
fn param_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "8867-4" => "HR",
        "9279-1" => "RespRate",
        "8480-6" => "SysABP",
        "8310-5" => "Temp",
        "2708-6" => "SaO2",
        "3150-0" => "FiO2",
        "9269-2" => "GCS",
        "physionet:MechVent" => "MechVent",
        _ => return None,
    })
}

/// Reads and maps one set file.
pub fn load(path: &Path) -> Result<Stay, witmed_import::physionet::Error> {
    let record = witmed_import::physionet::parse_record_file(path)?;
    let rows = record
        .observations
        .iter()
        .filter_map(|o| param_of(&o.code).map(|p| (o.time_s, p, o.value)));
    Ok(Stay {
        record_id: record.patient.source_id.clone(),
        mapped: physionet::map_stay(rows),
    })
}

/// The set's record files, sorted by name.
pub fn files(set_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(set_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    Ok(files)
}

/// How a stay's NEWS2 moved: its first scored set, and the first set in the high band after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deterioration {
    /// Seconds since admission and score of the first fresh set (low or zero band).
    pub first_at: i64,
    pub first_score: u8,
    /// Seconds since admission and score of the first high-band set after it.
    pub high_at: i64,
    pub high_score: u8,
}

/// The stay's deterioration, if its first fresh set is in the low (or zero) band and a later one
/// is high (7 or more), at least an hour apart so the rise can be watched.
pub fn deterioration(stay: &Stay) -> Option<Deterioration> {
    let readings = physionet::canonical_readings(&stay.mapped);
    let series = news2::series(&readings, WINDOW_SECONDS, SpO2Scale::One);
    let (first_at, first) = *series.first()?;
    if first.band > Band::Low {
        return None;
    }
    let (high_at, high) = series
        .iter()
        .find(|(at, s)| s.band == Band::High && *at >= first_at.saturating_add(3600))?;
    Some(Deterioration {
        first_at,
        first_score: first.total,
        high_at: *high_at,
        high_score: high.total,
    })
}

/// The first stay (by file name) in `set_dir` whose NEWS2 deteriorates from low to high,
/// found by scoring, not named in advance. Reads at most `max_files` files.
pub fn find_deteriorating(
    set_dir: &Path,
    max_files: usize,
) -> std::io::Result<Option<(Stay, Deterioration)>> {
    for path in files(set_dir)?.into_iter().take(max_files) {
        let Ok(stay) = load(&path) else { continue };
        if let Some(d) = deterioration(&stay) {
            return Ok(Some((stay, d)));
        }
    }
    Ok(None)
}

/// Whether a stay ever has a fresh NEWS2 set (the simulator prefers such stays).
pub fn ever_scored(stay: &Stay) -> bool {
    let readings = physionet::canonical_readings(&stay.mapped);
    !news2::series(&readings, WINDOW_SECONDS, SpO2Scale::One).is_empty()
}

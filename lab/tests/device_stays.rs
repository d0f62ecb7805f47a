//! The PhysioNet stays the device simulator replays: a deteriorating patient is found in set-a by scoring NEWS2, and mapped stays carry complete sets.

use std::path::{Path, PathBuf};

use witmed_care::news2::{self, Band, SpO2Scale};
use witmed_care::physionet;
use witmed_lab::device::stays;

fn set_a() -> PathBuf {
    let dir = std::env::var_os("WITMED_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let set = dir.join("physionet2012/set-a");
    assert!(
        set.is_dir(),
        "shared data not found at {}: set WITMED_DATA_DIR",
        dir.display()
    );
    set
}

#[test]
fn a_patient_whose_news2_rises_from_low_to_high_is_found_in_set_a() {
    let (stay, d) = stays::find_deteriorating(&set_a(), 4000)
        .unwrap()
        .expect("set-a has a deteriorating stay");
    eprintln!("deteriorating: {} {d:?}", stay.record_id);
    assert!(d.first_score <= 4 && d.high_score >= 7, "{d:?}");
    assert!(d.high_at >= d.first_at + 3600);
    // Recomputed independently: the series really passes through the high band.
    let readings = physionet::canonical_readings(&stay.mapped);
    let series = news2::series(&readings, stays::WINDOW_SECONDS, SpO2Scale::One);
    assert!(series
        .iter()
        .any(|(at, s)| *at == d.high_at && s.band == Band::High));
}

/// Stays with a respiratory rate that never get a fresh set lack it mostly because set-a has no
/// pulse oximetry: SaO2, the stand-in, comes from occasional arterial blood gases.
#[test]
fn stays_without_a_fresh_set_miss_mostly_the_saturation() {
    use std::collections::BTreeMap;
    let files = stays::files(&set_a()).unwrap();
    let (mut with_rr, mut scored) = (0, 0);
    let mut missing: BTreeMap<news2::Parameter, usize> = BTreeMap::new();
    for path in files.iter().take(300) {
        let stay = stays::load(path).unwrap();
        let readings = physionet::canonical_readings(&stay.mapped);
        if !readings
            .iter()
            .any(|r| r.vital == witmed_care::Vital::RespiratoryRate)
        {
            continue;
        }
        with_rr += 1;
        if stays::ever_scored(&stay) {
            scored += 1;
            continue;
        }
        // Scored at each reading time: which parameters were missing most often.
        let mut why = BTreeMap::new();
        for r in &readings {
            if let Err(m) = news2::fresh_set(&readings, r.at, stays::WINDOW_SECONDS) {
                for p in m.parameters {
                    *why.entry(p).or_insert(0usize) += 1;
                }
            }
        }
        if let Some((p, _)) = why.into_iter().max_by_key(|(_, n)| *n) {
            *missing.entry(p).or_default() += 1;
        }
    }
    eprintln!("{scored} of {with_rr} stays with a respiratory rate have a fresh set; the others miss most often: {missing:?}");
    assert!(scored >= 5, "{scored}/{with_rr}");
    let top = missing.iter().max_by_key(|(_, n)| **n).map(|(p, _)| *p);
    assert_eq!(top, Some(news2::Parameter::OxygenSaturation), "{missing:?}");
}

//! A device's batch of readings into the store: each reading checked (code, unit, plausibility, time, sequence number), then written as the patient's observations, with any NEWS2 alert, in one synced batch that is acknowledged only once durable.
//!
//! The whole batch is refused on the first bad reading, naming it and why,
//! and nothing of it is stored. Readings are written into the
//! `observations` family with the same key and record as imported ones, so
//! queries see them once the index is rebuilt, and into the device log
//! (`devices` family, [`crate::devices`]) with their device and sequence
//! number, which NEWS2 and the clinician's view read.
//!
//! NEWS2 is computed at each new reading time (not earlier than the last
//! time the patient was scored) over the patient's readings within the
//! window (each vital's newest, kept in memory per patient: see `score`); an alert is stored when the band rises to or above the
//! configured one. The alert, the patient's new band and the readings go in
//! the same synced batch, so a crash never keeps the readings and loses the
//! alert they raised, and a resent batch cannot raise it twice.

use std::collections::{BTreeSet, HashSet};

use witmed_care::news2::{self, Parameter, SpO2Scale};
use witmed_care::{plausibility, units, Vital};
use witmed_crypto::{Pseudonym, PublicKey};
use witmed_protocol::device_request::{self as wire, Band};

use crate::device_feed::{Known, Recent};
use crate::devices::{self, AlertRecord, Error, PatientState, ReadingRecord, SourceRecord};
use crate::node::Node;
use crate::store::{cf, observation_key, ObservationRecord, RECORD_VERSION};

/// How far after the node's clock a reading's time may be.
pub const MAX_FUTURE_SECONDS: i64 = 300;
/// How far before the node's clock a reading's time may be (a gateway's buffer).
pub const MAX_AGE_SECONDS: i64 = 7 * 24 * 3600;
/// Most stored readings one NEWS2 evaluation reads (the newest in the window).
pub const NEWS2_READINGS_CAP: usize = 20_000;

/// How a node scores and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A fresh set is the newest reading of each of the seven parameters within this many seconds.
    pub window_seconds: u32,
    /// An alert is stored when the band rises to this one or above.
    pub alert_band: Band,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_seconds: 3600,
            alert_band: Band::LowMedium,
        }
    }
}

/// A reading that passed its checks, in its canonical unit.
#[derive(Debug, Clone)]
struct Checked {
    seq: u64,
    time: i64,
    vital: Vital,
    value: f64,
}

/// Stores `readings` from `device` (already authenticated) and returns the
/// receipt, only after the synced write.
pub fn ingest(
    node: &Node,
    device: &PublicKey,
    readings: &[wire::Reading],
    settings: &Settings,
    now: i64,
) -> Result<wire::Receipt, Error> {
    let checked = check_all(readings, now)?;
    // Shared: batches of other patients are stored side by side (their synced
    // writes share an fsync); an enrolment change waits for them.
    let _devices = crate::locks::read(&node.devices.write);
    let patient = devices::active(node, device)?.patient;
    let _patient = node.devices.lock_patient(&patient);
    // Read again under the patient's lock: another batch of this device may just have been stored.
    let mut record = devices::active(node, device)?;
    check_after_last(&checked, record.last_seq)?;
    let mut state = devices::state(node, &patient)?;
    let mut batch = node.store.batch();
    put_readings(node, &mut batch, &patient, device, &checked)?;
    record.last_seq = checked.last().map(|c| c.seq).or(record.last_seq);
    batch.put(cf::DEVICES, &devices::device_key(device), &record)?;
    let (raised, recent) = score(node, &patient, device, &checked, &mut state, settings, now)?;
    for (id, alert) in &raised {
        batch.put(cf::DEVICES, &devices::alert_key(*id), alert)?;
    }
    batch.put(cf::DEVICES, &devices::state_key(&patient), &state)?;
    node.store.write_durable(batch)?;
    // Only now: the cache holds what the store holds.
    node.devices.recent.install(&patient, recent);
    node.invalidate_index();
    let alerts: Vec<wire::Alert> = raised
        .iter()
        .map(|(id, a)| devices::alert_view(*id, a))
        .collect();
    node.devices.publish(&alerts);
    Ok(wire::Receipt {
        stored: checked.len(),
        last_seq: record.last_seq.unwrap_or(0),
        alerts,
    })
}

fn check_all(readings: &[wire::Reading], now: i64) -> Result<Vec<Checked>, Error> {
    let mut out: Vec<Checked> = Vec::with_capacity(readings.len());
    for (index, reading) in readings.iter().enumerate() {
        let previous = out.last().map(|c| c.seq);
        out.push(check_one(index, reading, previous, now)?);
    }
    Ok(out)
}

fn check_one(
    index: usize,
    r: &wire::Reading,
    previous: Option<u64>,
    now: i64,
) -> Result<Checked, Error> {
    let fail = |code: &'static str, reason: String| Error::Reading {
        index,
        seq: r.seq,
        code,
        reason,
    };
    if let Some(p) = previous.filter(|p| r.seq <= *p) {
        return Err(fail(
            "out_of_order_sequence",
            format!(
                "sequence number {} does not follow {p}, the reading before it in this batch; sequence numbers must strictly increase",
                r.seq
            ),
        ));
    }
    let care = |e: witmed_care::Error| {
        let code = match e {
            witmed_care::Error::UnknownCode { .. } => "unknown_code",
            witmed_care::Error::WrongUnit { .. } => "wrong_unit",
            witmed_care::Error::NotFinite { .. } => "not_finite",
            witmed_care::Error::Implausible { .. } => "implausible_value",
        };
        fail(code, e.to_string())
    };
    let vital = Vital::from_code(&r.code).ok_or_else(|| {
        care(witmed_care::Error::UnknownCode {
            code: r.code.chars().take(40).collect(),
        })
    })?;
    let value = units::to_canonical(vital, r.value, &r.unit).map_err(care)?;
    plausibility::check(vital, value).map_err(care)?;
    check_time(r.time, now).map_err(|reason| fail("bad_time", reason))?;
    Ok(Checked {
        seq: r.seq,
        time: r.time,
        vital,
        value,
    })
}

fn check_time(time: i64, now: i64) -> Result<(), String> {
    if time > now.saturating_add(MAX_FUTURE_SECONDS) {
        return Err(format!(
            "measured at {time}, {} s after this node's clock; set the device's clock",
            time.saturating_sub(now)
        ));
    }
    if time < now.saturating_sub(MAX_AGE_SECONDS) {
        return Err(format!(
            "measured at {time}, more than {MAX_AGE_SECONDS} s before this node's clock; readings that old are not accepted from devices (import them instead)"
        ));
    }
    Ok(())
}

/// Refuses a batch whose first reading is not after the device's last stored one (a replay or a resend).
fn check_after_last(checked: &[Checked], last: Option<u64>) -> Result<(), Error> {
    let Some(last) = last else { return Ok(()) };
    match checked.iter().position(|c| c.seq <= last) {
        Some(index) => Err(Error::Reading {
            index,
            seq: checked[index].seq,
            code: "replayed_sequence",
            reason: format!(
                "sequence number {} is not after {last}, the last this device stored (a replayed or resent batch); send only readings after {last}",
                checked[index].seq
            ),
        }),
        None => Ok(()),
    }
}

/// Readings are observations like imported ones (the same key and record) and entries of the device log.
fn put_readings(
    node: &Node,
    batch: &mut crate::store::Batch<'_>,
    patient: &Pseudonym,
    device: &PublicKey,
    checked: &[Checked],
) -> Result<(), Error> {
    let mut taken = HashSet::new();
    for c in checked {
        let key = free_observation_key(node, &mut taken, patient, c)?;
        let observation = ObservationRecord {
            version: RECORD_VERSION,
            value: c.value,
        };
        batch.put(cf::OBSERVATIONS, &key, &observation)?;
        let logged = ReadingRecord {
            version: RECORD_VERSION,
            device: *device,
            seq: c.seq,
            code: c.vital.code().to_string(),
            time: c.time,
            value: c.value,
            unit: c.vital.canonical_unit().to_string(),
        };
        let log_key = devices::reading_key(patient, c.time, device, c.seq);
        batch.put(cf::DEVICES, &log_key, &logged)?;
    }
    Ok(())
}

/// An observation key no other reading holds: device readings use the upper
/// half of the disambiguator (importers count from 0), starting from the
/// sequence number and probing past any taken one, so two devices measuring
/// the same thing in the same second both keep their reading.
fn free_observation_key(
    node: &Node,
    taken: &mut HashSet<Vec<u8>>,
    patient: &Pseudonym,
    c: &Checked,
) -> Result<Vec<u8>, Error> {
    let digest = node.store.codes().observation(c.vital.code());
    let start = c.seq as u32;
    for probe in 0..64u32 {
        let disambiguator = 0x8000_0000 | (start.wrapping_add(probe) & 0x7fff_ffff);
        let key = observation_key(patient, &digest, c.time, disambiguator);
        if !taken.contains(&key) && !node.store.contains(cf::OBSERVATIONS, &key)? {
            taken.insert(key.clone());
            return Ok(key);
        }
    }
    Err(Error::Invalid(format!(
        "no free observation key for seq {} at time {}: too many readings of {} in that second",
        c.seq,
        c.time,
        c.vital.code()
    )))
}

/// A stored device-log reading as NEWS2 takes it (None: a code no longer known).
fn known_of(r: ReadingRecord) -> Option<Known> {
    Some(Known {
        device: r.device,
        seq: r.seq,
        vital: Vital::from_code(&r.code)?,
        time: r.time,
        value: r.value,
    })
}

/// A patient's readings from the device log since `since`, once per patient (then kept in memory).
fn recent_from_store(node: &Node, patient: &Pseudonym, since: i64) -> Result<Recent, Error> {
    let stored = devices::readings_between(node, patient, since, i64::MAX, NEWS2_READINGS_CAP)?;
    Ok(Recent {
        readings: stored.into_iter().filter_map(known_of).collect(),
    })
}

/// Alerts to store (with their ids), and the patient's recent readings once the batch is stored.
type Scored = (Vec<(u64, AlertRecord)>, Option<Recent>);

/// Scores the patient at each new reading time; returns the alerts to
/// store and the patient's recent readings once this batch is stored, and
/// moves `state` on.
///
/// NEWS2 at time t takes each parameter's newest reading at or before t
/// (ties: the worse one), and t is never before the last scored time L. So
/// of the readings stored so far only these matter ([`Recent`]): each
/// vital's newest at or before L, and every one after L (stored while no
/// complete set existed). They come from memory, or from the store once
/// per patient, and this batch's readings are folded in in time order, so
/// each score sees what a scan of the whole window would.
#[allow(clippy::too_many_arguments)]
fn score(
    node: &Node,
    patient: &Pseudonym,
    device: &PublicKey,
    checked: &[Checked],
    state: &mut PatientState,
    settings: &Settings,
    now: i64,
) -> Result<Scored, Error> {
    let window = i64::from(settings.window_seconds);
    let times: BTreeSet<i64> = checked
        .iter()
        .map(|c| c.time)
        .filter(|t| state.last_at.is_none_or(|last| *t >= last))
        .collect();
    let mut arrived: Vec<Known> = checked
        .iter()
        .map(|c| Known {
            device: *device,
            seq: c.seq,
            vital: c.vital,
            time: c.time,
            value: c.value,
        })
        .collect();
    arrived.sort_by_key(|k| (k.time, k.seq));
    let Some(&first) = times.first() else {
        // Nothing to score (every reading is older than the last scored
        // time): keep a copy in memory up to date, but read nothing.
        let recent = node.devices.recent.get(patient).and_then(|mut recent| {
            recent.readings.extend(arrived);
            recent.kept(state.last_at)
        });
        return Ok((Vec::new(), recent));
    };
    let mut recent = match node.devices.recent.get(patient) {
        Some(recent) => recent,
        None => recent_from_store(node, patient, first.saturating_sub(window))?,
    };
    let scale = if state.hypercapnic {
        SpO2Scale::Two
    } else {
        SpO2Scale::One
    };
    let mut raised = Vec::new();
    let mut arriving = arrived.into_iter().peekable();
    for t in times {
        while let Some(k) = arriving.next_if(|k| k.time <= t) {
            recent.readings.push(k);
        }
        let care_readings: Vec<news2::Reading> = recent.readings.iter().map(Known::care).collect();
        let Ok(set) = news2::fresh_set(&care_readings, t, settings.window_seconds) else {
            continue;
        };
        let score = news2::score(&set.observations, scale);
        let band = band_of(score.band);
        let rose = state.last_band.is_none_or(|before| band > before);
        if band >= settings.alert_band && rose {
            let id = node.devices.allocate_alert(&node.store)?;
            raised.push((
                id,
                AlertRecord {
                    version: RECORD_VERSION,
                    patient: *patient,
                    at: t,
                    raised_at: now,
                    score: score.total,
                    band,
                    spo2_scale_2: scale == SpO2Scale::Two,
                    sources: sources(&recent.readings, t, window, &score),
                    ack: None,
                },
            ));
        }
        state.last_band = Some(band);
        state.last_score = Some(score.total);
        state.last_at = Some(t);
    }
    recent.readings.extend(arriving);
    Ok((raised, recent.kept(state.last_at)))
}

/// For each parameter, the newest reading within the window at `t` (what the fresh set scored).
fn sources(known: &[Known], t: i64, window: i64, score: &news2::Score) -> Vec<SourceRecord> {
    let since = t.saturating_sub(window);
    score
        .sub_scores
        .each()
        .into_iter()
        .filter_map(|(parameter, sub_score)| {
            let newest = known
                .iter()
                .filter(|k| Parameter::of(k.vital) == parameter && (since..=t).contains(&k.time))
                .max_by_key(|k| (k.time, k.seq))?;
            Some(SourceRecord {
                device: newest.device,
                seq: newest.seq,
                code: newest.vital.code().to_string(),
                time: newest.time,
                value: newest.value,
                unit: newest.vital.canonical_unit().to_string(),
                sub_score,
            })
        })
        .collect()
}

/// The wire band of a care band.
pub fn band_of(band: news2::Band) -> Band {
    match band {
        news2::Band::Zero => Band::Zero,
        news2::Band::Low => Band::Low,
        news2::Band::LowMedium => Band::LowMedium,
        news2::Band::Medium => Band::Medium,
        news2::Band::High => Band::High,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64, code: &str, value: f64, unit: &str) -> wire::Reading {
        wire::Reading {
            seq,
            time: 1_000,
            code: code.into(),
            value,
            unit: unit.into(),
        }
    }

    fn refused(readings: &[wire::Reading]) -> (&'static str, String) {
        let e = check_all(readings, 1_000).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn each_bad_reading_is_named_with_its_reason() {
        let (code, message) = refused(&[
            reading(1, "8867-4", 70.0, "/min"),
            reading(2, "8867-4", 900.0, "/min"),
        ]);
        assert_eq!(code, "implausible_value");
        assert!(message.contains("reading 1 (seq 2)"), "{message}");
        let (code, _) = refused(&[reading(1, "8310-5", 60.0, "Cel")]);
        assert_eq!(code, "implausible_value");
        let (code, message) = refused(&[reading(1, "8310-5", 37.0, "mm[Hg]")]);
        assert_eq!(code, "wrong_unit");
        assert!(message.contains("Cel"), "{message}");
        assert_eq!(refused(&[reading(1, "1234-5", 1.0, "1")]).0, "unknown_code");
        let (code, message) = refused(&[
            reading(5, "8867-4", 70.0, "/min"),
            reading(5, "8867-4", 71.0, "/min"),
        ]);
        assert_eq!(code, "out_of_order_sequence");
        assert!(message.contains("seq 5"), "{message}");
        let mut late = reading(1, "8867-4", 70.0, "/min");
        late.time = 1_000 + MAX_FUTURE_SECONDS + 1;
        assert_eq!(refused(&[late]).0, "bad_time");
    }

    #[test]
    fn units_are_converted_to_the_canonical_one() {
        let c = check_all(&[reading(1, "8310-5", 98.6, "[degF]")], 1_000).unwrap();
        assert!((c[0].value - 37.0).abs() < 1e-9);
        let c = check_all(&[reading(1, "8480-6", 16.0, "kPa")], 1_000).unwrap();
        assert!((c[0].value - 120.0).abs() < 0.1);
    }

    #[test]
    fn a_sequence_number_at_or_below_the_last_stored_is_a_replay() {
        let c = check_all(&[reading(7, "8867-4", 70.0, "/min")], 1_000).unwrap();
        assert!(check_after_last(&c, Some(6)).is_ok());
        assert!(check_after_last(&c, None).is_ok());
        let e = check_after_last(&c, Some(7)).unwrap_err();
        assert_eq!(e.code(), "replayed_sequence");
        assert!(e.to_string().contains("seq 7"), "{e}");
    }
}

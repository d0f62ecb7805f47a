//! Bedside devices: the registry (a device key enrolled by staff for one patient, retired by staff), the log of their readings, NEWS2 alerts and each patient's NEWS2 state, in the `devices` column family.
//!
//! Keys (every value sealed and versioned like the rest of the store):
//!
//! | key | value |
//! |---|---|
//! | `d/` device key (32) | [`DeviceRecord`]: its patient, label, enrolment, retirement, last stored sequence number |
//! | `r/` pseudonym (16), time (8, ordered), device key (32), seq (8) | [`ReadingRecord`]: one reading in its canonical unit |
//! | `a/` alert id (8, big endian) | [`AlertRecord`]: a NEWS2 alert, the readings it came from, its acknowledgement |
//! | `p/` pseudonym (16) | [`PatientState`]: the hypercapnic flag and the last NEWS2 band |
//!
//! Every change goes through [`Live::write`], one lock, so a device's last
//! sequence number, its retirement and the alert counter are read and
//! written without a race; each change is one synced batch (with its audit
//! entry for enrolment, retirement, acknowledgement and the hypercapnic flag).
//! Ingestion itself is [`crate::ingest`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use witmed_crypto::{single_version, Pseudonym, PublicKey};
use witmed_protocol::device_request::{self as wire, Band};

use crate::audit;
pub use crate::device_feed::{alert_key, Live, ALERT_CHANNEL_CAPACITY, ALERT_PREFIX};
use crate::node::Node;
use crate::store::{self, cf, ordered_i64, RECORD_VERSION};

/// Longest device label.
pub const MAX_LABEL_CHARS: usize = 100;
/// Longest clinician name in an acknowledgement.
pub const MAX_CLINICIAN_CHARS: usize = 100;
/// Most alerts one listing returns (the newest).
pub const MAX_ALERTS_LISTED: usize = 200;
/// Most readings a patient's vitals view returns (the newest).
pub const MAX_VITALS_LISTED: usize = 500;
/// How far back a patient's vitals view looks.
pub const VITALS_HORIZON_SECONDS: i64 = 7 * 24 * 3600;

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub version: u32,
    pub patient: Pseudonym,
    pub label: String,
    pub enrolled_at: i64,
    pub retired_at: Option<i64>,
    /// The greatest sequence number stored; a reading must carry a greater one.
    pub last_seq: Option<u64>,
}

/// One stored reading, in its vital sign's canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRecord {
    pub version: u32,
    pub device: PublicKey,
    pub seq: u64,
    pub code: String,
    pub time: i64,
    pub value: f64,
    pub unit: String,
}

/// One reading an alert came from, with its NEWS2 sub-score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub device: PublicKey,
    pub seq: u64,
    pub code: String,
    pub time: i64,
    pub value: f64,
    pub unit: String,
    pub sub_score: u8,
}

/// A clinician's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    pub by: String,
    pub at: i64,
}

/// A NEWS2 alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub version: u32,
    pub patient: Pseudonym,
    /// The time of the reading at which the band was crossed.
    pub at: i64,
    /// When the node raised it.
    pub raised_at: i64,
    pub score: u8,
    pub band: Band,
    pub spo2_scale_2: bool,
    pub sources: Vec<SourceRecord>,
    pub ack: Option<AckRecord>,
}

/// A patient's NEWS2 settings and the last score computed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PatientState {
    pub version: u32,
    /// Scored on SpO2 scale 2 (hypercapnic respiratory failure), set by staff.
    pub hypercapnic: bool,
    pub last_band: Option<Band>,
    pub last_score: Option<u8>,
    /// The reading time the last score was computed at; later scores only move forward from it.
    pub last_at: Option<i64>,
}

single_version!(DeviceRecord, "device record", RECORD_VERSION);
single_version!(ReadingRecord, "device reading record", RECORD_VERSION);
single_version!(AlertRecord, "NEWS2 alert record", RECORD_VERSION);
single_version!(PatientState, "patient NEWS2 state", RECORD_VERSION);

/// Why a device operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("patient {0} has no record at this node; import or look up the patient before enrolling a device")]
    UnknownPatient(Pseudonym),
    #[error("device {0} is not enrolled at this node; ask staff to enrol its public key (`witmed device enrol`)")]
    NotEnrolled(String),
    #[error(
        "device {device} was retired at {at}; its readings are refused. Enrol a new device key"
    )]
    Retired { device: String, at: i64 },
    #[error("device {device} is enrolled for another patient ({patient}); retire it and enrol a new key")]
    OtherPatient { device: String, patient: Pseudonym },
    #[error("{0}")]
    Invalid(String),
    #[error("no alert {0} at this node; list alerts with `witmed alerts`")]
    UnknownAlert(String),
    /// One reading of a batch, by position and sequence number; nothing of the batch was stored.
    #[error("reading {index} (seq {seq}): {reason}; nothing of this batch was stored")]
    Reading {
        index: usize,
        seq: u64,
        code: &'static str,
        reason: String,
    },
}

impl Error {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Store(_) => "store_failed",
            Error::UnknownPatient(_) => "unknown_patient",
            Error::NotEnrolled(_) => "device_not_enrolled",
            Error::Retired { .. } => "device_retired",
            Error::OtherPatient { .. } => "device_enrolled_elsewhere",
            Error::Invalid(_) => "invalid",
            Error::UnknownAlert(_) => "unknown_alert",
            Error::Reading { code, .. } => code,
        }
    }
}

const DEVICE_PREFIX: &[u8] = b"d/";
const READING_PREFIX: &[u8] = b"r/";
const STATE_PREFIX: &[u8] = b"p/";

/// `d/` device key.
pub fn device_key(device: &PublicKey) -> Vec<u8> {
    [DEVICE_PREFIX, device.as_bytes()].concat()
}

/// `r/` pseudonym time device seq: a patient's readings sort by time.
pub fn reading_key(patient: &Pseudonym, time: i64, device: &PublicKey, seq: u64) -> Vec<u8> {
    [
        READING_PREFIX,
        &patient.0,
        &ordered_i64(time),
        device.as_bytes(),
        &seq.to_be_bytes(),
    ]
    .concat()
}

/// The first key of a patient's readings at or after `time`.
pub fn reading_bound(patient: &Pseudonym, time: i64) -> Vec<u8> {
    [READING_PREFIX, &patient.0, &ordered_i64(time)].concat()
}

/// `p/` pseudonym.
pub fn state_key(patient: &Pseudonym) -> Vec<u8> {
    [STATE_PREFIX, &patient.0].concat()
}

/// The device's record, if enrolled (retired or not).
pub fn find(node: &Node, device: &PublicKey) -> Result<Option<DeviceRecord>, Error> {
    Ok(node.store.get(cf::DEVICES, &device_key(device))?)
}

/// The device's record if it may send readings: enrolled and not retired.
pub fn active(node: &Node, device: &PublicKey) -> Result<DeviceRecord, Error> {
    let record = find(node, device)?.ok_or_else(|| Error::NotEnrolled(device.to_hex()))?;
    match record.retired_at {
        Some(at) => Err(Error::Retired {
            device: device.to_hex(),
            at,
        }),
        None => Ok(record),
    }
}

/// A patient's NEWS2 state (the default for one never scored).
pub fn state(node: &Node, patient: &Pseudonym) -> Result<PatientState, Error> {
    Ok(node
        .store
        .get(cf::DEVICES, &state_key(patient))?
        .unwrap_or(PatientState {
            version: RECORD_VERSION,
            ..PatientState::default()
        }))
}

fn check_label(label: &str) -> Result<(), Error> {
    if label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "a device label must be at most {MAX_LABEL_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// Enrols `device` for `patient` (staff). Enrolling it again for the same patient changes nothing.
pub fn enrol(
    node: &Node,
    device: PublicKey,
    patient: Pseudonym,
    label: &str,
    now: i64,
) -> Result<wire::Device, Error> {
    check_label(label)?;
    if !node.store.contains(cf::PATIENTS, &patient.0)? {
        return Err(Error::UnknownPatient(patient));
    }
    let _write = crate::locks::write(&node.devices.write);
    if let Some(existing) = find(node, &device)? {
        if let Some(at) = existing.retired_at {
            return Err(Error::Retired {
                device: device.to_hex(),
                at,
            });
        }
        if existing.patient != patient {
            return Err(Error::OtherPatient {
                device: device.to_hex(),
                patient: existing.patient,
            });
        }
        return Ok(view(&device, &existing));
    }
    let record = DeviceRecord {
        version: RECORD_VERSION,
        patient,
        label: label.to_string(),
        enrolled_at: now,
        retired_at: None,
        last_seq: None,
    };
    let mut batch = node.store.batch();
    batch.put(cf::DEVICES, &device_key(&device), &record)?;
    let detail = format!("device {} enrolled for patient {patient}", device.short());
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "device.enrolled", "operator", detail).about(patient),
    )?;
    node.store.write_durable(batch)?;
    Ok(view(&device, &record))
}

/// Retires `device` (staff): its readings are refused from now on; what it sent stays.
pub fn retire(node: &Node, device: PublicKey, now: i64) -> Result<wire::Device, Error> {
    let _write = crate::locks::write(&node.devices.write);
    let mut record = find(node, &device)?.ok_or_else(|| Error::NotEnrolled(device.to_hex()))?;
    if record.retired_at.is_some() {
        return Ok(view(&device, &record));
    }
    record.retired_at = Some(now);
    let mut batch = node.store.batch();
    batch.put(cf::DEVICES, &device_key(&device), &record)?;
    let detail = format!(
        "device {} of patient {} retired",
        device.short(),
        record.patient
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "device.retired", "operator", detail).about(record.patient),
    )?;
    node.store.write_durable(batch)?;
    Ok(view(&device, &record))
}

/// Every device, enrolled or retired.
pub fn list(node: &Node) -> Result<Vec<wire::Device>, Error> {
    let mut out = Vec::new();
    node.store
        .scan_records(cf::DEVICES, DEVICE_PREFIX, |key, record: DeviceRecord| {
            if let Some(device) = key
                .get(2..34)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(PublicKey::from_bytes)
            {
                out.push(view(&device, &record));
            }
            Ok(())
        })?;
    Ok(out)
}

/// A device as staff see it.
pub fn view(device: &PublicKey, record: &DeviceRecord) -> wire::Device {
    wire::Device {
        device: device.to_hex(),
        patient: record.patient.to_hex(),
        label: record.label.clone(),
        enrolled_at: record.enrolled_at,
        retired_at: record.retired_at,
        last_seq: record.last_seq,
    }
}

/// Sets or clears a patient's hypercapnic flag (staff): SpO2 is then scored on NEWS2 scale 2.
pub fn set_hypercapnic(
    node: &Node,
    patient: Pseudonym,
    hypercapnic: bool,
    now: i64,
) -> Result<(), Error> {
    if !node.store.contains(cf::PATIENTS, &patient.0)? {
        return Err(Error::UnknownPatient(patient));
    }
    let _devices = crate::locks::read(&node.devices.write);
    let _patient = node.devices.lock_patient(&patient);
    let mut current = state(node, &patient)?;
    if current.hypercapnic == hypercapnic {
        return Ok(());
    }
    current.hypercapnic = hypercapnic;
    let mut batch = node.store.batch();
    batch.put(cf::DEVICES, &state_key(&patient), &current)?;
    let detail = format!(
        "patient {patient}: SpO2 scored on NEWS2 scale {}",
        if hypercapnic { 2 } else { 1 }
    );
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "patient.hypercapnic", "operator", detail).about(patient),
    )?;
    node.store.write_durable(batch)?;
    Ok(())
}

/// The alert id as shown: 16 hex digits.
pub fn alert_id(id: u64) -> String {
    format!("{id:016x}")
}

fn parse_alert_id(text: &str) -> Result<u64, Error> {
    let valid = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    valid
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .ok_or_else(|| Error::UnknownAlert(text.chars().take(40).collect()))
}

/// An alert as staff see it.
pub fn alert_view(id: u64, record: &AlertRecord) -> wire::Alert {
    wire::Alert {
        id: alert_id(id),
        patient: record.patient.to_hex(),
        at: record.at,
        score: record.score,
        band: record.band,
        spo2_scale_2: record.spo2_scale_2,
        sources: record
            .sources
            .iter()
            .map(|s| wire::Source {
                device: s.device.to_hex(),
                seq: s.seq,
                code: s.code.clone(),
                time: s.time,
                value: s.value,
                unit: s.unit.clone(),
                sub_score: s.sub_score,
            })
            .collect(),
        ack: record.ack.as_ref().map(|a| wire::Acknowledged {
            by: a.by.clone(),
            at: a.at,
        }),
    }
}

/// Which alerts a listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlertFilter<'a> {
    /// Only those not yet acknowledged.
    pub open_only: bool,
    /// Only this patient's.
    pub patient: Option<&'a Pseudonym>,
}

/// The newest alerts (at most [`MAX_ALERTS_LISTED`]), newest first.
pub fn alerts(node: &Node, filter: AlertFilter<'_>) -> Result<Vec<wire::Alert>, Error> {
    let mut kept: VecDeque<wire::Alert> = VecDeque::new();
    node.store
        .scan_records(cf::DEVICES, ALERT_PREFIX, |key, record: AlertRecord| {
            let wanted = !(filter.open_only && record.ack.is_some())
                && filter.patient.is_none_or(|p| *p == record.patient);
            let id = key
                .get(2..10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            if let (true, Some(id)) = (wanted, id) {
                if kept.len() == MAX_ALERTS_LISTED {
                    kept.pop_front();
                }
                kept.push_back(alert_view(id, &record));
            }
            Ok(())
        })?;
    Ok(kept.into_iter().rev().collect())
}

/// Acknowledges an alert (a clinician). The first acknowledgement stands; a later one returns it unchanged.
pub fn acknowledge(node: &Node, id: &str, by: &str, now: i64) -> Result<wire::Alert, Error> {
    let by = by.trim();
    if by.is_empty() || by.chars().count() > MAX_CLINICIAN_CHARS || by.chars().any(char::is_control)
    {
        return Err(Error::Invalid(format!(
            "name the clinician who acknowledges (1 to {MAX_CLINICIAN_CHARS} characters)"
        )));
    }
    let number = parse_alert_id(id)?;
    let _write = crate::locks::write(&node.devices.write);
    let key = alert_key(number);
    let mut record: AlertRecord = node
        .store
        .get(cf::DEVICES, &key)?
        .ok_or_else(|| Error::UnknownAlert(id.to_string()))?;
    if record.ack.is_some() {
        return Ok(alert_view(number, &record));
    }
    record.ack = Some(AckRecord {
        by: by.to_string(),
        at: now,
    });
    let mut batch = node.store.batch();
    batch.put(cf::DEVICES, &key, &record)?;
    let detail = format!("NEWS2 alert {} acknowledged by {by}", alert_id(number));
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(now, "alert.acknowledged", by, detail).about(record.patient),
    )?;
    node.store.write_durable(batch)?;
    Ok(alert_view(number, &record))
}

/// A patient's readings of the last [`VITALS_HORIZON_SECONDS`] before `now`
/// (the newest [`MAX_VITALS_LISTED`], oldest first), their hypercapnic flag and their alerts.
pub fn vitals(node: &Node, patient: &Pseudonym, now: i64) -> Result<wire::Vitals, Error> {
    if !node.store.contains(cf::PATIENTS, &patient.0)? {
        return Err(Error::UnknownPatient(*patient));
    }
    let mut readings: VecDeque<wire::VitalReading> = VecDeque::new();
    let from = reading_bound(patient, now.saturating_sub(VITALS_HORIZON_SECONDS));
    let to = reading_bound(patient, i64::MAX);
    node.store
        .scan_range(cf::DEVICES, &from, &to, |key, sealed| {
            let r: ReadingRecord = node.store.open_record(cf::DEVICES, key, sealed)?;
            if readings.len() == MAX_VITALS_LISTED {
                readings.pop_front();
            }
            readings.push_back(wire::VitalReading {
                code: r.code,
                time: r.time,
                value: r.value,
                unit: r.unit,
            });
            Ok(())
        })?;
    let mut alerts = alerts(
        node,
        AlertFilter {
            open_only: false,
            patient: Some(patient),
        },
    )?;
    alerts.truncate(50);
    Ok(wire::Vitals {
        patient: patient.to_hex(),
        hypercapnic: state(node, patient)?.hypercapnic,
        readings: readings.into(),
        alerts,
    })
}

/// A patient's stored readings with times in `[from, to)`, oldest first, keeping the newest `cap`.
pub fn readings_between(
    node: &Node,
    patient: &Pseudonym,
    from: i64,
    to: i64,
    cap: usize,
) -> Result<Vec<ReadingRecord>, Error> {
    let mut out: VecDeque<ReadingRecord> = VecDeque::new();
    let (start, end) = (reading_bound(patient, from), reading_bound(patient, to));
    node.store
        .scan_range(cf::DEVICES, &start, &end, |key, sealed| {
            let r: ReadingRecord = node.store.open_record(cf::DEVICES, key, sealed)?;
            if out.len() == cap {
                out.pop_front();
            }
            out.push_back(r);
            Ok(())
        })?;
    Ok(out.into())
}

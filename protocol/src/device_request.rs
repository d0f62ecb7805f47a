//! What a bedside device (or a gateway for it) sends a node: batches of readings, signed as plain-text lines any gateway can sign; the staff views of devices and alerts. No IO.
//!
//! A device is an ed25519 key that hospital staff enrolled for one patient.
//! It POSTs a batch of readings to [`PATH_READINGS`] with three headers:
//! [`HEADER_DEVICE`] (its public key, hex), [`HEADER_TIME`] (unix seconds)
//! and [`HEADER_SIGNATURE`] (hex, 64 bytes) over [`message`]: a domain line,
//! then the version, the node's id, the device key, the method, the path,
//! the time and the SHA-256 of the body, one per line. Binding the node,
//! the route and the body means a signature cannot be used at another node,
//! on another route or with another body.
//!
//! There is no nonce: every reading carries a sequence number that must be
//! strictly greater than the last one the node stored for that device, so a
//! replayed batch is refused by its sequence numbers, and a batch is
//! acknowledged only once durable (so a device that saw no acknowledgement
//! resends the same batch, and is told which sequence numbers were already
//! stored).
//!
//! The body is either a [`Batch`] (`application/json`) or a FHIR R4 Bundle
//! of vital-signs Observations (`application/fhir+json`, see
//! [`readings_from_fhir`]): each Observation carries its sequence number as
//! an `identifier` with system [`SEQ_SYSTEM`]. [`Signed::batch`] is the
//! client side: it signs a batch the way the node checks it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use witmed_crypto::KeyPair;

/// The first line of every signed device request.
pub const DOMAIN: &str = "witmed/device-request";

/// Today's version of the message layout and of [`Batch`].
pub const VERSION: u32 = 1;

/// Header carrying the device's ed25519 public key (64 hex characters).
pub const HEADER_DEVICE: &str = "x-witmed-device";
/// Header carrying the request's unix time in seconds.
pub const HEADER_TIME: &str = "x-witmed-time";
/// Header carrying the Ed25519 signature (hex, 64 bytes) over [`message`].
pub const HEADER_SIGNATURE: &str = "x-witmed-signature";

/// Content type of a [`Batch`].
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of a FHIR R4 Bundle of Observations.
pub const CONTENT_TYPE_FHIR: &str = "application/fhir+json";

/// The identifier system of a FHIR Observation's sequence number.
pub const SEQ_SYSTEM: &str = "urn:witmed:device-seq";
/// LOINC's code system URI.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// UCUM's code system URI.
pub const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";

/// Most readings in one batch.
pub const MAX_READINGS: usize = 256;
/// Largest body a device may send (the API's own body limit is not larger).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where devices send readings (device-signed).
pub const PATH_READINGS: &str = "/api/v1/device/readings";
/// Staff: enrol a device (POST [`Enrol`]), list devices (GET).
pub const PATH_DEVICES: &str = "/api/v1/staff/devices";
/// Staff: list alerts (GET, `?open=true` for unacknowledged only).
pub const PATH_ALERTS: &str = "/api/v1/staff/alerts";
/// Staff: alerts as server-sent events (`event: alert`, data an [`Alert`]).
pub const PATH_ALERT_STREAM: &str = "/api/v1/staff/alerts/stream";

/// Staff: retire a device (POST, no body).
pub fn path_retire(device_hex: &str) -> String {
    format!("{PATH_DEVICES}/{device_hex}/retire")
}

/// Staff: acknowledge an alert (POST [`Ack`]).
pub fn path_ack(alert_id: &str) -> String {
    format!("{PATH_ALERTS}/{alert_id}/ack")
}

/// Staff: a patient's recent vital signs and NEWS2 (GET, [`Vitals`]).
pub fn path_vitals(patient_hex: &str) -> String {
    format!("/api/v1/staff/patients/{patient_hex}/vitals")
}

/// Staff: set or clear a patient's hypercapnic flag (POST [`Hypercapnic`]).
pub fn path_hypercapnic(patient_hex: &str) -> String {
    format!("/api/v1/staff/patients/{patient_hex}/hypercapnic")
}

/// What a device's signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The node's id (hex of its public key): the request is for this node only.
    pub node: &'a str,
    /// The device's public key (hex).
    pub device: &'a str,
    /// `POST`.
    pub method: &'a str,
    /// The path with its query string, as sent.
    pub path: &'a str,
    /// Unix seconds when the device sent it.
    pub time: i64,
    /// SHA-256 of the body.
    pub body_sha256: [u8; 32],
}

/// The exact bytes signed: lines joined by `\n`, no trailing newline.
pub fn message(r: &Request<'_>) -> Vec<u8> {
    [
        DOMAIN.to_string(),
        VERSION.to_string(),
        r.node.to_string(),
        r.device.to_string(),
        r.method.to_string(),
        r.path.to_string(),
        r.time.to_string(),
        hex::encode(r.body_sha256),
    ]
    .join("\n")
    .into_bytes()
}

/// A batch of readings from one device (`application/json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// [`VERSION`].
    pub version: u32,
    /// 1 to [`MAX_READINGS`] readings, sequence numbers strictly increasing.
    pub readings: Vec<Reading>,
}

/// One measurement by a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// The device's own counter: strictly increasing over everything it ever sent.
    pub seq: u64,
    /// Unix seconds when it was measured.
    pub time: i64,
    /// LOINC code, e.g. `8867-4` (heart rate).
    pub code: String,
    /// The value in `unit`.
    pub value: f64,
    /// UCUM unit, e.g. `/min`, `Cel`, `[degF]`, `mm[Hg]`, `kPa`, `%`.
    pub unit: String,
}

/// Why a body is not a batch of readings; names the reading when it is one reading's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON of the declared shape.
    #[error("the body is not a valid {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A content type other than the two accepted.
    #[error("content type {0:?} is not accepted; send application/json (a batch) or application/fhir+json (a Bundle of Observations)")]
    ContentType(String),
    /// The batch's version is not one this node reads.
    #[error("batch version {0} is not supported; this node reads version {VERSION}")]
    Version(u32),
    /// No readings at all.
    #[error("the batch has no readings; send 1 to {MAX_READINGS}")]
    Empty,
    /// Too many readings.
    #[error("the batch has {0} readings, over the limit of {MAX_READINGS}; send smaller batches")]
    TooMany(usize),
    /// One reading (by position, 0-based) is not usable.
    #[error("reading {index}: {reason}")]
    Reading { index: usize, reason: String },
}

impl BodyError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::Malformed { .. } | BodyError::Reading { .. } => "malformed_batch",
            BodyError::ContentType(_) => "unsupported_media_type",
            BodyError::Version(_) => "unsupported_version",
            BodyError::Empty => "empty_batch",
            BodyError::TooMany(_) => "batch_too_large",
        }
    }
}

/// The readings of a body of the given content type, in order, strictly parsed.
pub fn parse_body(content_type: &str, body: &[u8]) -> Result<Vec<Reading>, BodyError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let readings = match media {
        CONTENT_TYPE_JSON => readings_from_json(body)?,
        CONTENT_TYPE_FHIR => readings_from_fhir(body)?,
        other => return Err(BodyError::ContentType(other.chars().take(80).collect())),
    };
    check_count(readings.len())?;
    Ok(readings)
}

fn check_count(count: usize) -> Result<(), BodyError> {
    match count {
        0 => Err(BodyError::Empty),
        n if n > MAX_READINGS => Err(BodyError::TooMany(n)),
        _ => Ok(()),
    }
}

/// A [`Batch`]'s readings.
pub fn readings_from_json(body: &[u8]) -> Result<Vec<Reading>, BodyError> {
    let batch: Batch = serde_json::from_slice(body).map_err(|e| BodyError::Malformed {
        what: "batch",
        reason: e.to_string(),
    })?;
    if batch.version != VERSION {
        return Err(BodyError::Version(batch.version));
    }
    Ok(batch.readings)
}

/// The readings of a FHIR R4 Bundle whose entries are vital-signs
/// Observations, each with: an `identifier` of system [`SEQ_SYSTEM`] whose
/// value is the sequence number; a LOINC `code`; `effectiveDateTime` with a
/// time zone; `valueQuantity` with `value` and a UCUM `code` (system
/// [`UCUM_SYSTEM`]). A blood pressure panel's components are refused: send
/// systolic and diastolic as Observations of their own.
pub fn readings_from_fhir(body: &[u8]) -> Result<Vec<Reading>, BodyError> {
    let bundle: Value = serde_json::from_slice(body).map_err(|e| BodyError::Malformed {
        what: "FHIR Bundle",
        reason: e.to_string(),
    })?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(BodyError::Malformed {
            what: "FHIR Bundle",
            reason: "resourceType is not Bundle".into(),
        });
    }
    let entries = match bundle.get("entry") {
        Some(Value::Array(entries)) => entries.as_slice(),
        None => &[],
        Some(_) => {
            return Err(BodyError::Malformed {
                what: "FHIR Bundle",
                reason: "entry is not an array".into(),
            })
        }
    };
    check_count(entries.len())?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            observation_reading(entry.get("resource").unwrap_or(&Value::Null))
                .map_err(|reason| BodyError::Reading { index, reason })
        })
        .collect()
}

fn observation_reading(resource: &Value) -> Result<Reading, String> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Observation") {
        return Err("the entry's resource is not an Observation".into());
    }
    let status = resource.get("status").and_then(Value::as_str);
    if !matches!(status, Some("final" | "amended" | "corrected")) {
        return Err("status is not final, amended or corrected".into());
    }
    if resource.get("component").is_some() {
        return Err(
            "components are not accepted; send each measurement as its own Observation".into(),
        );
    }
    let quantity = resource.get("valueQuantity").ok_or("no valueQuantity")?;
    Ok(Reading {
        seq: fhir_seq(resource)?,
        time: fhir_time(resource)?,
        code: fhir_loinc(resource)?,
        value: quantity
            .get("value")
            .and_then(Value::as_f64)
            .ok_or("valueQuantity.value is not a number")?,
        unit: fhir_ucum(quantity)?,
    })
}

fn fhir_seq(resource: &Value) -> Result<u64, String> {
    let identifiers = resource.get("identifier").and_then(Value::as_array);
    let seq = identifiers
        .into_iter()
        .flatten()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(SEQ_SYSTEM))
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no identifier with system {SEQ_SYSTEM}"))?;
    let digits = !seq.is_empty() && seq.len() <= 20 && seq.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| seq.parse().ok())
        .flatten()
        .ok_or_else(|| format!("the sequence number {seq:?} is not a decimal number"))
}

fn fhir_time(resource: &Value) -> Result<i64, String> {
    let text = resource
        .get("effectiveDateTime")
        .and_then(Value::as_str)
        .ok_or("no effectiveDateTime")?;
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|_| format!("effectiveDateTime {text:?} is not a date-time with a time zone"))
}

fn fhir_loinc(resource: &Value) -> Result<String, String> {
    resource
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(LOINC_SYSTEM))
        .and_then(|c| c.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "no LOINC coding in code".into())
}

fn fhir_ucum(quantity: &Value) -> Result<String, String> {
    if quantity.get("system").and_then(Value::as_str) != Some(UCUM_SYSTEM) {
        return Err(format!("valueQuantity.system is not {UCUM_SYSTEM}"));
    }
    quantity
        .get("code")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "valueQuantity.code (the UCUM unit) is missing".into())
}

/// A FHIR R4 Bundle (type `batch`) of these readings as the vital-signs
/// Observations [`readings_from_fhir`] reads; what a FHIR gateway would send.
pub fn fhir_bundle(readings: &[Reading]) -> Value {
    let entries: Vec<Value> = readings.iter().map(fhir_observation).collect();
    serde_json::json!({ "resourceType": "Bundle", "type": "batch", "entry": entries })
}

fn fhir_observation(r: &Reading) -> Value {
    let time = chrono::DateTime::from_timestamp(r.time, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    serde_json::json!({
        "resource": {
            "resourceType": "Observation",
            "meta": { "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"] },
            "status": "final",
            "identifier": [{ "system": SEQ_SYSTEM, "value": r.seq.to_string() }],
            "category": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs" }] }],
            "code": { "coding": [{ "system": LOINC_SYSTEM, "code": r.code }] },
            "effectiveDateTime": time,
            "valueQuantity": { "value": r.value, "unit": r.unit, "system": UCUM_SYSTEM, "code": r.unit }
        }
    })
}

/// A signed request, ready to send: the headers (content type included) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Signed {
    /// Signs `body` (of `content_type`) for POST [`PATH_READINGS`] at node `node_hex`, made at `time`.
    pub fn body(
        key: &KeyPair,
        node_hex: &str,
        time: i64,
        content_type: &str,
        body: Vec<u8>,
    ) -> Signed {
        let device = key.public().to_hex();
        let signature = key.sign_raw(&message(&Request {
            node: node_hex,
            device: &device,
            method: "POST",
            path: PATH_READINGS,
            time,
            body_sha256: witmed_crypto::sha256(&body),
        }));
        Signed {
            headers: vec![
                (HEADER_DEVICE, device),
                (HEADER_TIME, time.to_string()),
                (HEADER_SIGNATURE, hex::encode(signature)),
                ("content-type", content_type.to_string()),
            ],
            body,
        }
    }

    /// Signs a [`Batch`] of `readings` as JSON.
    pub fn batch(key: &KeyPair, node_hex: &str, time: i64, readings: &[Reading]) -> Signed {
        let batch = Batch {
            version: VERSION,
            readings: readings.to_vec(),
        };
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        Signed::body(key, node_hex, time, CONTENT_TYPE_JSON, body)
    }

    /// Signs `readings` as a FHIR Bundle.
    pub fn fhir(key: &KeyPair, node_hex: &str, time: i64, readings: &[Reading]) -> Signed {
        let body = serde_json::to_vec(&fhir_bundle(readings)).unwrap_or_default();
        Signed::body(key, node_hex, time, CONTENT_TYPE_FHIR, body)
    }
}

/// The node's answer to an accepted batch, sent only after the readings are durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// How many readings were stored.
    pub stored: usize,
    /// The device's last stored sequence number: send only greater ones.
    pub last_seq: u64,
    /// Alerts this batch raised (already stored).
    pub alerts: Vec<Alert>,
}

/// Staff: enrol a device for a patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    /// The device's public key, hex.
    pub device: String,
    /// The patient's pseudonym at this node, hex.
    pub patient: String,
    /// A label for people ("ward 3 bed 12 monitor"), at most 100 characters.
    #[serde(default)]
    pub label: String,
}

/// An enrolled (or retired) device as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Public key, hex.
    pub device: String,
    /// Patient pseudonym, hex.
    pub patient: String,
    pub label: String,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Unix seconds, once retired; a retired device's readings are refused.
    pub retired_at: Option<i64>,
    /// The last sequence number stored, if any.
    pub last_seq: Option<u64>,
}

/// NEWS2 clinical risk bands (RCP 2017).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Band {
    /// Aggregate 0.
    Zero,
    /// Aggregate 1-4 with no single parameter scoring 3.
    Low,
    /// Aggregate 0-4 with one parameter scoring 3 (urgent ward-based response).
    LowMedium,
    /// Aggregate 5-6 (urgent response).
    Medium,
    /// Aggregate 7 or more (emergency response).
    High,
}

/// One reading an alert was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The device (hex) and its sequence number.
    pub device: String,
    pub seq: u64,
    pub code: String,
    /// Unix seconds.
    pub time: i64,
    /// In the canonical unit (after conversion).
    pub value: f64,
    pub unit: String,
    /// This parameter's NEWS2 sub-score.
    pub sub_score: u8,
}

/// A stored NEWS2 alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Opaque id (for [`path_ack`]).
    pub id: String,
    /// Patient pseudonym, hex.
    pub patient: String,
    /// Unix seconds of the newest reading in the set.
    pub at: i64,
    /// The aggregate NEWS2 score.
    pub score: u8,
    pub band: Band,
    /// Whether SpO2 was scored on scale 2 (hypercapnic respiratory failure).
    pub spo2_scale_2: bool,
    /// The readings of the fresh set, one per parameter.
    pub sources: Vec<Source>,
    /// Who acknowledged it and when, once acknowledged.
    pub ack: Option<Acknowledged>,
}

/// A clinician's acknowledgement of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledged {
    pub by: String,
    /// Unix seconds.
    pub at: i64,
}

/// Staff: acknowledge an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The clinician (a name or staff id, 1 to 100 characters).
    pub by: String,
}

/// Staff: set a patient's hypercapnic flag (SpO2 scored on NEWS2 scale 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypercapnic {
    pub hypercapnic: bool,
}

/// One vital-sign observation of a patient, in its canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitalReading {
    pub code: String,
    /// Unix seconds.
    pub time: i64,
    pub value: f64,
    pub unit: String,
}

/// Staff: a patient's device readings and latest NEWS2, for the clinician page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vitals {
    pub patient: String,
    pub hypercapnic: bool,
    /// The newest readings (at most 500), oldest first.
    pub readings: Vec<VitalReading>,
    /// The patient's alerts, newest first (at most 50).
    pub alerts: Vec<Alert>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>() -> Request<'a> {
        Request {
            node: "ab",
            device: "cd",
            method: "POST",
            path: PATH_READINGS,
            time: 1_700_000_000,
            body_sha256: [0; 32],
        }
    }

    fn reading(seq: u64) -> Reading {
        Reading {
            seq,
            time: 1_700_000_000 + seq as i64,
            code: "8867-4".into(),
            value: 72.0,
            unit: "/min".into(),
        }
    }

    #[test]
    fn the_message_is_the_documented_lines() {
        let text = String::from_utf8(message(&request())).unwrap();
        assert_eq!(
            text,
            format!(
                "witmed/device-request\n1\nab\ncd\nPOST\n/api/v1/device/readings\n1700000000\n{}",
                "0".repeat(64)
            )
        );
    }

    #[test]
    fn every_field_changes_the_message() {
        let base = message(&request());
        let changed = [
            Request {
                node: "ac",
                ..request()
            },
            Request {
                device: "ce",
                ..request()
            },
            Request {
                method: "PUT",
                ..request()
            },
            Request {
                path: "/api/v1/device/other",
                ..request()
            },
            Request {
                time: 1_700_000_001,
                ..request()
            },
            Request {
                body_sha256: [1; 32],
                ..request()
            },
        ];
        for other in changed {
            assert_ne!(message(&other), base, "{other:?}");
        }
    }

    #[test]
    fn a_signed_batch_verifies_over_its_own_body_only() {
        let key = KeyPair::from_seed(witmed_crypto::Role::Patient, &[7; 32]);
        let signed = Signed::batch(&key, "ab", 1_700_000_000, &[reading(1)]);
        let header = |name| {
            signed
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let signature: [u8; 64] = hex::decode(header(HEADER_SIGNATURE))
            .unwrap()
            .try_into()
            .unwrap();
        let device = header(HEADER_DEVICE);
        let mut r = Request {
            node: "ab",
            device: &device,
            method: "POST",
            path: PATH_READINGS,
            time: 1_700_000_000,
            body_sha256: witmed_crypto::sha256(&signed.body),
        };
        assert!(key.public().verify(&message(&r), &signature));
        r.body_sha256 = witmed_crypto::sha256(b"{}");
        assert!(!key.public().verify(&message(&r), &signature));
        assert_eq!(
            parse_body(CONTENT_TYPE_JSON, &signed.body).unwrap(),
            vec![reading(1)]
        );
    }

    #[test]
    fn json_and_fhir_carry_the_same_readings() {
        let readings = vec![reading(1), reading(2)];
        let fhir = serde_json::to_vec(&fhir_bundle(&readings)).unwrap();
        assert_eq!(
            parse_body("application/fhir+json; charset=utf-8", &fhir).unwrap(),
            readings
        );
        let json = serde_json::to_vec(&Batch {
            version: VERSION,
            readings: readings.clone(),
        })
        .unwrap();
        assert_eq!(parse_body(CONTENT_TYPE_JSON, &json).unwrap(), readings);
    }

    fn check_refused(content_type: &str, body: &str, code: &str, says: &str) {
        let e = parse_body(content_type, body.as_bytes()).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(says), "{e} should say {says:?}");
    }

    #[test]
    fn malformed_bodies_are_refused_with_the_reason() {
        let one = r#"{"seq":1,"time":1,"code":"8867-4","value":70,"unit":"/min"}"#;
        check_refused(
            CONTENT_TYPE_JSON,
            "not json",
            "malformed_batch",
            "not a valid batch",
        );
        check_refused(
            CONTENT_TYPE_JSON,
            &format!(r#"{{"version":1,"readings":[{one}],"x":1}}"#),
            "malformed_batch",
            "unknown field",
        );
        check_refused(
            CONTENT_TYPE_JSON,
            r#"{"version":1,"readings":[{"seq":-1,"time":1,"code":"8867-4","value":70,"unit":"/min"}]}"#,
            "malformed_batch",
            "expected u64",
        );
        check_refused(
            CONTENT_TYPE_JSON,
            &format!(r#"{{"version":2,"readings":[{one}]}}"#),
            "unsupported_version",
            "version 2",
        );
        check_refused(
            CONTENT_TYPE_JSON,
            r#"{"version":1,"readings":[]}"#,
            "empty_batch",
            "no readings",
        );
        let many = vec![one; MAX_READINGS + 1].join(",");
        check_refused(
            CONTENT_TYPE_JSON,
            &format!(r#"{{"version":1,"readings":[{many}]}}"#),
            "batch_too_large",
            "over the limit",
        );
        check_refused("text/plain", "{}", "unsupported_media_type", "text/plain");
        check_refused(
            CONTENT_TYPE_FHIR,
            r#"{"resourceType":"Patient"}"#,
            "malformed_batch",
            "not Bundle",
        );
    }

    /// Breaks one part of an Observation.
    type Spoil = fn(&mut Value);

    #[test]
    fn a_fhir_observation_missing_a_part_is_refused_naming_it() {
        let good = fhir_bundle(&[reading(1)]);
        let cases: [(&str, Spoil, &str); 6] = [
            (
                "seq",
                |o| o["identifier"] = serde_json::json!([]),
                "urn:witmed:device-seq",
            ),
            (
                "time zone",
                |o| o["effectiveDateTime"] = "2024-01-01T10:00:00".into(),
                "time zone",
            ),
            (
                "loinc",
                |o| o["code"]["coding"][0]["system"] = "http://snomed.info/sct".into(),
                "LOINC",
            ),
            (
                "ucum",
                |o| o["valueQuantity"]["system"] = "x".into(),
                "unitsofmeasure",
            ),
            ("status", |o| o["status"] = "preliminary".into(), "status"),
            (
                "panel",
                |o| o["component"] = serde_json::json!([]),
                "components",
            ),
        ];
        for (what, spoil, says) in cases {
            let mut bundle = good.clone();
            spoil(&mut bundle["entry"][0]["resource"]);
            let e =
                parse_body(CONTENT_TYPE_FHIR, &serde_json::to_vec(&bundle).unwrap()).unwrap_err();
            assert!(
                matches!(e, BodyError::Reading { index: 0, .. }),
                "{what}: {e}"
            );
            assert!(e.to_string().contains(says), "{what}: {e}");
        }
    }

    #[test]
    fn paths_are_the_documented_routes() {
        assert_eq!(path_retire("ab"), "/api/v1/staff/devices/ab/retire");
        assert_eq!(path_ack("7"), "/api/v1/staff/alerts/7/ack");
        assert_eq!(path_vitals("cd"), "/api/v1/staff/patients/cd/vitals");
        assert_eq!(
            path_hypercapnic("cd"),
            "/api/v1/staff/patients/cd/hypercapnic"
        );
    }
}

//! `witmed-lab device simulate`: enrol one simulated device per PhysioNet stay through the staff API, then replay the stays as signed reading batches at a set rate.
//!
//! Each device is a fresh ed25519 key, enrolled by staff for the patient the stay belongs to
//! (the node must have imported the set, so the patient exists). Readings are stamped with the
//! wall-clock second they are sent, in the stay's order, so a 48-hour stay replays in minutes
//! and the node scores NEWS2 on them as they arrive. The deteriorating stay
//! [`stays::find_deteriorating`] finds is replayed first, for the demo.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use witmed_care::physionet::DeviceReading;
use witmed_crypto::{KeyPair, Role};
use witmed_protocol::device_request::{self as wire, Receipt, Signed};

use super::http::{self, Client};
use super::stays::{self, Stay};

/// Why the simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the node: {0}; check --node and that `witmed node run --http` is running"
    )]
    Connect(#[from] std::io::Error),
    #[error("the node refused {what} with HTTP {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("patient {0} is not at this node; import the PhysioNet set first (`witmed import physionet`)")]
    NotImported(String),
    #[error("the node's answer to {what} is not what the API documents: {reason}")]
    BadAnswer { what: String, reason: String },
    #[error("no PhysioNet stay in {0} has vital signs to replay; check --set")]
    NoStays(String),
}

impl Error {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Connect(_) => "node_unreachable",
            Error::Refused { .. } => "node_refused",
            Error::NotImported(_) => "patient_not_imported",
            Error::BadAnswer { .. } => "bad_answer",
            Error::NoStays(_) => "no_stays",
        }
    }
}

/// What to replay and how fast.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://host:port` of the node's API.
    pub node: String,
    pub staff_token: String,
    /// Readings per second, all devices together.
    pub rate: f64,
    /// Readings per signed request (1 to the wire limit).
    pub batch: usize,
    /// Parallel connections (each replays its share of the devices).
    pub connections: usize,
    /// Replay the stays again from the start until this much time has passed (load tests);
    /// `None`: each stay once.
    pub duration: Option<Duration>,
}

/// One simulated device and the stay it replays.
#[derive(Debug)]
pub struct Device {
    pub record_id: String,
    pub patient: String,
    pub key: KeyPair,
    pub readings: Vec<DeviceReading>,
    next: usize,
    seq: u64,
}

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub requests: u64,
    pub sent: u64,
    pub stored: u64,
    /// Alerts the node raised, with the RecordID of the stay.
    pub alerts: Vec<(String, wire::Alert)>,
    /// Refused batches: HTTP status and the node's answer.
    pub refusals: Vec<(u16, String)>,
    /// Times a batch waited because the node was busy or rate-limited it (then resent).
    pub throttled: u64,
    pub elapsed: Duration,
}

impl Summary {
    /// Readings the node stored per second.
    pub fn stored_per_second(&self) -> f64 {
        self.stored as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `n` stays to replay: the deteriorating one first, then stays that ever get a fresh NEWS2
/// set, then any stay with vital signs, in file order.
pub fn choose_stays(set_dir: &std::path::Path, n: usize) -> std::io::Result<Vec<Stay>> {
    let mut chosen = Vec::new();
    if let Some((stay, _)) = stays::find_deteriorating(set_dir, 4000)? {
        chosen.push(stay);
    }
    let mut others = Vec::new();
    for path in stays::files(set_dir)? {
        if chosen.len() >= n {
            break;
        }
        let Ok(stay) = stays::load(&path) else {
            continue;
        };
        if stay.mapped.readings.is_empty() || chosen.iter().any(|c| c.record_id == stay.record_id) {
            continue;
        }
        if stays::ever_scored(&stay) {
            chosen.push(stay);
        } else if others.len() < n {
            others.push(stay);
        }
    }
    chosen.extend(others);
    chosen.truncate(n);
    Ok(chosen)
}

fn staff_headers(token: &str) -> [(&'static str, String); 2] {
    [
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_string()),
    ]
}

fn as_refs<'a>(headers: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn json<T: serde::de::DeserializeOwned>(what: &str, r: &http::Response) -> Result<T, Error> {
    if !(200..300).contains(&r.status) {
        return Err(Error::Refused {
            what: what.to_string(),
            status: r.status,
            body: r.text(),
        });
    }
    serde_json::from_slice(&r.body).map_err(|e| Error::BadAnswer {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Looks each stay's patient up, enrols a fresh device key for them; returns the node's id
/// (hex, what device signatures bind) and the devices.
pub fn enrol(config: &Config, stays: Vec<Stay>) -> Result<(String, Vec<Device>), Error> {
    let mut client = Client::new(&config.node)?;
    let headers = staff_headers(&config.staff_token);
    let mut node_id = String::new();
    let mut devices = Vec::new();
    for stay in stays {
        let path = format!(
            "/api/v1/staff/patients?system=physionet2012&id={}",
            stay.record_id
        );
        let answer = client.send("GET", &path, &as_refs(&headers[..1]), b"")?;
        let lookup: serde_json::Value = json("the patient lookup", &answer)?;
        if lookup["has_records"] != true {
            return Err(Error::NotImported(stay.record_id));
        }
        let field = |name: &str| {
            lookup[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::BadAnswer {
                    what: "the patient lookup".into(),
                    reason: format!("no {name}"),
                })
        };
        let patient = field("pseudonym")?;
        node_id = field("node_id")?;
        let key = KeyPair::generate(Role::Patient)
            .map_err(|e| Error::Connect(std::io::Error::other(format!("key generation: {e}"))))?;
        let body = serde_json::to_vec(&wire::Enrol {
            device: key.public().to_hex(),
            patient: patient.clone(),
            label: format!("simulated monitor, PhysioNet {}", stay.record_id),
        })
        .unwrap_or_default();
        let answer = client.send("POST", wire::PATH_DEVICES, &as_refs(&headers), &body)?;
        if !(200..300).contains(&answer.status) {
            return Err(Error::Refused {
                what: "the device enrolment".into(),
                status: answer.status,
                body: answer.text(),
            });
        }
        devices.push(Device {
            record_id: stay.record_id,
            patient,
            key,
            readings: stay.mapped.readings,
            next: 0,
            seq: 0,
        });
    }
    Ok((node_id, devices))
}

impl Device {
    /// The next batch of at most `n` readings, numbered and stamped `now`; empty when the stay is
    /// over (or, looping, never).
    fn next_batch(&mut self, n: usize, now: i64, looping: bool) -> Vec<wire::Reading> {
        if self.next >= self.readings.len() && looping {
            self.next = 0;
        }
        let end = self.next.saturating_add(n).min(self.readings.len());
        let batch = self.readings[self.next..end]
            .iter()
            .map(|r| {
                self.seq = self.seq.saturating_add(1);
                wire::Reading {
                    seq: self.seq,
                    time: now,
                    code: r.vital.code().to_string(),
                    value: r.value,
                    unit: r.unit.to_string(),
                }
            })
            .collect();
        self.next = end;
        batch
    }
}

/// Replays the devices' stays at `config.rate` readings per second over `config.connections`
/// connections; `stop` ends it early.
pub fn replay(
    config: &Config,
    node_id: &str,
    devices: Vec<Device>,
    stop: Arc<AtomicBool>,
) -> Result<Summary, Error> {
    let connections = config.connections.clamp(1, 64).min(devices.len().max(1));
    let mut shares: Vec<Vec<Device>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, device) in devices.into_iter().enumerate() {
        shares[i % connections].push(device);
    }
    let summary = Arc::new(Mutex::new(Summary::default()));
    let start = Instant::now();
    let rate = (config.rate / connections as f64).max(0.001);
    let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let summary = summary.clone();
                let stop = stop.clone();
                scope.spawn(move || replay_share(config, node_id, share, rate, &summary, &stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Connect(std::io::Error::other("a sender panicked")))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    let mut summary = summary.lock().map(|s| s.clone()).unwrap_or_default();
    summary.elapsed = start.elapsed();
    Ok(summary)
}

fn replay_share(
    config: &Config,
    node_id: &str,
    mut devices: Vec<Device>,
    rate: f64,
    summary: &Mutex<Summary>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let mut client = Client::new(&config.node)?;
    let batch = config.batch.clamp(1, wire::MAX_READINGS);
    let start = Instant::now();
    let looping = config.duration.is_some();
    let mut sent: u64 = 0;
    loop {
        let mut any = false;
        for device in devices.iter_mut() {
            if stop.load(Ordering::Relaxed) || config.duration.is_some_and(|d| start.elapsed() >= d)
            {
                return Ok(());
            }
            let readings = device.next_batch(batch, witmed_node::unix_now(), looping);
            if readings.is_empty() {
                continue;
            }
            any = true;
            let signed = Signed::batch(&device.key, node_id, witmed_node::unix_now(), &readings);
            let headers: Vec<(&str, &str)> = signed
                .headers
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            let answer = send_with_backoff(&mut client, &headers, &signed.body, summary, stop)?;
            record(summary, device, readings.len(), &answer);
            sent = sent.saturating_add(readings.len() as u64);
            pace(start, sent, rate);
        }
        if !any {
            return Ok(());
        }
    }
}

/// Most times one batch is resent after the node said it was busy or rate-limited.
const MAX_RETRIES: u32 = 40;

/// Sends a signed batch; while the node answers 429 (rate limited) or 503 (busy), waits and
/// resends the same batch (nothing of it was stored), counting each wait.
fn send_with_backoff(
    client: &mut Client,
    headers: &[(&str, &str)],
    body: &[u8],
    summary: &Mutex<Summary>,
    stop: &AtomicBool,
) -> Result<http::Response, Error> {
    let mut tries = 0;
    loop {
        let answer = client.send("POST", wire::PATH_READINGS, headers, body)?;
        let busy = matches!(answer.status, 429 | 503);
        if !busy || tries >= MAX_RETRIES || stop.load(Ordering::Relaxed) {
            return Ok(answer);
        }
        tries += 1;
        if let Ok(mut s) = summary.lock() {
            s.throttled += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sleeps until `sent` readings are due at `rate` per second since `start`.
fn pace(start: Instant, sent: u64, rate: f64) {
    let due = Duration::from_secs_f64(sent as f64 / rate);
    if let Some(wait) = due.checked_sub(start.elapsed()) {
        std::thread::sleep(wait);
    }
}

fn record(summary: &Mutex<Summary>, device: &Device, count: usize, answer: &http::Response) {
    let Ok(mut s) = summary.lock() else { return };
    s.requests += 1;
    s.sent += count as u64;
    if (200..300).contains(&answer.status) {
        if let Ok(receipt) = serde_json::from_slice::<Receipt>(&answer.body) {
            s.stored += receipt.stored as u64;
            for alert in receipt.alerts {
                s.alerts.push((device.record_id.clone(), alert));
            }
        }
    } else if s.refusals.len() < 100 {
        s.refusals.push((answer.status, answer.text()));
    }
}

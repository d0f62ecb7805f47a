//! What a running node shares across device requests: the locks of device data, the alert counter, the bounded broadcast of new alerts to live subscribers, and each recently active patient's readings for NEWS2.

use std::sync::{Mutex, MutexGuard, RwLock};

use tokio::sync::broadcast;
use witmed_care::{news2, Vital};
use witmed_crypto::Pseudonym;
use witmed_protocol::device_request as wire;

use crate::store::{self, cf};

/// Alerts buffered for live subscribers; a subscriber further behind is dropped, never waited for.
pub const ALERT_CHANNEL_CAPACITY: usize = 64;

/// Patient lock stripes: batches for patients in different stripes are
/// stored side by side, so their synced writes share one fsync.
pub const PATIENT_STRIPES: usize = 64;

/// Prefix of alert keys in the `devices` family.
pub const ALERT_PREFIX: &[u8] = b"a/";

/// `a/` id (8, big endian).
pub fn alert_key(id: u64) -> Vec<u8> {
    [ALERT_PREFIX, &id.to_be_bytes()].concat()
}

/// What the running node shares across device requests.
pub struct Live {
    /// Held shared by ingestion and patient-state changes (each also under
    /// its patient's stripe), exclusively by changes to a device's enrolment
    /// or to an alert, so those never interleave with a batch.
    pub(crate) write: RwLock<()>,
    /// One lock per stripe of patients: a patient's batches, state and
    /// device sequence numbers change under it, one batch at a time.
    patients: [Mutex<()>; PATIENT_STRIPES],
    alerts: broadcast::Sender<wire::Alert>,
    /// The next alert id, read from the store on first use.
    next_alert: Mutex<Option<u64>>,
    /// Each recently active patient's newest readings, for NEWS2.
    pub(crate) recent: RecentCache,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            write: RwLock::new(()),
            patients: std::array::from_fn(|_| Mutex::new(())),
            alerts: broadcast::channel(ALERT_CHANNEL_CAPACITY).0,
            next_alert: Mutex::new(None),
            recent: RecentCache::default(),
        }
    }
}

impl Live {
    /// A receiver of alerts raised from now on (bounded: one that lags is told so and should be dropped).
    pub fn subscribe(&self) -> broadcast::Receiver<wire::Alert> {
        self.alerts.subscribe()
    }

    /// The lock of `patient`'s stripe (take it after [`Live::write`], shared).
    pub(crate) fn lock_patient(&self, patient: &Pseudonym) -> MutexGuard<'_, ()> {
        // A pseudonym is a keyed digest: its first byte is uniform enough to stripe on.
        let stripe = usize::from(patient.0[0]) % PATIENT_STRIPES;
        crate::locks::lock(&self.patients[stripe])
    }

    /// Sends alerts to live subscribers (none listening is fine).
    pub(crate) fn publish(&self, alerts: &[wire::Alert]) {
        for alert in alerts {
            let _ = self.alerts.send(alert.clone());
        }
    }

    /// Allocates the next alert id (call under [`Live::write`]; its own lock
    /// keeps ids unique across stripes).
    pub(crate) fn allocate_alert(&self, store: &store::Store) -> Result<u64, store::Error> {
        let mut next = crate::locks::lock(&self.next_alert);
        let id = match *next {
            Some(id) => id,
            None => store
                .last_key(cf::DEVICES, ALERT_PREFIX)?
                .and_then(|k| k.get(2..10).and_then(|b| b.try_into().ok()))
                .map(|b: [u8; 8]| u64::from_be_bytes(b).saturating_add(1))
                .unwrap_or(1),
        };
        *next = Some(id.saturating_add(1));
        Ok(id)
    }
}

/// A reading NEWS2 can use, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) device: witmed_crypto::PublicKey,
    pub(crate) seq: u64,
    pub(crate) vital: Vital,
    pub(crate) time: i64,
    pub(crate) value: f64,
}

impl Known {
    pub(crate) fn care(&self) -> news2::Reading {
        news2::Reading {
            vital: self.vital,
            at: self.time,
            value: self.value,
        }
    }
}

/// Most readings kept in memory for one patient; beyond (a stream that
/// never completes a set, so nothing is scored), the patient is read from
/// the store at each batch instead.
const MAX_RECENT_READINGS: usize = 2048;

/// The readings of one patient that later scores can still use (see `ingest::score`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent {
    pub(crate) readings: Vec<Known>,
}

impl Recent {
    /// What is still of use once `last_scored` is the last scored time:
    /// each vital's newest at or before it (all of them at that second) and
    /// everything after it; None when that is more than memory should keep.
    pub(crate) fn kept(mut self, last_scored: Option<i64>) -> Option<Recent> {
        if let Some(last) = last_scored {
            let mut newest: std::collections::HashMap<Vital, i64> = Default::default();
            for k in self.readings.iter().filter(|k| k.time <= last) {
                let at = newest.entry(k.vital).or_insert(k.time);
                *at = (*at).max(k.time);
            }
            self.readings
                .retain(|k| k.time > last || newest.get(&k.vital) == Some(&k.time));
        }
        (self.readings.len() <= MAX_RECENT_READINGS).then_some(self)
    }
}

/// Most patients whose recent readings are kept in memory.
pub const MAX_CACHED_PATIENTS: usize = 4096;

/// The recent readings of the patients who sent readings lately (bounded).
#[derive(Default)]
pub(crate) struct RecentCache {
    patients: std::sync::Mutex<std::collections::HashMap<Pseudonym, Recent>>,
}

impl RecentCache {
    pub(crate) fn get(&self, patient: &Pseudonym) -> Option<Recent> {
        crate::locks::lock(&self.patients).get(patient).cloned()
    }

    /// Installs a patient's readings after their batch was stored (None:
    /// forget them; they are read from the store when next needed).
    pub(crate) fn install(&self, patient: &Pseudonym, recent: Option<Recent>) {
        let mut patients = crate::locks::lock(&self.patients);
        let Some(recent) = recent else {
            patients.remove(patient);
            return;
        };
        if !patients.contains_key(patient) && patients.len() >= MAX_CACHED_PATIENTS {
            // Any one goes: it is read back from the store when it is next needed.
            if let Some(evicted) = patients.keys().next().copied() {
                patients.remove(&evicted);
            }
        }
        patients.insert(*patient, recent);
    }
}

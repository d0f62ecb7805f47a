//! What a running node shares across device requests: the one write lock of device data, the alert counter and the bounded broadcast of new alerts to live subscribers.

use std::sync::{Mutex, MutexGuard, RwLock};

use tokio::sync::broadcast;
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
    pub(crate) recent: crate::ingest::RecentCache,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            write: RwLock::new(()),
            patients: std::array::from_fn(|_| Mutex::new(())),
            alerts: broadcast::channel(ALERT_CHANNEL_CAPACITY).0,
            next_alert: Mutex::new(None),
            recent: Default::default(),
        }
    }
}

impl Live {
    /// A receiver of alerts raised from now on (bounded: one that lags is told so and should be dropped).
    pub fn subscribe(&self) -> broadcast::Receiver<wire::Alert> {
        self.alerts.subscribe()
    }

    /// The lock of `patient`'s stripe (take it after [`Live::write`], shared).
    pub(crate) fn lock_patient(&self, patient: &witmed_crypto::Pseudonym) -> MutexGuard<'_, ()> {
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

//! The node's encrypted RocksDB store: column families, key layout, versioned sealed records.
//!
//! Every value is a versioned record, serialized with postcard and sealed
//! with AES-256-GCM under a key derived for its column family, with the
//! storage key as associated data ([`witmed_crypto::at_rest`]). Keys hold
//! only pseudonyms, codes and times, never a source identifier.
//!
//! Column families and key layouts:
//!
//! | family         | key                                                   | value                    |
//! |----------------|-------------------------------------------------------|--------------------------|
//! | `patients`     | pseudonym (16)                                        | [`PatientRecord`]        |
//! | `observations` | pseudonym (16), code len (1), code, time (8, ordered), disambiguator (4) | [`ObservationRecord`] |
//! | `conditions`   | pseudonym (16), sha256(system, code)[..8], onset (8)  | [`ConditionRecord`]      |
//! | `consents`     | `e/` pseudonym, `t/` token id, `r/` token id, `s/` token id, `n/` re-enrolment id | enrolments, tokens, revocations, tokens of a replaced key, applied re-enrolments |
//! | `audit`        | sequence number (8, big endian)                       | [`crate::audit::Entry`]  |
//! | `budget`       | `c2/`, `a2/`, `h2`: keyed digests only (see [`crate::ledger`])   | charges, stored answers, ledger head |
//! | `meta`         | ASCII names                                           | format version, import markers |
//!
//! Observation keys sort by patient, then code, then time, so "all heart
//! rates of this patient within 24 hours of admission" is one range scan.
//! Writes that must survive a crash go through [`Store::write_durable`],
//! which syncs the write-ahead log before returning.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use witmed_crypto::at_rest::{MasterKey, RecordCipher};
use witmed_crypto::Pseudonym;
use witmed_protocol::vocab::Sex;

/// On-disk layout version of the store; checked at open.
pub const STORE_FORMAT_VERSION: u32 = 1;
/// Version of each record type written today.
pub const RECORD_VERSION: u32 = 1;

/// Column family names.
pub mod cf {
    pub const PATIENTS: &str = "patients";
    pub const OBSERVATIONS: &str = "observations";
    pub const CONDITIONS: &str = "conditions";
    pub const CONSENTS: &str = "consents";
    pub const AUDIT: &str = "audit";
    pub const BUDGET: &str = "budget";
    pub const META: &str = "meta";
    /// Every family, in creation order.
    pub const ALL: [&str; 7] = [
        PATIENTS,
        OBSERVATIONS,
        CONDITIONS,
        CONSENTS,
        AUDIT,
        BUDGET,
        META,
    ];
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB refused an operation.
    #[error("store at {path}: {source}; check the disk and that no other witmed process uses this data dir")]
    Rocks {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    /// A record did not decrypt or decode.
    #[error("stored record in {family} is unreadable: {reason}")]
    Corrupt {
        family: &'static str,
        reason: String,
    },
    /// The store was written by a newer witmed.
    #[error("store format version {found} is newer than this witmed's {STORE_FORMAT_VERSION}; upgrade witmed")]
    UnsupportedFormat { found: u32 },
}

/// A patient as stored: demographics and attributes, never names or source ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientRecord {
    pub version: u32,
    /// `physionet2012` or `fhir`.
    pub source_system: String,
    pub age_years: Option<f64>,
    pub sex: Sex,
    /// Numeric attributes (`icu_type`, `length_of_stay_days`, ...).
    pub attributes: Vec<(String, f64)>,
    /// Time origin of the patient's observation times (unix seconds, or 0 for
    /// PhysioNet's times since ICU admission). Query windows are relative to it.
    pub index_time: i64,
}

/// One observation value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObservationRecord {
    pub version: u32,
    pub value: f64,
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionRecord {
    pub version: u32,
    pub system: String,
    pub code: String,
    pub onset: Option<i64>,
}

/// A versioned record type: `version()` is checked on every read.
pub trait Versioned: Serialize + DeserializeOwned {
    fn version(&self) -> u32;
}

impl Versioned for PatientRecord {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for ObservationRecord {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for ConditionRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

/// Key of an observation.
pub fn observation_key(patient: &Pseudonym, code: &str, time: i64, disambiguator: u32) -> Vec<u8> {
    let mut key = observation_prefix(patient, code);
    key.extend_from_slice(&ordered_i64(time));
    key.extend_from_slice(&disambiguator.to_be_bytes());
    key
}

/// Prefix of all observations of `code` for `patient`.
pub fn observation_prefix(patient: &Pseudonym, code: &str) -> Vec<u8> {
    let code = &code.as_bytes()[..code.len().min(255)];
    let mut key = Vec::with_capacity(16 + 1 + code.len() + 12);
    key.extend_from_slice(&patient.0);
    key.push(code.len() as u8);
    key.extend_from_slice(code);
    key
}

/// Splits an observation key into (patient, code, time).
pub fn parse_observation_key(key: &[u8]) -> Option<(Pseudonym, &str, i64)> {
    let patient = Pseudonym(key.get(..16)?.try_into().ok()?);
    let code_len = *key.get(16)? as usize;
    let code = std::str::from_utf8(key.get(17..17 + code_len)?).ok()?;
    let time_bytes: [u8; 8] = key.get(17 + code_len..25 + code_len)?.try_into().ok()?;
    Some((patient, code, unordered_i64(time_bytes)))
}

/// Key of a condition.
pub fn condition_key(patient: &Pseudonym, system: &str, code: &str, onset: Option<i64>) -> Vec<u8> {
    let digest = witmed_crypto::sha256(format!("{system}\0{code}").as_bytes());
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(&patient.0);
    key.extend_from_slice(&digest[..8]);
    key.extend_from_slice(&ordered_i64(onset.unwrap_or(i64::MIN)));
    key
}

/// Big-endian with the sign bit flipped, so byte order equals numeric order.
fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// The node's store.
pub struct Store {
    db: DB,
    path: String,
    ciphers: Vec<(&'static str, RecordCipher)>,
    audit_seq: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path)
    }
}

/// A batch of writes, sealed as they are added, applied atomically.
pub struct Batch<'a> {
    store: &'a Store,
    inner: WriteBatch,
}

impl Batch<'_> {
    /// Seals and adds `record` under `key` in `family`.
    pub fn put<R: Versioned>(
        &mut self,
        family: &'static str,
        key: &[u8],
        record: &R,
    ) -> Result<(), Error> {
        let sealed = self.store.seal(family, key, record)?;
        self.inner.put_cf(self.store.handle(family), key, sealed);
        Ok(())
    }

    /// Adds a value already sealed with [`Store::seal_record`] for this family and key.
    pub fn put_sealed(&mut self, family: &'static str, key: &[u8], sealed: &[u8]) {
        self.inner.put_cf(self.store.handle(family), key, sealed);
    }

    /// Adds an unsealed marker (meta family only: import markers hold no patient data).
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.store.handle(cf::META), key, value);
    }

    /// Deletes `[from, to)` in `family`.
    pub fn delete_range(&mut self, family: &'static str, from: &[u8], to: &[u8]) {
        self.inner
            .delete_range_cf(self.store.handle(family), from, to);
    }

    /// Number of operations queued.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` with the node's master key.
    pub fn open(path: &Path, master: &MasterKey) -> Result<Store, Error> {
        let path_str = path.display().to_string();
        let rocks = |source| Error::Rocks {
            path: path_str.clone(),
            source,
        };
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Sealed values do not compress; keys are short. Skip compression.
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.increase_parallelism(2);
        let families = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(rocks)?;
        let ciphers = cf::ALL
            .iter()
            .map(|name| (*name, RecordCipher::for_area(master, name)))
            .collect();
        let store = Store {
            db,
            path: path_str,
            ciphers,
            audit_seq: AtomicU64::new(0),
        };
        store.check_format()?;
        store
            .audit_seq
            .store(store.last_audit_seq()?, Ordering::SeqCst);
        Ok(store)
    }

    fn check_format(&self) -> Result<(), Error> {
        const KEY: &[u8] = b"store_format_version";
        match self.get_meta(KEY)? {
            Some(bytes) => {
                let found = bytes
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| Error::Corrupt {
                        family: cf::META,
                        reason: "format version is not 4 bytes".into(),
                    })?;
                if found > STORE_FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat { found });
                }
                Ok(())
            }
            None => {
                let mut batch = self.batch();
                batch.put_meta(KEY, &STORE_FORMAT_VERSION.to_be_bytes());
                self.write_durable(batch)
            }
        }
    }

    fn handle(&self, family: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(family)
            .expect("every column family is created at open")
    }

    fn cipher(&self, family: &str) -> &RecordCipher {
        &self
            .ciphers
            .iter()
            .find(|(name, _)| *name == family)
            .expect("a cipher exists for every column family")
            .1
    }

    fn rocks_err(&self, source: rocksdb::Error) -> Error {
        Error::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    /// Seals `record` for `key` in `family` without writing it (any thread may
    /// seal; the import seals on its parsing thread and writes on another).
    pub fn seal_record<R: Versioned>(
        &self,
        family: &'static str,
        key: &[u8],
        record: &R,
    ) -> Result<Vec<u8>, Error> {
        self.seal(family, key, record)
    }

    fn seal<R: Serialize>(
        &self,
        family: &'static str,
        key: &[u8],
        record: &R,
    ) -> Result<Vec<u8>, Error> {
        let plain = postcard::to_stdvec(record).expect("records serialize");
        self.cipher(family)
            .seal(key, &plain)
            .map_err(|e| Error::Corrupt {
                family,
                reason: e.to_string(),
            })
    }

    /// Opens and decodes a sealed value read from `key`, checking its version.
    pub fn open_record<R: Versioned>(
        &self,
        family: &'static str,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<R, Error> {
        let corrupt = |reason: String| Error::Corrupt { family, reason };
        let plain = self
            .cipher(family)
            .open(key, sealed)
            .map_err(|e| corrupt(e.to_string()))?;
        let record: R = postcard::from_bytes(&plain).map_err(|e| corrupt(e.to_string()))?;
        if record.version() > RECORD_VERSION {
            return Err(corrupt(format!(
                "record version {} is newer than this witmed's {RECORD_VERSION}",
                record.version()
            )));
        }
        Ok(record)
    }

    /// A new empty batch.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            inner: WriteBatch::default(),
        }
    }

    /// Applies `batch` atomically and returns only once the WAL is synced to disk.
    pub fn write_durable(&self, batch: Batch<'_>) -> Result<(), Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch.inner, &opts)
            .map_err(|e| self.rocks_err(e))
    }

    /// Reads and opens one record.
    pub fn get<R: Versioned>(&self, family: &'static str, key: &[u8]) -> Result<Option<R>, Error> {
        let sealed = self
            .db
            .get_pinned_cf(self.handle(family), key)
            .map_err(|e| self.rocks_err(e))?;
        sealed
            .map(|s| self.open_record(family, key, &s))
            .transpose()
    }

    /// Reads an unsealed meta value.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db
            .get_cf(self.handle(cf::META), key)
            .map_err(|e| self.rocks_err(e))
    }

    /// True if `key` exists in `family`.
    pub fn contains(&self, family: &'static str, key: &[u8]) -> Result<bool, Error> {
        Ok(self
            .db
            .get_pinned_cf(self.handle(family), key)
            .map_err(|e| self.rocks_err(e))?
            .is_some())
    }

    /// Visits every (key, sealed value) with `prefix` in `family`, in key order.
    pub fn scan_prefix(
        &self,
        family: &'static str,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.handle(family), mode) {
            let (key, value) = item.map_err(|e| self.rocks_err(e))?;
            if !key.starts_with(prefix) {
                break;
            }
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// Visits and opens every record with `prefix` in `family`.
    pub fn scan_records<R: Versioned>(
        &self,
        family: &'static str,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], R) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.scan_prefix(family, prefix, |key, sealed| {
            let record = self.open_record(family, key, sealed)?;
            visit(key, record)
        })
    }

    /// Number of keys in `family`.
    pub fn count(&self, family: &'static str) -> Result<u64, Error> {
        let mut n = 0u64;
        self.scan_prefix(family, b"", |_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Next audit sequence number (monotonic within this store).
    pub fn next_audit_seq(&self) -> u64 {
        self.audit_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn last_audit_seq(&self) -> Result<u64, Error> {
        let mut iter = self
            .db
            .iterator_cf(self.handle(cf::AUDIT), IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (key, _) = item.map_err(|e| self.rocks_err(e))?;
                Ok(key
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0))
            }
            None => Ok(0),
        }
    }

    /// Flushes memtables (used before measuring on-disk contents).
    pub fn flush(&self) -> Result<(), Error> {
        for name in cf::ALL {
            self.db
                .flush_cf(self.handle(name))
                .map_err(|e| self.rocks_err(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(dir, &MasterKey::from_bytes([3; 32])).unwrap()
    }

    #[test]
    fn observation_keys_sort_by_time_and_parse_back() {
        let p = Pseudonym([1; 16]);
        let a = observation_key(&p, "8867-4", -5, 0);
        let b = observation_key(&p, "8867-4", 7, 0);
        let c = observation_key(&p, "8867-4", 3600, 0);
        assert!(a < b && b < c);
        assert_eq!(parse_observation_key(&c), Some((p, "8867-4", 3600)));
    }

    #[test]
    fn records_round_trip_sealed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = observation_key(&Pseudonym([2; 16]), "8867-4", 60, 0);
        {
            let s = store(dir.path());
            let mut batch = s.batch();
            let rec = ObservationRecord {
                version: RECORD_VERSION,
                value: 72.0,
            };
            batch.put(cf::OBSERVATIONS, &key, &rec).unwrap();
            s.write_durable(batch).unwrap();
        }
        let s = store(dir.path());
        let back: ObservationRecord = s.get(cf::OBSERVATIONS, &key).unwrap().unwrap();
        assert_eq!(back.value, 72.0);
        assert_eq!(s.count(cf::OBSERVATIONS).unwrap(), 1);
    }

    #[test]
    fn wrong_master_key_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = b"k".to_vec();
        {
            let s = store(dir.path());
            let mut batch = s.batch();
            let rec = ObservationRecord {
                version: RECORD_VERSION,
                value: 1.0,
            };
            batch.put(cf::OBSERVATIONS, &key, &rec).unwrap();
            s.write_durable(batch).unwrap();
        }
        let other = Store::open(dir.path(), &MasterKey::from_bytes([4; 32])).unwrap();
        let read: Result<Option<ObservationRecord>, _> = other.get(cf::OBSERVATIONS, &key);
        assert!(matches!(read, Err(Error::Corrupt { .. })));
    }
}

//! The node's encrypted RocksDB store: column families, key layout, versioned sealed records.
//!
//! Every value is a versioned record, serialized with postcard and sealed
//! with AES-256-GCM under a key derived for its column family, with the
//! storage key as associated data ([`witmed_crypto::at_rest`]). Keys hold
//! only pseudonyms, keyed code digests and times: never a source identifier,
//! and never a clinical code in clear ([`witmed_crypto::code_digest`]: an
//! HMAC under a key derived from the master key, because an unkeyed hash of
//! a public code list is inverted by hashing the list).
//!
//! Column families and key layouts:
//!
//! | family         | key                                                   | value                    |
//! |----------------|-------------------------------------------------------|--------------------------|
//! | `patients`     | pseudonym (16)                                        | [`PatientRecord`]        |
//! | `observations` | pseudonym (16), code digest (16), time (8, ordered), disambiguator (4) | [`ObservationRecord`] |
//! | `conditions`   | pseudonym (16), code digest of (system, code) (16), onset (8) | [`ConditionRecord`] |
//! | `consents`     | `e/` pseudonym, `t/` token id, `r/` token id, `s/` token id, `n/` re-enrolment id | enrolments, tokens, revocations, tokens of a replaced key, applied re-enrolments |
//! | `audit`        | sequence number (8, big endian)                       | [`crate::audit::Entry`] (hash-chained, [`crate::audit::chain`]) |
//! | `budget`       | `c2/`, `a2/`, `h2`: keyed digests only (see [`crate::ledger`])   | charges, stored answers, ledger head |
//! | `meta`         | ASCII names; `audit_head/` sequence number (8, big endian) | format version, import markers, trust seal; signed audit heads |
//! | `devices`      | `d/` device key (32), `r/` pseudonym (16) time (8, ordered) device key (32) seq (8), `a/` alert id (8), `p/` pseudonym | [`crate::devices`]: devices, readings, alerts, NEWS2 state |
//!
//! Observation keys sort by patient, then code, then time, so "all heart
//! rates of this patient within 24 hours of admission" is one range scan.
//! Writes that must survive a crash go through [`Store::write_durable`],
//! which syncs the write-ahead log before returning.
//!
//! **Nothing acknowledged rolls back.** RocksDB's default WAL recovery
//! (point in time) stops replaying at the first bad record and opens
//! cleanly: one flipped byte in the newest WAL file would silently drop the
//! last synced batch (a budget charge, a stored answer, an audit entry). The
//! store therefore opens with `TolerateCorruptedTailRecords`, which accepts
//! only a torn final record (a crash while writing it, never acknowledged)
//! and refuses any record whose checksum fails; and, because a flip in a
//! record's length field can still make the last record look torn, every
//! durable write ends by recording the store's sequence number in a
//! watermark file beside the WAL ([`WATERMARK_FILE`]). At open, a store
//! whose recovered sequence number is below the watermark lost an
//! acknowledged write, and does not open.
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use rocksdb::{
    ColumnFamilyDescriptor, DBRecoveryMode, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use witmed_crypto::at_rest::{MasterKey, RecordCipher};
use witmed_crypto::code_digest::{CodeDigest, CodeDigester, CODE_DIGEST_LEN};
use witmed_crypto::versioned::{self, Evolving};
use witmed_crypto::Envelope;
use witmed_crypto::{single_version, KeyPair, Pseudonym};
use witmed_protocol::vocab::Sex;

use crate::audit::chain::{self, Tail};

/// On-disk layout version of the store; checked at open.
///
/// 2: observation and condition keys hold keyed code digests (1 held
/// observation codes in clear and unkeyed condition hashes).
pub const STORE_FORMAT_VERSION: u32 = 2;
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
    /// Enrolled devices, their readings' log, NEWS2 alerts, patients' NEWS2 state ([`crate::devices`]).
    pub const DEVICES: &str = "devices";
    /// Every family, in creation order.
    pub const ALL: [&str; 8] = [
        PATIENTS,
        OBSERVATIONS,
        CONDITIONS,
        CONSENTS,
        AUDIT,
        BUDGET,
        META,
        DEVICES,
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
    /// The store was written by an older witmed whose keys held clinical codes in clear.
    #[error("store format version {found} is older than this witmed's {STORE_FORMAT_VERSION} (its keys hold clinical codes in clear) and cannot be upgraded in place; create a new node with `witmed node init` and import the data again")]
    OutdatedFormat { found: u32 },
    /// The store lost writes it had acknowledged (a damaged or rolled-back write-ahead log).
    #[error("store at {path} lost acknowledged writes: it recovered up to write {recovered}, but write {acknowledged} had been synced and acknowledged (the write-ahead log is damaged or was replaced). The node must not run on it, or budget charges and stored answers would be undone: restore the data dir from a backup, or keep it for investigation")]
    RolledBack {
        path: String,
        recovered: u64,
        acknowledged: u64,
    },
    /// RocksDB found damage while opening (a failed checksum in the WAL or a table).
    #[error("store at {path} is damaged and was not opened: {source}. The node must not run on it, or acknowledged writes (budget charges, stored answers, audit entries) could be lost: restore the data dir from a backup, or keep it for investigation")]
    Damaged {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    /// The watermark file is missing, unreadable or damaged.
    #[error("store watermark {path}: {reason}; the store cannot prove it kept every acknowledged write. Restore the data dir from a backup, or keep it for investigation")]
    Watermark { path: String, reason: String },
}

impl Error {
    /// A stable code for scripts and logs.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::Rocks { .. } => "store_failed",
            Error::Corrupt { .. } => "store_corrupt",
            Error::UnsupportedFormat { .. } => "store_too_new",
            Error::OutdatedFormat { .. } => "store_too_old",
            Error::RolledBack { .. } => "store_rolled_back",
            Error::Damaged { .. } => "store_damaged",
            Error::Watermark { .. } => "store_watermark",
        }
    }
}

/// The file, inside the RocksDB directory, holding the sequence number of
/// the last acknowledged write (RocksDB ignores files it did not name).
pub const WATERMARK_FILE: &str = "WITMED-WATERMARK";

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

/// A record type the store seals: decoded on every read through its version
/// ([`Evolving`]), so an older layout is upgraded and a newer one refused.
pub trait Versioned: Evolving + DeserializeOwned {}

impl<R: Evolving + DeserializeOwned> Versioned for R {}

single_version!(PatientRecord, "patient record", RECORD_VERSION);
single_version!(ObservationRecord, "observation record", RECORD_VERSION);
single_version!(ConditionRecord, "condition record", RECORD_VERSION);

/// Key of an observation: `code` is the keyed digest of its code ([`CodeDigester::observation`]).
pub fn observation_key(
    patient: &Pseudonym,
    code: &CodeDigest,
    time: i64,
    disambiguator: u32,
) -> Vec<u8> {
    let mut key = observation_prefix(patient, code);
    key.extend_from_slice(&ordered_i64(time));
    key.extend_from_slice(&disambiguator.to_be_bytes());
    key
}

/// Prefix of all observations of one patient and code.
pub fn observation_prefix(patient: &Pseudonym, code: &CodeDigest) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + CODE_DIGEST_LEN + 12);
    key.extend_from_slice(&patient.0);
    key.extend_from_slice(code);
    key
}

/// Splits an observation key into (patient, code digest, time).
pub fn parse_observation_key(key: &[u8]) -> Option<(Pseudonym, CodeDigest, i64)> {
    let patient = Pseudonym(key.get(..16)?.try_into().ok()?);
    let code: CodeDigest = key.get(16..16 + CODE_DIGEST_LEN)?.try_into().ok()?;
    let at = 16 + CODE_DIGEST_LEN;
    let time_bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some((patient, code, unordered_i64(time_bytes)))
}

/// Key of a condition: `code` is the keyed digest of its (system, code) ([`CodeDigester::condition`]).
pub fn condition_key(patient: &Pseudonym, code: &CodeDigest, onset: Option<i64>) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + CODE_DIGEST_LEN + 8);
    key.extend_from_slice(&patient.0);
    key.extend_from_slice(code);
    key.extend_from_slice(&ordered_i64(onset.unwrap_or(i64::MIN)));
    key
}

/// Big-endian with the sign bit flipped, so byte order equals numeric order.
pub fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn unordered_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// The node's store.
pub struct Store {
    db: DB,
    path: String,
    ciphers: Vec<(&'static str, RecordCipher)>,
    codes: CodeDigester,
    /// The audit chain's tail. Held from chaining a batch's audit entries
    /// until the batch is synced, so entries of concurrent writes chain one
    /// after another and a failed write leaves no gap.
    audit: Mutex<Tail>,
    /// The node key that signs audit heads (set by the node at open).
    audit_signer: OnceLock<KeyPair>,
    /// Set once a verification in this process found the log damaged: no
    /// head is signed from then on, so a damaged log is never signed for.
    audit_damaged: std::sync::atomic::AtomicBool,
    watermark: Watermark,
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
    /// Audit entries, chained and sealed when the batch is written.
    audit: Vec<chain::Entry>,
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

    /// Queues an audit entry: [`Store::write_durable`] gives it the next
    /// place in the hash chain, under the chain's lock, as it writes the batch.
    pub fn push_audit(&mut self, entry: chain::Entry) {
        self.audit.push(entry);
    }

    /// Number of operations queued.
    pub fn len(&self) -> usize {
        self.inner.len() + self.audit.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty() && self.audit.is_empty()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` with the node's master key.
    ///
    /// Refuses a store that lost an acknowledged write (see the module docs).
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
        opts.set_paranoid_checks(true);
        // A torn final record is a crash mid-write (never acknowledged); any
        // other damage stops the open instead of silently truncating the log.
        opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        let families = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|source| {
            if source.kind() == rocksdb::ErrorKind::Corruption {
                Error::Damaged {
                    path: path_str.clone(),
                    source,
                }
            } else {
                rocks(source)
            }
        })?;
        let ciphers = cf::ALL
            .iter()
            .map(|name| (*name, RecordCipher::for_area(master, name)))
            .collect();
        let watermark = Watermark::new(path.join(WATERMARK_FILE));
        let store = Store {
            db,
            path: path_str,
            ciphers,
            codes: CodeDigester::new(master),
            audit: Mutex::new(Tail::empty()),
            audit_signer: OnceLock::new(),
            audit_damaged: std::sync::atomic::AtomicBool::new(false),
            watermark,
        };
        store.check_format()?;
        *crate::locks::lock(&store.audit) = store.find_audit_tail()?;
        Ok(store)
    }

    /// Checks the format version and the watermark, or starts both on a new store.
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
                if found < STORE_FORMAT_VERSION {
                    return Err(Error::OutdatedFormat { found });
                }
                self.watermark
                    .check(&self.path, self.db.latest_sequence_number())
            }
            None => {
                // A new store (or one whose creation a crash interrupted
                // before its first write): the watermark starts here.
                self.watermark.create(self.db.latest_sequence_number())?;
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
        // The version is read first, then that version's layout, then the
        // upgrade to today's type (witmed_crypto::versioned).
        versioned::decode::<R>(&plain).map_err(|e| corrupt(e.to_string()))
    }

    /// A new empty batch.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            inner: WriteBatch::default(),
            audit: Vec::new(),
        }
    }

    /// Applies `batch` atomically and returns only once the WAL is synced to
    /// disk and the watermark records it (so losing it later is detected).
    ///
    /// A batch with audit entries chains them here, under the chain's lock
    /// held until the write is synced: sequence numbers and links follow the
    /// order in which batches reach the disk, and a failed write moves
    /// nothing. A signed head joins the batch when one is due.
    pub fn write_durable(&self, mut batch: Batch<'_>) -> Result<(), Error> {
        if batch.audit.is_empty() {
            return self.write_synced(batch.inner);
        }
        let mut tail = crate::locks::lock(&self.audit);
        let mut next = *tail;
        let mut newest_at = i64::MIN;
        for mut entry in std::mem::take(&mut batch.audit) {
            next.chain(&mut entry).map_err(|e| Error::Corrupt {
                family: cf::AUDIT,
                reason: e.to_string(),
            })?;
            let key = next.seq.to_be_bytes();
            let sealed = self.seal(cf::AUDIT, &key, &entry)?;
            batch.inner.put_cf(self.handle(cf::AUDIT), key, sealed);
            newest_at = newest_at.max(entry.at);
        }
        if next.head_due(newest_at) {
            self.put_head(&mut batch.inner, &mut next, newest_at);
        }
        self.write_synced(batch.inner)?;
        *tail = next;
        Ok(())
    }

    /// Signs a head over the newest audit entry at `at` (at close, or for a
    /// patient's view), unless the newest head already covers it. Returns
    /// the sequence number the newest head covers (0: no entries or no signer).
    pub fn sign_audit_head(&self, at: i64) -> Result<u64, Error> {
        let mut tail = crate::locks::lock(&self.audit);
        // Nothing new to sign for; and a log shorter than its newest head
        // (entries removed) gets no head over what is left.
        let damaged = self.audit_damaged.load(std::sync::atomic::Ordering::SeqCst);
        if tail.seq <= tail.head_seq || self.audit_signer.get().is_none() || damaged {
            return Ok(tail.head_seq);
        }
        let mut next = *tail;
        let mut batch = WriteBatch::default();
        self.put_head(&mut batch, &mut next, at);
        self.write_synced(batch)?;
        *tail = next;
        Ok(tail.head_seq)
    }

    /// Adds a head over `tail`, signed by the node key, to `batch` (nothing
    /// without a signer: a store opened outside a node signs no heads).
    fn put_head(&self, batch: &mut WriteBatch, tail: &mut Tail, at: i64) {
        let Some(signer) = self.audit_signer.get() else {
            return;
        };
        if self.audit_damaged.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let signed = tail.head(at).sign(signer);
        batch.put_cf(
            self.handle(cf::META),
            chain::head_key(tail.seq),
            signed.to_bytes(),
        );
        tail.head_seq = tail.seq;
        tail.head_at = at;
    }

    /// Sets the key that signs audit heads (the node key; set once, at open).
    /// Stops this store from signing audit heads (a verification found the log damaged).
    pub fn refuse_audit_heads(&self) {
        self.audit_damaged
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_audit_signer(&self, node_key: KeyPair) {
        let _ = self.audit_signer.set(node_key);
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.rocks_err(e))?;
        // Every write is synced before its sequence number is published, so
        // all writes up to this number are on disk.
        self.watermark.advance(self.db.latest_sequence_number())
    }

    /// The keyed digests of clinical codes used in this store's keys.
    pub fn codes(&self) -> &CodeDigester {
        &self.codes
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

    /// Visits every (key, sealed value) in `[from, to)` of `family`, in key order.
    pub fn scan_range(
        &self,
        family: &'static str,
        from: &[u8],
        to: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mode = IteratorMode::From(from, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.handle(family), mode) {
            let (key, value) = item.map_err(|e| self.rocks_err(e))?;
            if &key[..] >= to {
                break;
            }
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// The greatest key with `prefix` in `family`, if any.
    pub fn last_key(&self, family: &'static str, prefix: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut end = prefix.to_vec();
        end.extend_from_slice(&[0xff; 64]);
        let mode = IteratorMode::From(&end, rocksdb::Direction::Reverse);
        match self.db.iterator_cf(self.handle(family), mode).next() {
            Some(item) => {
                let (key, _) = item.map_err(|e| self.rocks_err(e))?;
                Ok(key.starts_with(prefix).then(|| key.to_vec()))
            }
            None => Ok(None),
        }
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

    /// The audit chain's tail as stored: the newest entry's link, or, for a
    /// log that ends in legacy entries, the hash of the legacy prefix; and
    /// the newest signed head.
    ///
    /// A newest entry that does not open (tampering) does not stop the
    /// store from opening: the tail then continues from its sequence number,
    /// and `witmed audit verify` names the damage.
    fn find_audit_tail(&self) -> Result<Tail, Error> {
        let mut tail = Tail::empty();
        if let Some((seq, newest)) = self.newest_audit_entry()? {
            tail.seq = seq;
            match newest {
                Ok(chain::Entry {
                    chain: Some(link), ..
                }) => tail.hash = link.hash,
                Ok(_) => tail.hash = self.legacy_prefix_hash()?,
                Err(e) => tracing::warn!(
                    "the newest audit entry ({seq}) does not open: {e}; run `witmed audit verify`"
                ),
            }
        }
        if let Some((seq, at)) = self.newest_head()? {
            tail.head_seq = seq;
            tail.head_at = at;
        }
        Ok(tail)
    }

    /// The newest audit entry's sequence number, and the entry if it opens.
    fn newest_audit_entry(&self) -> Result<Option<NewestEntry>, Error> {
        let mut iter = self
            .db
            .iterator_cf(self.handle(cf::AUDIT), IteratorMode::End);
        let Some(item) = iter.next() else {
            return Ok(None);
        };
        let (key, sealed) = item.map_err(|e| self.rocks_err(e))?;
        let seq = key
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        Ok(Some((seq, self.open_record(cf::AUDIT, &key, &sealed))))
    }

    /// The hash of a log made only of legacy entries, each linked by its storage sequence number.
    fn legacy_prefix_hash(&self) -> Result<[u8; 32], Error> {
        let mut hash = chain::GENESIS;
        self.scan_records(cf::AUDIT, b"", |key, entry: chain::Entry| {
            let seq = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            hash = chain::link_hash(seq, &hash, &entry.digest());
            Ok(())
        })?;
        Ok(hash)
    }

    /// Sequence number and time of the newest signed head (its signature is
    /// checked by `audit::verify`, not here).
    fn newest_head(&self) -> Result<Option<(u64, i64)>, Error> {
        let mut newest = None;
        self.scan_prefix(cf::META, chain::HEAD_PREFIX, |_, bytes| {
            let head = Envelope::from_bytes(bytes, chain::MAX_HEAD_BYTES)
                .ok()
                .and_then(|e| versioned::decode::<chain::Head>(&e.payload).ok());
            if let Some(head) = head {
                newest = Some((head.seq, head.at));
            }
            Ok(())
        })?;
        Ok(newest)
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

/// The newest audit entry's sequence number, and the entry or why it did not open.
type NewestEntry = (u64, Result<chain::Entry, Error>);

/// The sequence number of the last acknowledged write, in its own file.
///
/// Layout: sequence number (8, big endian), then the first 8 bytes of its
/// SHA-256, so a damaged file is told apart from a small number. The file is
/// rewritten in place (16 bytes, one write, well inside one disk sector) and
/// synced; it is written only after the WAL write it records was synced, so a
/// crash leaves it at or below what RocksDB recovers.
struct Watermark {
    path: std::path::PathBuf,
    /// The last value written (writes never move it backwards).
    last: std::sync::Mutex<u64>,
}

impl Watermark {
    fn new(path: std::path::PathBuf) -> Self {
        Watermark {
            path,
            last: std::sync::Mutex::new(0),
        }
    }

    fn fail(&self, reason: impl std::fmt::Display) -> Error {
        Error::Watermark {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn encode(seq: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&seq.to_be_bytes());
        out[8..].copy_from_slice(&witmed_crypto::sha256(&seq.to_be_bytes())[..8]);
        out
    }

    fn decode(&self, bytes: &[u8]) -> Result<u64, Error> {
        let seq_bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.fail(format!("{} bytes, expected 16", bytes.len())))?;
        if bytes.len() != 16 || Self::encode(u64::from_be_bytes(seq_bytes))[..] != bytes[..] {
            return Err(self.fail("its checksum does not match (damaged)"));
        }
        Ok(u64::from_be_bytes(seq_bytes))
    }

    /// Starts the watermark of a new store at `seq`.
    fn create(&self, seq: u64) -> Result<(), Error> {
        self.write(seq)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Refuses a store that recovered fewer writes than it acknowledged.
    fn check(&self, store_path: &str, recovered: u64) -> Result<(), Error> {
        let bytes = std::fs::read(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                self.fail("missing (every store made by this witmed has one)")
            } else {
                self.fail(e)
            }
        })?;
        let acknowledged = self.decode(&bytes)?;
        if recovered < acknowledged {
            return Err(Error::RolledBack {
                path: store_path.to_string(),
                recovered,
                acknowledged,
            });
        }
        *self.last.lock().map_err(|_| self.fail("lock poisoned"))? = acknowledged;
        Ok(())
    }

    /// Records `seq` as acknowledged, unless a later one is recorded already.
    fn advance(&self, seq: u64) -> Result<(), Error> {
        let mut last = self.last.lock().map_err(|_| self.fail("lock poisoned"))?;
        if seq <= *last {
            return Ok(());
        }
        self.write(seq)?;
        *last = seq;
        Ok(())
    }

    fn write(&self, seq: u64) -> Result<(), Error> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.fail(e))?;
        file.write_all(&Self::encode(seq))
            .and_then(|_| file.sync_data())
            .map_err(|e| self.fail(e))
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
        let hr = [9u8; CODE_DIGEST_LEN];
        let a = observation_key(&p, &hr, -5, 0);
        let b = observation_key(&p, &hr, 7, 0);
        let c = observation_key(&p, &hr, 3600, 0);
        assert!(a < b && b < c);
        assert!(c.starts_with(&observation_prefix(&p, &hr)));
        assert_eq!(parse_observation_key(&c), Some((p, hr, 3600)));
    }

    #[test]
    fn records_round_trip_sealed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = observation_key(&Pseudonym([2; 16]), &[5; CODE_DIGEST_LEN], 60, 0);
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
    fn a_store_behind_its_watermark_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let acknowledged = {
            let s = store(dir.path());
            let mut batch = s.batch();
            batch.put_meta(b"k", b"v");
            s.write_durable(batch).unwrap();
            s.db.latest_sequence_number()
        };
        // Reopening keeps everything acknowledged.
        drop(store(dir.path()));
        // A watermark ahead of the store is what a lost final write looks like.
        let path = dir.path().join(WATERMARK_FILE);
        std::fs::write(&path, Watermark::encode(acknowledged + 1)).unwrap();
        let err = Store::open(dir.path(), &MasterKey::from_bytes([3; 32])).unwrap_err();
        assert!(matches!(err, Error::RolledBack { .. }), "{err}");
        std::fs::write(&path, b"garbage").unwrap();
        let err = Store::open(dir.path(), &MasterKey::from_bytes([3; 32])).unwrap_err();
        assert!(matches!(err, Error::Watermark { .. }), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = Store::open(dir.path(), &MasterKey::from_bytes([3; 32])).unwrap_err();
        assert!(matches!(err, Error::Watermark { .. }), "{err}");
    }

    #[test]
    fn a_store_of_an_older_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(dir.path());
            let mut batch = s.batch();
            batch.put_meta(b"store_format_version", &1u32.to_be_bytes());
            s.write_durable(batch).unwrap();
        }
        let err = Store::open(dir.path(), &MasterKey::from_bytes([3; 32])).unwrap_err();
        assert!(matches!(err, Error::OutdatedFormat { found: 1 }), "{err}");
        assert!(err.to_string().contains("import the data again"), "{err}");
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

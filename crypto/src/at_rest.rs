//! Encryption at rest: AES-256-GCM records under keys derived from the node's master key.
//!
//! The node holds one 32-byte master key (its own file, 0600). Each storage
//! area (a RocksDB column family) gets its own AES-256-GCM key, derived with
//! HKDF-SHA256 from the master key and the area's name, so that a key leak
//! for one area does not expose another and keys can be rotated per area.
//!
//! A sealed record is `version (1 byte) | nonce (12 bytes) | ciphertext+tag`.
//! The nonce is fresh from the OS random source for every record; with
//! 96-bit random nonces the collision bound stays negligible far beyond the
//! number of records one hospital stores (NIST SP 800-38D allows 2^32
//! random-nonce encryptions per key; a node's largest area holds a few
//! million). The storage key and area are the associated data: a ciphertext
//! copied under another key or area fails to open.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use zeroize::Zeroizing;

/// Format version byte of a sealed record.
pub const SEALED_VERSION: u8 = 1;
const HKDF_SALT: &[u8] = b"witmed/at-rest/v1";
const MASTER_FILE_HEADER: &str = "witmed-master-key v1";

/// Errors from encryption at rest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record does not open: wrong key, wrong storage key, or altered bytes.
    #[error(
        "stored record failed authentication (altered, moved to another key, or wrong master key)"
    )]
    Authentication,
    /// Too short or an unknown format version.
    #[error("stored record is malformed: {0}")]
    Malformed(String),
    /// The master key file could not be read or written.
    #[error("master key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    /// The OS random source failed.
    #[error("the operating system's random source failed")]
    Random,
}

/// The node's 32-byte master key. Never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        crate::fill_random(key.as_mut()).map_err(|_| Error::Random)?;
        Ok(MasterKey(key))
    }

    /// A master key from given bytes (tests and simulation).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// Derives 32 bytes of key material for `purpose` (HKDF-SHA256).
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
        let prk = salt.extract(self.0.as_ref());
        let info = [purpose.as_bytes()];
        let okm = prk
            .expand(&info, Len32)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut out = Zeroizing::new([0u8; 32]);
        okm.fill(out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// Writes the key to a new 0600 file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let err = |e: std::io::Error| Error::KeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let text = Zeroizing::new(format!("{MASTER_FILE_HEADER}\n{}\n", hex::encode(*self.0)));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(err)
    }

    /// Reads a master key file, refusing one readable by others.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let fail = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let meta = fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(fail("permissions must be 0600 (chmod 600 it)".into()));
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
        let mut lines = text.lines();
        if lines.next() != Some(MASTER_FILE_HEADER) {
            return Err(fail("not a witmed master key file".into()));
        }
        let bytes = Zeroizing::new(
            hex::decode(lines.next().unwrap_or_default().trim())
                .map_err(|_| fail("key is not hex".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| fail("key is not 32 bytes".into()))?;
        Ok(MasterKey::from_bytes(key))
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// AES-256-GCM for one storage area.
pub struct RecordCipher {
    area: String,
    key: LessSafeKey,
    /// Random bytes from the OS, drawn many nonces at a time: one system
    /// call per 4,096 records instead of one per record. Every nonce is
    /// still 96 fresh random bits, used once.
    nonces: std::sync::Mutex<Vec<u8>>,
}

/// Nonces drawn from the OS per refill.
const NONCES_PER_REFILL: usize = 4096;

impl fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordCipher({})", self.area)
    }
}

impl RecordCipher {
    /// The cipher for `area`, with its key derived from the master key.
    pub fn for_area(master: &MasterKey, area: &str) -> Self {
        let material = master.derive(&format!("record-key/{area}"));
        let unbound =
            UnboundKey::new(&AES_256_GCM, material.as_ref()).expect("32-byte AES-256 key");
        RecordCipher {
            area: area.to_string(),
            key: LessSafeKey::new(unbound),
            nonces: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Encrypts `plaintext` stored under `storage_key`.
    pub fn seal(&self, storage_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let nonce = self.next_nonce()?;
        let header = 1 + NONCE_LEN;
        let mut out = Vec::with_capacity(header + plaintext.len() + 16);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(storage_key)),
                &mut out[header..],
            )
            .map_err(|_| Error::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// A fresh random nonce, from a buffer refilled by the OS random source.
    fn next_nonce(&self) -> Result<[u8; NONCE_LEN], Error> {
        let mut pool = self.nonces.lock().map_err(|_| Error::Random)?;
        if pool.len() < NONCE_LEN {
            pool.resize(NONCE_LEN * NONCES_PER_REFILL, 0);
            crate::fill_random(&mut pool).map_err(|_| Error::Random)?;
        }
        let at = pool.len() - NONCE_LEN;
        let nonce: [u8; NONCE_LEN] = pool[at..].try_into().expect("sliced 12 bytes");
        // Each nonce is taken off the pool: never used twice.
        pool.truncate(at);
        Ok(nonce)
    }

    /// Decrypts a record read from under `storage_key`.
    pub fn open(&self, storage_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.len() < 1 + NONCE_LEN + 16 {
            return Err(Error::Malformed(format!(
                "{} bytes is too short",
                sealed.len()
            )));
        }
        if sealed[0] != SEALED_VERSION {
            return Err(Error::Malformed(format!(
                "unknown format version {}",
                sealed[0]
            )));
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("sliced 12");
        let mut in_out = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(storage_key)),
                &mut in_out,
            )
            .map_err(|_| Error::Authentication)?;
        let len = plain.len();
        in_out.truncate(len);
        Ok(in_out)
    }

    fn aad(&self, storage_key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.area.len() + 1 + storage_key.len());
        aad.extend_from_slice(self.area.as_bytes());
        aad.push(0);
        aad.extend_from_slice(storage_key);
        aad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(area: &str) -> RecordCipher {
        RecordCipher::for_area(&MasterKey::from_bytes([7; 32]), area)
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let c = cipher("observations");
        let a = c.seal(b"k1", b"hello").unwrap();
        let b = c.seal(b"k1", b"hello").unwrap();
        assert_ne!(a, b, "each record gets a fresh nonce");
        assert_eq!(c.open(b"k1", &a).unwrap(), b"hello");
    }

    #[test]
    fn moved_altered_or_other_area_fails() {
        let c = cipher("observations");
        let sealed = c.seal(b"k1", b"hello").unwrap();
        assert!(matches!(c.open(b"k2", &sealed), Err(Error::Authentication)));
        assert!(matches!(
            cipher("patients").open(b"k1", &sealed),
            Err(Error::Authentication)
        ));
        let other_master = RecordCipher::for_area(&MasterKey::from_bytes([8; 32]), "observations");
        assert!(matches!(
            other_master.open(b"k1", &sealed),
            Err(Error::Authentication)
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(c.open(b"k1", &bad).is_err(), "flip at byte {i} accepted");
        }
        assert!(matches!(
            c.open(b"k1", &sealed[..10]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn master_key_file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate().unwrap();
        key.save(&path).unwrap();
        let back = MasterKey::load(&path).unwrap();
        assert_eq!(*key.derive("x"), *back.derive("x"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(MasterKey::load(&path).is_err());
    }
}

//! Study keys: the researcher's study directory, and the public keys each node caches.
//!
//! A study directory (`witmed study keygen --out DIR`) holds
//! `client.key` (the decryption key, mode 0600, never sent anywhere),
//! `public.key` (the compact public key) and `study.toml` (id, parameter
//! set, creation time). The study id is the SHA-256 of the public key's
//! bytes, so a query names exactly one key.
//!
//! A node installs a study from a [`StudyAnnouncement`] signed by the
//! researcher, who must hold a credential the node's policy trusts; the key
//! is read with tfhe's size-limited, shape-checked deserializer and refused
//! if degenerate (a zero or repetitive mask or body). The node
//! keeps the key and the researcher it belongs to: only that researcher's
//! queries may use it, since only that researcher can decrypt under it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use witmed_crypto::fhe::{self, ClientKey, CompactPublicKey};
use witmed_crypto::{Envelope, PublicKey};
use witmed_policies::credential;
use witmed_protocol::encrypted::{StudyAnnouncement, ENCRYPTED_VERSION, STUDY_DOMAIN};

use crate::audit;
use crate::node::Node;
use crate::store::{self, cf, RECORD_VERSION};

/// Why a study could not be made, read, installed or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{path} already holds a study key; choose another directory (a key is never overwritten)"
    )]
    Exists { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("study announcement refused: {0}")]
    Announcement(String),
    #[error(transparent)]
    Fhe(#[from] fhe::Error),
    #[error("study {0} is not installed at this node for this researcher; publish it with `witmed study publish`")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// Stable code for scripts and refusals.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Exists { .. } => "study_exists",
            Error::Io { .. } => "io_failed",
            Error::BadFile { .. } => "bad_study_file",
            Error::Announcement(_) => "bad_study",
            Error::Fhe(fhe::Error::WeakKey(_)) => "weak_study_key",
            Error::Fhe(_) => "bad_study_key",
            Error::Unknown(_) => "unknown_study",
            Error::Store(_) => "store_failed",
        }
    }
}

/// `study.toml`: what a study directory is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInfo {
    pub version: u32,
    /// Hex SHA-256 of `public.key`.
    pub id: String,
    /// The parameter set ([`fhe::params::ID`]).
    pub params: String,
    pub created_at: i64,
}

const CLIENT_KEY: &str = "client.key";
const PUBLIC_KEY: &str = "public.key";
const INFO: &str = "study.toml";

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a study key pair in `dir` (created if missing). Returns its info.
pub fn keygen(dir: &Path, now: i64) -> Result<StudyInfo, Error> {
    let client_path = dir.join(CLIENT_KEY);
    if client_path.exists() {
        return Err(Error::Exists { path: client_path });
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let (client, public) = ClientKey::generate();
    let public_bytes = public.to_bytes();
    let info = StudyInfo {
        version: ENCRYPTED_VERSION,
        id: hex::encode(witmed_crypto::sha256(&public_bytes)),
        params: fhe::params::ID.to_string(),
        created_at: now,
    };
    write_private(&client_path, &client.to_bytes())?;
    let public_path = dir.join(PUBLIC_KEY);
    std::fs::write(&public_path, &public_bytes).map_err(io("write", &public_path))?;
    let info_path = dir.join(INFO);
    let text = toml::to_string(&info).expect("study info serializes");
    std::fs::write(&info_path, text).map_err(io("write", &info_path))?;
    Ok(info)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))
}

/// Reads a study directory's info and public key bytes, checking they match.
pub fn load_public(dir: &Path) -> Result<(StudyInfo, Vec<u8>), Error> {
    let info_path = dir.join(INFO);
    let text = std::fs::read_to_string(&info_path).map_err(io("read", &info_path))?;
    let info: StudyInfo = toml::from_str(&text).map_err(|e| Error::BadFile {
        path: info_path.clone(),
        reason: e.to_string(),
    })?;
    if info.version != ENCRYPTED_VERSION {
        return Err(Error::BadFile {
            path: info_path,
            reason: format!(
                "version {}; this witmed reads version {ENCRYPTED_VERSION}",
                info.version
            ),
        });
    }
    let public_path = dir.join(PUBLIC_KEY);
    let bytes = std::fs::read(&public_path).map_err(io("read", &public_path))?;
    CompactPublicKey::from_bytes(&bytes)?;
    if hex::encode(witmed_crypto::sha256(&bytes)) != info.id || info.params != fhe::params::ID {
        return Err(Error::BadFile {
            path: public_path,
            reason: format!("does not match study {} ({})", info.id, info.params),
        });
    }
    Ok((info, bytes))
}

/// Reads a study directory's decryption key and info.
pub fn load_client(dir: &Path) -> Result<(StudyInfo, ClientKey), Error> {
    let (info, _) = load_public(dir)?;
    let path = dir.join(CLIENT_KEY);
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    Ok((info, ClientKey::from_bytes(&bytes)?))
}

/// A study's public key as a node keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStudy {
    pub version: u32,
    /// The researcher who published it (the only one who may query with it).
    pub researcher: PublicKey,
    /// Safe-serialized compact public key.
    pub public_key: Vec<u8>,
    pub installed_at: i64,
}

witmed_crypto::single_version!(StoredStudy, "stored study", RECORD_VERSION);

/// Studies are kept per researcher: a public key is public, so another
/// researcher publishing the same one must not take it over or block it.
fn study_key(node: &Node, researcher: &PublicKey, id: &[u8; 32]) -> Vec<u8> {
    node.ledger.meta_key("study", researcher, id)
}

/// Verifies a signed announcement from `researcher` and caches its key. Returns the study id.
///
/// Installing the same study again is harmless and answers the same.
pub fn install(node: &Node, envelope: &Envelope, now: i64) -> Result<[u8; 32], Error> {
    let announcement: StudyAnnouncement = envelope
        .open(STUDY_DOMAIN)
        .map_err(|e| Error::Announcement(e.to_string()))?;
    if announcement.version != ENCRYPTED_VERSION || announcement.params != fhe::params::ID {
        return Err(Error::Announcement(format!(
            "version {} with parameters {:?}; this node reads version {ENCRYPTED_VERSION} with {:?}",
            announcement.version,
            announcement.params,
            fhe::params::ID
        )));
    }
    let credential = witmed_policies::parse_signed_bytes(&announcement.credential)
        .map_err(|e| Error::Announcement(format!("credential: {e}")))?;
    let verified = credential::verify_credential(&credential, &node.policy().trusted_issuers, now)
        .map_err(|e| Error::Announcement(format!("credential: {e}")))?;
    if verified.credential().researcher != envelope.signer {
        return Err(Error::Announcement(
            "the credential names another researcher than the signer".into(),
        ));
    }
    // Signature and credential first; only then is the key parsed
    // (size-limited, shape-checked) and refused if degenerate: nothing is cached before.
    CompactPublicKey::from_bytes(&announcement.public_key)?;
    let id = announcement.study_id();
    let key = study_key(node, &envelope.signer, &id);
    if node.store.contains(cf::META, &key)? {
        return Ok(id);
    }
    let stored = StoredStudy {
        version: RECORD_VERSION,
        researcher: envelope.signer,
        public_key: announcement.public_key,
        installed_at: now,
    };
    let mut batch = node.store.batch();
    batch.put(cf::META, &key, &stored)?;
    audit::append(
        &mut batch,
        &node.store,
        &audit::Entry::new(
            now,
            "study.installed",
            envelope.signer.to_hex(),
            format!(
                "study {} installed (parameters {})",
                hex::encode(id),
                fhe::params::ID
            ),
        ),
    )?;
    node.store.write_durable(batch)?;
    Ok(id)
}

/// The id and public key of study `id_hex` as `researcher` published it.
pub fn key_for(
    node: &Node,
    id_hex: &str,
    researcher: &PublicKey,
) -> Result<([u8; 32], CompactPublicKey), Error> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(id_hex, &mut id).map_err(|_| Error::Unknown(id_hex.to_string()))?;
    let stored = node
        .store
        .get::<StoredStudy>(cf::META, &study_key(node, researcher, &id))?
        .ok_or_else(|| Error::Unknown(id_hex.to_string()))?;
    Ok((id, CompactPublicKey::from_bytes(&stored.public_key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let info = keygen(dir.path(), 7).unwrap();
        let mode = std::fs::metadata(dir.path().join(CLIENT_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (loaded, _) = load_client(dir.path()).unwrap();
        assert_eq!(loaded, info);
        assert!(matches!(keygen(dir.path(), 8), Err(Error::Exists { .. })));
        // A swapped public key no longer matches the study id.
        let other = tempfile::tempdir().unwrap();
        keygen(other.path(), 9).unwrap();
        std::fs::copy(other.path().join(PUBLIC_KEY), dir.path().join(PUBLIC_KEY)).unwrap();
        assert!(matches!(
            load_public(dir.path()),
            Err(Error::BadFile { .. })
        ));
    }
}

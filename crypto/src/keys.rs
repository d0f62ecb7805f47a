//! ed25519 key pairs and public keys, and their versioned key files.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The key file format written today; older versions get an upgrade step when they change.
pub const KEY_FILE_VERSION: u32 = 1;

/// Who a key belongs to. A key file records its role so that, for example, a
/// patient key is never used by mistake to sign a node policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A patient, who signs consent tokens and revocations.
    Patient,
    /// A researcher, who signs queries.
    Researcher,
    /// A hospital's administrator, who signs the node policy.
    Hospital,
    /// A credential issuer or consortium authority.
    Authority,
    /// A hospital node's own identity (libp2p peer id and answer signatures).
    Node,
    /// A bedside device (or its gateway), which signs batches of readings.
    Device,
}

impl Role {
    /// The lowercase name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Researcher => "researcher",
            Role::Hospital => "hospital",
            Role::Authority => "authority",
            Role::Node => "node",
            Role::Device => "device",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "patient" => Ok(Role::Patient),
            "researcher" => Ok(Role::Researcher),
            "hospital" => Ok(Role::Hospital),
            "authority" => Ok(Role::Authority),
            "node" => Ok(Role::Node),
            "device" => Ok(Role::Device),
            other => Err(Error::UnknownRole(other.to_string())),
        }
    }
}

/// Errors from key handling; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a witmed key file.
    #[error(
        "key file {path} is not a witmed key file ({reason}); create one with `witmed keygen`"
    )]
    Malformed { path: PathBuf, reason: String },
    /// The file was written by a newer witmed.
    #[error("key file {path} has format version {found}, this witmed reads version {KEY_FILE_VERSION}; upgrade witmed")]
    UnsupportedVersion { path: PathBuf, found: u32 },
    /// The key belongs to another role than the command needs.
    #[error("key file {path} holds a {found} key but a {expected} key is needed")]
    WrongRole {
        path: PathBuf,
        expected: Role,
        found: Role,
    },
    /// The secret and the recorded public key disagree: the file was altered.
    #[error("key file {path} is corrupt: its public key does not match its secret key")]
    Inconsistent { path: PathBuf },
    /// The file is readable by others than its owner.
    #[error("key file {path} has permissions {mode:o}; secret keys must be 0600 (run `chmod 600 {path}`)")]
    TooOpen { path: PathBuf, mode: u32 },
    /// A key file already exists where a new one would be written.
    #[error("key file {0} already exists; refusing to overwrite a secret key")]
    Exists(PathBuf),
    /// A public key string is not 32 bytes of hex.
    #[error("public key {0:?} is not 64 hex characters")]
    BadPublicKey(String),
    /// The role name is not one of patient, researcher, hospital, authority, node.
    #[error(
        "unknown key role {0:?}; use patient, researcher, hospital, authority, node or device"
    )]
    UnknownRole(String),
    /// The OS random source failed.
    #[error("the operating system's random source failed")]
    Random,
}

/// An ed25519 public key, shown and stored as 64 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps raw key bytes (validity is checked when verifying).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short prefix for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Checks `signature` over `message`; false for an invalid key or signature.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        // Strict verification rejects small-order keys and malleable signatures.
        key.verify_strict(message, &signature).is_ok() && key.verify(message, &signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bytes = hex::decode(s.trim()).map_err(|_| Error::BadPublicKey(s.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::BadPublicKey(s.to_string()))?;
        Ok(PublicKey(bytes))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(PublicKey(<[u8; 32]>::deserialize(d)?))
        }
    }
}

/// An ed25519 signing key with its role.
pub struct KeyPair {
    role: Role,
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "KeyPair({}, {})", self.role, self.public().short())
    }
}

/// On-disk form of a key file (TOML).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    role: Role,
    public_key: String,
    secret_key: String,
}

impl KeyPair {
    /// A fresh key pair from the OS random source.
    pub fn generate(role: Role) -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        crate::fill_random(seed.as_mut()).map_err(|_| Error::Random)?;
        Ok(Self::from_seed(role, &seed))
    }

    /// A key pair from a 32-byte seed. Deterministic: for simulation and tests,
    /// where keys must be reproducible from a seed.
    pub fn from_seed(role: Role, seed: &[u8; 32]) -> Self {
        KeyPair {
            role,
            signing: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// The role recorded with this key.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The 32-byte secret seed (for deriving a libp2p identity from the same key).
    pub fn secret_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// Signs raw bytes. Callers should sign through [`crate::envelope`], which adds domain separation.
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the key to a new file readable only by its owner (0600).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        if path.exists() {
            return Err(Error::Exists(path.to_path_buf()));
        }
        let secret = Zeroizing::new(hex::encode(self.signing.to_bytes()));
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            role: self.role,
            public_key: self.public().to_hex(),
            secret_key: secret.to_string(),
        };
        let text = Zeroizing::new(toml::to_string(&file).expect("key file serializes"));
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        out.write_all(b"# witmed secret key: keep private, never share\n")
            .and_then(|_| out.write_all(text.as_bytes()))
            .and_then(|_| out.sync_all())
            .map_err(io_err)
    }

    /// Loads a key file, checking permissions, version and internal consistency.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        Self::parse(path, &text)
    }

    /// Loads a key file and checks that it holds a key of `role`.
    pub fn load_role(path: &Path, role: Role) -> Result<Self, Error> {
        let key = Self::load(path)?;
        if key.role != role {
            return Err(Error::WrongRole {
                path: path.to_path_buf(),
                expected: role,
                found: key.role,
            });
        }
        Ok(key)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let malformed = |reason: String| Error::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let file: KeyFile = toml::from_str(text).map_err(|e| malformed(e.message().to_string()))?;
        if file.version != KEY_FILE_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: file.version,
            });
        }
        let secret = Zeroizing::new(
            hex::decode(&file.secret_key).map_err(|_| malformed("secret_key is not hex".into()))?,
        );
        let seed: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| malformed("secret_key is not 32 bytes".into()))?;
        let pair = Self::from_seed(file.role, &seed);
        let recorded: PublicKey = file
            .public_key
            .parse()
            .map_err(|_| malformed("public_key is not 64 hex characters".into()))?;
        if recorded != pair.public() {
            return Err(Error::Inconsistent {
                path: path.to_path_buf(),
            });
        }
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_key_loads_back_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let key = KeyPair::generate(Role::Patient).unwrap();
        key.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = KeyPair::load_role(&path, Role::Patient).unwrap();
        assert_eq!(loaded.public(), key.public());
    }

    #[test]
    fn refuses_overwrite_wrong_role_open_perms_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let key = KeyPair::generate(Role::Researcher).unwrap();
        key.save(&path).unwrap();
        assert!(matches!(key.save(&path), Err(Error::Exists(_))));
        assert!(matches!(
            KeyPair::load_role(&path, Role::Hospital),
            Err(Error::WrongRole { .. })
        ));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(KeyPair::load(&path), Err(Error::TooOpen { .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        let text = fs::read_to_string(&path).unwrap();
        let other = KeyPair::generate(Role::Researcher)
            .unwrap()
            .public()
            .to_hex();
        let forged = text.replace(&key.public().to_hex(), &other);
        fs::write(&path, forged).unwrap();
        assert!(matches!(
            KeyPair::load(&path),
            Err(Error::Inconsistent { .. })
        ));

        fs::write(&path, "not a key").unwrap();
        assert!(matches!(KeyPair::load(&path), Err(Error::Malformed { .. })));
    }

    #[test]
    fn verify_rejects_other_message_and_key() {
        let key = KeyPair::generate(Role::Node).unwrap();
        let sig = key.sign_raw(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellO", &sig));
        let other = KeyPair::generate(Role::Node).unwrap();
        assert!(!other.public().verify(b"hello", &sig));
    }
}

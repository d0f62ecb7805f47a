//! A hospital node: its data directory, keys, signed policy, store, consent registry and index.
//!
//! Data directory layout (created by `witmed node init`):
//!
//! ```text
//! DIR/node.toml      name and public keys (versioned)
//! DIR/node.key       the node's identity key (signs answers; libp2p peer id)
//! DIR/hospital.key   the hospital admin key that signs the node policy
//!                    (absent with `node init --hospital-key-out`; otherwise
//!                    move it offline once the policy is set)
//! DIR/master.key     master key for encryption at rest (0600)
//! DIR/policy.signed  the node policy, signed by the hospital admin key
//! DIR/consortium.authority, DIR/consortium.signed
//!                    the pinned consortium authority and its directory
//!                    (after `witmed consortium install`)
//! DIR/db/            the RocksDB store
//! ```
//!
//! The directory is 0700 and every file in it 0600: the node sets its
//! process umask to 077 before creating anything, and refuses to open a data
//! dir that group or others can read (as ssh refuses a readable key: a
//! permission slip is fixed before the node runs, not reported afterwards).
//!
//! **Trust seal.** `node.toml` and the signed files are plain files an
//! attacker with write access to the disk can replace, so the store keeps a
//! [`TrustSeal`] (sealed with the master key like every record): the node and
//! hospital keys recorded at init, and the serial and SHA-256 of the
//! installed policy and consortium directory. Opening a node verifies the
//! policy's signature against the hospital key and compares every file with
//! the seal: an edited `node.toml`, an older signed file copied over the
//! installed one, or one of the same serial with other bytes stops the
//! node. Installs write the file first (synced, renamed) and then the seal
//! and the audit entry in one synced batch, so a crash in between leaves a
//! file newer than the seal: correctly signed, it is accepted at the next
//! open and the seal moves forward (with an audit entry saying so).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use witmed_crypto::at_rest::MasterKey;
use witmed_crypto::pseudonym::Pseudonymizer;
use witmed_crypto::{Envelope, KeyPair, PublicKey, Role};
use witmed_policies::directory::{self, Directory};
use witmed_policies::policy::{self, NodePolicy};

use crate::audit;
use crate::consents::Registry;
use crate::index::Index;
use crate::store::{self, Store, RECORD_VERSION};

/// Version of `node.toml`.
pub const CONFIG_VERSION: u32 = 1;
/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Errors opening or changing a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {0} already holds a node; choose an empty directory")]
    AlreadyInitialised(PathBuf),
    #[error(
        "{0} is not a witmed data dir (no node.toml); run `witmed node init --data-dir {0}` first"
    )]
    NotInitialised(PathBuf),
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("node policy {path} refused: {reason}; sign a policy with the hospital key (`witmed policy sign`) and install it")]
    Policy { path: PathBuf, reason: String },
    /// A file disagrees with what the store sealed when it was installed.
    #[error("{path} refused: {reason}; {fix}")]
    Tampered {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    /// The data dir or its store directory can be entered by group or others.
    #[error("{path} is open to group or others (mode {mode:o}); it holds keys and patient data: run `chmod -R go-rwx {dir}` and start again")]
    Permissions {
        path: PathBuf,
        mode: u32,
        dir: PathBuf,
    },
    /// The consortium directory could not be installed.
    #[error("consortium directory refused: {0}")]
    Directory(String),
    #[error(transparent)]
    Key(#[from] witmed_crypto::keys::Error),
    #[error(transparent)]
    AtRest(#[from] witmed_crypto::at_rest::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `node.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    pub name: String,
    /// The node's identity key.
    pub node_key: PublicKey,
    /// The hospital admin key that must sign the policy.
    pub hospital_key: PublicKey,
    pub created_at: i64,
}

/// Paths inside a data dir.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("node.toml")
    }
    pub fn node_key(&self) -> PathBuf {
        self.0.join("node.key")
    }
    pub fn hospital_key(&self) -> PathBuf {
        self.0.join("hospital.key")
    }
    pub fn master_key(&self) -> PathBuf {
        self.0.join("master.key")
    }
    pub fn policy(&self) -> PathBuf {
        self.0.join("policy.signed")
    }
    pub fn consortium_authority(&self) -> PathBuf {
        self.0.join("consortium.authority")
    }
    pub fn consortium(&self) -> PathBuf {
        self.0.join("consortium.signed")
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("db")
    }
}

/// Meta key of the [`TrustSeal`].
const TRUST_SEAL_KEY: &[u8] = b"trust_seal";

/// What the store remembers of the node's trust anchors and installed signed files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustSeal {
    pub version: u32,
    /// The node key recorded at init.
    pub node_key: PublicKey,
    /// The hospital admin key recorded at init: the only key that signs policies.
    pub hospital_key: PublicKey,
    /// The installed policy.
    pub policy: InstalledFile,
    /// The consortium authority, pinned at the first `consortium install`.
    pub consortium: Option<ConsortiumSeal>,
}

/// The serial and SHA-256 of an installed signed file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InstalledFile {
    pub serial: u64,
    pub digest: [u8; 32],
}

/// The pinned consortium authority and, once written, its installed directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsortiumSeal {
    pub authority: PublicKey,
    /// None between pinning the authority and writing the first directory.
    pub directory: Option<InstalledFile>,
}

witmed_crypto::single_version!(TrustSeal, "trust seal", RECORD_VERSION);

impl InstalledFile {
    fn of(serial: u64, text: &str) -> Self {
        InstalledFile {
            serial,
            digest: witmed_crypto::sha256(text.as_bytes()),
        }
    }
}

/// An open node.
pub struct Node {
    pub dir: DataDir,
    pub config: Config,
    pub store: Store,
    pub policy: RwLock<NodePolicy>,
    node_key: KeyPair,
    pseudonyms: Pseudonymizer,
    pub(crate) consents: RwLock<Registry>,
    index: RwLock<Option<Arc<Index>>>,
    /// The privacy-budget ledger (checked at open).
    pub ledger: crate::ledger::Ledger,
    /// Serializes budget check-and-charge.
    pub(crate) ledger_lock: Mutex<()>,
    /// Per-patient privacy accounts (charged with the ledger, under its lock).
    pub(crate) patient_accounts: crate::account_book::Accounts,
    /// The last eligibility mask computed, reused while nothing it depends on changed.
    eligibility: Mutex<Option<EligibilityCache>>,
    /// Bedside devices: the write lock, the alert counter and live alert subscribers.
    pub devices: crate::device_feed::Live,
}

/// Which patients of an index are eligible for one use, and for how long that holds.
struct EligibilityCache {
    use_key: String,
    generation: u64,
    index: usize,
    from: i64,
    until: i64,
    mask: Arc<Vec<bool>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.config.name)
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `text` so that a crash leaves either the old or the
/// new file, and returns only once the new one is on disk.
fn replace_file_durably(path: &Path, text: &str) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so a rename or a new file survives a crash.
fn sync_dir(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Makes every file and directory this process creates private (0600, 0700),
/// RocksDB's own included: they are created with the process umask.
fn make_new_files_private() {
    // SAFETY: umask only sets the process's file mode creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and its parents) with only the owner allowed in, and
/// makes an existing empty `dir` private too.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Refuses a data dir or store directory that group or others can enter,
/// and makes any file in either that they could read private again.
///
/// An open directory has exposed everything in it already, so the node
/// stops and the operator decides. A file with group or other bits inside a
/// private directory (an operator's `cp` of a policy, say) was never
/// reachable by anyone else: it is made 0600 with a warning.
fn check_private(data: &DataDir) -> Result<(), Error> {
    for dir in [data.0.clone(), data.db()] {
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Permissions {
                path: dir,
                mode: mode & 0o7777,
                dir: data.0.clone(),
            });
        }
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            make_file_private(&entry.path())?;
        }
    }
    Ok(())
}

/// Clears group and other bits of a regular file that has any.
fn make_file_private(path: &Path) -> Result<(), Error> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode();
    if !meta.is_file() || mode & 0o077 == 0 {
        return Ok(());
    }
    tracing::warn!(
        "{} was open to group or others (mode {:o}); made it 0600",
        path.display(),
        mode & 0o7777
    );
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700)).map_err(|source| {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Creates a node: keys, config, default policy signed by the new hospital key, store.
///
/// The hospital admin key is kept in the data dir; see [`init_with`] to write it elsewhere.
pub fn init(
    dir: &Path,
    name: &str,
    trusted_issuers: Vec<PublicKey>,
    now: i64,
) -> Result<Config, Error> {
    init_with(dir, name, trusted_issuers, now, None)
}

/// [`init`], writing the hospital admin key to `hospital_key_out` (outside
/// the data dir: opening a node never needs it) when given.
pub fn init_with(
    dir: &Path,
    name: &str,
    trusted_issuers: Vec<PublicKey>,
    now: i64,
    hospital_key_out: Option<&Path>,
) -> Result<Config, Error> {
    let data = DataDir(dir.to_path_buf());
    if data.config().exists() {
        return Err(Error::AlreadyInitialised(dir.to_path_buf()));
    }
    make_new_files_private();
    create_private_dir(dir)?;
    let hospital_key_path = hospital_key_out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data.hospital_key());
    let node_key = KeyPair::generate(Role::Node)?;
    let hospital_key = KeyPair::generate(Role::Hospital)?;
    let master = MasterKey::generate()?;
    node_key.save(&data.node_key())?;
    hospital_key.save(&hospital_key_path)?;
    master.save(&data.master_key())?;
    let config = Config {
        version: CONFIG_VERSION,
        name: name.to_string(),
        node_key: node_key.public(),
        hospital_key: hospital_key.public(),
        created_at: now,
    };
    let mut default_policy = NodePolicy::default_for(node_key.public(), trusted_issuers);
    default_policy.issued_at = now;
    let default_serial = default_policy.serial;
    let signed = default_policy.sign(&hospital_key).to_text();
    replace_file_durably(&data.policy(), &signed)?;
    let store = Store::open(&data.db(), &master)?;
    store.set_audit_signer(copy_of(&node_key));
    let mut batch = store.batch();
    let seal = TrustSeal {
        version: RECORD_VERSION,
        node_key: config.node_key,
        hospital_key: config.hospital_key,
        policy: InstalledFile::of(default_serial, &signed),
        consortium: None,
    };
    batch.put(cf_meta(), TRUST_SEAL_KEY, &seal)?;
    let entry = audit::Entry::new(now, "node.init", "operator", format!("node {name} created"));
    audit::append(&mut batch, &store, &entry)?;
    let entry = audit::Entry::new(
        now,
        "policy.installed",
        hospital_key.public().to_hex(),
        format!("default policy, serial {default_serial}"),
    );
    audit::append(&mut batch, &store, &entry)?;
    store.write_durable(batch)?;
    // Written last: a node.toml means the rest is complete.
    let text = toml::to_string(&config).expect("config serializes");
    write_file(&data.config(), &text)?;
    sync_dir(&data.config())?;
    Ok(config)
}

/// A second handle on the node key, for the store to sign audit heads with.
fn copy_of(node_key: &KeyPair) -> KeyPair {
    KeyPair::from_seed(node_key.role(), &node_key.secret_seed())
}

/// Closing a node signs the audit log's head, so every entry written is
/// covered by a signed head (a failure is logged: the log stays chained).
impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.store.sign_audit_head(crate::unix_now()) {
            tracing::warn!("could not sign the audit head at close: {e}");
        }
    }
}

fn cf_meta() -> &'static str {
    store::cf::META
}

impl Node {
    /// Opens the node in `dir`, verifying its files against the trust seal.
    pub fn open(dir: &Path, now: i64) -> Result<Node, Error> {
        let data = DataDir(dir.to_path_buf());
        make_new_files_private();
        let config = read_config(&data)?;
        check_private(&data)?;
        let node_key = KeyPair::load_role(&data.node_key(), Role::Node)?;
        if node_key.public() != config.node_key {
            return Err(Error::Config {
                path: data.node_key(),
                reason: "node.key does not match the node key in node.toml".into(),
            });
        }
        let master = MasterKey::load(&data.master_key())?;
        let store = Store::open(&data.db(), &master)?;
        store.set_audit_signer(copy_of(&node_key));
        let seal = read_seal(&store, &data)?;
        check_anchors(&data, &config, &seal)?;
        let mut moved = seal.clone();
        let mut recovered = Vec::new();
        let policy = check_policy_file(&data, &config, &mut moved, &mut recovered)?;
        check_consortium_files(&data, &mut moved, &mut recovered)?;
        if moved != seal {
            record_recovery(&store, &moved, &recovered, now)?;
        }
        // The budget ledger's own check: after the seal, before anything is served.
        let ledger = crate::ledger::Ledger::open(&store, &master)?;
        let (registry, problems) = Registry::load(&store, &config.node_key, now)?;
        for problem in problems {
            tracing::warn!("stored consent token refused at load: {problem}");
        }
        Ok(Node {
            dir: data,
            config,
            store,
            policy: RwLock::new(policy),
            node_key,
            pseudonyms: Pseudonymizer::new(&master),
            consents: RwLock::new(registry),
            index: RwLock::new(None),
            ledger,
            ledger_lock: Mutex::new(()),
            patient_accounts: crate::account_book::Accounts::default(),
            eligibility: Mutex::new(None),
            devices: crate::device_feed::Live::default(),
        })
    }

    /// Walks the audit log from its start and checks every link and signed
    /// head against this node's key; names the first bad entry
    /// (`witmed audit verify`).
    ///
    /// A damaged log is never signed for: after a failed verification this
    /// node signs no more audit heads (not at close either).
    pub fn verify_audit(&self) -> Result<audit::Verified, audit::ChainError> {
        let verified = audit::verify(&self.store, &self.config.node_key);
        if verified.is_err() {
            self.store.refuse_audit_heads();
        }
        verified
    }

    /// The audit entries about `patient` and those of the research uses that
    /// included them (the newest their account keeps), with what they need
    /// to check them against a head this node signs (now, if the newest
    /// entries have none).
    pub fn audit_view(
        &self,
        patient: witmed_crypto::Pseudonym,
        now: i64,
    ) -> Result<audit::PatientView, audit::ViewError> {
        let uses = self
            .patient_accounts
            .uses_of(&self.store, &patient)
            .map_err(audit::ViewError::Store)?
            .into_iter()
            .collect();
        audit::patient_view(&self.store, &self.config.node_key, patient, &uses, now)
    }

    /// The node's identity key pair.
    pub fn key(&self) -> &KeyPair {
        &self.node_key
    }
    /// The consent registry as queries see it now (read-only; changes go through `consent_ops`).
    pub fn consent_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        crate::locks::read(&self.consents)
    }

    /// The node's identity (public key).
    pub fn id(&self) -> PublicKey {
        self.config.node_key
    }

    /// The pseudonymizer for source ids.
    pub fn pseudonyms(&self) -> &Pseudonymizer {
        &self.pseudonyms
    }

    /// The current policy.
    pub fn policy(&self) -> NodePolicy {
        crate::locks::read(&self.policy).clone()
    }

    /// The index, built on first use after any write to patient data.
    pub fn index(&self) -> Result<Arc<Index>, store::Error> {
        if let Some(index) = crate::locks::read(&self.index).as_ref() {
            return Ok(index.clone());
        }
        let mut slot = crate::locks::write(&self.index);
        if let Some(index) = slot.as_ref() {
            return Ok(index.clone());
        }
        let index = Arc::new(Index::build(&self.store)?);
        *slot = Some(index.clone());
        Ok(index)
    }

    /// For each patient of `index`, whether consent allows `use_` at `now`.
    ///
    /// Checking every patient's tokens costs tens of milliseconds for 100,000
    /// patients, so the mask is kept and reused for the same use while no
    /// consent changed, the index is the same, and `now` lies in the range in
    /// which no token starts or expires. A revocation bumps the registry's
    /// generation, so it takes effect at the very next query.
    pub fn eligibility(
        &self,
        index: &Arc<Index>,
        use_: &witmed_policies::evaluate::Use,
        now: i64,
    ) -> Arc<Vec<bool>> {
        // Simulated consent counts only while the policy allows demonstration data.
        let allow_simulated = self.policy().allow_demonstration_data;
        let consents = crate::locks::read(&self.consents);
        let use_key = format!("{use_:?}/{allow_simulated}");
        let index_id = Arc::as_ptr(index) as usize;
        let mut cache = crate::locks::lock(&self.eligibility);
        if let Some(c) = cache.as_ref() {
            let fresh = c.use_key == use_key
                && c.generation == consents.generation()
                && c.index == index_id;
            if fresh && c.from <= now && now < c.until {
                return c.mask.clone();
            }
        }
        let mask: Arc<Vec<bool>> = Arc::new(
            index
                .pseudonyms
                .iter()
                .map(|p| consents.eligible(p, use_, now, allow_simulated))
                .collect(),
        );
        let (from, until) = consents.stable_range(now);
        *cache = Some(EligibilityCache {
            use_key,
            generation: consents.generation(),
            index: index_id,
            from,
            until,
            mask: mask.clone(),
        });
        mask
    }

    /// Drops the index after patient data changed.
    pub fn invalidate_index(&self) {
        *crate::locks::write(&self.index) = None;
    }

    /// Verifies and installs a new signed policy (must be newer).
    ///
    /// The file is replaced first, then the seal and the audit entry are
    /// written in one synced batch: a crash in between leaves a newer,
    /// correctly signed file, which the next open accepts.
    pub fn install_policy(&self, text: &str, now: i64) -> Result<NodePolicy, Error> {
        let path = self.dir.policy();
        let candidate = parse_policy(&path, text, &self.config)?;
        // Held through the install, so two installs cannot interleave.
        let mut installed = crate::locks::write(&self.policy);
        if candidate.serial <= installed.serial {
            return Err(Error::Policy {
                path,
                reason: format!(
                    "serial {} is not newer than the installed serial {}",
                    candidate.serial, installed.serial
                ),
            });
        }
        let mut seal = read_seal(&self.store, &self.dir)?;
        replace_file_durably(&path, text)?;
        seal.policy = InstalledFile::of(candidate.serial, text);
        let mut batch = self.store.batch();
        batch.put(cf_meta(), TRUST_SEAL_KEY, &seal)?;
        let detail = format!("policy serial {} installed", candidate.serial);
        let entry = audit::Entry::new(
            now,
            "policy.installed",
            self.config.hospital_key.to_hex(),
            detail,
        );
        audit::append(&mut batch, &self.store, &entry)?;
        self.store.write_durable(batch)?;
        *installed = candidate.clone();
        Ok(candidate)
    }

    /// Installs a consortium directory, already verified as signed by
    /// `authority` and accepted as an update of the installed one.
    ///
    /// At the first install the authority is pinned in the seal before any
    /// file is written, so a directory file that appears without a pinned
    /// authority is refused at open. Then, as for policies, the files are
    /// replaced first and the seal and audit entry follow in one synced batch.
    pub fn install_consortium(
        &self,
        authority: PublicKey,
        text: &str,
        accepted: &Directory,
        now: i64,
    ) -> Result<(), Error> {
        // The text written must be the directory that was accepted.
        let verified = directory::parse_signed_directory(text)
            .and_then(|envelope| directory::verify_directory(&envelope, &authority))
            .map_err(|e| Error::Directory(e.to_string()))?;
        if verified != *accepted {
            return Err(Error::Directory(
                "the file changed while it was being installed; install it again".into(),
            ));
        }
        let mut seal = read_seal(&self.store, &self.dir)?;
        match &seal.consortium {
            Some(pinned) if pinned.authority != authority => {
                return Err(Error::Directory(format!(
                    "this node trusts consortium authority {}, not {authority}",
                    pinned.authority
                )))
            }
            Some(_) => {}
            None => {
                seal.consortium = Some(ConsortiumSeal {
                    authority,
                    directory: None,
                });
                let mut batch = self.store.batch();
                batch.put(cf_meta(), TRUST_SEAL_KEY, &seal)?;
                self.store.write_durable(batch)?;
            }
        }
        replace_file_durably(&self.dir.consortium_authority(), &authority.to_hex())?;
        replace_file_durably(&self.dir.consortium(), text)?;
        seal.consortium = Some(ConsortiumSeal {
            authority,
            directory: Some(InstalledFile::of(accepted.serial, text)),
        });
        let mut batch = self.store.batch();
        batch.put(cf_meta(), TRUST_SEAL_KEY, &seal)?;
        let detail = format!(
            "consortium directory serial {} ({} members) installed",
            accepted.serial,
            accepted.members.len()
        );
        let entry = audit::Entry::new(now, "consortium.installed", authority.to_hex(), detail);
        audit::append(&mut batch, &self.store, &entry)?;
        self.store.write_durable(batch)?;
        Ok(())
    }
}

fn read_seal(store: &Store, data: &DataDir) -> Result<TrustSeal, Error> {
    store
        .get::<TrustSeal>(cf_meta(), TRUST_SEAL_KEY)?
        .ok_or_else(|| Error::Tampered {
            path: data.db(),
            reason:
                "the store holds no trust seal (every store made by `witmed node init` has one)"
                    .into(),
            fix: "the store was replaced or damaged: restore the data dir from a backup".into(),
        })
}

/// `node.toml` must name the keys sealed at init.
fn check_anchors(data: &DataDir, config: &Config, seal: &TrustSeal) -> Result<(), Error> {
    let fix = format!(
        "node.toml was edited or replaced since `witmed node init`: restore it from a backup (the store's sealed keys are node {} and hospital {})",
        seal.node_key, seal.hospital_key
    );
    let refuse = |which: &str, found: &PublicKey, sealed: &PublicKey| Error::Tampered {
        path: data.config(),
        reason: format!(
            "its {which} key {found} is not the {which} key {sealed} sealed in the store at init"
        ),
        fix: fix.clone(),
    };
    if config.hospital_key != seal.hospital_key {
        return Err(refuse("hospital", &config.hospital_key, &seal.hospital_key));
    }
    if config.node_key != seal.node_key {
        return Err(refuse("node", &config.node_key, &seal.node_key));
    }
    Ok(())
}

/// Compares a signed file's serial and bytes with the sealed ones: older, or
/// the same serial with other bytes, is refused; newer moves the seal forward.
fn compare_with_seal(
    path: &Path,
    what: &str,
    found: InstalledFile,
    sealed: InstalledFile,
) -> Result<bool, Error> {
    let restore = format!(
        "restore the installed {what} (serial {}) from a backup, or put a newer one signed by the same key in its place (it is accepted at the next start)",
        sealed.serial
    );
    if found.serial < sealed.serial {
        return Err(Error::Tampered {
            path: path.to_path_buf(),
            reason: format!(
                "its serial {} is older than the installed serial {} sealed in the store (an older {what} was copied over the installed one)",
                found.serial, sealed.serial
            ),
            fix: restore,
        });
    }
    if found.serial == sealed.serial && found.digest != sealed.digest {
        return Err(Error::Tampered {
            path: path.to_path_buf(),
            reason: format!(
                "it has the installed serial {} but not the installed content sealed in the store",
                found.serial
            ),
            fix: restore,
        });
    }
    Ok(found.serial > sealed.serial)
}

/// Reads and verifies the policy file; a newer one (a crash during install)
/// moves `seal` forward.
fn check_policy_file(
    data: &DataDir,
    config: &Config,
    seal: &mut TrustSeal,
    recovered: &mut Vec<String>,
) -> Result<NodePolicy, Error> {
    let path = data.policy();
    let text = read_signed_file(&path, MAX_POLICY_BYTES).map_err(|reason| Error::Policy {
        path: path.clone(),
        reason,
    })?;
    let policy = parse_policy(&path, &text, config)?;
    let found = InstalledFile::of(policy.serial, &text);
    if compare_with_seal(&path, "policy", found, seal.policy)? {
        recovered.push(format!(
            "policy serial {} found installed at open (the install was interrupted before its seal)",
            policy.serial
        ));
        seal.policy = found;
    }
    Ok(policy)
}

/// Checks the consortium files against the pinned authority and sealed directory.
fn check_consortium_files(
    data: &DataDir,
    seal: &mut TrustSeal,
    recovered: &mut Vec<String>,
) -> Result<(), Error> {
    let (authority_path, directory_path) = (data.consortium_authority(), data.consortium());
    let Some(pinned) = seal.consortium.clone() else {
        for path in [&authority_path, &directory_path] {
            if path.exists() {
                return Err(Error::Tampered {
                    path: path.clone(),
                    reason: "no consortium directory was ever installed at this node".into(),
                    fix: format!(
                        "remove it and install the directory with `witmed consortium install --data-dir {} --authority HEX FILE`",
                        data.0.display()
                    ),
                });
            }
        }
        return Ok(());
    };
    let fix = format!(
        "restore it from a backup, or install the directory again with `witmed consortium install` (pinned authority {})",
        pinned.authority
    );
    match fs::read_to_string(&authority_path) {
        Ok(hex) if hex.trim() == pinned.authority.to_hex() => {}
        Ok(_) => {
            return Err(Error::Tampered {
                path: authority_path,
                reason: format!(
                    "it does not name the consortium authority {} pinned in the store",
                    pinned.authority
                ),
                fix,
            })
        }
        Err(_) if pinned.directory.is_none() => return Ok(()),
        Err(e) => {
            return Err(Error::Tampered {
                path: authority_path,
                reason: format!("unreadable ({e}) though a directory is installed"),
                fix,
            })
        }
    }
    let text = match read_signed_file(&directory_path, directory::MAX_DIRECTORY_BYTES) {
        Ok(text) => text,
        Err(_) if pinned.directory.is_none() => return Ok(()),
        Err(reason) => {
            return Err(Error::Tampered {
                path: directory_path,
                reason,
                fix,
            })
        }
    };
    let verified = directory::parse_signed_directory(&text)
        .and_then(|envelope| directory::verify_directory(&envelope, &pinned.authority))
        .map_err(|e| Error::Tampered {
            path: directory_path.clone(),
            reason: e.to_string(),
            fix: fix.clone(),
        })?;
    let found = InstalledFile::of(verified.serial, &text);
    let newer = match pinned.directory {
        Some(sealed) => compare_with_seal(&directory_path, "consortium directory", found, sealed)?,
        None => true,
    };
    if newer {
        recovered.push(format!(
            "consortium directory serial {} found installed at open (the install was interrupted before its seal)",
            verified.serial
        ));
        seal.consortium = Some(ConsortiumSeal {
            authority: pinned.authority,
            directory: Some(found),
        });
    }
    Ok(())
}

/// Moves the seal forward over files an interrupted install left, with an audit entry each.
fn record_recovery(
    store: &Store,
    seal: &TrustSeal,
    recovered: &[String],
    now: i64,
) -> Result<(), Error> {
    let mut batch = store.batch();
    batch.put(cf_meta(), TRUST_SEAL_KEY, seal)?;
    for detail in recovered {
        tracing::warn!("{detail}");
        let entry = audit::Entry::new(now, "seal.recovered", "node", detail.clone());
        audit::append(&mut batch, store, &entry)?;
    }
    store.write_durable(batch)?;
    Ok(())
}

/// Reads a signed file of at most `max` bytes.
fn read_signed_file(path: &Path, max: usize) -> Result<String, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > max as u64 {
        return Err(format!(
            "{} bytes is more than the {max} allowed",
            meta.len()
        ));
    }
    fs::read_to_string(path).map_err(|e| e.to_string())
}

fn read_config(data: &DataDir) -> Result<Config, Error> {
    let path = data.config();
    if !path.exists() {
        return Err(Error::NotInitialised(data.0.clone()));
    }
    let text = fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let config: Config = toml::from_str(&text).map_err(|e| Error::Config {
        path: path.clone(),
        reason: e.message().to_string(),
    })?;
    if config.version != CONFIG_VERSION {
        return Err(Error::Config {
            path,
            reason: format!(
                "version {} is not {CONFIG_VERSION}; upgrade witmed",
                config.version
            ),
        });
    }
    Ok(config)
}

fn parse_policy(path: &Path, text: &str, config: &Config) -> Result<NodePolicy, Error> {
    let refuse = |reason: String| Error::Policy {
        path: path.to_path_buf(),
        reason,
    };
    let envelope =
        Envelope::from_text(text, MAX_POLICY_BYTES).map_err(|e| refuse(e.to_string()))?;
    policy::load_policy(&envelope, &config.hospital_key, &config.node_key)
        .map_err(|e| refuse(e.to_string()))
}

//! A hospital node: its data directory, keys, signed policy, store, consent registry and index.
//!
//! Data directory layout (created by `witmed node init`):
//!
//! ```text
//! DIR/node.toml      name and public keys (versioned)
//! DIR/node.key       the node's identity key (signs answers; libp2p peer id)
//! DIR/hospital.key   the hospital admin key that signs the node policy
//!                    (move it offline once the policy is set)
//! DIR/master.key     master key for encryption at rest (0600)
//! DIR/policy.signed  the node policy, signed by the hospital admin key
//! DIR/db/            the RocksDB store
//! ```
//!
//! Opening a node verifies the policy's signature against the hospital key
//! recorded at init: an unsigned, altered or wrongly signed policy stops
//! the node from starting.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use witmed_crypto::at_rest::MasterKey;
use witmed_crypto::pseudonym::Pseudonymizer;
use witmed_crypto::{Envelope, KeyPair, PublicKey, Role};
use witmed_policies::policy::{self, NodePolicy};

use crate::audit;
use crate::consents::Registry;
use crate::index::Index;
use crate::store::{self, Store};

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
    pub fn db(&self) -> PathBuf {
        self.0.join("db")
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
    /// The last eligibility mask computed, reused while nothing it depends on changed.
    eligibility: Mutex<Option<EligibilityCache>>,
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

/// Creates a node: keys, config, default policy signed by the new hospital key, store.
pub fn init(
    dir: &Path,
    name: &str,
    trusted_issuers: Vec<PublicKey>,
    now: i64,
) -> Result<Config, Error> {
    let data = DataDir(dir.to_path_buf());
    if data.config().exists() {
        return Err(Error::AlreadyInitialised(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let node_key = KeyPair::generate(Role::Node)?;
    let hospital_key = KeyPair::generate(Role::Hospital)?;
    let master = MasterKey::generate()?;
    node_key.save(&data.node_key())?;
    hospital_key.save(&data.hospital_key())?;
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
    let signed = default_policy.sign(&hospital_key);
    write_file(&data.policy(), &signed.to_text())?;
    let store = Store::open(&data.db(), &master)?;
    let mut batch = store.batch();
    let entry = audit::Entry::new(now, "node.init", "operator", format!("node {name} created"));
    audit::append(&mut batch, &store, &entry)?;
    let entry = audit::Entry::new(
        now,
        "policy.installed",
        hospital_key.public().to_hex(),
        "default policy, serial 1",
    );
    audit::append(&mut batch, &store, &entry)?;
    store.write_durable(batch)?;
    // Written last: a node.toml means the rest is complete.
    let text = toml::to_string(&config).expect("config serializes");
    write_file(&data.config(), &text)?;
    Ok(config)
}

impl Node {
    /// Opens the node in `dir`, verifying its policy.
    pub fn open(dir: &Path, now: i64) -> Result<Node, Error> {
        let data = DataDir(dir.to_path_buf());
        let config = read_config(&data)?;
        let node_key = KeyPair::load_role(&data.node_key(), Role::Node)?;
        if node_key.public() != config.node_key {
            return Err(Error::Config {
                path: data.node_key(),
                reason: "node.key does not match the node key in node.toml".into(),
            });
        }
        let policy = read_policy(&data.policy(), &config)?;
        let master = MasterKey::load(&data.master_key())?;
        let store = Store::open(&data.db(), &master)?;
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
            eligibility: Mutex::new(None),
        })
    }

    /// The node's identity key pair.
    pub fn key(&self) -> &KeyPair {
        &self.node_key
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
    pub fn install_policy(&self, text: &str, now: i64) -> Result<NodePolicy, Error> {
        let path = self.dir.policy();
        let candidate = parse_policy(&path, text, &self.config)?;
        let current = self.policy();
        if candidate.serial <= current.serial {
            return Err(Error::Policy {
                path,
                reason: format!(
                    "serial {} is not newer than the installed serial {}",
                    candidate.serial, current.serial
                ),
            });
        }
        let tmp = path.with_extension("signed.tmp");
        write_file(&tmp, text)?;
        fs::rename(&tmp, &path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let mut batch = self.store.batch();
        let detail = format!("policy serial {} installed", candidate.serial);
        let entry = audit::Entry::new(
            now,
            "policy.installed",
            self.config.hospital_key.to_hex(),
            detail,
        );
        audit::append(&mut batch, &self.store, &entry)?;
        self.store.write_durable(batch)?;
        *crate::locks::write(&self.policy) = candidate.clone();
        Ok(candidate)
    }
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

fn read_policy(path: &Path, config: &Config) -> Result<NodePolicy, Error> {
    let text = fs::read_to_string(path).map_err(|e| Error::Policy {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_policy(path, &text, config)
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

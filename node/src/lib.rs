//! witmed node: a hospital's peer in a privacy-preserving federation of medical data.
//!
//! Raw records stay in the node's own encrypted RocksDB [`store`]; what
//! leaves is an aggregate released through the privacy engine ([`dp`]),
//! charged first to the researcher's durable budget ([`ledger`]), over the
//! patients whose signed consent allows it ([`consents`]).
//!
//! * [`node`]: data directory, keys, signed policy, and the open [`node::Node`].
//! * [`store`]: column families, key layout, sealed versioned records.
//! * [`import`]: PhysioNet 2012 and FHIR R4 import.
//! * [`consents`], [`consent_ops`]: enrolment, consent tokens, revocations.
//! * [`admin`]: the local channel through which a running node accepts consent changes.
//! * [`index`]: in-memory columns that queries read.
//! * [`engine`]: one query from policy check to charged answer.
//! * [`dp`]: OpenDP measurements and accuracy.
//! * [`encrypted`]: encrypted mode: study keys, noise shares, the keyless aggregator.
//! * [`ledger`]: privacy budget and stored answers.
//! * [`audit`]: the audit log.
//! * [`cli`]: the `witmed` command line.
//! * [`bench`]: `witmed bench`.

pub mod admin;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod consent_ops;
pub mod consents;
pub mod demo;
pub mod dp;
pub mod encrypted;
pub mod engine;
pub mod import;
pub mod index;
pub mod ledger;
pub mod locks;
pub mod net;
pub mod node;
pub mod setup;
pub mod store;

/// A directory under the system temp dir, removed with everything in it when dropped.
///
/// The demo and the benchmarks build whole nodes in one; dropping it leaves nothing behind.
#[derive(Debug)]
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// Creates `$TMPDIR/name`.
    pub fn new(name: &str) -> std::io::Result<ScratchDir> {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

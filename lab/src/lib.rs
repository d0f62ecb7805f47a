//! witmed-lab: witmed's test tooling, kept out of the hospital binary.
//!
//! The `witmed-lab` binary is the whole `witmed` command line plus what a
//! hospital must never ship:
//! * [`demo`]: `witmed-lab demo`, a federation on this machine via simnet.
//! * [`bench`]: `witmed-lab bench`, speed beside the raw limit of the same work.
//! * [`fault`]: `witmed-lab node run --fault`, a node that answers wrongly on purpose.
//! * [`simulate`]: `witmed-lab consent simulate`, consent made without patients.
//! * [`device`]: `witmed-lab device simulate`, PhysioNet stays replayed as signed device readings.
//! * [`setup`]: ready-made set-ups the demo, benchmarks and tests share.
//! * [`cli`]: the command line that adds these to `witmed`'s.
//!
//! The dependency runs one way: this crate uses `witmed` (the CLI library),
//! the node core, the network and simnet; none of them uses it (checked by
//! `tests/tests/build.rs`).

/// `println!` for command output: through `witmed::stdout`, so a closed pipe never panics.
macro_rules! outln {
    () => {
        witmed::stdout::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        witmed::stdout::line(format_args!($($arg)*))
    };
}

pub mod bench;
pub mod cli;
pub mod demo;
pub mod device;
pub mod fault;
pub mod setup;
pub mod simulate;

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

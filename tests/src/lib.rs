//! Helpers for the workspace-wide tests in `tests/tests/`: where the workspace is, which files it holds.
//!
//! End-to-end tests of one node and of federations live in `node/tests/`,
//! beside the `witmed` binary they drive; this crate holds checks that span
//! the whole workspace.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    // The runtime value first: cargo and nextest set it for test processes,
    // and a binary reused from a target dir shared by two checkouts would
    // otherwise look at the checkout that compiled it.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir)
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under the workspace's crates, sorted.
pub fn rust_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for krate in [
        "crypto", "protocol", "policies", "node", "simnet", "tests", "fuzz",
    ] {
        collect(&workspace_root().join(krate), &mut out);
    }
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

//! Helpers for the workspace-wide tests in `tests/tests/`: where the workspace is, which files it holds.
//!
//! End-to-end tests of one node and of federations live in `lab/tests/`,
//! beside the `witmed-lab` binary they drive (witmed's command line plus
//! simulated consent and faults); this crate holds checks that span the
//! whole workspace.

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

/// The directory of every crate in the workspace.
pub const CRATE_DIRS: [&str; 13] = [
    "crypto", "protocol", "policies", "import", "care", "node", "net", "api", "cli", "simnet",
    "lab", "tests", "fuzz",
];

/// Every `.rs` file under the workspace's crates, sorted.
pub fn rust_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for krate in CRATE_DIRS {
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

/// One row of THREAT_MODEL.md's contract table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractRow {
    pub threat: String,
    pub tests: Vec<String>,
}

/// The rows of the table under the `## The contract` heading: `| threat | mitigation | tests |`.
pub fn contract_rows(markdown: &str) -> Vec<ContractRow> {
    let Some(section) = markdown.split("\n## The contract").nth(1) else {
        return Vec::new();
    };
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| threat"))
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let [threat, _mitigation, tests] = cells.as_slice() else {
                return None;
            };
            Some(ContractRow {
                threat: threat.to_string(),
                tests: backticked(tests),
            })
        })
        .collect()
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, s)| i % 2 == 1 && s.contains("::"))
        .map(|(_, s)| s.to_string())
        .collect()
}

/// Whether `path/to/file.rs::function` is a test function in that file.
pub fn test_exists(name: &str) -> Result<(), String> {
    let (path, function) = name
        .rsplit_once("::")
        .ok_or("not of the form path/to/file.rs::function")?;
    let text = std::fs::read_to_string(workspace_root().join(path))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let signature = format!("fn {function}(");
    let Some(at) = text.find(&signature) else {
        // A test made by a `macro_rules!` whose arms are `name => ...` and
        // whose body marks each `fn $name()` as a test.
        let arm = format!("    {function} => ");
        let macro_makes_tests = text.contains("macro_rules!") && text.contains("#[test]");
        return if macro_makes_tests && text.contains(&arm) {
            Ok(())
        } else {
            Err(format!("no `fn {function}` in {path}"))
        };
    };
    let before = &text[..at];
    // The lines above the one holding `fn` (which may start with `async` or `pub`).
    let above = &before[..before.rfind('\n').unwrap_or(0)];
    let attribute_above = above
        .lines()
        .rev()
        .take(4)
        .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"));
    let in_proptest = before.rfind("proptest!").is_some_and(|p| {
        // Still inside the macro: no item-level closing `}\n` at column 0 since it opened.
        !before[p..].contains("\n}\n")
    });
    if attribute_above || in_proptest {
        Ok(())
    } else {
        Err(format!("`fn {function}` in {path} is not marked as a test"))
    }
}

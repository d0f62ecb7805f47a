//! Tidy checks over the whole workspace: module docs, layering, no committed data.

use witmed_e2e::{rust_sources, workspace_root};

/// Every source file starts with a `//!` line saying what it is for.
#[test]
fn every_source_file_starts_with_a_module_doc_line() {
    let sources = rust_sources();
    assert!(sources.len() > 30, "found only {} sources", sources.len());
    let missing: Vec<String> = sources
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| {
            p.strip_prefix(workspace_root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

/// Dependencies point one way: crypto <- protocol <- policies <- node; simnet never links node.
#[test]
fn crate_dependencies_point_one_way() {
    let manifest = |krate: &str| {
        std::fs::read_to_string(workspace_root().join(krate).join("Cargo.toml")).unwrap()
    };
    let deps = |krate: &str| -> Vec<String> {
        let text = manifest(krate);
        // Only the [dependencies] table: not the package name, not dev-dependencies.
        let after = text.split("[dependencies]").nth(1).unwrap_or_default();
        let normal = after.split("\n[").next().unwrap_or_default().to_string();
        [
            "witmed-crypto",
            "witmed-protocol",
            "witmed-policies",
            "witmed-simnet",
            "witmed.workspace",
            "witmed =",
        ]
        .iter()
        .filter(|d| normal.contains(*d))
        .map(|d| d.to_string())
        .collect()
    };
    assert!(
        deps("crypto").is_empty(),
        "crypto depends on nothing of ours"
    );
    assert_eq!(deps("protocol"), vec!["witmed-crypto"]);
    assert_eq!(deps("policies"), vec!["witmed-crypto", "witmed-protocol"]);
    assert!(!deps("simnet")
        .iter()
        .any(|d| d.starts_with("witmed.") || d == "witmed =" || d == "witmed-policies"));
}

/// Pure crates do no IO: no sockets, no RocksDB, no clock.
#[test]
fn protocol_and_policies_do_no_io() {
    for krate in ["protocol", "policies"] {
        for path in rust_sources()
            .iter()
            .filter(|p| p.starts_with(workspace_root().join(krate).join("src")))
        {
            let text = std::fs::read_to_string(path).unwrap();
            for forbidden in ["std::fs", "std::net", "SystemTime::now", "rocksdb", "tokio"] {
                assert!(
                    !text.contains(forbidden),
                    "{} uses {forbidden}",
                    path.display()
                );
            }
        }
    }
}

/// The shared data is read from ../shared/data, never committed.
#[test]
fn no_data_files_are_committed() {
    let out = std::process::Command::new("git")
        .args(["ls-files"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    let files = String::from_utf8(out.stdout).unwrap();
    assert!(!files.is_empty(), "git ls-files listed nothing");
    for f in files.lines() {
        assert!(
            !f.contains("set-a/") && !f.ends_with(".ndjson"),
            "data file committed: {f}"
        );
        let size = std::fs::metadata(workspace_root().join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            size < 2 * 1024 * 1024,
            "{f} is {size} bytes; generated and shared data are not committed"
        );
    }
}

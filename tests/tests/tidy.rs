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

/// THREAT_MODEL.md is a contract: every row of its table names tests that exist.
///
/// A test cell lists backticked `path/to/file.rs::function` names; each
/// must be a function in that file marked as a test (`#[test]`,
/// `#[tokio::test]`, or inside a `proptest!` block). Renaming or deleting
/// a test that a promise rests on therefore fails here.
#[test]
fn every_threat_model_row_names_tests_that_exist() {
    let text = std::fs::read_to_string(workspace_root().join("THREAT_MODEL.md")).unwrap();
    let rows = witmed_e2e::contract_rows(&text);
    assert!(
        rows.len() >= 20,
        "the contract table has only {} rows",
        rows.len()
    );
    let mut problems = Vec::new();
    for row in &rows {
        if row.tests.is_empty() {
            problems.push(format!("row `{}` names no test", row.threat));
        }
        for name in &row.tests {
            if let Err(why) = witmed_e2e::test_exists(name) {
                problems.push(format!("row `{}`: {name}: {why}", row.threat));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "THREAT_MODEL.md contract:\n{}",
        problems.join("\n")
    );
}

/// The contract check itself refuses what it must: a missing file, a missing function, a helper that is not a test.
#[test]
fn the_contract_check_refuses_missing_and_unmarked_functions() {
    assert!(witmed_e2e::test_exists("tests/tests/tidy.rs::no_data_files_are_committed").is_ok());
    assert!(witmed_e2e::test_exists("tests/tests/tidy.rs::no_such_test").is_err());
    assert!(witmed_e2e::test_exists("tests/tests/missing.rs::x").is_err());
    assert!(witmed_e2e::test_exists("tests/src/lib.rs::contract_rows").is_err());
    assert!(witmed_e2e::test_exists("fuzz/tests/harnesses.rs::fuzz_codec").is_ok());
    assert!(witmed_e2e::test_exists("fuzz/tests/harnesses.rs::fuzz_no_such_target").is_err());
    let table = "x\n## The contract\n| threat | mitigation | tests |\n|---|---|---|\n| a | b | `f.rs::t`, `g.rs::u` |\n## Next\n| c | d | `h.rs::v` |\n";
    let rows = witmed_e2e::contract_rows(table);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tests, vec!["f.rs::t", "g.rs::u"]);
}

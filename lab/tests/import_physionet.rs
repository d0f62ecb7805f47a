//! End-to-end: `witmed import physionet` on PhysioNet 2012 set-a, through the CLI.

mod common;

use common::*;

#[test]
fn set_a_imports_exactly_what_the_files_hold_and_a_second_import_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let dir = node.to_str().unwrap();
    init_node(&node, "General");
    let files = physionet_files(&set_a());
    let expected = count_physionet(&files);

    let set = set_a();
    let outcomes = outcomes_a();
    let args = [
        "import",
        "physionet",
        "--data-dir",
        dir,
        set.to_str().unwrap(),
        "--outcomes",
        outcomes.to_str().unwrap(),
    ];
    let first = run_json(&args);
    assert_eq!(first["patients_new"], expected.patients);
    assert_eq!(first["observations"], expected.observations);

    let status = run_json(&["node", "status", "--data-dir", dir]);
    assert_eq!(status["patients"], expected.patients, "{status}");
    assert_eq!(status["observations"], expected.observations, "{status}");

    let second = run_json(&args);
    assert_eq!(second["files_unchanged"], files.len() as u64);
    assert_eq!(second["patients_new"], 0);
    let again = run_json(&["node", "status", "--data-dir", dir]);
    assert_eq!(again["patients"], status["patients"]);
    assert_eq!(again["observations"], status["observations"]);

    assert_no_record_ids_in_store(&node, &files);
}

/// No RecordID (the source identifier) appears in any RocksDB file.
///
/// RecordIDs are six-digit numbers: every run of ASCII digits in the store
/// files is checked, window by window, against the set of all ids.
fn assert_no_record_ids_in_store(node: &std::path::Path, files: &[std::path::PathBuf]) {
    let store_bytes = all_bytes(&node.join("db"));
    assert!(store_bytes.len() > 1_000_000, "store unexpectedly small");
    let ids: std::collections::HashSet<Vec<u8>> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().as_bytes().to_vec())
        .collect();
    let width = ids.iter().next().unwrap().len();
    assert!(ids
        .iter()
        .all(|id| id.len() == width && id.iter().all(u8::is_ascii_digit)));
    for run in store_bytes
        .split(|b| !b.is_ascii_digit())
        .filter(|r| r.len() >= width)
    {
        if let Some(found) = run.windows(width).find(|w| ids.contains(*w)) {
            panic!(
                "record id {} found in clear in the store",
                String::from_utf8_lossy(found)
            );
        }
    }
}

/// The bytes of every RocksDB file that can hold records or keys: tables
/// (`.sst`), write-ahead logs (`.log`) and manifests. RocksDB's own text
/// info log (`LOG`) and `OPTIONS` files hold only its diagnostics, full of
/// numbers that would look like record ids.
pub fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let holds_data =
            name.ends_with(".sst") || name.ends_with(".log") || name.starts_with("MANIFEST");
        if path.is_file() && holds_data {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn malformed_rows_and_files_are_reported_and_the_rest_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let dir = node.to_str().unwrap();
    init_node(&node, "General");
    let set = small_set(tmp.path(), 5);
    let victim = physionet_files(&set)[0].clone();
    let mut text = std::fs::read_to_string(&victim).unwrap();
    let lines = text.lines().count();
    text.push_str("01:00,HR,not-a-number\n02:00,HR\n");
    std::fs::write(&victim, text).unwrap();
    std::fs::write(set.join("999999.txt"), "this is not a PhysioNet file\n").unwrap();

    let out = witmed()
        .args([
            "import",
            "physionet",
            "--data-dir",
            dir,
            set.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a failed file makes the exit status 3"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["patients_new"], 5);
    let rejected = summary["rejected"].as_array().unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    for line in [lines + 1, lines + 2] {
        let location = format!("{name}:{line}");
        assert!(
            rejected
                .iter()
                .any(|r| r["location"].as_str().unwrap().ends_with(&location)),
            "no rejection at {location}: {rejected:?}"
        );
    }
    let failed = summary["failed_files"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["location"]
        .as_str()
        .unwrap()
        .contains("999999.txt"));
}

//! End-to-end: `witmed import fhir` on the Synthea FHIR R4 bundles, through the CLI.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn bundles() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fhir_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Numeric observations in a bundle, counted independently: an Observation's
/// own valueQuantity, else each component with a LOINC coding and a valueQuantity.
fn numeric_observations(bundle: &Value) -> u64 {
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Observation")
        .map(|r| {
            if r["valueQuantity"]["value"].is_number() {
                1
            } else {
                r["component"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .filter(|c| {
                                c["valueQuantity"]["value"].is_number() && has_loinc(&c["code"])
                            })
                            .count() as u64
                    })
                    .unwrap_or(0)
            }
        })
        .sum()
}

fn has_loinc(code: &Value) -> bool {
    code["coding"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["system"] == "http://loinc.org"))
}

#[test]
fn sixty_bundles_yield_sixty_patients_and_their_observations() {
    let files = bundles();
    assert_eq!(files.len(), 60);
    let expected: u64 = files
        .iter()
        .map(|f| numeric_observations(&serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()))
        .sum();
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let dir = node.to_str().unwrap();
    init_node(&node, "General");
    let fhir = fhir_dir();
    let summary = run_json(&["import", "fhir", "--data-dir", dir, fhir.to_str().unwrap()]);
    assert_eq!(summary["patients_new"], 60, "{summary}");
    assert_eq!(summary["observations"], expected, "{summary}");
    assert!(
        summary["skipped_resource_types"]["Encounter"]
            .as_u64()
            .unwrap()
            > 0
    );
    let status = run_json(&["node", "status", "--data-dir", dir]);
    assert_eq!(status["patients"], 60);
    assert_eq!(status["observations"], expected);
    assert!(status["conditions"].as_u64().unwrap() > 0);

    let again = run_json(&["import", "fhir", "--data-dir", dir, fhir.to_str().unwrap()]);
    assert_eq!(again["files_unchanged"], 60);
    assert_eq!(
        run_json(&["node", "status", "--data-dir", dir])["observations"],
        expected
    );

    assert_no_names_or_ids_in_store(&node, &files);
}

/// Patient names and FHIR ids never reach the RocksDB files.
fn assert_no_names_or_ids_in_store(node: &std::path::Path, files: &[PathBuf]) {
    let mut store = Vec::new();
    for entry in std::fs::read_dir(node.join("db")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            store.extend(std::fs::read(&path).unwrap());
        }
    }
    let contains = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    for f in files.iter().take(20) {
        let bundle: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let patient = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|r| r["resourceType"] == "Patient")
            .unwrap();
        let id = patient["id"].as_str().unwrap();
        assert!(!contains(id), "patient id {id} found in the store");
        let family = patient["name"][0]["family"].as_str().unwrap();
        assert!(!contains(family), "family name {family} found in the store");
    }
}

#[test]
fn truncated_and_invalid_bundles_are_reported_and_the_rest_load() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let files = bundles();
    for f in &files[..3] {
        std::fs::copy(f, input.join(f.file_name().unwrap())).unwrap();
    }
    let whole = std::fs::read(&files[3]).unwrap();
    std::fs::write(input.join("truncated.json"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(
        input.join("invalid.json"),
        b"{\"resourceType\": \"Bundle\", \"entry\": 7}",
    )
    .unwrap();

    let node = tmp.path().join("node");
    init_node(&node, "General");
    let out = witmed()
        .args([
            "import",
            "fhir",
            "--data-dir",
            node.to_str().unwrap(),
            input.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["patients_new"], 3, "{summary}");
    let failed: Vec<&str> = summary["failed_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["location"].as_str().unwrap())
        .collect();
    assert!(
        failed.iter().any(|l| l.contains("truncated.json")),
        "{summary}"
    );
    let invalid_reported = failed.iter().any(|l| l.contains("invalid.json"))
        || summary["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["location"].as_str().unwrap().contains("invalid.json"));
    assert!(invalid_reported, "{summary}");
    assert_eq!(out.status.code(), Some(3));
}

//! Crash safety: an import killed with SIGKILL at random points loses no acknowledged batch.

mod common;

use std::time::Duration;

use common::*;
use witmed_node::import::PHYSIONET;
use witmed_node::node::Node;
use witmed_node::store::cf;

/// A small deterministic generator for kill delays (the test must be reproducible).
fn delays(seed: u64, n: usize) -> Vec<Duration> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_millis(300 + (x >> 33) % 2500)
        })
        .collect()
}

#[test]
fn killed_imports_keep_every_acknowledged_batch_and_reopen_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("node");
    init_node(&node_dir, "General");
    let ack = tmp.path().join("acks.log");
    let set = set_a();
    let mut acked_total = 0;
    for delay in delays(2026, 4) {
        let mut child = witmed()
            .args([
                "import",
                "physionet",
                "--data-dir",
                node_dir.to_str().unwrap(),
                set.to_str().unwrap(),
            ])
            .args([
                "--batch-files",
                "16",
                "--ack-log",
                ack.to_str().unwrap(),
                "--json",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        acked_total = check_acknowledged(&node_dir, &ack);
    }
    assert!(
        acked_total > 0,
        "no batch was acknowledged before any kill; the delays are too short"
    );

    // A final run completes the import: the store ends exactly as a clean import would.
    run_ok(&[
        "import",
        "physionet",
        "--data-dir",
        node_dir.to_str().unwrap(),
        set.to_str().unwrap(),
        "--json",
    ]);
    let expected = count_physionet(&physionet_files(&set));
    let status = run_json(&["node", "status", "--data-dir", node_dir.to_str().unwrap()]);
    assert_eq!(status["patients"], expected.patients);
    assert_eq!(status["observations"], expected.observations);
}

/// Opens the store and checks every file of every acknowledged batch is there.
fn check_acknowledged(node_dir: &std::path::Path, ack: &std::path::Path) -> usize {
    let node = Node::open(node_dir, 0).expect("store reopens cleanly after SIGKILL");
    let log = std::fs::read_to_string(ack).unwrap_or_default();
    let mut files = 0;
    for line in log.lines() {
        let (_, names) = line.split_once(": ").expect("ack line format");
        for name in names.split_whitespace() {
            let id = name.rsplit('/').next().unwrap().trim_end_matches(".txt");
            let p = node.pseudonyms().pseudonym(PHYSIONET, id);
            assert!(
                node.store.contains(cf::PATIENTS, &p.0).unwrap(),
                "acknowledged {name} is missing"
            );
            files += 1;
        }
    }
    files
}

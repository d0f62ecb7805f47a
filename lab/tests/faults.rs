//! Faults on purpose: partitions, delays, dropped responses and misbehaving members, through simnet.
//! The researcher still gets a correct answer over the honest, reachable hospitals, with the
//! others named, and no node crashes or grows without bound over 100 queries.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use witmed_simnet::cluster::{self, Cluster, Options};
use witmed_simnet::proxy::Fault;

fn cluster(
    root: &Path,
    n: usize,
    files: usize,
    misbehave: &[(usize, &str)],
) -> (Cluster, Vec<Vec<PathBuf>>) {
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(files).collect();
    let mut specs = cluster::split(&records, n);
    for (i, how) in misbehave {
        specs[*i].misbehave = Some(how.to_string());
    }
    let slices = specs.iter().map(|s| s.records.clone()).collect();
    let options = Options {
        proxied: true,
        ..cluster_options(root)
    };
    let mut c = Cluster::build(&options, &specs).unwrap();
    c.start_all().unwrap();
    (c, slices)
}

fn count_query(root: &Path, id: &str) -> PathBuf {
    count_query_eps(root, id, 0.5)
}

fn count_query_eps(root: &Path, id: &str, epsilon: f64) -> PathBuf {
    let path = root.join(format!("{id}.toml"));
    let text = witmed_protocol::examples::count(id, "HMB", epsilon);
    std::fs::write(&path, text).unwrap();
    path
}

fn status_of<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer["hospitals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .and_then(|h| h["status"].as_str())
        .unwrap_or_else(|| panic!("{name} missing: {answer}"))
}

/// The combined count is the exact one up to noise (see `common::assert_count_near`).
fn assert_counts(answer: &Value, exact: usize) {
    let answered = answer["hospitals_answered"].as_u64().unwrap() as usize;
    assert_count_near(answer, exact as f64, answered, 0.5);
}

#[test]
fn partition_delay_and_dropped_responses_leave_a_correct_answer_over_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, slices) = cluster(tmp.path(), 4, 400, &[]);
    c.set_fault(1, Fault::Partition);
    c.set_fault(2, Fault::DropResponses);
    c.set_fault(3, Fault::Delay(Duration::from_millis(300)));
    let answer = c.query(&count_query(tmp.path(), "faults"), "4s").unwrap();
    assert_eq!(status_of(&answer, "Hospital-1"), "answered", "{answer}");
    assert_eq!(status_of(&answer, "Hospital-2"), "timed out", "{answer}");
    assert_eq!(status_of(&answer, "Hospital-3"), "timed out", "{answer}");
    assert_eq!(
        status_of(&answer, "Hospital-4"),
        "answered",
        "a slow link still answers: {answer}"
    );
    assert_counts(&answer, slices[0].len() + slices[3].len());

    // Healed: everyone answers again.
    for i in 1..4 {
        c.set_fault(i, Fault::None);
    }
    let answer = c.query(&count_query(tmp.path(), "healed"), "8s").unwrap();
    assert_eq!(answer["hospitals_answered"], 4, "{answer}");
    assert_counts(&answer, 400);
}

#[test]
fn misbehaving_members_are_named_and_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = [
        (1, "bad-signature"),
        (2, "garbage"),
        (3, "oversized"),
        (4, "wrong-query"),
    ];
    let (c, slices) = cluster(tmp.path(), 5, 250, &faults);
    let answer = c.query(&count_query(tmp.path(), "rogues"), "6s").unwrap();
    assert_eq!(status_of(&answer, "Hospital-1"), "answered", "{answer}");
    assert_eq!(
        status_of(&answer, "Hospital-2"),
        "invalid",
        "bad signature: {answer}"
    );
    assert_eq!(
        status_of(&answer, "Hospital-3"),
        "invalid",
        "garbage: {answer}"
    );
    assert_eq!(
        status_of(&answer, "Hospital-4"),
        "unreachable",
        "oversized: {answer}"
    );
    assert_eq!(
        status_of(&answer, "Hospital-5"),
        "invalid",
        "wrong query: {answer}"
    );
    assert_eq!(answer["hospitals_answered"], 1);
    assert_counts(&answer, slices[0].len());
}

#[test]
fn a_hundred_queries_crash_nothing_and_memory_stays_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, _) = cluster(tmp.path(), 3, 150, &[]);
    let mut rss_after_warmup = Vec::new();
    for q in 0..100 {
        // 100 queries must fit the default budget of 10.
        let path = count_query_eps(tmp.path(), &format!("soak-{q}"), 0.05);
        let answer = c.query(&path, "8s").unwrap();
        assert_eq!(answer["hospitals_answered"], 3, "query {q}: {answer}");
        if q == 19 {
            rss_after_warmup = (0..3).map(|i| c.rss_kib(i).unwrap()).collect();
        }
    }
    for (i, before) in rss_after_warmup.into_iter().enumerate() {
        assert!(c.alive(i), "node {i} died");
        let after = c.rss_kib(i).unwrap();
        assert!(
            after < before + before / 4 + 8 * 1024,
            "node {i} grew from {before} KiB to {after} KiB over 80 queries"
        );
    }
}

#[test]
fn a_node_killed_mid_query_is_named_and_answers_again_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, slices) = cluster(tmp.path(), 3, 300, &[]);
    // Hold node 2's traffic in the proxy, so the query to it is in flight when it dies.
    c.set_fault(1, Fault::Partition);
    let query = count_query(tmp.path(), "mid-query");
    let child = std::process::Command::new(&c.bin)
        .args(["query", "run", "--directory", c.directory.to_str().unwrap()])
        .args([
            "--authority",
            &c.consortium_authority,
            "--key",
            c.researcher_key.to_str().unwrap(),
        ])
        .args([
            "--credential",
            c.credential.to_str().unwrap(),
            "--query",
            query.to_str().unwrap(),
        ])
        .args(["--timeout", "4s", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    c.kill(1).unwrap();
    let out = child.wait_with_output().unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = status_of(&answer, "Hospital-2");
    assert!(status == "unreachable" || status == "timed out", "{answer}");
    assert_eq!(answer["hospitals_answered"], 2, "{answer}");
    assert_counts(&answer, slices[0].len() + slices[2].len());

    // Restarted, it answers again from its intact store.
    c.set_fault(1, Fault::None);
    c.start(1).unwrap();
    let answer = c
        .query(&count_query(tmp.path(), "after-restart"), "8s")
        .unwrap();
    assert_eq!(answer["hospitals_answered"], 3, "{answer}");
    assert_counts(&answer, 300);
}

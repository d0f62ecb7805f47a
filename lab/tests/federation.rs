//! End-to-end federation: real `witmed node run` processes on 127.0.0.1, each with a slice of set-a.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use witmed_simnet::cluster::{self, Cluster, Options};

const TIMEOUT: &str = "8s";

/// A cluster of `n` hospitals over the first `files` set-a records, all consenting.
fn cluster(root: &Path, n: usize, files: usize) -> (Cluster, Vec<PathBuf>) {
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(files).collect();
    let options = Options {
        outcomes: Some(outcomes_a()),
        ..cluster_options(root)
    };
    let mut c = Cluster::build(&options, &cluster::split(&records, n)).unwrap();
    c.start_all().unwrap();
    (c, records)
}

fn write_query(root: &Path, name: &str, text: &str) -> PathBuf {
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn count_query(id: &str) -> String {
    witmed_protocol::examples::count_over_65(id, 1.0)
}

fn mean_query(id: &str) -> String {
    witmed_protocol::examples::mean_heart_rate_over_65(id, "HMB", 1.0)
}

fn statuses(answer: &Value) -> Vec<(String, String)> {
    answer["hospitals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn federated_count_and_mean_agree_with_the_exact_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, records) = cluster(tmp.path(), 3, 900);
    let Over65 {
        count: exact_count,
        mean_hr: exact_mean,
        with_hr: hr_patients,
    } = over_65(&records);
    let count = c
        .query(
            &write_query(tmp.path(), "count.toml", &count_query("fed-count")),
            TIMEOUT,
        )
        .unwrap();
    assert!(
        statuses(&count).iter().all(|(_, s)| s == "answered"),
        "{count}"
    );
    assert_count_near(&count, exact_count, 3, 1.0);
    let mean = c
        .query(
            &write_query(tmp.path(), "mean.toml", &mean_query("fed-mean")),
            TIMEOUT,
        )
        .unwrap();
    assert_eq!(mean["hospitals_answered"], 3, "{mean}");
    assert_mean_near(&mean, exact_mean, hr_patients, 3, 1.0, (30.0, 200.0));
}

#[test]
fn a_killed_or_hung_node_is_named_and_the_others_are_combined_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, _) = cluster(tmp.path(), 3, 300);
    c.kill(1).unwrap();
    let started = Instant::now();
    let answer = c
        .query(
            &write_query(tmp.path(), "q1.toml", &count_query("dead")),
            TIMEOUT,
        )
        .unwrap();
    let s = statuses(&answer);
    assert_eq!(
        s[1],
        ("Hospital-2".to_string(), "unreachable".to_string()),
        "{answer}"
    );
    assert_eq!(answer["hospitals_answered"], 2);
    assert!(answer["value"].as_f64().is_some(), "{answer}");

    // A node that hangs mid-query (SIGSTOP) is reported as timed out, no later than the timeout.
    c.pause(2).unwrap();
    let started_hung = Instant::now();
    let answer = c
        .query(
            &write_query(tmp.path(), "q2.toml", &count_query("hung")),
            "3s",
        )
        .unwrap();
    let waited = started_hung.elapsed();
    c.resume(2).unwrap();
    let s = statuses(&answer);
    assert_eq!(
        s[2],
        ("Hospital-3".to_string(), "timed out".to_string()),
        "{answer}"
    );
    assert_eq!(s[0].1, "answered");
    assert!(
        waited < Duration::from_secs(3) + Duration::from_secs(5),
        "waited {waited:?} for a 3 s timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn nodes_shut_down_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, _) = cluster(tmp.path(), 1, 20);
    assert_eq!(c.stop(0).unwrap(), Some(0), "SIGTERM exits 0");
    // The store reopens: nothing was left half-written or locked.
    run_ok(&[
        "node",
        "status",
        "--data-dir",
        c.members[0].data_dir.to_str().unwrap(),
    ]);
}

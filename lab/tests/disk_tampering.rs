//! End-to-end: tampering with a node's data dir on disk stops the node, and the disk holds no clinical code in clear.
//!
//! Every attack here is made as an attacker with write access to the data
//! dir would make it (copying files, editing `node.toml`, flipping a byte of
//! the write-ahead log), and checked through the real `witmed` binary:
//! `node status`, `query local` and `node run` must each stop with a clear
//! message and a non-zero exit.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The shared research node (common::ResearchNode), with a count query.
type World = ResearchNode;

/// `query local` of bob's count query at the node.
trait QueryLocal {
    fn query_local(&self) -> Vec<String>;
}

impl QueryLocal for World {
    fn query_local(&self) -> Vec<String> {
        [
            "query",
            "local",
            "--data-dir",
            s(&self.node),
            "--key",
            s(&self.path("bob.key")),
            "--credential",
            s(&self.path("bob.credential")),
            "--query",
            s(&self.path("count.toml")),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }
}

/// An HMB count at epsilon 1 with id "count-1".
fn count_toml() -> String {
    witmed_protocol::examples::count("count-1", "HMB", 1.0)
}

fn world(patients: usize) -> World {
    let w = ResearchNode::new(patients);
    std::fs::write(w.path("count.toml"), count_toml()).unwrap();
    w
}

/// A policy TOML (the installed one, as `policy show` prints it) with a new serial.
fn policy_with_serial(w: &World, serial: u64) -> PathBuf {
    let shown = run_ok(&["policy", "show", "--data-dir", s(&w.node)]);
    let edited: String = shown
        .lines()
        .map(|line| {
            if line.starts_with("serial = ") {
                format!("serial = {serial}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = w.path(&format!("policy-{serial}.toml"));
    std::fs::write(&path, edited).unwrap();
    path
}

/// Signs `policy` with `key` into `out`, replacing it if it exists (as an attacker's `cp` would).
fn sign_policy(key: &Path, policy: &Path, out: &Path) {
    let fresh = policy.with_extension("signed-fresh");
    let _ = std::fs::remove_file(&fresh);
    run_ok(&[
        "policy",
        "sign",
        "--key",
        s(key),
        "--policy",
        s(policy),
        "--out",
        s(&fresh),
    ]);
    std::fs::copy(&fresh, out).unwrap();
}

/// Runs `witmed args`, expecting a non-zero exit whose stderr contains every one of `needles`.
fn assert_stops(args: &[String], needles: &[&str]) {
    let out = witmed().args(args).output().expect("witmed runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "witmed {args:?} should have refused to start:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "witmed {args:?}: expected {needle:?} in the message:\n{stderr}"
        );
    }
}

/// `node run` on loopback must exit non-zero by itself, with the message, well within a minute.
fn assert_run_stops(node: &Path, needles: &[&str]) {
    let mut child = witmed()
        .args([
            "node",
            "run",
            "--data-dir",
            s(node),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("witmed runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("witmed node run kept running on a tampered data dir");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "node run exited 0:\n{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "node run: expected {needle:?} in the message:\n{stderr}"
        );
    }
}

/// Every way in: status, a local query, and running the node.
fn assert_node_stops(w: &World, needles: &[&str]) {
    let status: Vec<String> = ["node", "status", "--data-dir", s(&w.node)]
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_stops(&status, needles);
    assert_stops(&w.query_local(), needles);
    assert_run_stops(&w.node, needles);
}

#[test]
fn an_older_policy_copied_over_the_installed_one_stops_the_node() {
    let w = world(5);
    let installed = w.node.join("policy.signed");
    let serial_2 = std::fs::read(&installed).unwrap();
    let newer = policy_with_serial(&w, 3);
    let signed = w.path("policy-3.signed");
    sign_policy(&w.node.join("hospital.key"), &newer, &signed);
    run_ok(&["policy", "install", "--data-dir", s(&w.node), s(&signed)]);
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);

    // The attacker puts the older, correctly signed policy back.
    std::fs::write(&installed, &serial_2).unwrap();
    assert_node_stops(
        &w,
        &[
            "policy.signed",
            "serial 2 is older than the installed serial 3",
            "restore",
        ],
    );

    // Putting the installed policy back is the fix.
    std::fs::copy(&signed, &installed).unwrap();
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);
}

#[test]
fn a_policy_of_the_installed_serial_with_other_content_stops_the_node() {
    let w = world(5);
    // Same serial 2, different content (a larger budget), signed by the real hospital key.
    let shown = policy_with_serial(&w, 2);
    let text = std::fs::read_to_string(&shown).unwrap();
    let edited: String = text
        .lines()
        .map(|line| {
            if line.starts_with("epsilon = ") {
                "epsilon = 1000000.0".to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(edited, text, "the policy has a budget epsilon to edit");
    std::fs::write(&shown, edited).unwrap();
    let signed = w.path("same-serial.signed");
    sign_policy(&w.node.join("hospital.key"), &shown, &signed);
    std::fs::copy(&signed, w.node.join("policy.signed")).unwrap();
    assert_node_stops(
        &w,
        &[
            "policy.signed",
            "installed serial 2 but not the installed content",
        ],
    );
}

#[test]
fn an_edited_node_toml_trusting_a_self_signed_policy_stops_the_node() {
    let w = world(5);
    // The attacker makes their own hospital key, signs a permissive policy
    // trusting their own credential issuer, and swaps the key in node.toml.
    let rogue = public_key(&run_ok(&[
        "keygen",
        "--role",
        "hospital",
        "--out",
        s(&w.path("rogue-hospital.key")),
    ]));
    let rogue_issuer = public_key(&run_ok(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        s(&w.path("rogue-authority.key")),
    ]));
    let policy = policy_with_serial(&w, 9);
    let text = std::fs::read_to_string(&policy).unwrap().replace(
        &format!("\"{}\"", w.authority),
        &format!("\"{}\", \"{rogue_issuer}\"", w.authority),
    );
    assert!(text.contains(&rogue_issuer), "issuer list edited: {text}");
    std::fs::write(&policy, text).unwrap();
    sign_policy(
        &w.path("rogue-hospital.key"),
        &policy,
        &w.node.join("policy.signed"),
    );
    let config = w.node.join("node.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let real = original
        .lines()
        .find_map(|l| l.strip_prefix("hospital_key = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    std::fs::write(&config, original.replace(&real, &rogue)).unwrap();
    assert_node_stops(
        &w,
        &[
            "node.toml",
            &format!("its hospital key {rogue} is not the hospital key {real} sealed in the store"),
            "restore it from a backup",
        ],
    );
}

/// Byte offsets of the records of a RocksDB WAL file: (header start, payload length).
///
/// The log is 32 KiB blocks of records, each with a 7-byte header: CRC (4),
/// payload length (2, little endian), type (1); a block tail too short for a
/// header is zero padding.
fn wal_records(wal: &[u8]) -> Vec<(usize, usize)> {
    const BLOCK: usize = 32 * 1024;
    let mut records = Vec::new();
    let mut at = 0;
    while at + 7 <= wal.len() {
        let left_in_block = BLOCK - at % BLOCK;
        if left_in_block < 7 {
            at += left_in_block;
            continue;
        }
        let len = u16::from_le_bytes([wal[at + 4], wal[at + 5]]) as usize;
        let kind = wal[at + 6];
        if kind == 0 && len == 0 {
            break;
        }
        assert!(
            !(5..=8).contains(&kind),
            "recyclable WAL records are not expected (recycle_log_file_num is 0)"
        );
        records.push((at, len));
        at += 7 + len;
    }
    records
}

/// The newest write-ahead log file of the node's store.
fn newest_wal(node: &Path) -> PathBuf {
    let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(node.join("db"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let number = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((number, path))
        })
        .collect();
    logs.sort();
    logs.pop().expect("the store has a write-ahead log").1
}

/// A world whose last synced write is the charge of one query; returns the
/// newest WAL, its bytes and the offset and length of its last record.
fn charged_world() -> (World, PathBuf, Vec<u8>, (usize, usize)) {
    let w = world(10);
    let first = run_json(
        &w.query_local()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        (first["budget_left"].as_f64().unwrap() - 9.0).abs() < 1e-9,
        "{first}"
    );
    let wal = newest_wal(&w.node);
    let bytes = std::fs::read(&wal).unwrap();
    let last = *wal_records(&bytes)
        .last()
        .expect("the charge is in the newest WAL");
    assert!(last.1 > 32, "the last record holds the charge batch");
    (w, wal, bytes, last)
}

#[test]
fn a_flipped_byte_in_the_newest_wal_record_after_a_charge_stops_the_node() {
    let (w, wal, mut bytes, (at, len)) = charged_world();
    // One bit of the charge batch's payload.
    bytes[at + 7 + len / 2] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();
    assert_node_stops(
        &w,
        &["is damaged and was not opened", "restore the data dir"],
    );
}

#[test]
fn a_flipped_length_byte_that_makes_the_charge_look_torn_stops_the_node() {
    // RocksDB tolerates a torn final record (a crash while writing it); a
    // flipped high length byte makes the acknowledged charge look like one.
    // The watermark still knows it was acknowledged.
    let (w, wal, mut bytes, (at, _)) = charged_world();
    bytes[at + 5] ^= 0x40;
    std::fs::write(&wal, &bytes).unwrap();
    assert_node_stops(
        &w,
        &[
            "lost acknowledged writes",
            "budget charges and stored answers",
        ],
    );
}

/// The modes of everything under `dir` that group or others can access.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != expected {
            found.push(format!("{} {mode:o}", path.display()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    found
}

/// Every file under `dir`.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else {
            files.push(path);
        }
    }
    files
}

/// The observation and condition codes in the FHIR files, found by walking
/// the JSON (every `coding` of every Observation and Condition).
fn fhir_codes(files: &[PathBuf]) -> (HashSet<String>, HashSet<(String, String)>) {
    fn codings(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(list)) = map.get("coding") {
                    for coding in list {
                        if let Some(code) = coding.get("code").and_then(|c| c.as_str()) {
                            let system =
                                coding.get("system").and_then(|c| c.as_str()).unwrap_or("");
                            out.push((system.to_string(), code.to_string()));
                        }
                    }
                }
                for v in map.values() {
                    codings(v, out);
                }
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| codings(v, out)),
            _ => {}
        }
    }
    let (mut observations, mut conditions) = (HashSet::new(), HashSet::new());
    for file in files {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let entries = json["entry"].as_array().cloned().unwrap_or_default();
        for entry in entries {
            let resource = &entry["resource"];
            let mut found = Vec::new();
            codings(&resource["code"], &mut found);
            for component in resource["component"].as_array().into_iter().flatten() {
                codings(&component["code"], &mut found);
            }
            match resource["resourceType"].as_str() {
                Some("Observation") => observations.extend(found.into_iter().map(|(_, c)| c)),
                Some("Condition") => conditions.extend(found),
                _ => {}
            }
        }
    }
    (observations, conditions)
}

/// The observation codes of a PhysioNet set: every parameter name in its files, as witmed codes it.
fn physionet_codes(files: &[PathBuf]) -> HashSet<String> {
    let mut params = HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines().skip(1) {
            if let Some(param) = line.split(',').nth(1) {
                params.insert(param.to_string());
            }
        }
    }
    params
        .iter()
        .map(|p| witmed_node::import::physionet::observation_code_for(p))
        .collect()
}

/// Bytes that can be part of a code written as text.
fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.:_".contains(&b)
}

#[test]
fn the_data_dir_holds_no_clinical_code_in_clear_or_unkeyed_and_is_private() {
    let w = world(40);
    let mut fhir: Vec<PathBuf> = std::fs::read_dir(fhir_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fhir.sort();
    let mut args = vec!["import", "fhir", "--data-dir", s(&w.node)];
    args.extend(fhir.iter().map(|p| s(p)));
    run_ok(&args);
    let query = w.query_local();
    run_ok(&query.iter().map(String::as_str).collect::<Vec<_>>());
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);

    let mut observation_codes = physionet_codes(&physionet_files(&w.set));
    let (fhir_observations, conditions) = fhir_codes(&fhir);
    observation_codes.extend(fhir_observations);
    assert!(
        observation_codes.contains("8867-4") && conditions.len() > 20,
        "the imported data has heart rates and diagnoses"
    );
    // Codes as text; and the unkeyed digests an attacker would compute from
    // public code lists: sha256(code), and sha256(system NUL code) as the
    // condition keys of store format 1 held.
    let mut clear: HashSet<Vec<u8>> = HashSet::new();
    let mut digests: HashSet<[u8; 8]> = HashSet::new();
    let mut prefix = |bytes: &[u8]| {
        let d = witmed_crypto::sha256(bytes);
        digests.insert(d[..8].try_into().unwrap());
    };
    for code in &observation_codes {
        clear.insert(code.as_bytes().to_vec());
        prefix(code.as_bytes());
    }
    for (system, code) in &conditions {
        clear.insert(code.as_bytes().to_vec());
        prefix(code.as_bytes());
        prefix(format!("{system}\0{code}").as_bytes());
    }
    // An unkeyed digest of an imported file would let its holder confirm
    // the patient's record was imported here (store format 1's markers).
    for file in &fhir {
        prefix(&std::fs::read(file).unwrap());
    }

    let mut found = Vec::new();
    let files = all_files(&w.node);
    assert!(files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "sst" || e == "log")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        // A code in clear: a whole run of code characters equal to a code
        // (so "8867-4" inside the number "188867-45" of a log line is not one).
        for token in bytes.split(|b| !is_code_byte(*b)) {
            if clear.contains(token) {
                found.push(format!(
                    "{}: {:?} in clear",
                    file.display(),
                    String::from_utf8_lossy(token)
                ));
            }
        }
        for window in bytes.windows(8) {
            let window: [u8; 8] = window.try_into().unwrap();
            if digests.contains(&window) {
                found.push(format!("{}: an unkeyed code digest", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "clinical codes recoverable on disk:\n{}",
        found.join("\n")
    );

    let open = open_to_others(&w.node);
    assert!(
        open.is_empty(),
        "not private after init, import and queries:\n{}",
        open.join("\n")
    );
}

#[test]
fn a_data_dir_open_to_others_is_refused() {
    let w = world(3);
    let open = open_to_others(&w.node);
    assert!(open.is_empty(), "{open:?}");
    std::fs::set_permissions(&w.node, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_node_stops(&w, &["open to group or others", "chmod -R go-rwx"]);
    std::fs::set_permissions(&w.node, std::fs::Permissions::from_mode(0o700)).unwrap();
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);
    // A file an operator copied in open to others, inside the private
    // directory, was never reachable by them: it is made private again.
    let policy = w.node.join("policy.signed");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);
    let mode = std::fs::metadata(&policy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "policy.signed left at {mode:o}");
}

#[test]
fn the_hospital_key_can_live_outside_the_data_dir_and_still_sign_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let offline = tmp.path().join("offline");
    std::fs::create_dir(&offline).unwrap();
    let key = offline.join("hospital.key");
    let out = run_ok(&[
        "node",
        "init",
        "--data-dir",
        s(&node),
        "--name",
        "General",
        "--hospital-key-out",
        s(&key),
    ]);
    assert!(out.contains(s(&key)), "{out}");
    assert!(key.is_file());
    assert!(!node.join("hospital.key").exists());
    let w = World {
        set: tmp.path().join("no-set"),
        tmp,
        node,
        authority: String::new(),
    };
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);
    let policy = policy_with_serial(&w, 2);
    let signed = w.path("policy-2.signed");
    sign_policy(&key, &policy, &signed);
    run_ok(&["policy", "install", "--data-dir", s(&w.node), s(&signed)]);
    let status = run_json(&["node", "status", "--data-dir", s(&w.node)]);
    assert_eq!(status["policy_serial"], 2, "{status}");
}

#[test]
fn a_newer_signed_policy_left_by_an_interrupted_install_is_accepted_and_sealed() {
    // A crash after the file was replaced but before the seal moved leaves a
    // newer, correctly signed policy: the node must start with it.
    let w = world(3);
    let policy = policy_with_serial(&w, 3);
    sign_policy(
        &w.node.join("hospital.key"),
        &policy,
        &w.node.join("policy.signed"),
    );
    let status = run_json(&["node", "status", "--data-dir", s(&w.node)]);
    assert_eq!(status["policy_serial"], 3, "{status}");
    // The seal moved: serial 2 is now older than the installed one.
    let old = policy_with_serial(&w, 2);
    sign_policy(
        &w.node.join("hospital.key"),
        &old,
        &w.node.join("policy.signed"),
    );
    assert_stops(
        &["node", "status", "--data-dir", s(&w.node)]
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        &["serial 2 is older than the installed serial 3"],
    );
}

#[test]
fn an_older_consortium_directory_or_one_never_installed_stops_the_node() {
    let w = world(3);
    let directory = w.path("consortium.toml");
    run_ok(&[
        "consortium",
        "create",
        "--name",
        "c",
        "--out",
        s(&directory),
    ]);
    let add = |data_dir: &Path, port: u16| {
        run_ok(&[
            "consortium",
            "add",
            "--directory",
            s(&directory),
            "--data-dir",
            s(data_dir),
            "--address",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
        ]);
    };
    let sign = |out: &Path| {
        run_ok(&[
            "consortium",
            "sign",
            "--authority-key",
            s(&w.path("authority.key")),
            "--directory",
            s(&directory),
            "--out",
            s(out),
        ]);
    };
    let install = |file: &Path| {
        run_ok(&[
            "consortium",
            "install",
            "--data-dir",
            s(&w.node),
            "--authority",
            &w.authority,
            s(file),
        ]);
    };
    add(&w.node, 4001);
    let (first, second) = (w.path("dir-1.signed"), w.path("dir-2.signed"));
    sign(&first);
    install(&first);
    let other = w.path("other");
    init_node(&other, "Other");
    add(&other, 4002);
    sign(&second);
    install(&second);
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);

    // The attacker puts the older directory (fewer members) back.
    std::fs::copy(&first, w.node.join("consortium.signed")).unwrap();
    assert_node_stops(
        &w,
        &["consortium.signed", "older than the installed serial"],
    );
    std::fs::copy(&second, w.node.join("consortium.signed")).unwrap();
    run_ok(&["node", "status", "--data-dir", s(&w.node)]);

    // At a node that never installed one, a planted directory and authority are refused.
    let fresh = world(2);
    std::fs::copy(&second, fresh.node.join("consortium.signed")).unwrap();
    std::fs::write(fresh.node.join("consortium.authority"), &w.authority).unwrap();
    assert_stops(
        &["node", "status", "--data-dir", s(&fresh.node)]
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        &["no consortium directory was ever installed at this node"],
    );
}

//! Helpers shared by the node's end-to-end tests: the binary, the shared data, independent counts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shared data directory: `WITMED_DATA_DIR`, or `../shared/data` beside the workspace.
///
/// Panics (never skips) when it is missing, naming what to do.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("WITMED_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        dir.join("physionet2012/set-a").is_dir(),
        "shared data not found at {}: set WITMED_DATA_DIR to the directory holding physionet2012/ and fhir-r4-synthea/",
        dir.display()
    );
    dir
}

pub fn set_a() -> PathBuf {
    data_dir().join("physionet2012/set-a")
}

pub fn outcomes_a() -> PathBuf {
    data_dir().join("physionet2012/Outcomes-a.txt")
}

pub fn fhir_dir() -> PathBuf {
    data_dir().join("fhir-r4-synthea")
}

/// The binary under test: `witmed` in the hospital CLI's tests (cli/tests,
/// which include this file), `witmed-lab` (the same command line plus the
/// lab's commands) in the lab's.
pub fn binary() -> &'static str {
    option_env!("CARGO_BIN_EXE_witmed-lab")
        .or(option_env!("CARGO_BIN_EXE_witmed"))
        .expect("built as a test of the witmed or witmed-lab package")
}

/// A `witmed` command.
pub fn witmed() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_remove("WITMED_DATA_DIR");
    cmd.env_remove("WITMED_NODE_DIR");
    cmd
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A command's output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value after `label` on the first output line that starts with it.
pub fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
}

/// The public key `keygen` printed.
pub fn public_key(out: &str) -> String {
    field(out, "public key: ").to_string()
}

/// Runs `witmed args` (which ask for `--json`) and parses stdout.
pub fn json_of(args: &[&str]) -> serde_json::Value {
    let out = run_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// How the tests build a cluster unless they say otherwise: the binary
/// under test, everyone consenting, no outcomes, no proxies.
pub fn cluster_options(root: &Path) -> witmed_simnet::cluster::Options {
    witmed_simnet::cluster::Options {
        bin: PathBuf::from(binary()),
        root: root.to_path_buf(),
        consent_rate: 1.0,
        outcomes: None,
        proxied: false,
        node_env: vec![],
    }
}

/// Runs `witmed args`, asserting success; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = witmed().args(args).output().expect("witmed runs");
    assert!(
        out.status.success(),
        "witmed {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `witmed args` expecting failure; returns the output.
pub fn run_fail(args: &[&str]) -> Output {
    let out = witmed().args(args).output().expect("witmed runs");
    assert!(!out.status.success(), "witmed {args:?} should have failed");
    out
}

/// Runs `witmed args --json` and parses stdout.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&run_ok(&all)).expect("JSON output")
}

/// Creates a node in `dir` named `name`.
pub fn init_node(dir: &Path, name: &str) {
    run_ok(&[
        "node",
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--name",
        name,
    ]);
}

/// `witmed consent simulate` on a demonstration node: every patient consents to HMB.
pub fn simulate_consent(node: &Path, seed: &str) -> String {
    run_ok(&[
        "consent",
        "simulate",
        "--data-dir",
        node.to_str().unwrap(),
        "--rate",
        "1.0",
        "--purposes",
        "HMB",
        "--seed",
        seed,
    ])
}

/// `witmed credential issue` as an authority runs it: Bob of University,
/// project p1, certified as `researcher_id` for `purposes`.
pub fn issue_credential(
    authority_key: &Path,
    researcher_key: &Path,
    researcher_id: &str,
    purposes: &str,
    out: &Path,
) {
    run_ok(&[
        "credential",
        "issue",
        "--authority-key",
        authority_key.to_str().unwrap(),
        "--researcher-key",
        researcher_key.to_str().unwrap(),
        "--researcher-id",
        researcher_id,
        "--name",
        "Bob",
        "--institution",
        "University",
        "--project",
        "p1",
        "--purposes",
        purposes,
        "--not-for-profit",
        "--out",
        out.to_str().unwrap(),
    ]);
}

/// A node with some set-a patients and their outcomes, every one consenting
/// to HMB (simulated), trusting one authority (`authority.key`), and
/// researcher bob (`bob.key`) with an HMB credential (`bob.credential`),
/// all in one temporary directory.
pub struct ResearchNode {
    pub tmp: tempfile::TempDir,
    pub node: PathBuf,
    /// The authority's public key (hex).
    pub authority: String,
    /// The patients' record files.
    pub set: PathBuf,
}

impl ResearchNode {
    /// Sets it up with `patients` patients, through the command line.
    pub fn new(patients: usize) -> ResearchNode {
        let tmp = tempfile::tempdir().unwrap();
        let authority_key = tmp.path().join("authority.key");
        let authority = public_key(&run_ok(&[
            "keygen",
            "--role",
            "authority",
            "--out",
            s(&authority_key),
        ]));
        let w = ResearchNode {
            node: tmp.path().join("node"),
            set: small_set(tmp.path(), patients),
            tmp,
            authority,
        };
        run_ok(&[
            "node",
            "init",
            "--data-dir",
            s(&w.node),
            "--name",
            "General",
            "--trust-issuer",
            &w.authority,
            // Consent is simulated: the init policy (serial 2) allows it.
            "--allow-demonstration-data",
        ]);
        run_ok(&[
            "import",
            "physionet",
            "--data-dir",
            s(&w.node),
            s(&w.set),
            "--outcomes",
            s(&outcomes_a()),
        ]);
        simulate_consent(&w.node, "3");
        run_ok(&[
            "keygen",
            "--role",
            "researcher",
            "--out",
            s(&w.path("bob.key")),
        ]);
        issue_credential(
            &authority_key,
            &w.path("bob.key"),
            "bob",
            "HMB",
            &w.path("bob.credential"),
        );
        w
    }

    /// A file in its temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The fenced `sh` blocks of a README section, as commands: continuation
/// lines joined, comments and blank lines dropped.
pub fn readme_commands(section_title: &str, next_title: &str) -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let start = readme.find(section_title).expect("README section");
    let end = start
        + readme[start..]
            .find(next_title)
            .expect("next README section");
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            _ if !in_sh => {}
            l if l.starts_with('#') || l.is_empty() => {}
            l => {
                let (joined, more) = match l.strip_suffix('\\') {
                    Some(head) => (head, true),
                    None => (l, false),
                };
                pending.push_str(joined);
                pending.push(' ');
                if !more {
                    commands.push(std::mem::take(&mut pending).trim().to_owned());
                }
            }
        }
    }
    commands
}

/// The first TOML block of a README section, e.g. the query file example.
pub fn readme_toml(section_title: &str) -> String {
    let readme = include_str!("../../../README.md");
    let start = readme.find(section_title).expect("README section");
    let body = &readme[start..];
    let open = body.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let close = open + body[open..].find("```").unwrap();
    body[open..close].to_owned()
}

/// Runs one README line through `sh -c` in `cwd`, with `witmed` on PATH.
pub fn sh_line(line: &str, cwd: &Path) -> Output {
    let path = format!(
        "{}:{}",
        witmed_on_path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path)
        .env("WITMED_DATA_DIR", data_dir())
        .env_remove("WITMED_NODE_DIR")
        .output()
        .unwrap()
}

/// A directory holding `witmed`: the binary under test under that name (a
/// link to `witmed-lab` in the lab's tests), so README lines run as written.
pub fn witmed_on_path() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("witmed-on-path-{}", std::process::id()));
    let link = dir.join("witmed");
    if !link.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        // Another test of this process may have made it meanwhile.
        let _ = std::os::unix::fs::symlink(binary(), &link);
    }
    dir
}

pub fn value_after<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
}

/// The pseudonym and the node id of the first patient of `set` at `node`, as `patient lookup --json` gives them.
pub fn first_patient(node: &Path, set: &Path) -> (String, String) {
    let record_id = physionet_files(set)[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let found = json_of(&[
        "patient",
        "lookup",
        "--data-dir",
        s(node),
        "--source",
        "physionet2012",
        "--source-id",
        &record_id,
        "--json",
    ]);
    (
        found["pseudonym"].as_str().unwrap().to_owned(),
        found["node_id"].as_str().unwrap().to_owned(),
    )
}

/// What a PhysioNet set holds, counted straight from the files by the
/// documented rule (independent of the importer's parser).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PhysionetCount {
    pub patients: u64,
    pub observations: u64,
}

const DESCRIPTORS: [&str; 5] = ["RecordID", "Age", "Gender", "Height", "ICUType"];

/// Counts patients (files with a RecordID) and valid time-series rows.
pub fn count_physionet(files: &[PathBuf]) -> PhysionetCount {
    let mut count = PhysionetCount::default();
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        count.patients += 1;
        count.observations += count_rows(&text);
    }
    count
}

fn count_rows(text: &str) -> u64 {
    let mut leading = true;
    let mut n = 0;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 3 {
            continue;
        }
        let (time, param, value) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        let is_descriptor =
            DESCRIPTORS.contains(&param) || (param == "Weight" && leading && time == "00:00");
        if !is_descriptor {
            leading = false;
        }
        if is_descriptor || !valid_time(time) {
            continue;
        }
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v != -1.0 => n += 1,
            _ => {}
        }
    }
    n
}

fn valid_time(t: &str) -> bool {
    let Some((h, m)) = t.split_once(':') else {
        return false;
    };
    h.parse::<u32>().is_ok() && m.parse::<u32>().is_ok_and(|m| m < 60)
}

/// The set's record files, sorted.
pub fn physionet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

/// Copies the first `n` files of set-a into a fresh set directory under `into`.
pub fn small_set(into: &Path, n: usize) -> PathBuf {
    let dir = into.join("set-small");
    std::fs::create_dir_all(&dir).unwrap();
    for f in physionet_files(&set_a()).into_iter().take(n) {
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// Checks a combined federated count without flakiness.
///
/// A 95% interval misses the exact answer one time in twenty by design, so a
/// test asserting it would fail that often. Instead the test bounds the error
/// at level 1e-6 with the same rigorous half-width the client uses, for
/// `hospitals` answers each with discrete Laplace noise of scale 1/epsilon,
/// and checks that the reported 95% interval surrounds the released value.
pub fn assert_count_near(answer: &serde_json::Value, exact: f64, hospitals: usize, epsilon: f64) {
    use witmed_protocol::answer::Mechanism;
    let value = answer["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no value: {answer}"));
    let ci = answer["ci95"]
        .as_array()
        .unwrap_or_else(|| panic!("no interval: {answer}"));
    let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(
        lo <= value && value <= hi,
        "value outside its own interval: {answer}"
    );
    let noises = vec![(Mechanism::DiscreteLaplace, 1.0 / epsilon); hospitals];
    let h = witmed_protocol::interval::noise_sum_halfwidth(&noises, 1e-6);
    assert!(
        (value - exact).abs() <= h,
        "count {value} is {} from the exact {exact}, beyond the 1e-6 bound {h}: {answer}",
        (value - exact).abs()
    );
}

/// Checks a combined federated mean of values in `bounds` at level 1e-6 (see [`assert_count_near`]).
pub fn assert_mean_near(
    answer: &serde_json::Value,
    exact: f64,
    patients: f64,
    hospitals: usize,
    epsilon: f64,
    bounds: (f64, f64),
) {
    use witmed_protocol::answer::Mechanism;
    let value = answer["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no value: {answer}"));
    let mid = (bounds.0 + bounds.1) / 2.0;
    // Half the epsilon to each of the sum (sensitivity: half the bounds' width) and the count.
    let sum_noises = vec![
        (
            Mechanism::Laplace,
            (bounds.1 - bounds.0) / 2.0 / (epsilon / 2.0)
        );
        hospitals
    ];
    let count_noises = vec![(Mechanism::DiscreteLaplace, 1.0 / (epsilon / 2.0)); hospitals];
    let h_sum = witmed_protocol::interval::noise_sum_halfwidth(&sum_noises, 1e-6) * 1.01;
    let h_count = witmed_protocol::interval::noise_sum_halfwidth(&count_noises, 1e-6);
    let bound = (h_sum + (exact - mid).abs() * h_count) / (patients - h_count);
    assert!(
        (value - exact).abs() <= bound,
        "mean {value} is {} from the exact {exact}, beyond the 1e-6 bound {bound}: {answer}",
        (value - exact).abs()
    );
}

/// Exact facts about the patients aged 65 or more, counted straight from
/// PhysioNet files (independently of the importer): how many there are, the
/// mean of their per-patient mean heart rate clamped to 30-200, and how many
/// of them have a heart rate at all.
#[derive(Debug, Clone, Copy)]
pub struct Over65 {
    pub count: f64,
    pub mean_hr: f64,
    pub with_hr: f64,
}

pub fn over_65(records: &[PathBuf]) -> Over65 {
    let (mut count, mut hr_sum, mut with_hr) = (0.0, 0.0, 0.0);
    for path in records {
        let text = std::fs::read_to_string(path).unwrap();
        let mut age = None;
        let mut hrs = Vec::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 3 {
                continue;
            }
            let v: f64 = match f[2].trim().parse() {
                Ok(v) if v != -1.0 => v,
                _ => continue,
            };
            match f[1] {
                "Age" => age = Some(v),
                "HR" => hrs.push(v),
                _ => {}
            }
        }
        if age.is_some_and(|a| a >= 65.0) {
            count += 1.0;
            if !hrs.is_empty() {
                hr_sum += (hrs.iter().sum::<f64>() / hrs.len() as f64).clamp(30.0, 200.0);
                with_hr += 1.0;
            }
        }
    }
    Over65 {
        count,
        mean_hr: hr_sum / with_hr,
        with_hr,
    }
}

/// Each record's age (the `Age` descriptor), read straight from the files; missing ages (-1) are skipped.
pub fn ages(records: &[PathBuf]) -> Vec<f64> {
    records
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                (f.len() == 3 && f[1] == "Age")
                    .then(|| f[2].trim().parse::<f64>().ok())
                    .flatten()
                    .filter(|a| *a >= 0.0)
            })
        })
        .collect()
}

/// A federation of real nodes in encrypted mode, for the encrypted tests.
pub struct EncryptedWorld {
    pub tmp: tempfile::TempDir,
    pub cluster: witmed_simnet::cluster::Cluster,
    /// The set-a records split among the hospitals.
    pub records: Vec<PathBuf>,
    pub study_dir: PathBuf,
    pub study_id: String,
}

/// `n` hospitals over the first `files` set-a records, all consenting, running,
/// with a study published to every one. `noise_off` switches noise shares off
/// (needs the `insecure-noise-off` feature).
pub fn encrypted_world(n: usize, files: usize, noise_off: bool) -> EncryptedWorld {
    use witmed_simnet::cluster::{self, Cluster, Options};
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(files).collect();
    let node_env = if noise_off {
        vec![(
            witmed_node::encrypted::NOISE_OFF_ENV.to_string(),
            "1".to_string(),
        )]
    } else {
        vec![]
    };
    let options = Options {
        bin: PathBuf::from(binary()),
        root: tmp.path().join("cluster"),
        consent_rate: 1.0,
        outcomes: None,
        proxied: false,
        node_env,
    };
    let mut cluster = Cluster::build(&options, &cluster::split(&records, n)).unwrap();
    cluster.start_all().unwrap();
    let study_dir = tmp.path().join("study");
    let study_id = cluster.study_keygen(&study_dir).unwrap();
    let published = cluster.publish_study(&study_dir).unwrap();
    assert_eq!(published.matches(" installed ").count(), n, "{published}");
    EncryptedWorld {
        tmp,
        cluster,
        records,
        study_dir,
        study_id,
    }
}

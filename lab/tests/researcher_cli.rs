//! The researcher's side of the `witmed` command line as its users meet it: `--json` of federated and encrypted queries, budget refusals, histogram labels.
//!
//! These need patients with consent, so they run `witmed-lab` (the same
//! command line plus `consent simulate`); the hospital binary's own tests are
//! in `cli/tests/cli_as_a_user.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

mod federation {
    //! `query run` and `study` against real `witmed node run` processes on 127.0.0.1.

    use super::*;
    use witmed_simnet::cluster::{Cluster, Options, Spec};

    /// Two hospitals: one with 60 records, one with a single record (below any minimum cohort).
    fn two_hospitals(root: &Path) -> Cluster {
        let records = physionet_files(&set_a());
        let spec = |name: &str, range: std::ops::Range<usize>| Spec {
            name: name.to_owned(),
            records: records[range].to_vec(),
            misbehave: None,
        };
        let options = Options {
            outcomes: Some(outcomes_a()),
            ..cluster_options(root)
        };
        let mut c =
            Cluster::build(&options, &[spec("Large", 0..60), spec("Tiny", 60..61)]).unwrap();
        c.start_all().unwrap();
        c
    }

    fn write(root: &Path, name: &str, text: &str) -> PathBuf {
        let path = root.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn hospital<'a>(answer: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        answer["hospitals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {answer}"))
    }

    fn researcher_args(c: &Cluster) -> Vec<String> {
        [
            "--directory",
            s(&c.directory),
            "--authority",
            &c.consortium_authority,
            "--key",
            s(&c.researcher_key),
            "--credential",
            s(&c.credential),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    #[test]
    fn query_run_json_reports_each_hospital_and_a_suppressed_one_as_suppressed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = two_hospitals(tmp.path());
        let query = write(
            tmp.path(),
            "count.toml",
            "version = 1\nid = \"cli-count\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
             [cohort]\n[privacy]\nmode = \"dp\"\nepsilon = 1.0\n",
        );
        let answer = c.query(&query, "8s").unwrap();
        assert_eq!(answer["mode"], "dp", "{answer}");
        let large = hospital(&answer, "Large");
        assert_eq!(large["status"], "answered", "{answer}");
        assert_eq!(large["suppressed"], false);
        assert!(large["value"].as_f64().is_some(), "{answer}");
        assert!(large["budget_left"].as_f64().is_some(), "{answer}");
        let tiny = hospital(&answer, "Tiny");
        assert_eq!(tiny["status"], "suppressed", "{answer}");
        assert_eq!(tiny["suppressed"], true);
        assert!(
            tiny["budget_left"].as_f64().is_some(),
            "a suppressed answer still charges: {answer}"
        );
        // Both answered and were charged; only one released a value.
        assert_eq!(answer["hospitals_answered"], 2, "{answer}");
        assert_eq!(answer["hospitals_suppressed"], 1, "{answer}");
        for key in [
            "value",
            "ci95",
            "values",
            "ci95s",
            "epsilon_spent",
            "delta_spent",
            "share_scale",
        ] {
            assert!(
                answer.get(key).is_some(),
                "{key} missing from the shared shape: {answer}"
            );
        }
    }

    #[test]
    fn study_json_and_a_non_member_aggregator_names_the_members() {
        let tmp = tempfile::tempdir().unwrap();
        let c = two_hospitals(tmp.path());
        let study_dir = tmp.path().join("study");
        let made = json_of(&["study", "keygen", "--out", s(&study_dir), "--json"]);
        let study_id = made["study_id"].as_str().expect("study_id").to_owned();
        assert_eq!(made["dir"], s(&study_dir));

        let mut publish: Vec<String> = ["study", "publish", "--study", s(&study_dir), "--json"]
            .map(String::from)
            .to_vec();
        publish.extend(researcher_args(&c));
        let publish: Vec<&str> = publish.iter().map(String::as_str).collect();
        let published = json_of(&publish);
        assert_eq!(published["study_id"], study_id.as_str(), "{published}");
        let members = published["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "{published}");
        assert!(
            members.iter().all(|m| m["installed"] == true),
            "{published}"
        );

        let query = write(
            tmp.path(),
            "enc.toml",
            &format!(
                "version = 1\nid = \"cli-enc\"\npurpose = \"HMB\"\naggregate = \"count\"\n[cohort]\n\
                 [privacy]\nmode = \"encrypted\"\nepsilon = 1.0\naggregator = \"north\"\n\
                 study = \"{study_id}\"\nmin_hospitals = 2\n"
            ),
        );
        let mut run: Vec<String> = [
            "query",
            "run",
            "--query",
            s(&query),
            "--study",
            s(&study_dir),
        ]
        .map(String::from)
        .to_vec();
        run.extend(researcher_args(&c));
        let run: Vec<&str> = run.iter().map(String::as_str).collect();
        let out = run_fail(&run);
        let stderr = text(&out.stderr);
        assert!(stderr.contains("error[unknown_aggregator]"), "{stderr}");
        assert!(stderr.contains("\"north\""), "{stderr}");
        assert!(
            stderr.contains("\"Large\"") && stderr.contains("\"Tiny\""),
            "members not listed: {stderr}"
        );
    }
}

/// A demonstration node with 20 consenting set-a patients and a researcher credential.
struct Researcher {
    tmp: tempfile::TempDir,
    node: PathBuf,
}

impl Researcher {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn query_args(&self, query: &Path) -> Vec<String> {
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
            s(query),
        ]
        .map(String::from)
        .to_vec()
    }

    fn ask(&self, query: &Path) -> Output {
        witmed().args(self.query_args(query)).output().unwrap()
    }
}

fn researcher_at_a_node() -> Researcher {
    let tmp = tempfile::tempdir().unwrap();
    let r = Researcher {
        node: tmp.path().join("node"),
        tmp,
    };
    let authority = json_of(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        s(&r.path("authority.key")),
        "--json",
    ]);
    run_ok(&[
        "node",
        "init",
        "--data-dir",
        s(&r.node),
        "--name",
        "General",
        "--trust-issuer",
        authority["public_key"].as_str().unwrap(),
        "--allow-demonstration-data",
    ]);
    let set = small_set(r.tmp.path(), 20);
    run_ok(&["import", "physionet", "--data-dir", s(&r.node), s(&set)]);
    run_ok(&[
        "consent",
        "simulate",
        "--data-dir",
        s(&r.node),
        "--rate",
        "1.0",
        "--purposes",
        "HMB",
    ]);
    run_ok(&[
        "keygen",
        "--role",
        "researcher",
        "--out",
        s(&r.path("bob.key")),
        "--public-out",
        s(&r.path("bob.pub")),
    ]);
    run_ok(&[
        "credential",
        "issue",
        "--authority-key",
        s(&r.path("authority.key")),
        "--researcher-key",
        s(&r.path("bob.pub")),
        "--researcher-id",
        "orcid:bob",
        "--name",
        "Bob",
        "--institution",
        "U",
        "--project",
        "p",
        "--purposes",
        "HMB",
        "--not-for-profit",
        "--out",
        s(&r.path("bob.credential")),
    ]);
    r
}

fn count_query(r: &Researcher, id: &str, epsilon: f64) -> PathBuf {
    let path = r.path(&format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n[cohort]\n\
             [privacy]\nmode = \"dp\"\nepsilon = {epsilon}\n"
        ),
    )
    .unwrap();
    path
}

fn looks_like_iso_utc(text: &str) -> bool {
    text.as_bytes().windows(20).any(|w| {
        let w = std::str::from_utf8(w).unwrap_or("");
        w.len() == 20
            && w.as_bytes()[4] == b'-'
            && w.as_bytes()[10] == b'T'
            && w.ends_with('Z')
            && w[..4].chars().all(|c| c.is_ascii_digit())
    })
}

#[test]
fn an_exhausted_budget_says_when_it_renews_and_the_refusal_is_audited() {
    let r = researcher_at_a_node();
    let mut refusal = None;
    for i in 0..6 {
        let out = r.ask(&count_query(&r, &format!("spend-{i}"), 4.0));
        if !out.status.success() {
            refusal = Some(text(&out.stderr));
            break;
        }
    }
    let refusal = refusal.expect("a budget of 10 refuses a third query of epsilon 4");
    assert!(refusal.contains("error[budget_exhausted]"), "{refusal}");
    assert!(refusal.contains("enough is back at "), "{refusal}");
    assert!(
        looks_like_iso_utc(&refusal),
        "the renewal time is not ISO 8601: {refusal}"
    );

    let audit = json_of(&["audit", "--data-dir", s(&r.node), "--json"]);
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "query.refused")
        .count();
    assert!(
        refused >= 1,
        "the budget refusal is not in the audit log: {audit}"
    );
    let readable = run_ok(&["audit", "--data-dir", s(&r.node)]);
    assert!(
        looks_like_iso_utc(&readable),
        "audit times are not ISO 8601: {readable}"
    );
}

#[test]
fn a_replayed_query_id_labels_its_budget_as_of_the_first_answer() {
    let r = researcher_at_a_node();
    let query = count_query(&r, "replay", 1.0);
    let first = r.ask(&query);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let spend = r.ask(&count_query(&r, "other", 1.0));
    assert!(spend.status.success(), "{}", text(&spend.stderr));
    let replay = text(&r.ask(&query).stdout);
    let line = replay
        .lines()
        .find(|l| l.contains("budget left"))
        .unwrap_or_else(|| panic!("{replay}"));
    assert!(line.contains("as of the first answer"), "{line}");
    assert!(looks_like_iso_utc(line), "{line}");
    assert_eq!(
        text(&first.stdout),
        replay,
        "a replay returns the first answer as it was"
    );
}

#[test]
fn histogram_bins_are_labelled_by_their_edges() {
    let r = researcher_at_a_node();
    let path = r.path("hist.toml");
    std::fs::write(
        &path,
        "version = 1\nid = \"ages\"\npurpose = \"HMB\"\n[aggregate.histogram]\n\
         edges = [0.0, 50.0, 70.0, 120.0]\n[feature.attribute]\nname = \"age\"\n[cohort]\n\
         [privacy]\nmode = \"dp\"\nepsilon = 1.0\n",
    )
    .unwrap();
    let out = r.ask(&path);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    for bin in ["[0, 50)", "[50, 70)", "[70, 120]"] {
        assert!(stdout.contains(bin), "no bin {bin}: {stdout}");
    }
}

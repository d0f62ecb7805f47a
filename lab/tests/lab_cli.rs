//! `witmed-lab` is the whole `witmed` command line plus the lab's commands, and its faults are refused by name.

mod common;

use common::*;

#[test]
fn the_lab_binary_has_every_witmed_command_and_its_own() {
    let help = run_ok(&["--help"]);
    for command in [
        "node",
        "import",
        "keygen",
        "patient",
        "consent",
        "credential",
        "policy",
        "query",
        "study",
        "consortium",
        "audit",
        "demo",
        "bench",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "no {command} in:\n{help}"
        );
    }
    assert!(run_ok(&["consent", "--help"]).contains("simulate"));
    assert!(run_ok(&["node", "run", "--help"]).contains("--fault"));
    for group in ["federation", "encrypted", "dp-error", "query", "import"] {
        assert!(
            run_ok(&["bench", "--help"]).contains(group),
            "bench {group}"
        );
    }
}

#[test]
fn an_unknown_fault_is_refused_naming_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    init_node(&node, "General");
    let out = run_fail(&[
        "node",
        "run",
        "--data-dir",
        node.to_str().unwrap(),
        "--fault",
        "lie-a-little",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown fault \"lie-a-little\"") && stderr.contains("bad-signature"),
        "{stderr}"
    );
}

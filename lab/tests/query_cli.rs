//! End-to-end: `witmed query local` through the CLI, with credentials, policy and budget.

mod common;

use std::path::Path;

use common::*;

/// A node with 60 set-a patients, all consenting (simulated), trusting one authority; bob credentialed.
type World = ResearchNode;

fn world() -> World {
    ResearchNode::new(60)
}

fn issue(w: &World, authority: &str, researcher: &str, purposes: &str, out: &str) {
    issue_credential(
        &w.path(authority),
        &w.path(researcher),
        researcher,
        purposes,
        &w.path(out),
    );
}

/// An HMB count at epsilon 1 with id "count-1".
fn count_toml() -> String {
    witmed_protocol::examples::count("count-1", "HMB", 1.0)
}

fn query_args<'a>(w: &'a World, key: &'a Path, cred: &'a Path, query: &'a Path) -> Vec<&'a str> {
    vec![
        "query",
        "local",
        "--data-dir",
        s(&w.node),
        "--key",
        s(key),
        "--credential",
        s(cred),
        "--query",
        s(query),
    ]
}

#[test]
fn a_count_answers_with_interval_noise_scale_epsilon_and_budget_and_replays_identically() {
    let w = world();
    let query = w.path("count.toml");
    std::fs::write(&query, count_toml()).unwrap();
    let (key, cred) = (w.path("bob.key"), w.path("bob.credential"));
    let first = run_json(&query_args(&w, &key, &cred, &query));
    let value = first["value"].as_f64().unwrap();
    let ci = first["ci95"].as_array().unwrap();
    assert!(
        ci[0].as_f64().unwrap() < value && value < ci[1].as_f64().unwrap(),
        "{first}"
    );
    assert!(
        (first["noise_scale"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{first}"
    );
    assert!((first["epsilon_spent"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!(
        (first["budget_left"].as_f64().unwrap() - 9.0).abs() < 1e-9,
        "default budget is 10: {first}"
    );
    assert_eq!(first["suppressed"], false);
    assert!(
        (value - 60.0).abs() < 15.0,
        "60 consenting patients: {first}"
    );

    let again = run_json(&query_args(&w, &key, &cred, &query));
    assert_eq!(
        again["value"], first["value"],
        "a replay returns the stored answer"
    );
    assert_eq!(again["budget_left"], first["budget_left"]);

    let text = run_ok(&query_args(&w, &key, &cred, &query));
    assert!(
        text.contains("95% interval") && text.contains("budget left"),
        "{text}"
    );
}

fn refused(w: &World, key: &Path, cred: &Path, query: &Path, code: &str) {
    let out = run_fail(&query_args(w, key, cred, query));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(code), "expected [{code}]: {stderr}");
}

#[test]
fn queries_without_a_valid_credential_or_purpose_are_refused() {
    let w = world();
    let query = w.path("count.toml");
    std::fs::write(&query, count_toml()).unwrap();

    // Credential from an authority the node does not trust.
    run_ok(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        s(&w.path("rogue.key")),
    ]);
    issue(&w, "rogue.key", "bob.key", "HMB", "rogue.credential");
    refused(
        &w,
        &w.path("bob.key"),
        &w.path("rogue.credential"),
        &query,
        "credential_refused",
    );

    // Bob's credential presented with another researcher's key.
    run_ok(&[
        "keygen",
        "--role",
        "researcher",
        "--out",
        s(&w.path("eve.key")),
    ]);
    refused(
        &w,
        &w.path("eve.key"),
        &w.path("bob.credential"),
        &query,
        "policy_refused",
    );

    // A purpose the credential does not approve (GRU is broader than HMB).
    let gru = w.path("gru.toml");
    std::fs::write(&gru, count_toml().replace("\"HMB\"", "\"GRU\"")).unwrap();
    refused(
        &w,
        &w.path("bob.key"),
        &w.path("bob.credential"),
        &gru,
        "policy_refused",
    );

    // An altered query under a used id.
    let (key, cred) = (w.path("bob.key"), w.path("bob.credential"));
    run_ok(&query_args(&w, &key, &cred, &query));
    let altered = w.path("altered.toml");
    std::fs::write(
        &altered,
        count_toml().replace("epsilon = 1.0", "epsilon = 0.5"),
    )
    .unwrap();
    refused(&w, &key, &cred, &altered, "query_id_reused");

    // Exhausted budget (10 by default): the refusal says how much is left.
    let big = w.path("big.toml");
    std::fs::write(
        &big,
        count_toml()
            .replace("count-1", "count-2")
            .replace("epsilon = 1.0", "epsilon = 9.5"),
    )
    .unwrap();
    refused(&w, &key, &cred, &big, "budget_exhausted");
}

//! End-to-end consent through the CLI: enrol, grant, submit, bad inputs refused, revoke, audit.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use witmed_crypto::{KeyPair, Role};
use witmed_node::node::Node;
use witmed_node::{consent_ops, engine};
use witmed_policies::credential::VerifiedCredential;
use witmed_policies::evaluate::{Request, Use};
use witmed_protocol::query::Query;

struct Setup {
    tmp: tempfile::TempDir,
    node: PathBuf,
    pseudonym: String,
    node_id: String,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    fn dir(&self) -> &str {
        self.node.to_str().unwrap()
    }
}

/// A node with 5 patients; alice's key enrolled for the first one.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    init_node(&node, "General");
    let set = small_set(tmp.path(), 5);
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let (pseudonym, node_id) = first_patient(&node, &set);
    let setup = Setup {
        pseudonym,
        node_id,
        node,
        tmp,
    };
    let alice = setup.path("alice.key");
    run_ok(&["keygen", "--role", "patient", "--out", s(&alice)]);
    run_ok(&[
        "patient",
        "enrol",
        "--data-dir",
        setup.dir(),
        "--patient",
        &setup.pseudonym,
        "--key-file",
        s(&alice),
    ]);
    setup
}

fn grant(setup: &Setup, key: &str, node_id: &str, out: &str) -> PathBuf {
    let out = setup.path(out);
    run_ok(&[
        "consent",
        "grant",
        "--key",
        s(&setup.path(key)),
        "--node",
        node_id,
        "--patient",
        &setup.pseudonym,
        "--purposes",
        "HMB",
        "--out",
        s(&out),
    ]);
    out
}

fn token_count(setup: &Setup) -> u64 {
    run_json(&["consent", "list", "--data-dir", setup.dir()])["counts"]["tokens"]
        .as_u64()
        .unwrap()
}

fn submit_fails(setup: &Setup, file: &Path, code: &str) {
    let out = run_fail(&["consent", "submit", "--data-dir", setup.dir(), s(file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(code), "expected [{code}] in: {stderr}");
}

#[test]
fn bad_consent_files_are_refused_with_specific_errors_and_nothing_is_stored() {
    let setup = setup();
    let good = grant(&setup, "alice.key", &setup.node_id, "alice.consent");
    let text = std::fs::read_to_string(&good).unwrap();

    let truncated = setup.path("truncated.consent");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    submit_fails(&setup, &truncated, "malformed");

    // Alter one character of the signed payload.
    let altered = setup.path("altered.consent");
    let payload_at = text.find("\"payload\": \"").unwrap() + 14;
    let mut bytes = text.clone().into_bytes();
    bytes[payload_at] = if bytes[payload_at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    std::fs::write(&altered, bytes).unwrap();
    submit_fails(&setup, &altered, "bad_signature");

    // A token made for another node is refused here.
    let other_id = KeyPair::generate(Role::Node).unwrap().public().to_hex();
    let elsewhere = grant(&setup, "alice.key", &other_id, "elsewhere.consent");
    submit_fails(&setup, &elsewhere, "other_node");

    // Signed by a key that is not the enrolled one.
    run_ok(&[
        "keygen",
        "--role",
        "patient",
        "--out",
        s(&setup.path("mallory.key")),
    ]);
    let forged = grant(&setup, "mallory.key", &setup.node_id, "forged.consent");
    submit_fails(&setup, &forged, "wrong_patient_key");

    let oversized = setup.path("oversized.consent");
    std::fs::write(
        &oversized,
        " ".repeat(witmed_policies::MAX_SIGNED_BYTES + 1) + &text,
    )
    .unwrap();
    submit_fails(&setup, &oversized, "too_large");

    assert_eq!(token_count(&setup), 0, "no refused file was stored");
    run_ok(&["consent", "submit", "--data-dir", setup.dir(), s(&good)]);
    assert_eq!(token_count(&setup), 1);
    submit_fails(&setup, &good, "duplicate_token");
}

/// Patients of `node` eligible for an HMB count now, as the engine selects them.
fn eligible_now(node: &Node) -> usize {
    let authority = KeyPair::from_seed(Role::Authority, &[5; 32]);
    let researcher = KeyPair::from_seed(Role::Researcher, &[6; 32]);
    let now = witmed_node::unix_now();
    let envelope = witmed_lab::setup::credential(&authority, researcher.public(), &["HMB"], now);
    let credential: VerifiedCredential =
        witmed_policies::verify_credential(&envelope, &[authority.public()], now).unwrap();
    let query = Query::from_toml(&witmed_protocol::examples::count("q", "HMB", 1.0)).unwrap();
    let request = Request::from_query(&query, researcher.public());
    let use_ = Use::new(node.id(), &request, &credential).unwrap();
    engine::select_values(node, &query, &use_, now)
        .unwrap()
        .len()
}

#[test]
fn a_submitted_revocation_excludes_the_patient_from_the_very_next_query() {
    let setup = setup();
    let token = grant(&setup, "alice.key", &setup.node_id, "alice.consent");
    run_ok(&["consent", "submit", "--data-dir", setup.dir(), s(&token)]);
    let revocation = setup.path("alice.revoke");
    run_ok(&[
        "consent",
        "revoke",
        "--key",
        s(&setup.path("alice.key")),
        "--token",
        s(&token),
        "--out",
        s(&revocation),
    ]);

    // In a running node: the next query after the revocation leaves the patient out.
    {
        let node = Node::open(&setup.node, witmed_node::unix_now()).unwrap();
        assert_eq!(eligible_now(&node), 1, "alice consented");
        let text = std::fs::read_to_string(&revocation).unwrap();
        consent_ops::submit(&node, &text, witmed_node::unix_now()).unwrap();
        assert_eq!(
            eligible_now(&node),
            0,
            "the revocation applies to the very next query"
        );
    }
    // And after a restart, from the store.
    let node = Node::open(&setup.node, witmed_node::unix_now()).unwrap();
    assert_eq!(eligible_now(&node), 0);
    drop(node);

    // A revocation signed by another patient's key is refused.
    let listed = run_json(&["consent", "list", "--data-dir", setup.dir()]);
    assert_eq!(listed["counts"]["revoked"], 1);
    let audit = run_json(&["audit", "--data-dir", setup.dir()]);
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["patient.enrolled", "consent.granted", "consent.revoked"] {
        assert!(kinds.contains(&kind), "audit log lacks {kind}: {kinds:?}");
    }
}

#[test]
fn policies_must_be_signed_by_the_hospital_key_and_changes_are_audited() {
    let setup = setup();
    let shown = run_ok(&["policy", "show", "--data-dir", setup.dir()]);
    let edited = shown
        .replace("serial = 1", "serial = 2")
        .replace("min_cohort = 10", "min_cohort = 3");
    assert!(
        edited.contains("serial = 2") && edited.contains("min_cohort = 3"),
        "{shown}"
    );
    let policy_toml = setup.path("policy.toml");
    std::fs::write(&policy_toml, edited).unwrap();

    // Signed with a hospital key other than the node's: refused at install.
    run_ok(&[
        "keygen",
        "--role",
        "hospital",
        "--out",
        s(&setup.path("rogue.key")),
    ]);
    let rogue = setup.path("rogue.signed");
    run_ok(&[
        "policy",
        "sign",
        "--key",
        s(&setup.path("rogue.key")),
        "--policy",
        s(&policy_toml),
        "--out",
        s(&rogue),
    ]);
    let out = run_fail(&["policy", "install", "--data-dir", setup.dir(), s(&rogue)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hospital"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let signed = setup.path("policy.signed");
    let hospital_key = setup.node.join("hospital.key");
    run_ok(&[
        "policy",
        "sign",
        "--key",
        s(&hospital_key),
        "--policy",
        s(&policy_toml),
        "--out",
        s(&signed),
    ]);
    run_ok(&["policy", "install", "--data-dir", setup.dir(), s(&signed)]);
    assert!(run_ok(&["policy", "show", "--data-dir", setup.dir()]).contains("min_cohort = 3"));
    // Replaying the same (now stale) policy is refused.
    run_fail(&["policy", "install", "--data-dir", setup.dir(), s(&signed)]);

    // A policy file altered on disk stops the node from opening.
    let installed = setup.node.join("policy.signed");
    let text = std::fs::read_to_string(&installed).unwrap();
    std::fs::write(&installed, std::fs::read_to_string(&rogue).unwrap()).unwrap();
    let out = run_fail(&["node", "status", "--data-dir", setup.dir()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy"));
    std::fs::write(&installed, text).unwrap();

    let audit = run_json(&["audit", "--data-dir", setup.dir(), "--kind", "policy."]);
    assert_eq!(
        audit.as_array().unwrap().len(),
        2,
        "init and one install: {audit}"
    );
}

//! A patient's privacy account, cap and audit view from the command line, as staff and the patient run them: stopped node and running node alike.

#[path = "../../lab/tests/common/mod.rs"]
mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::*;

/// A node with three set-a patients, Alice (the first) enrolled and
/// consenting, a trusted authority and a researcher Bob who may ask.
struct Hospital {
    tmp: tempfile::TempDir,
    node: PathBuf,
    pseudonym: String,
    node_id: String,
    alice_key: PathBuf,
    bob: (PathBuf, PathBuf),
}

impl Hospital {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn dir(&self) -> &str {
        s(&self.node)
    }
}

fn hospital() -> Hospital {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    init_node(&node, "General");
    let set = small_set(tmp.path(), 3);
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let (pseudonym, node_id) = first_patient(&node, &set);
    let (alice_key, alice_pub) = (tmp.path().join("alice.key"), tmp.path().join("alice.pub"));
    run_ok(&[
        "keygen",
        "--role",
        "patient",
        "--out",
        s(&alice_key),
        "--public-out",
        s(&alice_pub),
    ]);
    run_ok(&[
        "patient",
        "enrol",
        "--data-dir",
        s(&node),
        "--patient",
        &pseudonym,
        "--key-file",
        s(&alice_pub),
    ]);
    let consent = tmp.path().join("alice.consent");
    run_ok(&[
        "consent",
        "grant",
        "--key",
        s(&alice_key),
        "--node",
        &node_id,
        "--patient",
        &pseudonym,
        "--purposes",
        "HMB",
        "--out",
        s(&consent),
    ]);
    run_ok(&["consent", "submit", "--data-dir", s(&node), s(&consent)]);
    let authority = tmp.path().join("authority.key");
    let authority_public = public_key(&run_ok(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        s(&authority),
    ]));
    let bob = (
        tmp.path().join("bob.key"),
        tmp.path().join("bob.credential"),
    );
    run_ok(&["keygen", "--role", "researcher", "--out", s(&bob.0)]);
    issue_credential(&authority, &bob.0, "bob", "HMB", &bob.1);
    trust(&node, &authority_public, tmp.path());
    Hospital {
        tmp,
        node,
        pseudonym,
        node_id,
        alice_key,
        bob,
    }
}

/// The administrator's path: show the policy, trust the authority, sign, install.
fn trust(node: &Path, authority: &str, work: &Path) {
    let shown = run_ok(&["policy", "show", "--data-dir", s(node)]);
    let edited = shown
        .replace(
            "trusted_issuers = []",
            &format!("trusted_issuers = [\"{authority}\"]"),
        )
        .replace("serial = 1\n", "serial = 2\n");
    assert_ne!(edited, shown, "the policy edit did not apply");
    let (toml, signed) = (work.join("policy.toml"), work.join("policy.signed"));
    std::fs::write(&toml, edited).unwrap();
    run_ok(&[
        "policy",
        "sign",
        "--key",
        s(&node.join("hospital.key")),
        "--policy",
        s(&toml),
        "--out",
        s(&signed),
    ]);
    run_ok(&["policy", "install", "--data-dir", s(node), s(&signed)]);
}

/// Bob counts everyone at `epsilon` on the stopped node.
fn count(h: &Hospital, id: &str, epsilon: f64) {
    let file = h.path(&format!("{id}.toml"));
    std::fs::write(
        &file,
        format!(
            "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
             [privacy]\nmode = \"dp\"\nepsilon = {epsilon:?}\n"
        ),
    )
    .unwrap();
    run_ok(&[
        "query",
        "local",
        "--data-dir",
        h.dir(),
        "--key",
        s(&h.bob.0),
        "--credential",
        s(&h.bob.1),
        "--query",
        s(&file),
    ]);
}

fn account(h: &Hospital) -> serde_json::Value {
    run_json(&[
        "patient",
        "account",
        "--data-dir",
        h.dir(),
        "--patient",
        &h.pseudonym,
    ])
}

/// Alice signs a cap request (`None`: remove) into `name`.
fn sign_cap(h: &Hospital, epsilon: Option<f64>, name: &str) -> PathBuf {
    let out = h.path(name);
    let mut args = vec![
        "patient".to_string(),
        "cap".into(),
        "--key".into(),
        s(&h.alice_key).into(),
        "--node".into(),
        h.node_id.clone(),
        "--patient".into(),
        h.pseudonym.clone(),
        "--out".into(),
        s(&out).into(),
    ];
    match epsilon {
        Some(e) => args.extend(["--epsilon".to_string(), e.to_string()]),
        None => args.push("--remove".into()),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = run_ok(&args);
    assert!(said.contains("cap-submit"), "{said}");
    out
}

fn error_code(out: &std::process::Output) -> String {
    let stderr = text(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("error[")?.split(']').next())
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_string()
}

#[test]
fn staff_see_the_account_grow_and_a_cap_the_patient_signed_leaves_them_out_of_the_next_query() {
    let h = hospital();
    let empty = account(&h);
    assert_eq!(empty["patient"], h.pseudonym.as_str(), "{empty}");
    assert_eq!(
        (empty["total_epsilon"].as_f64(), empty["answers"].as_u64()),
        (Some(0.0), Some(0))
    );
    assert!(empty["cap"].is_null());
    count(&h, "q1", 1.0);
    let after = account(&h);
    assert_eq!(after["total_epsilon"], 1.0, "{after}");
    assert_eq!(after["answers"], 1);
    assert_eq!(
        after["per_researcher"].as_array().unwrap().len(),
        1,
        "{after}"
    );
    assert_eq!(after["per_window"][0]["epsilon"], 1.0);
    // Alice caps at 1.5: a second answer of 1 would pass it, so it leaves her out and charges her nothing.
    let cap = sign_cap(&h, Some(1.5), "alice.cap");
    let applied = run_json(&["patient", "cap-submit", "--data-dir", h.dir(), s(&cap)]);
    assert_eq!(
        (
            applied["cap_epsilon"].as_f64(),
            applied["total_epsilon"].as_f64()
        ),
        (Some(1.5), Some(1.0)),
        "{applied}"
    );
    assert_eq!(account(&h)["cap"]["epsilon"], 1.5);
    count(&h, "q2", 1.0);
    let capped = account(&h);
    assert_eq!(
        (capped["total_epsilon"].as_f64(), capped["answers"].as_u64()),
        (Some(1.0), Some(1)),
        "{capped}"
    );
    // The same signed file again is refused with the node's code.
    let again = run_fail(&["patient", "cap-submit", "--data-dir", h.dir(), s(&cap)]);
    assert_eq!(error_code(&again), "duplicate_cap_request");
    // A cap signed with another patient's key is refused before anything changes.
    let mallory = h.path("mallory.key");
    run_ok(&["keygen", "--role", "patient", "--out", s(&mallory)]);
    let forged = h.path("forged.cap");
    run_ok(&[
        "patient",
        "cap",
        "--key",
        s(&mallory),
        "--node",
        &h.node_id,
        "--patient",
        &h.pseudonym,
        "--remove",
        "--out",
        s(&forged),
    ]);
    let refused = run_fail(&["patient", "cap-submit", "--data-dir", h.dir(), s(&forged)]);
    assert_eq!(
        error_code(&refused),
        "wrong_patient_key",
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(account(&h)["cap"]["epsilon"], 1.5);
    // Removed by Alice: she is counted (and charged) again.
    let removed = sign_cap(&h, None, "alice.uncap");
    let text_out = run_ok(&["patient", "cap-submit", "--data-dir", h.dir(), s(&removed)]);
    assert!(text_out.contains("privacy cap removed"), "{text_out}");
    count(&h, "q3", 1.0);
    assert_eq!(account(&h)["total_epsilon"], 2.0);
    // Text output names the cap-free account.
    let shown = run_ok(&[
        "patient",
        "account",
        "--data-dir",
        h.dir(),
        "--patient",
        &h.pseudonym,
    ]);
    assert!(
        shown.contains("cap: none") && shown.contains("2 answers"),
        "{shown}"
    );
}

#[test]
fn a_cap_outside_its_bounds_or_a_patient_without_a_record_is_refused_with_a_code() {
    let h = hospital();
    let out = run_fail(&[
        "patient",
        "cap",
        "--key",
        s(&h.alice_key),
        "--node",
        &h.node_id,
        "--patient",
        &h.pseudonym,
        "--epsilon=-1",
        "--out",
        s(&h.path("bad.cap")),
    ]);
    assert_eq!(error_code(&out), "invalid_cap", "{}", text(&out.stderr));
    assert!(!h.path("bad.cap").exists(), "nothing written");
    // Neither or both of --epsilon and --remove: clap refuses the command line.
    let neither = run_fail(&[
        "patient",
        "cap",
        "--key",
        s(&h.alice_key),
        "--node",
        &h.node_id,
        "--patient",
        &h.pseudonym,
        "--out",
        s(&h.path("x.cap")),
    ]);
    assert_eq!(neither.status.code(), Some(2));
    let nobody = run_fail(&[
        "patient",
        "account",
        "--data-dir",
        h.dir(),
        "--patient",
        &"ab".repeat(16),
    ]);
    assert_eq!(error_code(&nobody), "unknown_patient");
    let malformed = run_fail(&["audit", "view", "--data-dir", h.dir(), "--patient", "nope"]);
    assert_eq!(error_code(&malformed), "bad_pseudonym");
}

#[test]
fn the_audit_view_verifies_and_holds_the_patients_own_entries_and_the_uses_that_included_them() {
    let h = hospital();
    let cap = sign_cap(&h, Some(30.0), "alice.cap");
    run_ok(&["patient", "cap-submit", "--data-dir", h.dir(), s(&cap)]);
    count(&h, "with-alice", 1.0);
    let view = run_json(&[
        "audit",
        "view",
        "--data-dir",
        h.dir(),
        "--patient",
        &h.pseudonym,
    ]);
    assert_eq!(view["node_key"], h.node_id.as_str(), "{view}");
    let own = view["own_entries"].as_u64().unwrap();
    assert!(own >= 3, "enrolment, consent and cap: {view}");
    let items = view["view"]["items"].as_array().unwrap();
    let kinds: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get("Own")?["kind"].as_str())
        .collect();
    assert_eq!(kinds.len() as u64, own);
    assert!(kinds.contains(&"patient.cap"), "{kinds:?}");
    for item in items.iter().filter_map(|i| i.get("Own")) {
        assert_eq!(item["subject"], h.pseudonym.as_str());
    }
    // The answer that included her, in full; no other entry in full.
    assert_eq!(view["uses"], 1, "{view}");
    let used: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("Use")).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["research"]["query_id"], "with-alice");
    assert_eq!(used[0]["research"]["aggregate"], "count");
    assert_eq!(used[0]["subject"], serde_json::Value::Null);
    assert!(items
        .iter()
        .all(|i| i.get("Own").is_some() || i.get("Use").is_some() || i.get("Other").is_some()));
    // The view deserialises to what the node library verifies.
    let parsed: witmed_node::audit::PatientView =
        serde_json::from_value(view["view"].clone()).unwrap();
    let node_key: witmed_crypto::PublicKey = h.node_id.parse().unwrap();
    assert_eq!(
        parsed.verify(&node_key).unwrap().seq,
        view["verified_head_seq"].as_u64().unwrap()
    );
    let shown = run_ok(&[
        "audit",
        "view",
        "--data-dir",
        h.dir(),
        "--patient",
        &h.pseudonym,
    ]);
    assert!(
        shown.contains("verified against the head")
            && shown.contains("patient.cap")
            && shown.contains("query with-alice: count (dp)"),
        "{shown}"
    );
}

/// `witmed node run` on `node`, with its admin socket up.
fn running(node: &Path) -> Child {
    started(node, &[], "running").0
}

/// `witmed node run` on `node` with `extra` arguments, once it has printed
/// a line containing `until` and its admin socket is up; the child and that line.
fn started(node: &Path, extra: &[&str], until: &str) -> (Child, String) {
    let mut args = vec![
        "node",
        "run",
        "--data-dir",
        s(node),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ];
    args.extend_from_slice(extra);
    let mut child = witmed()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..10 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 || line.contains(until) {
            break;
        }
    }
    assert!(line.contains(until), "{line}");
    // Keep reading what the node prints, so it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let socket = witmed_node::admin::socket_path(node);
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(socket.exists(), "no admin socket");
    (child, line)
}

#[test]
fn while_the_node_runs_a_cap_and_the_account_go_through_its_admin_socket() {
    let h = hospital();
    count(&h, "q1", 2.0);
    let mut node = running(&h.node);
    let cap = sign_cap(&h, Some(2.0), "alice.cap");
    let applied = run_json(&["patient", "cap-submit", "--data-dir", h.dir(), s(&cap)]);
    let seen = account(&h);
    // The store is the running node's: a command that opens it directly is refused.
    let view = run_fail(&[
        "audit",
        "view",
        "--data-dir",
        h.dir(),
        "--patient",
        &h.pseudonym,
    ]);
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    node.wait().unwrap();
    assert_eq!(applied["cap_epsilon"], 2.0, "{applied}");
    assert_eq!(
        (
            seen["total_epsilon"].as_f64(),
            seen["cap"]["epsilon"].as_f64()
        ),
        (Some(2.0), Some(2.0)),
        "{seen}"
    );
    assert_eq!(error_code(&view), "node_open_failed");
    // Stopped again, the cap is there and holds: a further answer leaves Alice out.
    count(&h, "q2", 1.0);
    assert_eq!(account(&h)["total_epsilon"], 2.0);
}

/// `witmed node run --http 127.0.0.1:0` on `node`, once its API is advertised.
fn serving_http(node: &Path) -> Child {
    let (child, line) = started(node, &["--http", "127.0.0.1:0"], "http api on");
    assert!(line.contains("http api on http://127.0.0.1:"), "{line}");
    // The API's address is named once the API is bound, before the line is printed.
    let advertised = std::fs::read_to_string(node.join("admin").join("api.addr")).unwrap();
    assert!(line.contains(advertised.trim()), "{line} vs {advertised}");
    child
}

/// Issue 14's CLI parity: with the node serving its API, the patient and
/// consent commands reach it over HTTP. The admin socket is unlinked first,
/// so a command that did not use the API could only open the store, which
/// the running node holds (`node_open_failed`).
#[test]
fn while_the_node_serves_http_the_patient_and_consent_commands_go_through_its_api() {
    let h = hospital();
    count(&h, "q1", 2.0);
    let mut node = serving_http(&h.node);
    std::fs::remove_file(witmed_node::admin::socket_path(&h.node)).unwrap();
    // Without the API, a consent list would have to open the running node's store.
    let listed = run_json(&["consent", "list", "--data-dir", h.dir()]);
    let cap = sign_cap(&h, Some(3.0), "alice.cap");
    let applied = run_json(&["patient", "cap-submit", "--data-dir", h.dir(), s(&cap)]);
    let seen = account(&h);
    let (pseudonym, node_id) = first_patient(&h.node, &h.path("set-small"));
    let revocation = h.path("alice.revoke");
    run_ok(&[
        "consent",
        "revoke",
        "--key",
        s(&h.alice_key),
        "--token",
        s(&h.path("alice.consent")),
        "--out",
        s(&revocation),
    ]);
    let revoked = run_json(&["consent", "submit", "--data-dir", h.dir(), s(&revocation)]);
    let after = run_json(&["consent", "list", "--data-dir", h.dir()]);
    // A refusal over the API keeps the node's own code.
    let again = run_fail(&["patient", "cap-submit", "--data-dir", h.dir(), s(&cap)]);
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    node.wait().unwrap();

    assert_eq!(listed["counts"]["tokens"], 1, "{listed}");
    assert_eq!(listed["tokens"][0]["patient"], h.pseudonym.as_str());
    assert_eq!(listed["tokens"][0]["revoked"], false);
    assert_eq!(applied["cap_epsilon"], 3.0, "{applied}");
    assert_eq!(seen["total_epsilon"], 2.0, "{seen}");
    assert_eq!(
        (pseudonym, node_id),
        (h.pseudonym.clone(), h.node_id.clone())
    );
    assert_eq!(
        revoked["accepted"].as_array().map(Vec::len),
        Some(1),
        "{revoked}"
    );
    assert_eq!(after["counts"]["revoked"], 1, "{after}");
    assert_eq!(after["tokens"][0]["revoked"], true, "{after}");
    assert_eq!(
        error_code(&again),
        "duplicate_cap_request",
        "{}",
        text(&again.stderr)
    );
    // Stopped, the node withdrew its address; the changes are in the store.
    assert!(!h.node.join("admin").join("api.addr").exists());
    assert_eq!(account(&h)["cap"]["epsilon"], 3.0);
}

/// A node killed without withdrawing its address leaves a stale one: the
/// commands find nobody there and use the store.
#[test]
fn a_stale_api_address_falls_back_to_the_store() {
    let h = hospital();
    std::fs::create_dir_all(h.node.join("admin")).unwrap();
    std::fs::write(h.node.join("admin").join("api.addr"), "127.0.0.1:1\n").unwrap();
    let listed = run_json(&["consent", "list", "--data-dir", h.dir()]);
    assert_eq!(listed["counts"]["tokens"], 1, "{listed}");
    // An address beyond loopback is never used, whatever the file says.
    std::fs::write(h.node.join("admin").join("api.addr"), "192.0.2.1:80\n").unwrap();
    assert_eq!(account(&h)["patient"], h.pseudonym.as_str());
}

//! Consent only patients can give: simulated consent confined to demonstration nodes, re-enrolment under dual control, consent changes reaching a running node.
//!
//! Everything goes through the `witmed` command line as operators, patients
//! and researchers call it; the last tests drive a real `witmed node run`
//! process and its admin socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use witmed_crypto::{KeyPair, Pseudonym, Role};
use witmed_policies::consent::{Reenrolment, Revocation, REENROLMENT_VERSION, REVOCATION_VERSION};
use witmed_simnet::cluster::{self, Cluster, Options};

struct World {
    tmp: tempfile::TempDir,
    node: PathBuf,
    records: Vec<String>,
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    fn dir(&self) -> &str {
        s(&self.node)
    }
}

/// A node with `patients` set-a records, trusting one authority, and a
/// researcher `bob` with an HMB credential. `demo`: initialised with
/// `--allow-demonstration-data`.
fn world(patients: usize, demo: bool) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let authority_key = tmp.path().join("authority.key");
    let authority = run_ok(&["keygen", "--role", "authority", "--out", s(&authority_key)]);
    let mut init = vec![
        "node",
        "init",
        "--data-dir",
        s(&node),
        "--name",
        "General",
        "--trust-issuer",
        field(&authority, "public key:"),
    ];
    if demo {
        init.push("--allow-demonstration-data");
    }
    run_ok(&init);
    let set = small_set(tmp.path(), patients);
    run_ok(&["import", "physionet", "--data-dir", s(&node), s(&set)]);
    let records = physionet_files(&set)
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let bob = tmp.path().join("bob.key");
    run_ok(&["keygen", "--role", "researcher", "--out", s(&bob)]);
    issue_credential(
        &authority_key,
        &bob,
        "bob",
        "HMB",
        &tmp.path().join("bob.credential"),
    );
    World { tmp, node, records }
}

/// Signs (with the node's hospital key) and installs the next policy: a
/// budget and minimum cohort that let exact-enough counts through, and the
/// given `allow_demonstration_data`.
fn install_policy(w: &World, allow_demonstration_data: bool) {
    let shown = run_ok(&["policy", "show", "--data-dir", w.dir()]);
    let mut policy: toml::Table = toml::from_str(&shown).unwrap();
    let serial = policy["serial"].as_integer().unwrap();
    policy.insert("serial".into(), (serial + 1).into());
    policy.insert("min_cohort".into(), 0.into());
    policy.insert(
        "allow_demonstration_data".into(),
        allow_demonstration_data.into(),
    );
    policy["budget"]
        .as_table_mut()
        .unwrap()
        .insert("epsilon".into(), 10_000.0.into());
    let unsigned = w.path(&format!("policy-{serial}.toml"));
    std::fs::write(&unsigned, toml::to_string(&policy).unwrap()).unwrap();
    let signed = w.path(&format!("policy-{serial}.signed"));
    run_ok(&[
        "policy",
        "sign",
        "--key",
        s(&w.node.join("hospital.key")),
        "--policy",
        s(&unsigned),
        "--out",
        s(&signed),
    ]);
    run_ok(&["policy", "install", "--data-dir", w.dir(), s(&signed)]);
}

/// An HMB count at epsilon 10 (the most a query may ask for).
fn count_query(id: &str) -> String {
    witmed_protocol::examples::count(id, "HMB", 10.0)
}

/// The median of three answers of `ask` (each under its own query id).
///
/// At epsilon 10 the discrete Laplace noise of one count is nonzero with
/// probability 2e^-10/(1+e^-10), about 9e-5; the median of three is wrong
/// with probability about 2.7e-8, so the median is the number of eligible
/// patients, and a change of one patient is unmistakable.
fn median_count(mut ask: impl FnMut(&str) -> f64, id: &str) -> f64 {
    let mut answers: Vec<f64> = (0..3).map(|i| ask(&format!("{id}-{i}"))).collect();
    answers.sort_by(f64::total_cmp);
    answers[1]
}

/// `query local` of [`count_query`] as bob (median of three).
fn local_count(w: &World, id: &str) -> f64 {
    median_count(|id| local_count_once(w, id), id)
}

fn local_count_once(w: &World, id: &str) -> f64 {
    let query = w.path(&format!("{id}.toml"));
    std::fs::write(&query, count_query(id)).unwrap();
    let answer = run_json(&[
        "query",
        "local",
        "--data-dir",
        w.dir(),
        "--key",
        s(&w.path("bob.key")),
        "--credential",
        s(&w.path("bob.credential")),
        "--query",
        s(&query),
    ]);
    answer["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{answer}"))
}

fn simulate(w: &World, seed: &str) -> String {
    simulate_consent(&w.node, seed)
}

/// The pseudonym and node id of record `i`.
fn lookup(w: &World, i: usize) -> (String, String) {
    let out = run_ok(&[
        "patient",
        "lookup",
        "--data-dir",
        w.dir(),
        "--source",
        "physionet2012",
        "--source-id",
        &w.records[i],
    ]);
    (
        field(&out, "pseudonym:").to_string(),
        field(&out, "node id:").to_string(),
    )
}

fn keygen_patient(w: &World, name: &str) -> PathBuf {
    let key = w.path(name);
    run_ok(&["keygen", "--role", "patient", "--out", s(&key)]);
    key
}

fn enrol(w: &World, patient: &str, key: &Path) -> String {
    run_ok(&[
        "patient",
        "enrol",
        "--data-dir",
        w.dir(),
        "--patient",
        patient,
        "--key-file",
        s(key),
    ])
}

fn grant(w: &World, key: &Path, node_id: &str, patient: &str, out: &str) -> PathBuf {
    let out = w.path(out);
    run_ok(&[
        "consent",
        "grant",
        "--key",
        s(key),
        "--node",
        node_id,
        "--patient",
        patient,
        "--purposes",
        "HMB",
        "--out",
        s(&out),
    ]);
    out
}

fn submit(w: &World, file: &Path) -> String {
    run_ok(&["consent", "submit", "--data-dir", w.dir(), s(file)])
}

fn submit_fails(w: &World, file: &Path, code: &str) {
    let out = run_fail(&["consent", "submit", "--data-dir", w.dir(), s(file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(code), "expected [{code}] in: {stderr}");
}

fn counts(w: &World) -> serde_json::Value {
    run_json(&["consent", "list", "--data-dir", w.dir()])["counts"].clone()
}

fn audit_details(w: &World, kind: &str) -> Vec<String> {
    run_json(&["audit", "--data-dir", w.dir(), "--kind", kind])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

fn stderr_of(args: &[&str]) -> String {
    let out = witmed().args(args).output().unwrap();
    assert!(out.status.success(), "witmed {args:?} failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn simulated_consent_counts_only_while_the_policy_allows_demonstration_data() {
    let w = world(12, true);
    install_policy(&w, true);
    simulate(&w, "1");
    assert_eq!(counts(&w)["simulated_tokens"], 12);
    assert_eq!(local_count(&w, "with-flag"), 12.0);

    // The same tokens, on the same node, once its policy disallows demonstration data.
    install_policy(&w, false);
    assert_eq!(
        local_count(&w, "without-flag"),
        0.0,
        "simulated consent must include nobody without the flag"
    );
    assert_eq!(counts(&w)["simulated_tokens"], 12, "kept, but not counted");
}

#[test]
fn consent_simulate_is_refused_on_a_node_whose_policy_does_not_allow_it() {
    let w = world(5, false);
    let out = run_fail(&[
        "consent",
        "simulate",
        "--data-dir",
        w.dir(),
        "--rate",
        "1.0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("demonstration_data_not_allowed")
            && stderr.contains("allow_demonstration_data"),
        "the refusal names the policy field: {stderr}"
    );
    assert_eq!(counts(&w)["tokens"], 0);
    assert_eq!(counts(&w)["enrolled"], 0);
}

/// The patient key `consent simulate` used to derive from the seed and the pseudonym.
fn key_derived_the_old_way(seed: u64, patient: &Pseudonym) -> KeyPair {
    let mut input = b"witmed/simulated-patient-key".to_vec();
    input.extend_from_slice(&seed.to_le_bytes());
    input.extend_from_slice(&patient.0);
    KeyPair::from_seed(Role::Patient, &witmed_crypto::sha256(&input))
}

#[test]
fn a_revocation_or_grant_signed_with_a_key_derived_from_seed_and_pseudonym_is_refused() {
    let w = world(5, true);
    simulate(&w, "1");
    let listed = run_json(&["consent", "list", "--data-dir", w.dir()]);
    let token = &listed["tokens"][0];
    let token_id = token["id"].as_str().unwrap().to_string();
    let patient: Pseudonym = token["patient"].as_str().unwrap().parse().unwrap();
    let (_, node_id) = lookup(&w, 0);
    let derived = key_derived_the_old_way(1, &patient);

    // Anyone who knows the seed could once withdraw a simulated patient's consent.
    let revocation = Revocation {
        version: REVOCATION_VERSION,
        token_id: token_id.clone(),
        node: node_id.parse().unwrap(),
        patient,
        issued_at: witmed_node::unix_now(),
    };
    let file = w.path("forged.revoke");
    std::fs::write(&file, revocation.sign(&derived).to_text()).unwrap();
    submit_fails(&w, &file, "wrong_patient_key");

    // ... or grant in its name.
    let key_file = w.path("derived.key");
    derived.save(&key_file).unwrap();
    let forged = grant(&w, &key_file, &node_id, &patient.to_hex(), "forged.consent");
    submit_fails(&w, &forged, "wrong_patient_key");

    assert_eq!(counts(&w)["revoked"], 0);
    assert_eq!(counts(&w)["tokens"], 5);
}

#[test]
fn a_real_patient_can_be_enrolled_after_a_simulated_one() {
    let w = world(12, true);
    install_policy(&w, true);
    simulate(&w, "1");
    let (alice_p, node_id) = lookup(&w, 0);
    let alice = keygen_patient(&w, "alice.key");
    enrol(&w, &alice_p, &alice);
    let replaced = audit_details(&w, "patient.enrolled");
    assert!(
        replaced
            .iter()
            .any(|d| d.contains(&alice_p) && d.contains("replacing a SIMULATED enrolment")),
        "the replacement is audited: {replaced:?}"
    );
    let token = grant(&w, &alice, &node_id, &alice_p, "alice.consent");
    submit(&w, &token);
    let c = counts(&w);
    assert_eq!(
        (c["tokens"].as_u64(), c["simulated_tokens"].as_u64()),
        (Some(12), Some(11))
    );
    assert_eq!(local_count(&w, "all"), 12.0);

    // Without demonstration data only alice's real consent counts.
    install_policy(&w, false);
    assert_eq!(local_count(&w, "real-only"), 1.0);

    // A second real enrolment with another key is not a silent replacement.
    let mallory = keygen_patient(&w, "mallory.key");
    let out = run_fail(&[
        "patient",
        "enrol",
        "--data-dir",
        w.dir(),
        "--patient",
        &alice_p,
        "--key-file",
        s(&mallory),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already_enrolled"));
}

fn reenrol(
    w: &World,
    patient: &str,
    new_key: &Path,
    signer: (&str, &Path),
) -> std::process::Output {
    witmed()
        .args([
            "patient",
            "reenrol",
            "--data-dir",
            w.dir(),
            "--patient",
            patient,
            "--key-file",
            s(new_key),
            signer.0,
            s(signer.1),
            "--reason",
            "key lost",
        ])
        .output()
        .unwrap()
}

fn assert_refused(out: &std::process::Output, code: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(code),
        "expected [{code}]: {stderr}"
    );
}

#[test]
fn reenrolment_needs_the_hospital_admin_key_or_the_old_patient_key_and_is_audited() {
    let w = world(12, false);
    install_policy(&w, false);
    let (p, node_id) = lookup(&w, 0);
    let alice = keygen_patient(&w, "alice.key");
    enrol(&w, &p, &alice);
    let old_token = grant(&w, &alice, &node_id, &p, "alice.consent");
    submit(&w, &old_token);
    assert_eq!(local_count(&w, "before"), 1.0);

    // Alice lost her key; a member of staff tries to bind a new one alone.
    let alice2 = keygen_patient(&w, "alice2.key");
    let out = witmed()
        .args(["patient", "enrol", "--data-dir", w.dir(), "--patient", &p])
        .args(["--key-file", s(&alice2)])
        .output()
        .unwrap();
    assert_refused(&out, "already_enrolled");
    run_ok(&[
        "keygen",
        "--role",
        "hospital",
        "--out",
        s(&w.path("rogue-hospital.key")),
    ]);
    let out = reenrol(
        &w,
        &p,
        &alice2,
        ("--admin-key", &w.path("rogue-hospital.key")),
    );
    assert_refused(&out, "reenrolment_not_authorised");
    let mallory = keygen_patient(&w, "mallory.key");
    let out = reenrol(&w, &p, &alice2, ("--old-patient-key", &mallory));
    assert_refused(&out, "reenrolment_not_authorised");
    assert!(audit_details(&w, "patient.reenrolled").is_empty());
    assert_eq!(local_count(&w, "after-refusals"), 1.0, "nothing changed");

    // With the hospital admin key: the key changes, audited, the old key's tokens stop counting.
    let out = reenrol(
        &w,
        &p,
        &alice2,
        ("--admin-key", &w.node.join("hospital.key")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audited = audit_details(&w, "patient.reenrolled");
    assert!(
        audited.len() == 1 && audited[0].contains(&p) && audited[0].contains("hospital admin key"),
        "{audited:?}"
    );
    assert_eq!(local_count(&w, "after-reenrolment"), 0.0);
    assert_eq!(counts(&w)["tokens"], 0);
    submit_fails(&w, &old_token, "wrong_patient_key");
    // The lost key can no longer act for the patient.
    let revoke_old = w.path("old.revoke");
    run_ok(&[
        "consent",
        "revoke",
        "--key",
        s(&alice),
        "--token",
        s(&old_token),
        "--out",
        s(&revoke_old),
    ]);
    submit_fails(&w, &revoke_old, "wrong_patient_key");
    let new_token = grant(&w, &alice2, &node_id, &p, "alice2.consent");
    submit(&w, &new_token);
    assert_eq!(local_count(&w, "new-key"), 1.0);

    // Co-signed by the old patient key instead of the admin key.
    let alice3 = keygen_patient(&w, "alice3.key");
    let out = reenrol(&w, &p, &alice3, ("--old-patient-key", &alice2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audited = audit_details(&w, "patient.reenrolled");
    assert!(
        audited.len() == 2 && audited[1].contains("patient's old key"),
        "{audited:?}"
    );
    assert_eq!(local_count(&w, "third-key"), 0.0);

    // Superseded tokens stay in the store for the audit trail but raise no warning.
    let stderr = stderr_of(&["consent", "list", "--data-dir", w.dir()]);
    assert!(stderr.is_empty(), "no bad stored token: {stderr}");
}

#[test]
fn simulate_after_a_real_enrolment_succeeds_and_leaves_no_bad_token() {
    let w = world(5, true);
    let (p, node_id) = lookup(&w, 0);
    let alice = keygen_patient(&w, "alice.key");
    enrol(&w, &p, &alice);
    let token = grant(&w, &alice, &node_id, &p, "alice.consent");
    submit(&w, &token);

    let out = simulate(&w, "7");
    assert!(out.contains("1 chosen were already enrolled"), "{out}");
    let c = counts(&w);
    assert_eq!(
        (c["tokens"].as_u64(), c["simulated_tokens"].as_u64()),
        (Some(5), Some(4))
    );
    // Nothing half-written: no command warns about a stored token.
    let stderr = stderr_of(&["consent", "list", "--data-dir", w.dir()]);
    assert!(stderr.is_empty(), "{stderr}");
    // Run again: every patient is enrolled, nothing changes.
    simulate(&w, "7");
    assert_eq!(counts(&w)["tokens"], 5);

    // Alice's own consent is untouched: she can still withdraw it.
    let revocation = w.path("alice.revoke");
    run_ok(&[
        "consent",
        "revoke",
        "--key",
        s(&alice),
        "--token",
        s(&token),
        "--out",
        s(&revocation),
    ]);
    submit(&w, &revocation);
    assert_eq!(counts(&w)["revoked"], 1);
}

/// One hospital of `files` records as a real `witmed node run` process, no
/// simulated consent, and a policy that lets an epsilon-50 count through.
fn running_hospital(root: &Path, files: usize) -> (Cluster, World) {
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(files).collect();
    let options = Options {
        consent_rate: 0.0,
        ..cluster_options(&root.join("cluster"))
    };
    let mut c = Cluster::build(&options, &cluster::split(&records, 1)).unwrap();
    let w = World {
        tmp: tempfile::tempdir_in(root).unwrap(),
        node: c.members[0].data_dir.clone(),
        records: records
            .iter()
            .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
            .collect(),
    };
    install_policy(&w, false);
    c.start(0).unwrap();
    (c, w)
}

/// A federated [`count_query`] through `query run` (median of three).
fn federated_count(c: &Cluster, w: &World, id: &str) -> f64 {
    median_count(
        |id| {
            let query = w.path(&format!("{id}.toml"));
            std::fs::write(&query, count_query(id)).unwrap();
            let answer = c.query(&query, "10s").unwrap();
            answer["value"]
                .as_f64()
                .unwrap_or_else(|| panic!("{answer}"))
        },
        id,
    )
}

#[test]
fn a_revocation_submitted_to_a_running_node_excludes_the_patient_from_the_very_next_federated_query(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, w) = running_hospital(tmp.path(), 8);
    assert!(c.alive(0));
    {
        use std::os::unix::fs::PermissionsExt;
        let socket = witmed_node::admin::socket_path(&w.node);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&socket), 0o600);
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
    }

    // Lookup, enrolment and consent, all while the node runs and holds its store.
    let (p, node_id) = lookup(&w, 0);
    let alice = keygen_patient(&w, "alice.key");
    enrol(&w, &p, &alice);
    let token = grant(&w, &alice, &node_id, &p, "alice.consent");
    submit(&w, &token);
    assert_eq!(federated_count(&c, &w, "before"), 1.0);

    let revocation = w.path("alice.revoke");
    run_ok(&[
        "consent",
        "revoke",
        "--key",
        s(&alice),
        "--token",
        s(&token),
        "--out",
        s(&revocation),
    ]);
    submit(&w, &revocation);
    assert_eq!(
        federated_count(&c, &w, "after"),
        0.0,
        "the revocation applies to the very next query"
    );

    // Stopped, the commands open the store directly, and the revocation is durable.
    assert_eq!(c.stop(0).unwrap(), Some(0));
    assert!(!witmed_node::admin::socket_path(&w.node).exists());
    assert_eq!(counts(&w)["revoked"], 1);
}

/// Sends raw bytes on the admin socket; returns what came back (empty if closed).
fn raw_exchange(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn error_code(response: &[u8]) -> String {
    assert!(response.len() > 4, "no response: {response:?}");
    let json: serde_json::Value = serde_json::from_slice(&response[4..]).unwrap();
    assert_eq!(json["result"], "error", "{json}");
    json["code"].as_str().unwrap().to_string()
}

#[test]
fn the_admin_channel_refuses_hostile_input_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, w) = running_hospital(tmp.path(), 3);
    let socket = witmed_node::admin::socket_path(&w.node);

    let oversized = raw_exchange(&socket, &u32::MAX.to_be_bytes());
    assert_eq!(error_code(&oversized), "too_large");
    assert_eq!(
        error_code(&raw_exchange(&socket, &framed(b"{not json"))),
        "bad_request"
    );
    assert_eq!(
        error_code(&raw_exchange(&socket, &framed(&[0xff; 100]))),
        "bad_request"
    );
    let unknown = br#"{"version":1,"request":{"op":"drop_everything"}}"#;
    assert_eq!(
        error_code(&raw_exchange(&socket, &framed(unknown))),
        "bad_request"
    );
    let future = br#"{"version":99,"request":{"op":"lookup","source":"x","source_id":"y"}}"#;
    assert_eq!(
        error_code(&raw_exchange(&socket, &framed(future))),
        "unsupported_version"
    );
    let truncated = framed(br#"{"version":1}"#);
    assert_eq!(
        error_code(&raw_exchange(&socket, &truncated[..8])),
        "bad_request"
    );
    let forged_token = br#"{"version":1,"request":{"op":"submit","text":"{\"garbage\": 1}"}}"#;
    let code = error_code(&raw_exchange(&socket, &framed(forged_token)));
    assert!(
        code == "malformed" || code == "undecodable_payload",
        "{code}"
    );

    // Connections that never finish their request: at most MAX_CONNECTIONS
    // are held (until they time out), every other one is closed at once.
    let limit = witmed_node::admin::MAX_CONNECTIONS;
    let idle: Vec<UnixStream> = (0..limit + 2)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            // A connection over the limit may already be closed by the node:
            // the write then fails (EPIPE), and the read below counts it as closed.
            let _ = s.write_all(&[0, 0]);
            s
        })
        .collect();
    let mut held = 0;
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if out.is_empty() {
            closed += 1;
        } else {
            assert_eq!(error_code(&out), "timeout");
            held += 1;
        }
    }
    assert!(held <= limit, "{held} connections held at once");
    assert!(
        closed >= 2,
        "connections over the limit are closed ({closed})"
    );
    // The channel serves again.
    let (p, _) = lookup(&w, 0);
    assert_eq!(p.len(), 32);
    assert!(c.alive(0), "the node survived every bad request");
    assert_eq!(c.stop(0).unwrap(), Some(0));
}

fn reenrolment_text(node: &str, patient: &str, new_key: &KeyPair, signer: &KeyPair) -> String {
    let mut id = [0u8; 16];
    witmed_crypto::fill_random(&mut id).unwrap();
    Reenrolment {
        version: REENROLMENT_VERSION,
        node: node.parse().unwrap(),
        patient: patient.parse().unwrap(),
        new_key: new_key.public(),
        reason: "key lost".into(),
        issued_at: witmed_node::unix_now(),
        id: witmed_policies::consent::token_id(id),
    }
    .sign(signer)
    .to_text()
}

fn reenrol_on_socket(socket: &Path, text: &str) -> serde_json::Value {
    let frame = serde_json::json!({"version": 1, "request": {"op": "reenrol", "text": text}});
    let response = raw_exchange(socket, &framed(frame.to_string().as_bytes()));
    serde_json::from_slice(&response[4..]).unwrap()
}

#[test]
fn a_captured_reenrolment_replayed_to_the_running_node_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, w) = running_hospital(tmp.path(), 3);
    let socket = witmed_node::admin::socket_path(&w.node);
    let (p, node_id) = lookup(&w, 0);
    let alice = keygen_patient(&w, "alice.key");
    enrol(&w, &p, &alice);
    let hospital = KeyPair::load_role(&w.node.join("hospital.key"), Role::Hospital).unwrap();
    let (b, c_key) = (
        KeyPair::generate(Role::Patient).unwrap(),
        KeyPair::generate(Role::Patient).unwrap(),
    );

    let to_b = reenrolment_text(&node_id, &p, &b, &hospital);
    assert_eq!(reenrol_on_socket(&socket, &to_b)["result"], "reenrolled");
    // Replayed at once: B is already enrolled.
    assert_eq!(reenrol_on_socket(&socket, &to_b)["code"], "invalid_consent");
    let to_c = reenrolment_text(&node_id, &p, &c_key, &b);
    assert_eq!(reenrol_on_socket(&socket, &to_c)["result"], "reenrolled");
    // Replayed later, to take the patient back to B: applied once only.
    assert_eq!(
        reenrol_on_socket(&socket, &to_b)["code"],
        "duplicate_reenrolment"
    );
    // Signed by the patient's key of before: no longer the enrolled key.
    let alice = KeyPair::load_role(&alice, Role::Patient).unwrap();
    let back = reenrolment_text(&node_id, &p, &b, &alice);
    assert_eq!(
        reenrol_on_socket(&socket, &back)["code"],
        "reenrolment_not_authorised"
    );
    assert_eq!(c.stop(0).unwrap(), Some(0));
    assert_eq!(audit_details(&w, "patient.reenrolled").len(), 2);
}

//! Budgets that cap: delta enforced, a lifetime cap across windows and re-keyed credentials, unreadable ledger keys, and a deleted charge that stops the node.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_node::encrypted::study;
use witmed_node::engine::{self, Error};
use witmed_node::ledger::{self, Exhausted};
use witmed_node::node::{self, Node};
use witmed_node::store::cf;
use witmed_node::{audit, import};
use witmed_policies::credential::{verify_credential, Credential, CREDENTIAL_VERSION};
use witmed_policies::policy::{Budget, LifetimeCap, DEFAULT_WINDOW_SECONDS};
use witmed_protocol::encrypted::{StudyAnnouncement, ENCRYPTED_VERSION};
use witmed_protocol::query::Query;

const NOW: i64 = 1_790_000_000;
const DAY: i64 = 86_400;
const WINDOW: i64 = DEFAULT_WINDOW_SECONDS;

struct Fixture {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    node: Node,
    authority: KeyPair,
}

/// A node holding 40 set-a patients, all consenting to HMB, trusting one
/// authority, under `budget` and no minimum cohort.
fn fixture(budget: Budget) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    node::init(&dir, "General", vec![], NOW).unwrap();
    let node = Node::open(&dir, NOW).unwrap();
    let set = small_set(tmp.path(), 40);
    let options = import::Options {
        now: NOW,
        ..import::Options::default()
    };
    import::import_physionet(
        &node.store,
        node.pseudonyms(),
        &set,
        Some(&outcomes_a()),
        &options,
    )
    .unwrap();
    node.invalidate_index();
    witmed_node::consent_ops::allow_demonstration_data(&node, NOW).unwrap();
    witmed_lab::simulate::simulate(&node, 1.0, &["HMB".to_string()], 1, NOW).unwrap();
    let authority = KeyPair::from_seed(Role::Authority, &[1; 32]);
    install_budget(&node, &authority, budget);
    Fixture {
        tmp,
        dir,
        node,
        authority,
    }
}

/// Signs and installs the next policy: `authority` trusted, `budget`, no minimum cohort.
fn install_budget(node: &Node, authority: &KeyPair, budget: Budget) {
    let hospital = KeyPair::load_role(&node.dir.hospital_key(), Role::Hospital).unwrap();
    let mut policy = node.policy();
    policy.serial += 1;
    if !policy.trusted_issuers.contains(&authority.public()) {
        policy.trusted_issuers.push(authority.public());
    }
    policy.budget = budget;
    policy.min_cohort = 0;
    node.install_policy(&policy.sign(&hospital).to_text(), NOW)
        .unwrap();
}

fn budget(epsilon: f64, delta: f64, lifetime: Option<(f64, f64)>) -> Budget {
    Budget {
        epsilon,
        delta,
        window_seconds: WINDOW,
        lifetime: lifetime.map(|(epsilon, delta)| LifetimeCap { epsilon, delta }),
    }
}

fn researcher(seed: u8) -> KeyPair {
    KeyPair::from_seed(Role::Researcher, &[seed; 32])
}

/// A credential from `authority` binding `key` to `researcher_id`, valid for ten years.
fn credential(authority: &KeyPair, key: &KeyPair, researcher_id: &str) -> Envelope {
    Credential {
        version: CREDENTIAL_VERSION,
        researcher: key.public(),
        researcher_id: researcher_id.into(),
        name: "Ada".into(),
        institution: "University".into(),
        commercial: false,
        not_for_profit: true,
        project: "p1".into(),
        purposes: vec!["HMB".into()],
        issued_at: NOW - 60,
        expires: NOW + 3650 * DAY,
    }
    .sign(authority)
}

fn dp_count(id: &str, epsilon: f64) -> Query {
    Query::from_toml(&format!(
        "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
         [cohort]\nage_min = 65\n[privacy]\nmode = \"dp\"\nepsilon = {epsilon}\n"
    ))
    .unwrap()
}

fn encrypted_count(id: &str, study_id: &str, epsilon: f64) -> Query {
    Query::from_toml(&format!(
        "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
         [cohort]\nage_min = 65\n[privacy]\nmode = \"encrypted\"\nepsilon = {epsilon}\n\
         aggregator = \"General\"\nstudy = \"{study_id}\"\nmin_hospitals = 1\n"
    ))
    .unwrap()
}

/// Makes a study key pair for `key` and installs its announcement at the node; returns the study id.
fn publish_study(f: &Fixture, key: &KeyPair, credential: &Envelope) -> String {
    let study_dir = f.tmp.path().join("study");
    let info = study::keygen(&study_dir, NOW).unwrap();
    let (_, public_key) = study::load_public(&study_dir).unwrap();
    let announcement = StudyAnnouncement {
        version: ENCRYPTED_VERSION,
        params: witmed_crypto::fhe::params::ID.to_string(),
        public_key,
        credential: credential.to_bytes(),
        issued_at: NOW,
    };
    study::install(&f.node, &announcement.sign(key), NOW).unwrap();
    info.id
}

fn ask(
    f: &Fixture,
    key: &KeyPair,
    credential: &Envelope,
    query: &Query,
    now: i64,
) -> Result<(), Error> {
    engine::answer(&f.node, query, &key.public(), credential, now).map(|_| ())
}

fn contribute(
    f: &Fixture,
    key: &KeyPair,
    credential: &Envelope,
    query: &Query,
    now: i64,
) -> Result<(), Error> {
    engine::prepare(&f.node, query, &key.public(), credential, 1, now).map(|_| ())
}

/// Every charge made under `credential`'s account, oldest first.
fn charges(f: &Fixture, credential: &Envelope) -> Vec<ledger::Charge> {
    let verified = verify_credential(credential, &[f.authority.public()], NOW).unwrap();
    let account = f.node.ledger.account(&verified);
    f.node.ledger.charges(&f.node.store, &account).unwrap()
}

fn refusals(f: &Fixture) -> Vec<String> {
    audit::read_all(&f.node.store, Some("query.refused"))
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect()
}

#[test]
fn a_policy_with_delta_zero_refuses_an_encrypted_query_charges_nothing_and_audits_it() {
    let f = fixture(budget(10.0, 0.0, None));
    let key = researcher(2);
    let cred = credential(&f.authority, &key, "ada");
    let study_id = publish_study(&f, &key, &cred);
    let query = encrypted_count("enc-1", &study_id, 0.5);
    let refused = contribute(&f, &key, &cred, &query, NOW).unwrap_err();
    assert_eq!(refused.code(), "budget_exhausted", "{refused}");
    assert!(refused.to_string().contains("delta"), "{refused}");
    assert!(
        matches!(
            &refused,
            Error::BudgetExhausted {
                reason: Exhausted::Window {
                    renews_at: None,
                    ..
                },
                ..
            }
        ),
        "a window with delta 0 never holds a delta: {refused:?}"
    );
    assert!(
        charges(&f, &cred).is_empty(),
        "a refusal is charged nothing"
    );
    let audited = refusals(&f);
    assert!(
        audited
            .iter()
            .any(|d| d.contains("enc-1") && d.contains("budget exhausted")),
        "{audited:?}"
    );
    // A pure-DP query spends no delta and still fits.
    ask(&f, &key, &cred, &dp_count("dp-1", 0.5), NOW).unwrap();
}

#[test]
fn a_small_delta_budget_is_exhausted_after_n_encrypted_queries_and_renews_with_the_window() {
    // Three queries at encrypted mode's default delta of 1e-6.
    let f = fixture(budget(10.0, 3e-6, None));
    let key = researcher(2);
    let cred = credential(&f.authority, &key, "ada");
    let study_id = publish_study(&f, &key, &cred);
    for i in 0..3 {
        let query = encrypted_count(&format!("enc-{i}"), &study_id, 0.5);
        contribute(&f, &key, &cred, &query, NOW + i).unwrap();
    }
    let fourth = encrypted_count("enc-3", &study_id, 0.5);
    match contribute(&f, &key, &cred, &fourth, NOW + 10) {
        Err(Error::BudgetExhausted {
            reason:
                Exhausted::Window {
                    needed,
                    left,
                    renews_at,
                    ..
                },
            ..
        }) => {
            assert!((needed.delta - 1e-6).abs() < 1e-15, "{needed:?}");
            assert!(left.delta < 1e-6, "{left:?}");
            assert_eq!(
                renews_at,
                Some(NOW + WINDOW),
                "the oldest charge leaves first"
            );
        }
        other => panic!("expected the delta budget to be exhausted, got {other:?}"),
    }
    let spent: f64 = charges(&f, &cred).iter().map(|c| c.delta).sum();
    assert_eq!(charges(&f, &cred).len(), 3);
    assert!(
        spent <= 3e-6 * (1.0 + 1e-9),
        "delta spent {spent} exceeds 3e-6"
    );
    // When the oldest charge has left the window, one more fits.
    contribute(&f, &key, &cred, &fourth, NOW + WINDOW).unwrap();
    assert_eq!(charges(&f, &cred).len(), 4);
}

#[test]
fn the_lifetime_cap_holds_across_windows_and_never_renews() {
    let f = fixture(budget(1.0, 0.0, Some((2.5, 0.0))));
    let key = researcher(2);
    let cred = credential(&f.authority, &key, "ada");
    ask(&f, &key, &cred, &dp_count("w1", 1.0), NOW).unwrap();
    match ask(&f, &key, &cred, &dp_count("w1-more", 0.5), NOW + DAY) {
        Err(Error::BudgetExhausted {
            reason: Exhausted::Window { renews_at, .. },
            ..
        }) => assert_eq!(renews_at, Some(NOW + WINDOW)),
        other => panic!("expected the window to be exhausted, got {other:?}"),
    }
    ask(&f, &key, &cred, &dp_count("w2", 1.0), NOW + WINDOW + DAY).unwrap();
    // A third window: 1.0 would fit the window but not the lifetime cap of 2.5.
    let third = NOW + 3 * WINDOW;
    let refused = ask(&f, &key, &cred, &dp_count("w3", 1.0), third).unwrap_err();
    assert_eq!(refused.code(), "lifetime_budget_exhausted", "{refused}");
    assert!(refused.to_string().contains("never renews"), "{refused}");
    // Years later it is still refused; what is left (0.5) still fits.
    let later = NOW + 40 * WINDOW;
    assert!(matches!(
        ask(&f, &key, &cred, &dp_count("w40", 1.0), later),
        Err(Error::LifetimeBudgetExhausted { .. })
    ));
    ask(&f, &key, &cred, &dp_count("w40-small", 0.5), later).unwrap();
    assert!(matches!(
        ask(&f, &key, &cred, &dp_count("w41", 0.01), later + WINDOW),
        Err(Error::LifetimeBudgetExhausted { .. })
    ));
    let total: f64 = charges(&f, &cred).iter().map(|c| c.epsilon).sum();
    assert!(
        total <= 2.5 + 1e-9,
        "lifetime spend {total} exceeds the cap"
    );
    let audited = refusals(&f);
    assert!(
        audited
            .iter()
            .any(|d| d.contains("w41") && d.contains("lifetime")),
        "{audited:?}"
    );
}

#[test]
fn a_rekeyed_credential_for_the_same_researcher_id_shares_the_budget() {
    let f = fixture(budget(1.0, 0.0, Some((1.5, 0.0))));
    let old_key = researcher(2);
    let old = credential(&f.authority, &old_key, "ada");
    ask(&f, &old_key, &old, &dp_count("a1", 1.0), NOW).unwrap();
    // The authority re-issues Ada's credential for a new key.
    let new_key = researcher(3);
    let new = credential(&f.authority, &new_key, "ada");
    assert!(
        matches!(
            ask(&f, &new_key, &new, &dp_count("a2", 0.5), NOW + 1),
            Err(Error::BudgetExhausted { .. })
        ),
        "a new key is not a new window budget"
    );
    // A replayed id answers from the ledger whichever of Ada's keys asks.
    ask(&f, &new_key, &new, &dp_count("a1", 1.0), NOW + 2).unwrap();
    // The next window: the lifetime cap counts both keys' charges.
    ask(&f, &new_key, &new, &dp_count("a3", 0.5), NOW + WINDOW + 1).unwrap();
    assert!(
        matches!(
            ask(
                &f,
                &new_key,
                &new,
                &dp_count("a4", 0.1),
                NOW + 2 * WINDOW + 1
            ),
            Err(Error::LifetimeBudgetExhausted { .. })
        ),
        "the lifetime cap follows the researcher id across keys"
    );
    assert_eq!(charges(&f, &old), charges(&f, &new));
    assert_eq!(charges(&f, &new).len(), 2);
    // Another researcher id under the same new key is another budget.
    let bob = credential(&f.authority, &new_key, "bob");
    ask(&f, &new_key, &bob, &dp_count("b1", 1.0), NOW + 3).unwrap();
}

/// Runs a few queries, closes the node and returns its data dir.
fn ledger_with_charges(
    f: Fixture,
    ids: &[&str],
    researcher_id: &str,
) -> (tempfile::TempDir, PathBuf) {
    let key = researcher(2);
    let cred = credential(&f.authority, &key, researcher_id);
    for (i, id) in ids.iter().enumerate() {
        ask(&f, &key, &cred, &dp_count(id, 0.5), NOW + i as i64).unwrap();
    }
    let Fixture { tmp, dir, node, .. } = f;
    drop(node);
    (tmp, dir)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Opens the closed node's RocksDB directly, as someone with disk access would.
fn with_rocksdb<T>(dir: &Path, act: impl FnOnce(&rocksdb::DB) -> T) -> T {
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.join("db"), cf::ALL).unwrap();
    act(&db)
}

fn budget_keys(db: &rocksdb::DB) -> Vec<(Vec<u8>, Vec<u8>)> {
    let family = db.cf_handle(cf::BUDGET).unwrap();
    db.iterator_cf(family, rocksdb::IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// A change made to a closed node's store by someone with disk access.
type Attack = Box<dyn Fn(&rocksdb::DB)>;

fn delete(key: &[u8]) -> Attack {
    let key = key.to_vec();
    Box::new(move |db: &rocksdb::DB| {
        db.delete_cf(db.cf_handle(cf::BUDGET).unwrap(), &key)
            .unwrap()
    })
}

fn overwrite(key: &[u8], value: &[u8]) -> Attack {
    let (key, value) = (key.to_vec(), value.to_vec());
    Box::new(move |db: &rocksdb::DB| {
        db.put_cf(db.cf_handle(cf::BUDGET).unwrap(), &key, &value)
            .unwrap()
    })
}

fn open_error(dir: &Path) -> String {
    match Node::open(dir, NOW) {
        Err(node::Error::Ledger(e)) => {
            assert_eq!(e.code(), "ledger_tampered", "{e}");
            e.to_string()
        }
        Err(other) => panic!("expected the ledger check to stop the node, got {other}"),
        Ok(_) => panic!("a tampered ledger was accepted at open"),
    }
}

#[test]
fn a_deleted_or_altered_charge_stops_the_node_at_open() {
    let f = fixture(budget(10.0, 0.0, None));
    let (tmp, dir) = ledger_with_charges(f, &["q1", "q2", "q3"], "ada");
    let charge_keys: Vec<(Vec<u8>, Vec<u8>)> = with_rocksdb(&dir, budget_keys)
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"c2/"))
        .collect();
    assert_eq!(charge_keys.len(), 3);
    // Without its stored answer, a replayed id would be answered with fresh noise.
    let answer_key = with_rocksdb(&dir, budget_keys)
        .into_iter()
        .find(|(k, _)| k.starts_with(b"a2/"))
        .unwrap()
        .0;
    // Each attack on its own copy of the closed node.
    let attacks: Vec<(&str, Attack)> = vec![
        ("first charge deleted", delete(&charge_keys[0].0)),
        ("last charge deleted", delete(&charge_keys[2].0)),
        (
            "a charge replaced by another's sealed value",
            overwrite(&charge_keys[1].0, &charge_keys[0].1),
        ),
        ("the head deleted", delete(b"h2")),
        ("a stored answer deleted", delete(&answer_key)),
    ];
    for (i, (what, attack)) in attacks.iter().enumerate() {
        let copy = tmp.path().join(format!("attacked-{i}"));
        copy_dir(&dir, &copy);
        with_rocksdb(&copy, |db| attack(db));
        let message = open_error(&copy);
        assert!(
            message.contains("privacy-budget ledger"),
            "{what}: {message}"
        );
    }
    // The untouched node still opens, and the CLI names the ledger for a tampered one.
    Node::open(&dir, NOW).unwrap();
    let copy = tmp.path().join("attacked-cli");
    copy_dir(&dir, &copy);
    with_rocksdb(&copy, |db| delete(&charge_keys[1].0)(db));
    let out = run_fail(&["policy", "show", "--data-dir", copy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("privacy-budget ledger") && stderr.contains("charge number 2"),
        "{stderr}"
    );
}

/// True if `needle` occurs in any file under `dir`.
fn any_file_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if let Some(found) = any_file_contains(&path, needle) {
                return Some(found);
            }
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return Some(path);
        }
    }
    None
}

#[test]
fn ledger_keys_hold_no_query_id_or_researcher_identity_in_clear() {
    let f = fixture(budget(10.0, 0.0, None));
    let key = researcher(2);
    let query_ids = ["needle-query-id-4242", "needle-query-id-4243"];
    let (_tmp, dir) = ledger_with_charges(f, &query_ids, "needle-researcher-id");
    let keys = with_rocksdb(&dir, budget_keys);
    assert_eq!(
        keys.len(),
        2 * 2 + 1 + 2,
        "two charges, two answers, one head, and the two answers' patient-account journal charges"
    );
    let public = key.public();
    let hex = public.to_hex();
    let mut needles: Vec<&[u8]> = vec![public.as_bytes(), hex.as_bytes(), b"needle-researcher-id"];
    needles.extend(query_ids.iter().map(|id| id.as_bytes()));
    for needle in &needles {
        for (k, _) in &keys {
            assert!(
                !k.windows(needle.len()).any(|w| w == *needle),
                "a budget key holds {:?} in clear",
                String::from_utf8_lossy(needle)
            );
        }
        assert_eq!(
            any_file_contains(&dir.join("db"), needle),
            None,
            "{:?} is in clear on disk",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn credential_issue_takes_a_researcher_id_and_a_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    run_ok(&[
        "keygen",
        "--role",
        "authority",
        "--out",
        &path("authority.key"),
    ]);
    run_ok(&["keygen", "--role", "researcher", "--out", &path("ada.key")]);
    let ada = KeyPair::load(Path::new(&path("ada.key"))).unwrap().public();
    let authority = KeyPair::load(Path::new(&path("authority.key")))
        .unwrap()
        .public();
    let issue = |id: Option<&str>, out: &str| {
        let mut args = vec![
            "credential".to_string(),
            "issue".into(),
            "--authority-key".into(),
            path("authority.key"),
            "--researcher-public-key".into(),
            ada.to_hex(),
            "--name".into(),
            "Ada".into(),
            "--institution".into(),
            "U".into(),
            "--project".into(),
            "p".into(),
            "--purposes".into(),
            "HMB".into(),
            "--out".into(),
            path(out),
        ];
        if let Some(id) = id {
            args.extend(["--researcher-id".to_string(), id.to_string()]);
        }
        args
    };
    let args = issue(None, "none.credential");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_fail(&args);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--researcher-id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = issue(Some("ada lovelace"), "bad.credential");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_fail(&args);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("researcher_id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = issue(Some("orcid:0000-0002-1825-0097"), "ada.credential");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(&args);
    let shown = run_json(&[
        "credential",
        "verify",
        "--credential",
        &path("ada.credential"),
        "--issuer",
        &authority.to_hex(),
    ]);
    assert_eq!(
        shown["researcher_id"], "orcid:0000-0002-1825-0097",
        "{shown}"
    );
    assert_eq!(shown["researcher"], ada.to_hex(), "{shown}");
}

/// The hospital administrator's path: show the policy, set the window's delta, sign, install.
fn set_window_delta(data_dir: &Path, delta: f64) {
    let dir = data_dir.to_str().unwrap();
    let shown = run_ok(&["policy", "show", "--data-dir", dir]);
    let mut policy: witmed_policies::policy::NodePolicy = toml::from_str(&shown).unwrap();
    policy.serial += 1;
    policy.budget.delta = delta;
    let edited = data_dir.with_extension("policy.toml");
    let signed = data_dir.with_extension("policy.signed");
    std::fs::write(&edited, toml::to_string(&policy).unwrap()).unwrap();
    let key = data_dir.join("hospital.key");
    run_ok(&[
        "policy",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--policy",
        edited.to_str().unwrap(),
        "--out",
        signed.to_str().unwrap(),
    ]);
    run_ok(&[
        "policy",
        "install",
        "--data-dir",
        dir,
        signed.to_str().unwrap(),
    ]);
}

/// The attack as it came in: an encrypted query over libp2p to real `witmed node run` processes.
#[test]
fn over_the_wire_a_member_whose_policy_has_delta_zero_refuses_its_encrypted_share() {
    use witmed_simnet::cluster::{self, Cluster};
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<PathBuf> = physionet_files(&set_a()).into_iter().take(60).collect();
    let options = cluster_options(&tmp.path().join("cluster"));
    let mut cluster = Cluster::build(&options, &cluster::split(&records, 2)).unwrap();
    set_window_delta(&cluster.members[1].data_dir, 0.0);
    cluster.start_all().unwrap();
    let study_dir = tmp.path().join("study");
    let study_id = cluster.study_keygen(&study_dir).unwrap();
    cluster.publish_study(&study_dir).unwrap();
    let (open, closed) = (
        cluster.members[0].name.clone(),
        cluster.members[1].name.clone(),
    );
    let file = tmp.path().join("enc.toml");
    std::fs::write(
        &file,
        format!(
            "version = 1\nid = \"wire-enc-1\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
             [cohort]\nage_min = 65\n[privacy]\nmode = \"encrypted\"\nepsilon = 1.0\n\
             aggregator = \"{open}\"\nstudy = \"{study_id}\"\nmin_hospitals = 1\n"
        ),
    )
    .unwrap();
    let answer = cluster.query_encrypted(&file, &study_dir, "20s").unwrap();
    let hospitals = answer["hospitals"].as_array().unwrap();
    let status = |name: &str| {
        hospitals
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {answer}"))
            .clone()
    };
    assert_eq!(status(&open)["status"], "included", "{answer}");
    let refused = status(&closed);
    assert_eq!(refused["status"], "refused", "{answer}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("delta"),
        "{answer}"
    );
    // The member charged nothing and audited the refusal.
    cluster.stop(1).unwrap();
    let member = Node::open(&cluster.members[1].data_dir, NOW).unwrap();
    let refusals: Vec<String> = audit::read_all(&member.store, Some("query.refused"))
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert!(
        refusals
            .iter()
            .any(|d| d.contains("wire-enc-1") && d.contains("budget exhausted")),
        "{refusals:?}"
    );
    drop(member);
    let charges = with_rocksdb(&cluster.members[1].data_dir, budget_keys)
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"c2/"))
        .count();
    assert_eq!(charges, 0, "a refused share is charged nothing");
}

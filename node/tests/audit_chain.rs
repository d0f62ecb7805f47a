//! The tamper-evident audit log on a real store: every edit, removal, insertion or reordering is named, an untouched log verifies.
//!
//! A node answers real queries (`engine::answer`, each writing its charge,
//! answer and audit entry in one synced batch), is closed, and then the log
//! is attacked as someone holding the data dir and its master key would:
//! entries are opened, changed and sealed again, deleted, shifted or swapped
//! in the store. `audit::verify` must name the first bad entry each time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use witmed_crypto::at_rest::MasterKey;
use witmed_crypto::{Envelope, KeyPair, Pseudonym, Role};
use witmed_node::audit::chain::{self, Head, HEAD_VERSION};
use witmed_node::audit::{self, ChainError, Entry, ViewItem};
use witmed_node::engine;
use witmed_node::node::{self, Node};
use witmed_node::store::{cf, PatientRecord, Store, RECORD_VERSION};
use witmed_policies::credential::{Credential, CREDENTIAL_VERSION};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::Sex;

const NOW: i64 = 1_790_000_000;

struct Fixture {
    node: Option<Arc<Node>>,
    dir: PathBuf,
    researcher: KeyPair,
    credential: Envelope,
    patients: Vec<Pseudonym>,
    // Dropped last: the node closes (and signs its head) before the directory goes.
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn node(&self) -> &Arc<Node> {
        self.node.as_ref().expect("the node is open")
    }

    /// Closes the node (which signs a head over the newest entry).
    fn close(&mut self) {
        let node = self.node.take().expect("the node is open");
        drop(Arc::into_inner(node).expect("no other handle on the node"));
    }

    fn reopen(&mut self) {
        self.node = Some(Arc::new(Node::open(&self.dir, NOW).unwrap()));
    }

    /// Opens the closed node's store with its master key, as an attacker holding the data dir can.
    fn store(&self) -> Store {
        let master = MasterKey::load(&self.dir.join("master.key")).unwrap();
        Store::open(&self.dir.join("db"), &master).unwrap()
    }

    /// Reopens the node and verifies its log.
    fn verify(&mut self) -> Result<audit::Verified, ChainError> {
        self.reopen();
        self.node().verify_audit()
    }
}

/// A node with a few patients, trusting one authority with a large budget.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    node::init(&dir, "General", vec![], NOW).unwrap();
    let node = Node::open(&dir, NOW).unwrap();
    let patients: Vec<Pseudonym> = (1..=3).map(|i| Pseudonym([i; 16])).collect();
    add_patients(&node, &patients);
    let authority = KeyPair::from_seed(Role::Authority, &[1; 32]);
    let researcher = KeyPair::from_seed(Role::Researcher, &[2; 32]);
    trust(&node, &authority, &dir);
    let credential = credential(&authority, &researcher);
    Fixture {
        node: Some(Arc::new(node)),
        dir,
        researcher,
        credential,
        patients,
        _tmp: tmp,
    }
}

fn add_patients(node: &Node, patients: &[Pseudonym]) {
    let mut batch = node.store.batch();
    for p in patients {
        let record = PatientRecord {
            version: RECORD_VERSION,
            source_system: "fhir".into(),
            age_years: Some(70.0),
            sex: Sex::Female,
            attributes: vec![],
            index_time: 0,
        };
        batch.put(cf::PATIENTS, &p.0, &record).unwrap();
    }
    node.store.write_durable(batch).unwrap();
    node.invalidate_index();
}

/// Installs a policy trusting `authority`, with room for thousands of queries.
fn trust(node: &Node, authority: &KeyPair, dir: &Path) {
    let hospital = KeyPair::load_role(&dir.join("hospital.key"), Role::Hospital).unwrap();
    let mut policy = node.policy();
    policy.serial += 1;
    policy.trusted_issuers.push(authority.public());
    policy.budget.epsilon = 10_000.0;
    policy.min_cohort = 1;
    policy.issued_at = NOW;
    node.install_policy(&policy.sign(&hospital).to_text(), NOW)
        .unwrap();
}

fn credential(authority: &KeyPair, researcher: &KeyPair) -> Envelope {
    Credential {
        version: CREDENTIAL_VERSION,
        researcher: researcher.public(),
        researcher_id: "audit-test".into(),
        name: "Ada".into(),
        institution: "Uni".into(),
        commercial: false,
        not_for_profit: true,
        project: "audit".into(),
        purposes: vec!["HMB".into()],
        issued_at: NOW - 60,
        expires: NOW + 86_400,
    }
    .sign(authority)
}

/// Runs `n` real queries on `threads` threads at once; each writes one audit entry.
fn run_queries(f: &Fixture, n: usize, threads: usize) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (node, researcher, credential) = (f.node().clone(), &f.researcher, &f.credential);
            scope.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let text = witmed_protocol::examples::count_over_65(&format!("q-{i}"), 0.01);
                    let query = Query::from_toml(&text).unwrap();
                    // Answered or refused, every decision is audited.
                    let _ = engine::answer(&node, &query, &researcher.public(), credential, NOW);
                }
            });
        }
    });
}

/// A closed node whose log holds about 150 entries, with signed heads.
fn closed_node_with_a_log() -> Fixture {
    let mut f = fixture();
    run_queries(&f, 150, 1);
    f.close();
    f
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn read_entry(store: &Store, seq: u64) -> Entry {
    store.get(cf::AUDIT, &key(seq)).unwrap().unwrap()
}

/// Seals `entry` at `seq`, as an attacker with the master key can.
fn write_entry(store: &Store, seq: u64, entry: &Entry) {
    let mut batch = store.batch();
    batch.put(cf::AUDIT, &key(seq), entry).unwrap();
    store.write_durable(batch).unwrap();
}

fn delete_entries(store: &Store, from: u64, to_exclusive: u64) {
    let mut batch = store.batch();
    batch.delete_range(cf::AUDIT, &key(from), &key(to_exclusive));
    store.write_durable(batch).unwrap();
}

fn last_seq(store: &Store) -> u64 {
    audit::read_all(store, None)
        .unwrap()
        .last()
        .and_then(|e| e.chain)
        .unwrap()
        .seq
}

#[test]
fn an_untouched_log_verifies_after_hundreds_of_concurrent_queries() {
    let mut f = fixture();
    run_queries(&f, 400, 4);
    let queries = audit::read_all(&f.node().store, Some("query."))
        .unwrap()
        .len();
    assert_eq!(queries, 400, "every query left one audit entry");
    f.close();
    let verified = f.verify().unwrap();
    assert!(verified.entries >= 400, "{verified:?}");
    assert_eq!(verified.legacy, 0);
    assert_eq!(verified.last_seq, verified.entries, "no gaps: {verified:?}");
    // Heads every HEAD_EVERY entries, and one at close over the newest.
    assert!(verified.heads >= 400 / chain::HEAD_EVERY, "{verified:?}");
    assert_eq!(verified.unsigned, 0, "{verified:?}");
    assert_eq!(verified.newest_head.unwrap().seq, verified.last_seq);
}

#[test]
fn an_edited_entry_is_named() {
    let mut f = closed_node_with_a_log();
    {
        let store = f.store();
        let mut entry = read_entry(&store, 100);
        entry.detail = "nothing happened here".into();
        write_entry(&store, 100, &entry);
    }
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::Edited {
            position: 100,
            seq: 100
        },
        "{err}"
    );
    assert_eq!(err.error_code(), "audit_edited");
    assert_eq!(err.first_bad(), Some(100));
}

#[test]
fn an_edited_entry_with_its_hash_recomputed_breaks_the_next_link() {
    let mut f = closed_node_with_a_log();
    {
        let store = f.store();
        let mut entry = read_entry(&store, 100);
        entry.detail = "nothing happened here".into();
        let mut link = entry.chain.unwrap();
        link.hash = chain::link_hash(100, &link.prev, &entry.digest());
        entry.chain = Some(link);
        write_entry(&store, 100, &entry);
    }
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::BrokenLink {
            position: 101,
            seq: 101
        },
        "{err}"
    );
}

#[test]
fn a_removed_entry_is_named() {
    let mut f = closed_node_with_a_log();
    delete_entries(&f.store(), 100, 101);
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::Removed {
            position: 100,
            before: 99,
            first: 100,
            last: 100,
            seq: 101
        },
        "{err}"
    );
    assert_eq!(err.first_bad(), Some(100));
}

#[test]
fn entries_removed_from_the_start_are_named() {
    let mut f = closed_node_with_a_log();
    delete_entries(&f.store(), 1, 4);
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::Removed {
            position: 1,
            before: 0,
            first: 1,
            last: 3,
            seq: 4
        },
        "{err}"
    );
}

#[test]
fn entries_removed_from_the_end_are_caught_by_the_signed_head() {
    let mut f = closed_node_with_a_log();
    let last = {
        let store = f.store();
        let last = last_seq(&store);
        delete_entries(&store, last - 2, last + 1);
        last
    };
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::Truncated {
            head: last,
            last: last - 3,
            first: last - 2
        },
        "{err}"
    );
}

#[test]
fn an_inserted_entry_is_named() {
    let mut f = closed_node_with_a_log();
    {
        let store = f.store();
        // Shift entries 100.. up by one, sealing each under its new key,
        // and slip a well-formed entry in at 100 linked to entry 99.
        let last = last_seq(&store);
        for seq in (100..=last).rev() {
            write_entry(&store, seq + 1, &read_entry(&store, seq));
        }
        let prev = read_entry(&store, 99).chain.unwrap().hash;
        let mut forged = Entry::new(NOW, "query.answered", "someone", "a query never asked");
        let mut tail = chain::Tail {
            seq: 99,
            hash: prev,
            ..chain::Tail::empty()
        };
        tail.chain(&mut forged).unwrap();
        write_entry(&store, 100, &forged);
    }
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::Inserted {
            position: 100,
            seq: 100
        },
        "{err}"
    );
    assert_eq!(err.error_code(), "audit_inserted");
}

#[test]
fn reordered_entries_are_named() {
    let mut f = closed_node_with_a_log();
    {
        let store = f.store();
        let (a, b) = (read_entry(&store, 100), read_entry(&store, 105));
        write_entry(&store, 100, &b);
        write_entry(&store, 105, &a);
    }
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::Moved {
            position: 100,
            seq: 100,
            written: 105
        },
        "{err}"
    );
}

#[test]
fn a_forged_head_is_refused() {
    let mut f = closed_node_with_a_log();
    {
        let store = f.store();
        let last = last_seq(&store);
        // A head over the real tail, but signed by a key that is not the node's.
        let hash = read_entry(&store, last).chain.unwrap().hash;
        let head = Head {
            version: HEAD_VERSION,
            seq: last + 5,
            hash,
            at: NOW,
        };
        let impostor = KeyPair::from_seed(Role::Node, &[66; 32]);
        let mut batch = store.batch();
        batch.put_meta(&chain::head_key(last + 5), &head.sign(&impostor).to_bytes());
        store.write_durable(batch).unwrap();
    }
    let err = f.verify().unwrap_err();
    assert!(matches!(err, ChainError::ForgedHead { .. }), "{err}");
    assert_eq!(err.error_code(), "audit_forged_head");
}

#[test]
fn a_patients_view_verifies_against_the_signed_head_and_an_edit_fails() {
    let mut f = fixture();
    let node_key = f.node().config.node_key;
    let (alice, bob) = (f.patients[0], f.patients[1]);
    run_queries(&f, 20, 1);
    let key = |seed| KeyPair::from_seed(Role::Patient, &[seed; 32]).public();
    witmed_node::consent_ops::enrol(f.node(), alice, key(7), NOW).unwrap();
    run_queries(&f, 10, 1);
    witmed_node::consent_ops::enrol(f.node(), bob, key(8), NOW).unwrap();
    run_queries(&f, 10, 1);

    let view = f.node().audit_view(alice, NOW).unwrap();
    let head = view.verify(&node_key).unwrap();
    let own: Vec<&Entry> = view.entries().collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].kind, "patient.enrolled");
    assert!(own[0].detail.contains(&alice.to_hex()));
    // Bob's entry is in Alice's view only as a salted digest; entries in
    // full are hers or record a research use.
    assert!(view.items.iter().all(|item| match item {
        ViewItem::Own(e) => e.subject == Some(alice),
        ViewItem::Use(e) => e.subject.is_none() && e.research.is_some(),
        ViewItem::Other { .. } => true,
    }));
    // The head is the node's newest, over every entry written.
    f.close();
    let verified = f.verify().unwrap();
    assert_eq!(head.seq, verified.last_seq);

    let mut edited = view.clone();
    for item in edited.items.iter_mut() {
        if let ViewItem::Own(entry) = item {
            entry.detail.push_str(" (and consented to everything)");
        }
    }
    let err = edited.verify(&node_key).unwrap_err();
    assert!(matches!(err, ChainError::Edited { .. }), "{err}");

    let mut dropped = view.clone();
    dropped
        .items
        .retain(|item| !matches!(item, ViewItem::Own(_)));
    assert!(dropped.verify(&node_key).is_err(), "an entry left out");

    let mut forged = view.clone();
    let impostor = KeyPair::from_seed(Role::Node, &[66; 32]);
    forged.head = head.sign(&impostor);
    let err = forged.verify(&node_key).unwrap_err();
    assert!(matches!(err, ChainError::ForgedHead { .. }), "{err}");
}

/// The version 1 entry layout, as an older witmed stored it.
#[derive(serde::Serialize, serde::Deserialize)]
struct LegacyEntry {
    version: u32,
    at: i64,
    kind: String,
    actor: String,
    detail: String,
}

witmed_crypto::single_version!(LegacyEntry, "legacy audit entry", 1);

#[test]
fn a_legacy_prefix_is_verified_and_pinned_by_the_first_chained_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([3; 32]);
    let node_key = KeyPair::from_seed(Role::Node, &[4; 32]);
    {
        let store = Store::open(tmp.path(), &master).unwrap();
        let mut batch = store.batch();
        // Older witmed could skip a number (a batch that failed): 1, 2, 5.
        for seq in [1u64, 2, 5] {
            let old = LegacyEntry {
                version: 1,
                at: NOW,
                kind: "import.batch".into(),
                actor: "operator".into(),
                detail: format!("legacy {seq}"),
            };
            batch.put(cf::AUDIT, &key(seq), &old).unwrap();
        }
        store.write_durable(batch).unwrap();
    }
    let store = Store::open(tmp.path(), &master).unwrap();
    store.set_audit_signer(KeyPair::from_seed(Role::Node, &[4; 32]));
    let mut batch = store.batch();
    for i in 0..3 {
        audit::append(
            &mut batch,
            &store,
            &Entry::new(NOW, "query.answered", "r", format!("new {i}")),
        )
        .unwrap();
    }
    store.write_durable(batch).unwrap();
    store.sign_audit_head(NOW).unwrap();
    let verified = audit::verify(&store, &node_key.public()).unwrap();
    assert_eq!(
        (verified.entries, verified.legacy, verified.last_seq),
        (6, 3, 8)
    );
    assert_eq!(read_entry(&store, 6).chain.unwrap().seq, 6);

    // Editing the legacy prefix breaks the first chained entry's link.
    let mut old = read_entry(&store, 2);
    assert!(old.chain.is_none());
    old.detail = "edited".into();
    let back = LegacyEntry {
        version: 1,
        at: old.at,
        kind: old.kind,
        actor: old.actor,
        detail: old.detail,
    };
    let mut batch = store.batch();
    batch.put(cf::AUDIT, &key(2), &back).unwrap();
    store.write_durable(batch).unwrap();
    let err = audit::verify(&store, &node_key.public()).unwrap_err();
    assert_eq!(
        err,
        ChainError::BrokenLink {
            position: 4,
            seq: 6
        },
        "{err}"
    );
}

#[test]
fn a_chain_rewritten_from_an_entry_on_is_caught_by_the_signed_head() {
    let mut f = closed_node_with_a_log();
    let first_head_after = {
        let store = f.store();
        // Edit entry 100 and re-chain everything after it: every link holds,
        // but the heads the node signed over the old entries no longer match.
        let last = last_seq(&store);
        let mut tail = chain::Tail {
            seq: 99,
            hash: read_entry(&store, 99).chain.unwrap().hash,
            ..chain::Tail::empty()
        };
        for seq in 100..=last {
            let mut entry = read_entry(&store, seq);
            if seq == 100 {
                entry.detail = "nothing happened here".into();
            }
            tail.chain(&mut entry).unwrap();
            write_entry(&store, seq, &entry);
        }
        let mut heads = Vec::new();
        store
            .scan_prefix(cf::META, chain::HEAD_PREFIX, |key, _| {
                heads.push(u64::from_be_bytes(
                    key[chain::HEAD_PREFIX.len()..].try_into().unwrap(),
                ));
                Ok(())
            })
            .unwrap();
        heads.into_iter().find(|&seq| seq >= 100).unwrap()
    };
    let err = f.verify().unwrap_err();
    assert_eq!(
        err,
        ChainError::HeadMismatch {
            seq: first_head_after
        },
        "{err}"
    );
    assert_eq!(err.error_code(), "audit_head_mismatch");
}

#[test]
fn a_batch_that_is_never_written_spends_no_sequence_number() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), &MasterKey::from_bytes([3; 32])).unwrap();
    let entry = |detail: &str| Entry::new(NOW, "test", "node", detail);
    let mut written = store.batch();
    audit::append(&mut written, &store, &entry("first")).unwrap();
    store.write_durable(written).unwrap();
    let mut abandoned = store.batch();
    audit::append(&mut abandoned, &store, &entry("never written")).unwrap();
    drop(abandoned);
    let mut written = store.batch();
    audit::append(&mut written, &store, &entry("second")).unwrap();
    store.write_durable(written).unwrap();
    let node_key = KeyPair::from_seed(Role::Node, &[4; 32]).public();
    let verified = audit::verify(&store, &node_key).unwrap();
    assert_eq!((verified.entries, verified.last_seq), (2, 2));
    assert_eq!(read_entry(&store, 2).detail, "second");
    // Opened outside its node, the store signs no heads.
    assert_eq!((verified.heads, verified.unsigned), (0, 2));
}

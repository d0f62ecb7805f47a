//! Golden bytes of every stored and sent type, and of each older version with its upgrade or refusal.
//!
//! Each fixture in `tests/golden/` is the hex of one value, made from fixed
//! keys, seeds and times (ed25519 signatures are deterministic, so signed
//! objects are too). The tests check both ways: today's encoding of the value
//! is exactly the committed bytes, and the committed bytes decode (version
//! first, [`witmed_crypto::versioned`]) back to the value. So **a change to
//! a type's layout without a new version fails here**: the new bytes differ
//! from the fixture, and old stores and old peers would no longer decode.
//! The fix is a new version (freeze the old layout, add its upgrade, bump the
//! version constant), never a regenerated fixture alone.
//!
//! After adding a version on purpose, write its fixture with
//! `WITMED_REGENERATE_GOLDEN=1 cargo test -p witmed-node --test golden`
//! and review the diff: only the new version's fixture may change (older
//! versions' fixtures are made from frozen layouts, so they come out the same).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use witmed_crypto::versioned::{self, Evolving};
use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey, Role};
use witmed_node::accounts::{
    Account, AccountV1, Cap, CohortCharge, ResearcherTotal, WindowTotal, ACCOUNT_VERSION,
};
use witmed_node::audit::chain::{self, ENTRY_VERSION, HEAD_DOMAIN, HEAD_VERSION};
use witmed_node::audit::{Entry, EntryV1, EntryV2, Link, ResearchUse};
use witmed_node::consents::{Enrolment, StoredSigned};
use witmed_node::encrypted::aggregate::StoredAggregation;
use witmed_node::encrypted::study::StoredStudy;
use witmed_node::engine::{Prepared, StoredSeal, PREPARED_VERSION};
use witmed_node::ledger::{Charge, Head, StoredAnswer};
use witmed_node::node::{ConsortiumSeal, InstalledFile, TrustSeal};
use witmed_node::store::{ConditionRecord, ObservationRecord, PatientRecord, RECORD_VERSION};
use witmed_policies::cap::{CapRequest, CAP_DOMAIN};
use witmed_policies::consent::{
    Reenrolment, Revocation, Token, REENROLMENT_DOMAIN, REVOCATION_DOMAIN, TOKEN_DOMAIN,
};
use witmed_policies::credential::{Credential, CREDENTIAL_DOMAIN};
use witmed_policies::directory::{Directory, Member, DIRECTORY_DOMAIN};
use witmed_policies::policy::{BudgetV1, NodePolicy, NodePolicyV1, POLICY_DOMAIN};
use witmed_policies::Error as PolicyError;
use witmed_protocol::answer::{Answer, Component, Mechanism, Released};
use witmed_protocol::encrypted::{
    Contribution, EncryptedTotal, Included, LeftOut, Ready, Receipt, SealRequest, SealedShare,
    StudyAnnouncement, READY_DOMAIN, RECEIPT_DOMAIN, SEAL_DOMAIN, STUDY_DOMAIN,
};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode, Sex};
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, QUERY_DOMAIN, RESPONSE_DOMAIN};

/// Fixed time of every fixture: 2026-01-01T00:00:00Z.
const T: i64 = 1_767_225_600;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.hex"))
}

fn regenerating() -> bool {
    std::env::var("WITMED_REGENERATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// The committed bytes of `name` (written from `made` when regenerating).
fn committed(name: &str, made: &[u8]) -> Vec<u8> {
    let path = fixture_path(name);
    if regenerating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", hex::encode(made))).unwrap();
    }
    read_fixture(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with WITMED_REGENERATE_GOLDEN=1",
            path.display()
        )
    });
    hex::decode(text.trim()).unwrap()
}

/// Today's encoding of `value` is the committed fixture, and the fixture
/// decodes back to a value that encodes the same (for types without `PartialEq`).
fn golden_bytes<T: Evolving + for<'de> Deserialize<'de>>(name: &str, value: &T) -> T {
    let made = versioned::encode(value);
    let fixture = committed(name, &made);
    assert_eq!(
        hex::encode(&made),
        hex::encode(&fixture),
        "{name}: the layout of {} changed without a new version: old stores and peers would not decode it. Add a version (see witmed_crypto::versioned)",
        T::WHAT
    );
    let decoded: T = versioned::decode(&fixture).unwrap();
    assert_eq!(versioned::encode(&decoded), fixture, "{name}");
    decoded
}

/// [`golden_bytes`], and the decoded value equals `value`.
fn golden<T: Evolving + for<'de> Deserialize<'de> + PartialEq + Debug>(name: &str, value: &T) {
    assert_eq!(&golden_bytes(name, value), value, "{name}");
}

/// A signed object's fixture is its envelope's wire bytes; it opens to `value`.
fn golden_signed<T: Evolving + for<'de> Deserialize<'de> + PartialEq + Debug>(
    name: &str,
    domain: &str,
    value: &T,
    key: &KeyPair,
) -> Envelope {
    let envelope = Envelope::seal(domain, value, key);
    golden(&format!("{name}.payload"), value);
    let fixture = committed(name, &envelope.to_bytes());
    assert_eq!(
        hex::encode(envelope.to_bytes()),
        hex::encode(&fixture),
        "{name}"
    );
    let back = Envelope::from_bytes(&fixture, 1 << 20).unwrap();
    assert_eq!(&back.open::<T>(domain).unwrap(), value, "{name}");
    back
}

fn key(role: Role, seed: u8) -> KeyPair {
    KeyPair::from_seed(role, &[seed; 32])
}

fn patient() -> Pseudonym {
    Pseudonym([5; 16])
}

fn query() -> Query {
    Query::from_toml(
        r#"
version = 1
id = "golden-hr"
purpose = "HMB"
aggregate = "mean"

[cohort]
age_min = 65

[feature.observation]
code = "8867-4"
reduce = "mean"

[bounds]
lower = 30.0
upper = 200.0

[privacy]
mode = "dp"
epsilon = 1.0
"#,
    )
    .unwrap()
}

fn credential() -> Credential {
    Credential {
        version: 2,
        researcher: key(Role::Researcher, 2).public(),
        researcher_id: "ada@uni.example".into(),
        name: "Ada".into(),
        institution: "University".into(),
        commercial: false,
        not_for_profit: true,
        project: "IRB-1".into(),
        purposes: vec!["HMB".into()],
        issued_at: T,
        expires: T + 86_400,
    }
}

fn answer() -> Answer {
    Answer {
        version: 1,
        query_id: "golden-hr".into(),
        query_digest: [7; 32],
        node: "north".into(),
        released: Released {
            value: Some(81.5),
            values: vec![81.5],
            ci95: Some((79.0, 84.0)),
            ci95s: vec![(79.0, 84.0)],
            components: vec![Component {
                name: "sum".into(),
                value: 8150.0,
                noise_scale: 170.0,
                mechanism: Mechanism::DiscreteLaplace,
                accuracy95: 509.3,
            }],
            epsilon_spent: 1.0,
            suppressed: false,
        },
        budget_left: 9.0,
        answered_at: T,
    }
}

fn contribution() -> Contribution {
    Contribution {
        version: 1,
        study: [3; 32],
        ciphertext: vec![1, 2, 3, 4],
        values: 2,
        share_scale: 0.5,
        epsilon_spent: 0.1,
        delta_spent: 1e-6,
        budget_left: 9.9,
        answered_at: T,
    }
}

fn ready() -> Ready {
    Ready {
        version: 2,
        query_digest: [7; 32],
        researcher: key(Role::Researcher, 2).public(),
        member: "north".into(),
        ephemeral: [8; 32],
    }
}

fn receipt() -> Receipt {
    Receipt {
        version: 2,
        query_digest: [7; 32],
        researcher: key(Role::Researcher, 2).public(),
        member: "north".into(),
        study: [3; 32],
        roster_hash: [9; 32],
        ciphertext_hash: [10; 32],
        values: 2,
        share_scale: 0.5,
        epsilon_spent: 0.1,
        delta_spent: 1e-6,
        budget_left: 9.9,
    }
}

fn sealed_share(node: &KeyPair) -> SealedShare {
    SealedShare {
        member: "north".into(),
        ciphertext: vec![4, 3, 2, 1],
        receipt: Envelope::seal(RECEIPT_DOMAIN, &receipt(), node),
    }
}

fn total(node: &KeyPair) -> EncryptedTotal {
    EncryptedTotal {
        version: 2,
        study: [3; 32],
        values: 2,
        roster: vec![Envelope::seal(READY_DOMAIN, &ready(), node)],
        shares: vec![sealed_share(node)],
        included: vec![Included {
            node: "north".into(),
            share_scale: 0.5,
            epsilon_spent: 0.1,
            delta_spent: 1e-6,
            budget_left: 9.9,
        }],
        left_out: vec![LeftOut {
            node: "south".into(),
            status: "refused".into(),
            reason: "budget".into(),
        }],
    }
}

fn policy(node: PublicKey) -> NodePolicy {
    let mut policy = NodePolicy::default_for(node, vec![key(Role::Authority, 4).public()]);
    policy.issued_at = T;
    // The kinds of the fixture's time; later kinds (the analyses) are names, not layout.
    policy.query_kinds = ["count", "sum", "mean", "histogram", "quantiles"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    policy
}

/// The sent types: queries, answers, the encrypted mode's messages and the node's response.
#[test]
fn sent_types_match_their_golden_bytes() {
    let researcher = key(Role::Researcher, 2);
    let node = key(Role::Hospital, 1);
    golden("query", &query());
    golden(
        "query.v2.survival",
        &Query::from_toml(&witmed_protocol::examples::survival_by_icu_type(
            "golden-km",
            1.0,
        ))
        .unwrap(),
    );
    golden(
        "query.v2.regression",
        &Query::from_toml(&witmed_protocol::examples::death_on_age_sex_icu_newton(
            "golden-lr",
            1.0,
        ))
        .unwrap(),
    );
    golden(
        "query.v3.logistic",
        &Query::from_toml(&witmed_protocol::examples::death_on_age_sex_icu(
            "golden-lr",
            1.0,
        ))
        .unwrap(),
    );
    golden(
        "query.v2.table",
        &Query::from_toml(&witmed_protocol::examples::sex_by_death("golden-t", 1.0)).unwrap(),
    );
    golden("answer", &answer());
    let request = QueryRequest {
        version: 1,
        query: query(),
        credential: credential().sign(&key(Role::Authority, 4)).to_bytes(),
        nonce: [6; 16],
        issued_at: T,
    };
    golden_signed("query_request", QUERY_DOMAIN, &request, &researcher);
    let outcomes = [
        ("answered", Outcome::Answered(answer())),
        (
            "refused",
            Outcome::Refused {
                code: "budget_exhausted".into(),
                reason: "no budget left".into(),
            },
        ),
        (
            "ready",
            Outcome::Ready(Envelope::seal(READY_DOMAIN, &ready(), &node)),
        ),
        ("sealed", Outcome::Sealed(sealed_share(&node))),
        ("aggregated", Outcome::Aggregated(total(&node))),
        ("study_installed", Outcome::StudyInstalled),
    ];
    for (name, outcome) in outcomes {
        let response = NodeResponse {
            version: 1,
            node: node.public(),
            node_name: "north".into(),
            query_id: "golden-hr".into(),
            query_digest: [7; 32],
            outcome,
        };
        golden_signed(
            &format!("node_response_{name}"),
            RESPONSE_DOMAIN,
            &response,
            &node,
        );
    }
    let announcement = StudyAnnouncement {
        version: 1,
        params: "witmed-tfhe-v1".into(),
        public_key: vec![1, 1, 2, 3, 5, 8],
        credential: credential().sign(&key(Role::Authority, 4)).to_bytes(),
        issued_at: T,
    };
    golden_signed(
        "study_announcement",
        STUDY_DOMAIN,
        &announcement,
        &researcher,
    );
    golden("contribution", &contribution());
    golden_signed("ready", READY_DOMAIN, &ready(), &node);
    let seal = SealRequest {
        version: 2,
        query: Envelope::seal(QUERY_DOMAIN, &request, &researcher).to_bytes(),
        roster: vec![Envelope::seal(READY_DOMAIN, &ready(), &node)],
    };
    golden_signed("seal_request", SEAL_DOMAIN, &seal, &researcher);
    golden_signed("receipt", RECEIPT_DOMAIN, &receipt(), &node);
    golden("encrypted_total", &total(&node));
}

/// The signed objects patients, hospitals and authorities make.
#[test]
fn signed_objects_match_their_golden_bytes() {
    let node = key(Role::Hospital, 1);
    golden_signed(
        "audit_head",
        HEAD_DOMAIN,
        &chain::Head {
            version: HEAD_VERSION,
            seq: 64,
            hash: [9; 32],
            at: T,
        },
        &node,
    );
    let patient_key = key(Role::Patient, 3);
    let token = Token {
        version: 1,
        id: "00112233445566778899aabbccddeeff".into(),
        node: node.public(),
        patient: patient(),
        purposes: vec!["HMB".into()],
        categories: BTreeSet::from([Category::VitalSigns, Category::Demographics]),
        modes: BTreeSet::from([Mode::Dp, Mode::Encrypted]),
        not_before: T,
        expires: T + 365 * 86_400,
        simulated: false,
    };
    golden_signed("consent_token", TOKEN_DOMAIN, &token, &patient_key);
    let revocation = Revocation {
        version: 1,
        token_id: token.id.clone(),
        node: node.public(),
        patient: patient(),
        issued_at: T,
    };
    golden_signed(
        "consent_revocation",
        REVOCATION_DOMAIN,
        &revocation,
        &patient_key,
    );
    let reenrolment = Reenrolment {
        version: 1,
        node: node.public(),
        patient: patient(),
        new_key: key(Role::Patient, 9).public(),
        reason: "lost phone".into(),
        issued_at: T,
        id: "r1".into(),
    };
    golden_signed(
        "patient_reenrolment",
        REENROLMENT_DOMAIN,
        &reenrolment,
        &patient_key,
    );
    golden_signed(
        "credential",
        CREDENTIAL_DOMAIN,
        &credential(),
        &key(Role::Authority, 4),
    );
    golden_signed(
        "node_policy",
        POLICY_DOMAIN,
        &policy(node.public()),
        &key(Role::Hospital, 7),
    );
    let directory = Directory {
        version: 1,
        consortium: "golden".into(),
        serial: 1,
        issued_at: T,
        members: vec![Member {
            name: "north".into(),
            peer_id: "12D3KooWGolden".into(),
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            signing_key: node.public(),
        }],
    };
    golden_signed(
        "consortium_directory",
        DIRECTORY_DOMAIN,
        &directory,
        &key(Role::Authority, 4),
    );
}

/// The records a node keeps in its store (the plain bytes before sealing).
#[test]
fn stored_records_match_their_golden_bytes() {
    let node = key(Role::Hospital, 1);
    let v = RECORD_VERSION;
    golden(
        "patient_record",
        &PatientRecord {
            version: v,
            source_system: "physionet2012".into(),
            age_years: Some(71.0),
            sex: Sex::Female,
            attributes: vec![("icu_type".into(), 2.0)],
            index_time: 0,
        },
    );
    golden(
        "observation_record",
        &ObservationRecord {
            version: v,
            value: 88.0,
        },
    );
    golden(
        "condition_record",
        &ConditionRecord {
            version: v,
            system: "http://snomed.info/sct".into(),
            code: "44054006".into(),
            onset: Some(T),
        },
    );
    golden(
        "budget_charge",
        &Charge {
            version: v,
            query_id: "golden-hr".into(),
            epsilon: 1.0,
            delta: 0.0,
            at: T,
            seq: 3,
        },
    );
    golden(
        "stored_answer",
        &StoredAnswer {
            version: v,
            query_digest: [7; 32],
            answer: answer().to_bytes(),
        },
    );
    golden(
        "ledger_head",
        &Head {
            version: v,
            charges: 3,
            chain: [11; 32],
        },
    );
    golden(
        "stored_seal",
        &StoredSeal {
            version: v,
            query_digest: [7; 32],
            roster_hash: [9; 32],
            share: versioned_free_share_bytes(&node),
            at: T,
        },
    );
    golden_bytes(
        "prepared",
        &Prepared {
            version: PREPARED_VERSION,
            contribution: contribution(),
            ephemeral_secret: [12; 32],
            ready: Envelope::seal(READY_DOMAIN, &ready(), &node),
        },
    );
    golden(
        "trust_seal",
        &TrustSeal {
            version: v,
            node_key: node.public(),
            hospital_key: key(Role::Hospital, 7).public(),
            policy: InstalledFile {
                serial: 1,
                digest: [13; 32],
            },
            consortium: Some(ConsortiumSeal {
                authority: key(Role::Authority, 4).public(),
                directory: Some(InstalledFile {
                    serial: 1,
                    digest: [14; 32],
                }),
            }),
        },
    );
    golden(
        "stored_aggregation",
        &StoredAggregation {
            version: v,
            query_id: "golden-enc".into(),
            query_digest: [7; 32],
            researcher: key(Role::Researcher, 2).public(),
            total: total(&node).to_bytes(),
            at: T,
        },
    );
    golden(
        "stored_study",
        &StoredStudy {
            version: v,
            researcher: key(Role::Researcher, 2).public(),
            public_key: vec![1, 1, 2, 3, 5, 8],
            installed_at: T,
        },
    );
    golden(
        "audit_entry.v3",
        &Entry {
            version: ENTRY_VERSION,
            at: T,
            kind: "query.answered".into(),
            actor: "ada@uni.example".into(),
            detail: "query golden-hr answered".into(),
            subject: None,
            chain: Some(Link {
                seq: 8,
                prev: [1; 32],
                salt: [2; 16],
                hash: [3; 32],
            }),
            research: Some(research_use()),
        },
    );
    golden(
        "enrolment",
        &Enrolment {
            version: v,
            key: key(Role::Patient, 3).public(),
            at: T,
            simulated: false,
        },
    );
    golden(
        "stored_signed",
        &StoredSigned {
            version: v,
            text: "{\"witmed_envelope\":1}".into(),
            simulated: false,
        },
    );
}

/// A [`SealedShare`] has no version of its own: it travels inside a
/// versioned [`NodeResponse`] or [`StoredSeal`], whose versions cover it.
/// Its bytes are fixed here so a change to it shows too.
fn versioned_free_share_bytes(node: &KeyPair) -> Vec<u8> {
    let bytes = sealed_share(node).to_bytes();
    let fixture = committed("sealed_share", &bytes);
    assert_eq!(hex::encode(&bytes), hex::encode(&fixture), "sealed_share");
    assert_eq!(
        SealedShare::from_bytes(&fixture).unwrap(),
        sealed_share(node)
    );
    bytes
}

fn research_use() -> ResearchUse {
    ResearchUse {
        charge: 65,
        query_id: "golden-hr".into(),
        researcher: [14; 16],
        researcher_name: "Ada".into(),
        institution: "University".into(),
        project: "p1".into(),
        purpose: "HMB".into(),
        aggregate: "mean".into(),
        mode: "dp".into(),
        epsilon: 0.5,
        delta: 0.0,
    }
}

fn entry_v2() -> EntryV2 {
    EntryV2 {
        version: 2,
        at: T,
        kind: "consent.granted".into(),
        actor: "ada@uni.example".into(),
        detail: "granted golden".into(),
        subject: Some(patient()),
        chain: Some(Link {
            seq: 7,
            prev: [1; 32],
            salt: [2; 16],
            hash: [3; 32],
        }),
    }
}

/// A version 2 audit entry (chained, before research uses) is read through
/// its frozen layout with no research use, and digests as it always did:
/// the v2 content domain over the v2 fields.
#[test]
fn a_version_2_audit_entry_is_read_without_a_research_use_and_digests_as_before() {
    let old = entry_v2();
    let made = postcard::to_stdvec(&old).unwrap();
    let fixture = committed("audit_entry.v2", &made);
    assert_eq!(hex::encode(made), hex::encode(&fixture));
    assert!(postcard::from_bytes::<Entry>(&fixture).is_err());
    let upgraded: Entry = versioned::decode(&fixture).unwrap();
    assert_eq!(upgraded.research, None);
    assert_eq!(
        (upgraded.at, upgraded.subject, upgraded.chain),
        (old.at, old.subject, old.chain)
    );
    // The digest of a v2 entry, written out from its definition.
    let mut bytes = b"witmed/audit-content/v2\0".to_vec();
    bytes.extend_from_slice(&[2; 16]);
    bytes.extend(
        postcard::to_stdvec(&(
            T,
            "consent.granted",
            "ada@uni.example",
            "granted golden",
            Some(patient()),
        ))
        .unwrap(),
    );
    assert_eq!(upgraded.digest(), witmed_crypto::sha256(&bytes));
    // A research use changes the digest (it is covered by the chain).
    let with_use = upgraded.clone().recording(research_use());
    assert_ne!(with_use.digest(), upgraded.digest());
}

/// A version 1 audit entry (before the hash chain) is read through its
/// frozen layout as a legacy entry: no link, no subject.
#[test]
fn a_version_1_audit_entry_is_read_as_a_legacy_entry() {
    let old = EntryV1 {
        version: 1,
        at: T,
        kind: "query".into(),
        actor: "ada@uni.example".into(),
        detail: "answered golden-hr".into(),
    };
    let made = postcard::to_stdvec(&old).unwrap();
    // The fixture of version 1 keeps its historical name.
    let fixture = committed("audit_entry", &made);
    assert_eq!(hex::encode(made), hex::encode(&fixture));
    assert!(postcard::from_bytes::<Entry>(&fixture).is_err());
    let upgraded: Entry = versioned::decode(&fixture).unwrap();
    assert_eq!(
        upgraded,
        Entry::new(T, "query", "ada@uni.example", "answered golden-hr")
    );
    assert_eq!((upgraded.chain, upgraded.subject), (None, None));
}

/// A version 1 node policy (no lifetime cap, no simulated consent) is read
/// through its frozen layout and upgraded to today's with neither.
/// A version 1 patient account (no uses) is read through its frozen layout
/// with an empty list of uses and everything else as it was.
#[test]
fn a_version_1_patient_account_is_upgraded_with_no_uses() {
    let old = AccountV1 {
        version: RECORD_VERSION,
        total_epsilon: 1.5,
        total_delta: 1e-6,
        answers: 2,
        per_window: vec![WindowTotal {
            start: T,
            seconds: 2_592_000,
            epsilon: 1.5,
            delta: 1e-6,
            answers: 2,
        }],
        per_researcher: vec![ResearcherTotal {
            researcher: [14; 16],
            epsilon: 1.5,
            delta: 1e-6,
            answers: 2,
        }],
        cap: Some(Cap {
            epsilon: 4.0,
            request: "0f".repeat(16),
            set_at: T,
        }),
        folded_through: 64,
    };
    let made = postcard::to_stdvec(&old).unwrap();
    // The fixture of version 1 keeps its historical name.
    let fixture = committed("patient_account", &made);
    assert_eq!(hex::encode(made), hex::encode(&fixture));
    assert!(postcard::from_bytes::<Account>(&fixture).is_err());
    let upgraded: Account = versioned::decode(&fixture).unwrap();
    assert_eq!(
        upgraded,
        Account {
            version: ACCOUNT_VERSION,
            total_epsilon: old.total_epsilon,
            total_delta: old.total_delta,
            answers: old.answers,
            per_window: old.per_window.clone(),
            per_researcher: old.per_researcher.clone(),
            cap: old.cap.clone(),
            folded_through: old.folded_through,
            uses: vec![],
        }
    );
}

#[test]
fn patient_accounts_and_cap_requests_match_their_golden_bytes() {
    golden(
        "patient_account.v2",
        &Account {
            version: ACCOUNT_VERSION,
            total_epsilon: 1.5,
            total_delta: 1e-6,
            answers: 2,
            per_window: vec![WindowTotal {
                start: T,
                seconds: 2_592_000,
                epsilon: 1.5,
                delta: 1e-6,
                answers: 2,
            }],
            per_researcher: vec![ResearcherTotal {
                researcher: [14; 16],
                epsilon: 1.5,
                delta: 1e-6,
                answers: 2,
            }],
            cap: Some(Cap {
                epsilon: 4.0,
                request: "0f".repeat(16),
                set_at: T,
            }),
            folded_through: 64,
            uses: vec![3, 40, 64],
        },
    );
    golden(
        "patient_cohort_charge",
        &CohortCharge {
            version: RECORD_VERSION,
            seq: 65,
            researcher: [14; 16],
            epsilon: 0.5,
            delta: 0.0,
            at: T,
            window_seconds: 2_592_000,
            patients: vec![patient(), Pseudonym([6; 16])],
        },
    );
    let request = CapRequest {
        version: 1,
        id: "0e".repeat(16),
        node: key(Role::Node, 3).public(),
        patient: patient(),
        epsilon: Some(4.0),
        issued_at: T,
    };
    golden_signed("privacy_cap", CAP_DOMAIN, &request, &key(Role::Patient, 8));
}

#[test]
fn a_version_1_node_policy_is_upgraded() {
    let node = key(Role::Hospital, 1);
    let admin = key(Role::Hospital, 7);
    let today = policy(node.public());
    let old = NodePolicyV1 {
        version: 1,
        node: today.node,
        serial: today.serial,
        trusted_issuers: today.trusted_issuers.clone(),
        query_kinds: today.query_kinds.clone(),
        modes: today.modes.clone(),
        budget: BudgetV1 {
            epsilon: today.budget.epsilon,
            delta: today.budget.delta,
            window_seconds: today.budget.window_seconds,
        },
        min_cohort: today.min_cohort,
        categories: today.categories.clone(),
        issued_at: today.issued_at,
    };
    let made = Envelope::seal(POLICY_DOMAIN, &old, &admin).to_bytes();
    let fixture = committed("node_policy.v1", &made);
    assert_eq!(hex::encode(made), hex::encode(&fixture));
    let envelope = Envelope::from_bytes(&fixture, 1 << 16).unwrap();
    // Today's layout alone cannot read it: the version must be read first.
    assert!(postcard::from_bytes::<NodePolicy>(&envelope.payload).is_err());
    let upgraded =
        witmed_policies::load_policy(&envelope, &admin.public(), &node.public()).unwrap();
    assert_eq!(upgraded, today);
    assert_eq!(upgraded.budget.lifetime, None);
    assert!(!upgraded.allow_demonstration_data);
}

/// The version 1 credential layout, as issued before `researcher_id` existed.
#[derive(Serialize)]
struct CredentialV1 {
    version: u32,
    researcher: PublicKey,
    name: String,
    institution: String,
    commercial: bool,
    not_for_profit: bool,
    project: String,
    purposes: Vec<String>,
    issued_at: i64,
    expires: i64,
}

/// A version 1 credential is refused through the dispatch, saying what to do:
/// budgets follow the researcher_id it lacks.
#[test]
fn a_version_1_credential_is_refused_with_what_to_do() {
    let authority = key(Role::Authority, 4);
    let c = credential();
    let old = CredentialV1 {
        version: 1,
        researcher: c.researcher,
        name: c.name,
        institution: c.institution,
        commercial: c.commercial,
        not_for_profit: c.not_for_profit,
        project: c.project,
        purposes: c.purposes,
        issued_at: c.issued_at,
        expires: c.expires,
    };
    let made = Envelope::seal(CREDENTIAL_DOMAIN, &old, &authority).to_bytes();
    let fixture = committed("credential.v1", &made);
    assert_eq!(hex::encode(made), hex::encode(&fixture));
    let envelope = Envelope::from_bytes(&fixture, 1 << 16).unwrap();
    let err =
        witmed_policies::verify_credential(&envelope, &[authority.public()], T + 1).unwrap_err();
    assert!(matches!(err, PolicyError::InvalidCredential(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("version 1") && message.contains("--researcher-id"),
        "{message}"
    );
}

/// The version 1 encrypted total: one summed ciphertext, no receipts.
#[derive(Serialize)]
struct EncryptedTotalV1 {
    version: u32,
    study: [u8; 32],
    ciphertext: Vec<u8>,
    values: u32,
    included: Vec<Included>,
    left_out: Vec<LeftOut>,
}

/// A version 1 total is refused as obsolete, clearly: its sum cannot be
/// checked against the members' receipts.
#[test]
fn a_version_1_encrypted_total_is_refused_as_obsolete() {
    let old = EncryptedTotalV1 {
        version: 1,
        study: [3; 32],
        ciphertext: vec![1, 2, 3],
        values: 2,
        included: vec![],
        left_out: vec![],
    };
    let made = postcard::to_stdvec(&old).unwrap();
    let fixture = committed("encrypted_total.v1", &made);
    assert_eq!(hex::encode(made), hex::encode(&fixture));
    let err = versioned::decode::<EncryptedTotal>(&fixture).unwrap_err();
    assert_eq!(err.code(), "format_obsolete");
    assert!(err.to_string().contains("receipts"), "{err}");
    assert!(EncryptedTotal::from_bytes(&fixture)
        .unwrap_err()
        .contains("version 1"));
}

/// A record from a newer witmed is refused with "upgrade witmed", not misread.
#[test]
fn a_newer_version_is_refused_not_misread() {
    let mut bytes = read_fixture("observation_record");
    bytes[0] = 2;
    let err = versioned::decode::<ObservationRecord>(&bytes).unwrap_err();
    assert_eq!(err.code(), "format_newer");
    assert!(err.to_string().contains("upgrade witmed"), "{err}");
}

/// Nothing decodes postcard bytes around the version dispatch: every stored
/// or sent type is read by `witmed_crypto::versioned`. The two exceptions are
/// the envelope container (its version is checked by `Envelope::verify`, its
/// payload is dispatched) and `SealedShare`, which has no version of its own
/// and only travels inside versioned types (both fixed by fixtures above).
#[test]
fn postcard_is_decoded_only_through_the_version_dispatch() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let allowed = [
        "crypto/src/versioned.rs",
        "crypto/src/envelope.rs",
        "protocol/src/encrypted.rs",
    ];
    let mut found = Vec::new();
    for dir in [
        "crypto/src",
        "protocol/src",
        "policies/src",
        "node/src",
        "simnet/src",
    ] {
        scan(&root, &root.join(dir), &allowed, &mut found);
    }
    assert!(
        found.is_empty(),
        "postcard decoded outside the dispatch: {found:?}"
    );
}

fn scan(root: &std::path::Path, dir: &std::path::Path, allowed: &[&str], found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(root, &path, allowed, found);
            continue;
        }
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if path.extension().is_none_or(|e| e != "rs") || allowed.contains(&name.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("postcard::from_bytes") || text.contains("postcard::take_from_bytes") {
            found.push(name);
        }
    }
}

#[test]
fn device_records_match_their_golden_bytes() {
    use witmed_node::devices::{
        AckRecord, AlertRecord, DeviceRecord, PatientState, ReadingRecord, SourceRecord,
    };
    use witmed_protocol::device_request::Band;
    let v = RECORD_VERSION;
    let device = key(Role::Patient, 9).public();
    golden(
        "device_record",
        &DeviceRecord {
            version: v,
            patient: patient(),
            label: "ward 3 bed 12".into(),
            enrolled_at: T,
            retired_at: Some(T + 86_400),
            last_seq: Some(41),
        },
    );
    golden(
        "device_reading_record",
        &ReadingRecord {
            version: v,
            device,
            seq: 41,
            code: "8310-5".into(),
            time: T + 60,
            value: 39.2,
            unit: "Cel".into(),
        },
    );
    golden(
        "news2_alert_record",
        &AlertRecord {
            version: v,
            patient: patient(),
            at: T + 60,
            raised_at: T + 61,
            score: 6,
            band: Band::Medium,
            spo2_scale_2: true,
            sources: vec![SourceRecord {
                device,
                seq: 41,
                code: "8310-5".into(),
                time: T + 60,
                value: 39.2,
                unit: "Cel".into(),
                sub_score: 2,
            }],
            ack: Some(AckRecord {
                by: "Dr Okafor".into(),
                at: T + 120,
            }),
        },
    );
    golden(
        "patient_news2_state",
        &PatientState {
            version: v,
            hypercapnic: true,
            last_band: Some(Band::LowMedium),
            last_score: Some(3),
            last_at: Some(T + 60),
        },
    );
}

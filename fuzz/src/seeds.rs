//! Valid inputs built in code: fixed keys, and real signed objects, queries, study keys, ciphertexts, FHIR bundles and PhysioNet files.
//!
//! Mutating valid inputs gets the fuzzer past the outer checks (a parse,
//! a signature) into the deeper parsing that random bytes never reach.
//! Keys are derived from fixed seeds so that every run, and every saved
//! finding, replays the same way.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use witmed_crypto::fhe::{self, ClientKey, CompactPublicKey};
use witmed_crypto::{Envelope, KeyPair, Pseudonym, PublicKey, Role};
use witmed_policies::consent::{Revocation, Token, TOKEN_VERSION};
use witmed_policies::credential::{Credential, CREDENTIAL_VERSION};
use witmed_policies::directory::{Directory, Member};
use witmed_policies::policy::NodePolicy;
use witmed_protocol::answer::{Answer, Component, Mechanism, Released, ANSWER_VERSION};
use witmed_protocol::encrypted::{
    Contribution, EncryptedTotal, Included, LeftOut, Ready, Receipt, SealedShare,
    StudyAnnouncement, ENCRYPTED_VERSION, SECAGG_VERSION,
};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, WIRE_VERSION};

/// The clock every harness passes as `now`: fixed, so findings replay.
pub const NOW: i64 = 1_800_000_000;

/// The fixed keys of the parties.
pub struct Keys {
    pub patient: KeyPair,
    pub node: KeyPair,
    pub authority: KeyPair,
    pub researcher: KeyPair,
    pub hospital: KeyPair,
    pub consortium: KeyPair,
}

/// The parties' keys, made once.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        patient: KeyPair::from_seed(Role::Patient, &[1; 32]),
        node: KeyPair::from_seed(Role::Node, &[2; 32]),
        authority: KeyPair::from_seed(Role::Authority, &[3; 32]),
        researcher: KeyPair::from_seed(Role::Researcher, &[4; 32]),
        hospital: KeyPair::from_seed(Role::Hospital, &[5; 32]),
        consortium: KeyPair::from_seed(Role::Authority, &[6; 32]),
    })
}

/// The enrolled patient's pseudonym.
pub const PATIENT: Pseudonym = Pseudonym([7; 16]);

/// A study key pair, generated once per process (TFHE key generation is the slow part).
pub fn study() -> &'static (ClientKey, CompactPublicKey) {
    static STUDY: OnceLock<(ClientKey, CompactPublicKey)> = OnceLock::new();
    STUDY.get_or_init(ClientKey::generate)
}

pub fn token() -> Token {
    Token {
        version: TOKEN_VERSION,
        id: "0123456789abcdef0123456789abcdef".into(),
        node: keys().node.public(),
        patient: PATIENT,
        purposes: vec!["HMB".into(), "NCU".into()],
        categories: Category::ALL.into_iter().collect(),
        modes: BTreeSet::from([Mode::Dp, Mode::Encrypted]),
        not_before: NOW - 86_400,
        expires: NOW + 86_400 * 365,
        simulated: false,
    }
}

pub fn revocation() -> Revocation {
    Revocation {
        version: 1,
        token_id: token().id,
        node: keys().node.public(),
        patient: PATIENT,
        issued_at: NOW,
    }
}

pub fn credential() -> Credential {
    Credential {
        version: CREDENTIAL_VERSION,
        researcher: keys().researcher.public(),
        researcher_id: "orcid:0000-0002-1825-0097".into(),
        name: "Bob".into(),
        institution: "University".into(),
        commercial: false,
        not_for_profit: true,
        project: "sepsis-2026".into(),
        purposes: vec!["HMB".into()],
        issued_at: NOW - 86_400,
        expires: NOW + 86_400 * 365,
    }
}

pub fn signed_credential() -> Envelope {
    credential().sign(&keys().authority)
}

pub fn policy() -> NodePolicy {
    let mut policy = NodePolicy::default_for(keys().node.public(), vec![keys().authority.public()]);
    policy.issued_at = NOW;
    policy
}

pub fn directory() -> Directory {
    let mut directory = Directory::new("North Sea ICU network");
    let members = [
        ("St Elsewhere", &keys().node),
        ("General", &keys().hospital),
    ];
    for (name, key) in members {
        let peer_id = witmed_net::peer_id_of(&key.public())
            .map(|p| p.to_string())
            .unwrap_or_default();
        // A seed that does not validate would only weaken the fuzzing, never hide a crash.
        let _ = directory.add_member(Member {
            name: name.into(),
            peer_id,
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            signing_key: key.public(),
        });
    }
    directory.serial = 3;
    directory.issued_at = NOW;
    directory
}

/// Query files as researchers write them: one of each aggregate and both modes.
pub const QUERY_TOMLS: [&str; 5] = [
    r#"version = 1
id = "hr-over-65"
purpose = "HMB"
aggregate = "mean"

[cohort]
age_min = 65.0
sex = "female"
conditions = ["44054006"]

[feature.observation]
code = "8867-4"
reduce = "mean"
window = { from_hours = 0.0, to_hours = 24.0 }

[bounds]
lower = 20.0
upper = 220.0

[privacy]
mode = "dp"
epsilon = 1.0
"#,
    r#"version = 1
id = "count-icu"
purpose = "HMB"
aggregate = "count"

[cohort]
attributes = [{ name = "icu_type", min = 3.0, max = 3.0 }]
has_observation = ["8867-4"]

[privacy]
mode = "dp"
epsilon = 0.5
"#,
    r#"version = 1
id = "age-histogram"
purpose = "DS-C0011849"
aggregate = { histogram = { edges = [0.0, 18.0, 40.0, 65.0, 120.0] } }

[feature.attribute]
name = "age"

[bounds]
lower = 0.0
upper = 120.0

[privacy]
mode = "dp"
epsilon = 1.0
delta = 0.0
"#,
    r#"version = 1
id = "los-quantiles"
purpose = "HMB"
aggregate = { quantiles = { probabilities = [0.25, 0.5, 0.75], bins = 32 } }

[feature.attribute]
name = "length_of_stay_days"

[bounds]
lower = 0.0
upper = 60.0

[privacy]
mode = "dp"
epsilon = 2.0
"#,
    r#"version = 1
id = "encrypted-count"
purpose = "HMB"
aggregate = "count"

[privacy]
mode = "encrypted"
epsilon = 1.0
delta = 1e-6
aggregator = "St Elsewhere"
study = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
min_hospitals = 2
"#,
];

/// The valid queries of [`QUERY_TOMLS`].
pub fn queries() -> Vec<Query> {
    QUERY_TOMLS
        .iter()
        .filter_map(|text| Query::from_toml(text).ok())
        .collect()
}

pub fn query_request(query: Query) -> QueryRequest {
    QueryRequest {
        version: WIRE_VERSION,
        query,
        credential: signed_credential().to_bytes(),
        nonce: [9; 16],
        issued_at: NOW,
    }
}

/// A real ciphertext of `values` values under the study key.
pub fn ciphertext(values: &[i64]) -> Vec<u8> {
    study()
        .1
        .encrypt(values)
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

pub fn contribution() -> Contribution {
    Contribution {
        version: ENCRYPTED_VERSION,
        study: study().1.study_id(),
        ciphertext: ciphertext(&[42]),
        values: 1,
        share_scale: 3.5,
        epsilon_spent: 1.0,
        delta_spent: 1e-6,
        budget_left: 9.0,
        answered_at: NOW,
    }
}

/// A member's signed Ready (round 1 of encrypted mode).
pub fn ready() -> Envelope {
    Ready {
        version: SECAGG_VERSION,
        query_digest: [7; 32],
        researcher: keys().researcher.public(),
        member: "St Elsewhere".into(),
        ephemeral: [9; 32],
    }
    .sign(&keys().node)
}

/// A member's masked share and its signed receipt (round 2 of encrypted mode).
pub fn sealed_share() -> SealedShare {
    let ciphertext = ciphertext(&[42]);
    let receipt = Receipt {
        version: SECAGG_VERSION,
        query_digest: [7; 32],
        researcher: keys().researcher.public(),
        member: "St Elsewhere".into(),
        study: study().1.study_id(),
        roster_hash: [8; 32],
        ciphertext_hash: witmed_crypto::sha256(&ciphertext),
        values: 1,
        share_scale: 3.5,
        epsilon_spent: 1.0,
        delta_spent: 1e-6,
        budget_left: 9.0,
    }
    .sign(&keys().node);
    SealedShare {
        member: "St Elsewhere".into(),
        ciphertext,
        receipt,
    }
}

pub fn encrypted_total() -> EncryptedTotal {
    EncryptedTotal {
        version: SECAGG_VERSION,
        study: study().1.study_id(),
        values: 1,
        roster: vec![ready()],
        shares: vec![sealed_share()],
        included: vec![Included {
            node: "St Elsewhere".into(),
            share_scale: 3.5,
            epsilon_spent: 1.0,
            delta_spent: 1e-6,
            budget_left: 9.0,
        }],
        left_out: vec![LeftOut {
            node: "General".into(),
            status: "refused".into(),
            reason: "budget".into(),
        }],
    }
}

pub fn announcement() -> StudyAnnouncement {
    StudyAnnouncement {
        version: ENCRYPTED_VERSION,
        params: fhe::params::ID.into(),
        public_key: study().1.to_bytes(),
        credential: signed_credential().to_bytes(),
        issued_at: NOW,
    }
}

/// A released mean: a noisy sum and a noisy count.
pub fn answer(query_digest: [u8; 32]) -> Answer {
    let component = |name: &str, value: f64, mechanism| Component {
        name: name.into(),
        value,
        noise_scale: 2.0,
        mechanism,
        accuracy95: 6.0,
    };
    Answer {
        version: ANSWER_VERSION,
        query_id: "hr-over-65".into(),
        query_digest,
        node: "St Elsewhere".into(),
        released: Released {
            value: Some(88.5),
            values: vec![],
            ci95: Some((80.0, 97.0)),
            ci95s: vec![],
            components: vec![
                component("sum", 8850.0, Mechanism::Laplace),
                component("count", 100.0, Mechanism::DiscreteLaplace),
            ],
            epsilon_spent: 1.0,
            suppressed: false,
        },
        budget_left: 9.0,
        answered_at: NOW,
    }
}

/// Node responses of every outcome.
pub fn responses() -> Vec<NodeResponse> {
    let query = queries().into_iter().next();
    let digest = query.as_ref().map(Query::digest).unwrap_or([0; 32]);
    let outcomes = vec![
        Outcome::Answered(answer(digest)),
        Outcome::Refused {
            code: "budget_exhausted".into(),
            reason: "the researcher's budget is spent".into(),
        },
        Outcome::Ready(ready()),
        Outcome::Sealed(sealed_share()),
        Outcome::Aggregated(encrypted_total()),
        Outcome::StudyInstalled,
    ];
    outcomes
        .into_iter()
        .map(|outcome| NodeResponse {
            version: WIRE_VERSION,
            node: keys().node.public(),
            node_name: "St Elsewhere".into(),
            query_id: "hr-over-65".into(),
            query_digest: digest,
            outcome,
        })
        .collect()
}

/// A key file as `witmed keygen` writes it.
pub fn key_file_text(key: &KeyPair) -> String {
    format!(
        "# witmed secret key: keep private, never share\nversion = 1\nrole = \"{}\"\npublic_key = \"{}\"\nsecret_key = \"{}\"\n",
        key.role(),
        key.public().to_hex(),
        hex::encode(*key.secret_seed())
    )
}

/// A small FHIR R4 transaction bundle in Synthea's shape: a patient, vital
/// signs, a blood-pressure panel with components, a condition, an encounter.
pub const FHIR_BUNDLE: &str = r#"{
  "resourceType": "Bundle",
  "type": "transaction",
  "entry": [
    {
      "fullUrl": "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184",
      "resource": {
        "resourceType": "Patient",
        "id": "5cbc121b-cd71-4428-b8b7-31e53eba8184",
        "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": "5cbc121b"}],
        "name": [{"use": "official", "family": "Doe", "given": ["Jane"]}],
        "gender": "female",
        "birthDate": "1950-04-11",
        "deceasedDateTime": "2020-01-02T03:04:05-05:00"
      }
    },
    {
      "fullUrl": "urn:uuid:e1",
      "resource": {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "subject": {"reference": "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184"},
        "period": {"start": "2019-12-30T10:00:00-05:00", "end": "2020-01-01T10:00:00-05:00"}
      }
    },
    {
      "fullUrl": "urn:uuid:o1",
      "resource": {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184"},
        "effectiveDateTime": "2019-12-30T10:30:00-05:00",
        "valueQuantity": {"value": 88.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
      }
    },
    {
      "fullUrl": "urn:uuid:o2",
      "resource": {
        "resourceType": "Observation",
        "id": "o2",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": "Patient/5cbc121b-cd71-4428-b8b7-31e53eba8184"},
        "effectiveDateTime": "2019-12-31",
        "component": [
          {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
          {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80, "unit": "mm[Hg]"}}
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:o3",
      "resource": {
        "resourceType": "Observation",
        "id": "o3",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2", "display": "Tobacco smoking status"}]},
        "subject": {"reference": "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184"},
        "effectiveDateTime": "2019-12-31T00:00:00Z",
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "266919005"}]}
      }
    },
    {
      "fullUrl": "urn:uuid:c1",
      "resource": {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes"}]},
        "subject": {"reference": "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184"},
        "onsetDateTime": "2001-05-06T07:08:09+02:00"
      }
    },
    {
      "fullUrl": "urn:uuid:x1",
      "resource": {"resourceType": "Claim", "id": "x1"}
    }
  ]
}
"#;

/// The same resources as NDJSON, one per line, as a bulk export writes them.
pub fn fhir_ndjson() -> String {
    let bundle: serde_json::Value = serde_json::from_str(FHIR_BUNDLE).unwrap_or_default();
    let mut out = String::new();
    if let Some(entries) = bundle["entry"].as_array() {
        for entry in entries {
            out.push_str(&entry["resource"].to_string());
            out.push('\n');
        }
    }
    out
}

/// A PhysioNet 2012 set file: descriptors at 00:00, then time-series rows.
pub const PHYSIONET_RECORD: &str = "Time,Parameter,Value
00:00,RecordID,132539
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,4
00:00,Weight,-1
00:07,GCS,15
00:07,HR,73
00:07,NIDiasABP,65
00:07,NIMAP,92.33
00:07,NISysABP,147
00:07,RespRate,19
00:07,Temp,35.1
00:07,Urine,900
00:37,HR,77
00:37,Weight,76.4
02:37,pH,7.45
47:59,Lactate,1.3
";

/// A PhysioNet 2012 outcomes file.
pub const PHYSIONET_OUTCOMES: &str =
    "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death
132539,6,1,5,-1,0
132540,16,8,8,-1,0
132541,21,11,19,-1,0
132543,7,1,9,575,0
132545,17,2,4,918,1
";

/// A public key nobody holds a secret for (all zero bytes), for "unknown signer" inputs.
pub fn stranger() -> PublicKey {
    PublicKey::from_bytes([0; 32])
}

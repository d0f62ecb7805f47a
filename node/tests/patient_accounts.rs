//! Per-patient privacy accounts: each account is the sum of the answers that included the patient, replays and refusals charge nobody, and a patient's own cap leaves them out.

use std::collections::BTreeMap;

use witmed_crypto::{Envelope, KeyPair, Pseudonym, Role};
use witmed_node::accounts::{self, Account};
use witmed_node::encrypted::study;
use witmed_node::engine::{self, Error};
use witmed_node::import;
use witmed_node::node::{self, Node};
use witmed_policies::cap::{CapRequest, CAP_MAX_AGE_SECONDS, CAP_VERSION};
use witmed_policies::consent::{self, Token};
use witmed_policies::credential::{verify_credential, Credential, CREDENTIAL_VERSION};
use witmed_policies::policy::{Budget, DEFAULT_WINDOW_SECONDS};
use witmed_protocol::encrypted::{StudyAnnouncement, ENCRYPTED_VERSION};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};

const NOW: i64 = 1_790_000_000;
const WINDOW: i64 = DEFAULT_WINDOW_SECONDS;
const PATIENTS: u32 = 40;
/// Loose enough for sums of a few dozen epsilons in a different order.
const TOLERANCE: f64 = 1e-9;

/// One synthetic patient, as the test knows them (independently of the node).
#[derive(Clone)]
struct Patient {
    record_id: u32,
    age: u32,
    has_heart_rate: bool,
    consents: bool,
    seed: u8,
}

impl Patient {
    fn new(i: u32) -> Patient {
        Patient {
            record_id: 140_000 + i,
            // Ages 40..=89 in a scrambled order: about half are 65 or over.
            age: 40 + (i * 7) % 50,
            has_heart_rate: !i.is_multiple_of(3),
            consents: !i.is_multiple_of(5),
            seed: i as u8 + 1,
        }
    }

    /// The patient's own signing key (as enrolled).
    fn key(&self) -> KeyPair {
        KeyPair::from_seed(Role::Patient, &[self.seed; 32])
    }

    fn physionet_text(&self) -> String {
        let mut text = format!(
            "Time,Parameter,Value\n00:00,RecordID,{}\n00:00,Age,{}\n00:00,Gender,1\n",
            self.record_id, self.age
        );
        if self.has_heart_rate {
            for (minute, hr) in [(5, 70 + self.age % 30), (65, 80 + self.age % 20)] {
                text.push_str(&format!("00:{minute:02},HR,{hr}\n"));
            }
        }
        text
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    node: Node,
    authority: KeyPair,
    patients: Vec<(Pseudonym, Patient)>,
}

/// A node holding [`PATIENTS`] synthetic patients, four in five enrolled and
/// consenting (real keys and tokens), trusting one authority under `budget`
/// and `min_cohort`.
fn fixture(budget_epsilon: f64, min_cohort: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    node::init(&dir, "General", vec![], NOW).unwrap();
    let node = Node::open(&dir, NOW).unwrap();
    let patients: Vec<Patient> = (0..PATIENTS).map(Patient::new).collect();
    let sources = patients.iter().map(|p| {
        Ok((
            format!("set/{}.txt", p.record_id),
            p.physionet_text().into_bytes(),
        ))
    });
    let options = import::Options {
        now: NOW,
        ..import::Options::default()
    };
    import::import_physionet_sources(
        &node.store,
        node.pseudonyms(),
        patients.len(),
        sources,
        &BTreeMap::new(),
        &options,
    )
    .unwrap();
    node.invalidate_index();
    let patients: Vec<(Pseudonym, Patient)> = patients
        .into_iter()
        .map(|p| {
            let pseudonym = node
                .pseudonyms()
                .pseudonym(import::PHYSIONET, &p.record_id.to_string());
            (pseudonym, p)
        })
        .collect();
    for (n, (pseudonym, patient)) in patients.iter().enumerate() {
        if patient.consents {
            consent_ops_enrol_and_consent(&node, *pseudonym, patient, n as u8);
        }
    }
    let authority = KeyPair::from_seed(Role::Authority, &[1; 32]);
    install_policy(&node, &authority, budget_epsilon, min_cohort);
    Fixture {
        tmp,
        node,
        authority,
        patients,
    }
}

fn consent_ops_enrol_and_consent(node: &Node, p: Pseudonym, patient: &Patient, n: u8) {
    witmed_node::consent_ops::enrol(node, p, patient.key().public(), NOW).unwrap();
    let token = Token {
        version: consent::TOKEN_VERSION,
        id: consent::token_id([n; 16]),
        node: node.id(),
        patient: p,
        purposes: vec!["HMB".into()],
        categories: Category::ALL.into_iter().collect(),
        modes: [Mode::Dp, Mode::Encrypted].into_iter().collect(),
        not_before: NOW - 60,
        expires: NOW + 365 * 86_400,
        simulated: false,
    };
    witmed_node::consent_ops::submit(node, &token.sign(&patient.key()).to_text(), NOW).unwrap();
}

fn install_policy(node: &Node, authority: &KeyPair, epsilon: f64, min_cohort: u64) {
    let hospital = KeyPair::load_role(&node.dir.hospital_key(), Role::Hospital).unwrap();
    let mut policy = node.policy();
    policy.serial += 1;
    policy.trusted_issuers.push(authority.public());
    policy.budget = Budget {
        epsilon,
        delta: 1e-3,
        window_seconds: WINDOW,
        lifetime: None,
    };
    policy.min_cohort = min_cohort;
    node.install_policy(&policy.sign(&hospital).to_text(), NOW)
        .unwrap();
}

struct Researcher {
    key: KeyPair,
    id: String,
    credential: Envelope,
}

fn researcher(f: &Fixture, seed: u8) -> Researcher {
    let key = KeyPair::from_seed(Role::Researcher, &[seed; 32]);
    let id = format!("researcher-{seed}@uni.example");
    let credential = Credential {
        version: CREDENTIAL_VERSION,
        researcher: key.public(),
        researcher_id: id.clone(),
        name: "Ada".into(),
        institution: "University".into(),
        commercial: false,
        not_for_profit: true,
        project: "p1".into(),
        purposes: vec!["HMB".into()],
        issued_at: NOW - 60,
        expires: NOW + 3650 * 86_400,
    }
    .sign(&f.authority);
    Researcher {
        key,
        id,
        credential,
    }
}

/// The kinds of query the tests ask, each with the cohort filter the test knows.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Everyone.
    CountAll,
    /// Aged 65 or over.
    CountOver65,
    /// Aged 65 or over with a heart rate (a mean needs a value).
    MeanHeartRateOver65,
}

impl Kind {
    fn query(self, id: &str, epsilon: f64) -> Query {
        let text = match self {
            Kind::CountAll => witmed_protocol::examples::count(id, "HMB", epsilon),
            Kind::CountOver65 => witmed_protocol::examples::count_over_65(id, epsilon),
            Kind::MeanHeartRateOver65 => {
                witmed_protocol::examples::mean_heart_rate_over_65(id, "HMB", epsilon)
            }
        };
        Query::from_toml(&text).unwrap()
    }

    /// Whether the answer's computation includes `p`: consent, cohort and a value.
    fn includes(self, p: &Patient) -> bool {
        p.consents
            && match self {
                Kind::CountAll => true,
                Kind::CountOver65 => p.age >= 65,
                Kind::MeanHeartRateOver65 => p.age >= 65 && p.has_heart_rate,
            }
    }
}

fn ask(
    f: &Fixture,
    r: &Researcher,
    query: &Query,
    now: i64,
) -> Result<witmed_protocol::Answer, Error> {
    engine::answer(&f.node, query, &r.key.public(), &r.credential, now)
}

fn account(f: &Fixture, p: &Pseudonym) -> Account {
    accounts::of(&f.node, p).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * (1.0 + a.abs().max(b.abs()))
}

/// What the test expects one patient's account to hold.
#[derive(Default, Clone)]
struct Expected {
    epsilon: f64,
    answers: u64,
    per_window: BTreeMap<i64, f64>,
    per_researcher: BTreeMap<[u8; 16], f64>,
}

#[test]
fn each_patients_account_is_the_sum_of_the_epsilons_of_the_answers_that_included_them() {
    let f = fixture(1e6, 0);
    let researchers: Vec<Researcher> = (2..5).map(|seed| researcher(&f, seed)).collect();
    let digests: Vec<[u8; 16]> = researchers
        .iter()
        .map(|r| accounts::researcher_digest(&f.node, &f.authority.public(), &r.id))
        .collect();
    let kinds = [Kind::CountAll, Kind::CountOver65, Kind::MeanHeartRateOver65];
    let mut expected: Vec<Expected> = vec![Expected::default(); f.patients.len()];
    let mut asked = 0u32;
    for window in 0..3i64 {
        for (r, researcher) in researchers.iter().enumerate() {
            for (k, kind) in kinds.iter().enumerate() {
                asked += 1;
                // Distinct epsilons, so a charge counted twice or missed shows in the sum.
                let epsilon = 0.05 + 0.01 * f64::from(asked);
                let now = NOW + window * WINDOW + (r * 10 + k) as i64;
                let query = kind.query(&format!("q{asked}"), epsilon);
                ask(&f, researcher, &query, now).unwrap();
                // A replay of the same id returns the stored answer: no second charge.
                if asked.is_multiple_of(4) {
                    ask(&f, researcher, &query, now + 1).unwrap();
                }
                for (n, (_, patient)) in f.patients.iter().enumerate() {
                    if kind.includes(patient) {
                        let e = &mut expected[n];
                        e.epsilon += epsilon;
                        e.answers += 1;
                        *e.per_window
                            .entry(now - now.rem_euclid(WINDOW))
                            .or_default() += epsilon;
                        *e.per_researcher.entry(digests[r]).or_default() += epsilon;
                    }
                }
            }
        }
    }
    let mut charged_patients = 0;
    for ((pseudonym, patient), e) in f.patients.iter().zip(&expected) {
        let a = account(&f, pseudonym);
        let who = format!(
            "patient {} (age {}, consents {})",
            patient.record_id, patient.age, patient.consents
        );
        assert!(
            close(a.total_epsilon, e.epsilon),
            "{who}: account {} but answers that included them sum to {}",
            a.total_epsilon,
            e.epsilon
        );
        assert_eq!(a.total_delta, 0.0, "{who}: DP mode spends no delta");
        assert_eq!(a.answers, e.answers, "{who}");
        let windows: BTreeMap<i64, f64> =
            a.per_window.iter().map(|w| (w.start, w.epsilon)).collect();
        assert_eq!(
            windows.len(),
            e.per_window.len(),
            "{who}: windows {windows:?}"
        );
        for (start, eps) in &e.per_window {
            assert!(close(windows[start], *eps), "{who}: window {start}");
        }
        let by_researcher: BTreeMap<[u8; 16], f64> = a
            .per_researcher
            .iter()
            .map(|r| (r.researcher, r.epsilon))
            .collect();
        assert_eq!(by_researcher.len(), e.per_researcher.len(), "{who}");
        for (digest, eps) in &e.per_researcher {
            assert!(close(by_researcher[digest], *eps), "{who}: researcher");
        }
        charged_patients += usize::from(e.answers > 0);
    }
    // The cohorts differ: some patients were in every answer, some in none.
    assert!(charged_patients > 10 && charged_patients < f.patients.len());
    assert!(expected.iter().any(|e| e.answers == 27) && expected.iter().any(|e| e.answers == 9));
    // The accounts survive a restart: they are read back from the store.
    let dir = f.node.dir.0.clone();
    let totals: Vec<f64> = f
        .patients
        .iter()
        .map(|(p, _)| account(&f, p).total_epsilon)
        .collect();
    drop(f.node);
    let reopened = Node::open(&dir, NOW + 3 * WINDOW).unwrap();
    for ((p, _), total) in f.patients.iter().zip(totals) {
        assert_eq!(accounts::of(&reopened, p).unwrap().total_epsilon, total);
    }
}

#[test]
fn a_replayed_query_id_charges_nobody_twice() {
    let f = fixture(1e6, 0);
    let r = researcher(&f, 2);
    let query = Kind::CountAll.query("once", 0.5);
    let first = ask(&f, &r, &query, NOW).unwrap();
    for later in 1..4 {
        assert_eq!(ask(&f, &r, &query, NOW + later).unwrap(), first);
    }
    for (p, patient) in &f.patients {
        let want = if patient.consents { 0.5 } else { 0.0 };
        let total = account(&f, p).total_epsilon;
        assert!(close(total, want), "patient {}: {total}", patient.record_id);
        assert_eq!(account(&f, p).answers, u64::from(patient.consents));
    }
}

#[test]
fn a_refused_query_charges_nobody_and_a_suppressed_answer_charges_its_cohort() {
    // Budget 1.0 per window; a minimum cohort no count here reaches.
    let f = fixture(1.0, 1_000);
    let r = researcher(&f, 2);
    let suppressed = ask(&f, &r, &Kind::CountOver65.query("small", 0.75), NOW).unwrap();
    assert!(suppressed.released.suppressed);
    let refused = ask(&f, &r, &Kind::CountAll.query("too-much", 0.75), NOW + 1).unwrap_err();
    assert_eq!(refused.code(), "budget_exhausted");
    for (p, patient) in &f.patients {
        // The suppression was computed from the cohort's rows and released: it counts.
        let want = if Kind::CountOver65.includes(patient) {
            0.75
        } else {
            0.0
        };
        let total = account(&f, p).total_epsilon;
        assert!(close(total, want), "patient {}: {total}", patient.record_id);
    }
}

fn cap_request(
    f: &Fixture,
    p: Pseudonym,
    epsilon: Option<f64>,
    id: u8,
    issued_at: i64,
) -> CapRequest {
    CapRequest {
        version: CAP_VERSION,
        id: consent::token_id([id; 16]),
        node: f.node.id(),
        patient: p,
        epsilon,
        issued_at,
    }
}

/// The count of everyone at epsilon 10 (query kinds allow at most 10): the
/// discrete Laplace noise at scale 0.1 is 0 but with probability under 1e-4.
/// Counts everyone at epsilon 10 and returns how many patients the engine
/// computed it over: read from its row selection just before, since even at
/// epsilon 10 the released count is off by one in about 1 of 10,000 answers.
fn exact_count(f: &Fixture, r: &Researcher, id: &str, now: i64) -> f64 {
    let query = Kind::CountAll.query(id, 10.0);
    let (_, use_) =
        engine::authorize(&f.node, &query, &r.key.public(), &r.credential, now).unwrap();
    let loss = witmed_node::ledger::Loss::new(10.0, 0.0);
    let cohort = engine::select_rows(&f.node, &query, &use_, loss, now)
        .unwrap()
        .rows
        .patients
        .len();
    ask(f, r, &query, now).unwrap();
    cohort as f64
}

/// Whether the engine would compute a query of `epsilon` over patient `p` (no noise involved).
fn selected(f: &Fixture, r: &Researcher, p: &Pseudonym, epsilon: f64, now: i64) -> bool {
    let query = Kind::CountAll.query("probe", epsilon);
    let (_, use_) =
        engine::authorize(&f.node, &query, &r.key.public(), &r.credential, now).unwrap();
    let loss = witmed_node::ledger::Loss::new(epsilon, 0.0);
    let chosen = engine::select_rows(&f.node, &query, &use_, loss, now).unwrap();
    let position = chosen.index.position(p).unwrap();
    chosen.rows.patients.contains(&position)
}

fn set_cap(f: &Fixture, p: Pseudonym, patient: &Patient, epsilon: Option<f64>, id: u8, now: i64) {
    let text = cap_request(f, p, epsilon, id, now)
        .sign(&patient.key())
        .to_text();
    let set = accounts::set_cap(&f.node, &text, now).unwrap();
    assert_eq!(set.epsilon, epsilon);
}

#[test]
fn a_personal_cap_excludes_the_patient_from_the_next_query_once_reached() {
    let f = fixture(1e6, 0);
    let r = researcher(&f, 2);
    let (p, patient) = f.patients.iter().find(|(_, p)| p.consents).unwrap().clone();
    let consenting = f.patients.iter().filter(|(_, p)| p.consents).count() as f64;
    // Two answers' worth: the patient is in two more answers, then in none.
    set_cap(&f, p, &patient, Some(20.0), 1, NOW);
    assert_eq!(account(&f, &p).cap.as_ref().map(|c| c.epsilon), Some(20.0));
    assert_eq!(exact_count(&f, &r, "c1", NOW), consenting);
    assert_eq!(exact_count(&f, &r, "c2", NOW + 1), consenting);
    assert!(
        close(account(&f, &p).total_epsilon, 20.0),
        "the cap is reached"
    );
    assert!(!selected(&f, &r, &p, 10.0, NOW + 2));
    assert_eq!(
        exact_count(&f, &r, "c3", NOW + 2),
        consenting - 1.0,
        "a reached cap leaves the patient out"
    );
    assert!(
        close(account(&f, &p).total_epsilon, 20.0),
        "a patient left out is not charged"
    );
    assert_eq!(account(&f, &p).answers, 2);
    // Another patient, without a cap, was charged all three times.
    let (other, _) = f
        .patients
        .iter()
        .find(|(q, o)| o.consents && *q != p)
        .unwrap();
    assert!(close(account(&f, other).total_epsilon, 30.0));
    // A raised cap with room for a small query only.
    set_cap(&f, p, &patient, Some(20.5), 2, NOW + 3);
    assert!(
        !selected(&f, &r, &p, 10.0, NOW + 4),
        "10 more would pass 20.5"
    );
    assert!(
        selected(&f, &r, &p, 0.5, NOW + 4),
        "0.5 more reaches 20.5 exactly"
    );
    ask(&f, &r, &Kind::CountAll.query("small", 0.5), NOW + 5).unwrap();
    assert!(close(account(&f, &p).total_epsilon, 20.5));
    assert!(!selected(&f, &r, &p, 0.01, NOW + 6));
    // Removing the cap brings the patient back.
    set_cap(&f, p, &patient, None, 3, NOW + 6);
    assert_eq!(exact_count(&f, &r, "c5", NOW + 7), consenting);
    assert!(close(account(&f, &p).total_epsilon, 30.5));
}

#[test]
fn a_cap_request_signed_by_another_key_replayed_expired_or_for_another_node_is_refused() {
    let f = fixture(1e6, 0);
    let mut consenting = f.patients.iter().filter(|(_, p)| p.consents);
    let (p, patient) = consenting.next().unwrap();
    let (_, someone_else) = consenting.next().unwrap();
    let code = |text: String, now: i64| match accounts::set_cap(&f.node, &text, now) {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    let request = |id: u8, at: i64| cap_request(&f, *p, Some(1.0), id, at);
    assert_eq!(
        code(request(1, NOW).sign(&someone_else.key()).to_text(), NOW),
        "wrong_patient_key"
    );
    let hospital = KeyPair::load_role(&f.node.dir.hospital_key(), Role::Hospital).unwrap();
    assert_eq!(
        code(request(2, NOW).sign(&hospital).to_text(), NOW),
        "wrong_patient_key"
    );
    let stale = NOW - CAP_MAX_AGE_SECONDS - 1;
    assert_eq!(
        code(request(3, stale).sign(&patient.key()).to_text(), NOW),
        "expired"
    );
    let mut elsewhere = request(4, NOW);
    elsewhere.node = KeyPair::from_seed(Role::Node, &[77; 32]).public();
    assert_eq!(
        code(elsewhere.sign(&patient.key()).to_text(), NOW),
        "other_node"
    );
    let (unenrolled, _) = f.patients.iter().find(|(_, p)| !p.consents).unwrap();
    let mut theirs = request(5, NOW);
    theirs.patient = *unenrolled;
    assert_eq!(
        code(theirs.sign(&patient.key()).to_text(), NOW),
        "not_enrolled"
    );
    // A consent token signed by the patient is not a cap request (domain separation).
    let token = Token {
        version: consent::TOKEN_VERSION,
        id: consent::token_id([99; 16]),
        node: f.node.id(),
        patient: *p,
        purposes: vec!["HMB".into()],
        categories: Category::ALL.into_iter().collect(),
        modes: [Mode::Dp].into_iter().collect(),
        not_before: NOW - 60,
        expires: NOW + 86_400,
        simulated: false,
    };
    assert_eq!(
        code(token.sign(&patient.key()).to_text(), NOW),
        "wrong_domain"
    );
    let good = request(6, NOW).sign(&patient.key()).to_text();
    assert_eq!(code(good.clone(), NOW), "ok");
    assert_eq!(
        code(good, NOW + 60),
        "duplicate_cap_request",
        "a replay is refused"
    );
    // None of the refused requests set anything: only the good one did.
    assert_eq!(
        account(&f, p).cap.map(|c| c.request),
        Some(consent::token_id([6; 16]))
    );
    let refused = witmed_node::audit::read_all(&f.node.store, Some("patient.cap")).unwrap();
    assert_eq!(refused.len(), 1, "one cap applied, one audit entry");
}

#[test]
fn an_encrypted_share_charges_the_accounts_of_its_patients() {
    let f = fixture(1e6, 0);
    let r = researcher(&f, 2);
    let study_dir = f.tmp.path().join("study");
    let info = study::keygen(&study_dir, NOW).unwrap();
    let (_, public_key) = study::load_public(&study_dir).unwrap();
    let announcement = StudyAnnouncement {
        version: ENCRYPTED_VERSION,
        params: witmed_crypto::fhe::params::ID.to_string(),
        public_key,
        credential: r.credential.to_bytes(),
        issued_at: NOW,
    };
    study::install(&f.node, &announcement.sign(&r.key), NOW).unwrap();
    let query = Query::from_toml(&format!(
        "version = 1\nid = \"enc\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
         [cohort]\nage_min = 65\n[privacy]\nmode = \"encrypted\"\nepsilon = 0.5\n\
         aggregator = \"General\"\nstudy = \"{}\"\nmin_hospitals = 1\n",
        info.id
    ))
    .unwrap();
    let prepare = || engine::prepare(&f.node, &query, &r.key.public(), &r.credential, 1, NOW);
    prepare().unwrap();
    prepare().unwrap();
    let verified = verify_credential(&r.credential, &[f.authority.public()], NOW).unwrap();
    let ledger_account = f.node.ledger.account(&verified);
    let charges = f
        .node
        .ledger
        .charges(&f.node.store, &ledger_account)
        .unwrap();
    assert_eq!(charges.len(), 1);
    let mut charged = 0;
    for (p, patient) in &f.patients {
        let a = account(&f, p);
        if Kind::CountOver65.includes(patient) {
            charged += 1;
            assert_eq!(
                a.total_epsilon, charges[0].epsilon,
                "patient {}",
                patient.record_id
            );
            assert_eq!(
                a.total_delta, charges[0].delta,
                "encrypted mode spends delta too"
            );
            assert!(a.total_delta > 0.0);
            assert_eq!(a.answers, 1, "a re-asked id charges once");
            let uses = uses_in_view(&f.node, *p, NOW);
            assert_eq!(uses.len(), 1, "a re-asked id is one use");
            assert_eq!(
                (uses[0].query_id.as_str(), uses[0].mode.as_str()),
                ("enc", "encrypted")
            );
            assert_eq!(
                (uses[0].epsilon, uses[0].delta),
                (charges[0].epsilon, charges[0].delta)
            );
        } else {
            assert_eq!(
                (a.total_epsilon, a.answers),
                (0.0, 0),
                "patient {}",
                patient.record_id
            );
            assert!(uses_in_view(&f.node, *p, NOW).is_empty());
        }
    }
    assert!(charged > 5);
}

#[test]
fn accounts_fold_their_journal_and_read_back_the_same_after_a_restart() {
    let f = fixture(1e6, 0);
    let r = researcher(&f, 2);
    let (p, patient) = f.patients.iter().find(|(_, p)| p.consents).unwrap().clone();
    let asked = accounts::FOLD_EVERY + 6;
    for n in 0..asked {
        if n == 30 {
            // A cap written mid-journal must not make the journal count twice.
            set_cap(&f, p, &patient, Some(1e3), 1, NOW + n as i64);
        }
        let query = Kind::CountAll.query(&format!("f{n}"), 0.01);
        ask(&f, &r, &query, NOW + n as i64).unwrap();
    }
    let journal = |node: &Node| {
        let mut left = 0;
        node.store
            .scan_prefix(witmed_node::store::cf::BUDGET, b"j1/", |_, _| {
                left += 1;
                Ok(())
            })
            .unwrap();
        left
    };
    assert_eq!(
        journal(&f.node),
        6,
        "the first {} charges were folded",
        accounts::FOLD_EVERY
    );
    let want = |patient: &Patient| {
        if patient.consents {
            0.01 * asked as f64
        } else {
            0.0
        }
    };
    let dir = f.node.dir.0.clone();
    drop(f.node);
    let reopened = Node::open(&dir, NOW + 100).unwrap();
    for (q, patient) in &f.patients {
        let a = accounts::of(&reopened, q).unwrap();
        assert!(
            close(a.total_epsilon, want(patient)),
            "patient {}: {}",
            patient.record_id,
            a.total_epsilon
        );
        assert_eq!(a.answers, if patient.consents { asked } else { 0 });
    }
    assert_eq!(
        accounts::of(&reopened, &p).unwrap().cap.map(|c| c.epsilon),
        Some(1e3)
    );
}

#[test]
fn folds_running_beside_concurrent_queries_and_cap_changes_lose_and_double_no_charge() {
    let f = fixture(1e6, 0);
    let researchers: Vec<Researcher> = (0..4).map(|seed| researcher(&f, 10 + seed)).collect();
    let (p, patient) = f.patients.iter().find(|(_, p)| p.consents).unwrap().clone();
    let per_thread = accounts::FOLD_EVERY as usize;
    let kinds = [Kind::CountAll, Kind::CountOver65, Kind::MeanHeartRateOver65];
    std::thread::scope(|scope| {
        for (t, r) in researchers.iter().enumerate() {
            let f = &f;
            scope.spawn(move || {
                for n in 0..per_thread {
                    let kind = kinds[(t + n) % kinds.len()];
                    let epsilon = 0.01 * (1 + (t + n) % 5) as f64;
                    let query = kind.query(&format!("t{t}-{n}"), epsilon);
                    ask(f, r, &query, NOW + n as i64).unwrap();
                }
            });
        }
        // Caps set and lifted while folds run: each waits for a running fold.
        let f = &f;
        let patient = &patient;
        scope.spawn(move || {
            for id in 0..6u8 {
                let cap = if id % 2 == 0 { Some(1e5) } else { None };
                set_cap(f, p, patient, cap, 100 + id, NOW + id as i64);
            }
        });
    });
    let mut want: BTreeMap<Pseudonym, (f64, u64)> = BTreeMap::new();
    for t in 0..researchers.len() {
        for n in 0..per_thread {
            let kind = kinds[(t + n) % kinds.len()];
            let epsilon = 0.01 * (1 + (t + n) % 5) as f64;
            for (q, patient) in &f.patients {
                if kind.includes(patient) {
                    let entry = want.entry(*q).or_default();
                    entry.0 += epsilon;
                    entry.1 += 1;
                }
            }
        }
    }
    let check = |node: &Node, when: &str| {
        for (q, patient) in &f.patients {
            let a = accounts::of(node, q).unwrap();
            let (epsilon, answers) = want.get(q).copied().unwrap_or_default();
            assert!(
                close(a.total_epsilon, epsilon) && a.answers == answers,
                "{when}: patient {}: {} over {} answers, want {epsilon} over {answers}",
                patient.record_id,
                a.total_epsilon,
                a.answers
            );
            // Each use once, in journal order, the newest up to the bound.
            assert!(
                a.uses.windows(2).all(|w| w[0] < w[1]),
                "{when}: {:?}",
                a.uses
            );
            assert_eq!(
                a.uses.len() as u64,
                answers.min(accounts::MAX_USES as u64),
                "{when}: patient {}",
                patient.record_id
            );
        }
    };
    check(&f.node, "running");
    let dir = f.node.dir.0.clone();
    drop(f.node);
    let reopened = Node::open(&dir, NOW + 1_000).unwrap();
    check(&reopened, "after a restart");
    assert_eq!(
        accounts::of(&reopened, &p).unwrap().cap,
        None,
        "the last change lifted the cap"
    );
}

/// An account with no one in it: aged 100 or over (the fixture's patients are 40 to 89).
fn count_nobody(id: &str) -> Query {
    Query::from_toml(&format!(
        "version = 1\nid = \"{id}\"\npurpose = \"HMB\"\naggregate = \"count\"\n\
         [cohort]\nage_min = 100\n[privacy]\nmode = \"dp\"\nepsilon = 0.25\n"
    ))
    .unwrap()
}

/// The query ids of the research uses in `p`'s audit view, oldest first,
/// after checking the view against the node's signed head and that every
/// entry in full is theirs or a research use naming no patient.
fn uses_in_view(node: &Node, p: Pseudonym, now: i64) -> Vec<witmed_node::audit::ResearchUse> {
    use witmed_node::audit::ViewItem;
    let view = node.audit_view(p, now).unwrap();
    view.verify(&node.id()).unwrap();
    for item in &view.items {
        match item {
            ViewItem::Own(e) => assert_eq!(e.subject, Some(p)),
            ViewItem::Use(e) => {
                assert_eq!(e.subject, None);
                assert_eq!(e.kind, "query.answered");
            }
            ViewItem::Other { .. } => {}
        }
    }
    view.uses().map(|(_, r)| r.clone()).collect()
}

/// Each patient's view of the log lists, in full and verified against the
/// node's signed head, exactly the answers that included them (consent,
/// cohort, a value), with who asked, for which project and purpose, what
/// kind of aggregate and at what cost; across a fold of the journal and a
/// reopen of the store; and answers over an empty cohort, folded away, do
/// not make journal numbers repeat (which would list someone else's use).
#[test]
fn each_patients_audit_view_lists_in_full_the_uses_that_included_them_across_a_fold_and_a_reopen() {
    let f = fixture(1e6, 0);
    let r = researcher(&f, 2);
    let verified = verify_credential(&r.credential, &[f.authority.public()], NOW).unwrap();
    let digest = f.node.ledger.account(&verified).digest();
    assert_eq!(
        accounts::researcher_digest(&f.node, &f.authority.public(), &r.id),
        digest
    );
    // A whole fold of answers over nobody first: their journal numbers are
    // folded away with no account to keep them.
    for n in 0..accounts::FOLD_EVERY {
        ask(&f, &r, &count_nobody(&format!("nobody{n}")), NOW).unwrap();
    }
    let dir = f.node.dir.0.clone();
    let Fixture {
        tmp: _tmp,
        node,
        patients,
        ..
    } = f;
    drop(node);
    let node = Node::open(&dir, NOW).unwrap();
    let f = Fixture {
        tmp: _tmp,
        node,
        authority: KeyPair::from_seed(Role::Authority, &[1; 32]),
        patients,
    };
    let kinds = [Kind::CountAll, Kind::CountOver65, Kind::MeanHeartRateOver65];
    let asked = accounts::FOLD_EVERY as usize + 9;
    let mut expected: BTreeMap<Pseudonym, Vec<(String, Kind, f64)>> = BTreeMap::new();
    for n in 0..asked {
        let kind = kinds[n % kinds.len()];
        let epsilon = 0.01 * (1 + n % 4) as f64;
        let id = format!("use{n}");
        ask(&f, &r, &kind.query(&id, epsilon), NOW + n as i64).unwrap();
        for (p, patient) in &f.patients {
            if kind.includes(patient) {
                expected
                    .entry(*p)
                    .or_default()
                    .push((id.clone(), kind, epsilon));
            }
        }
    }
    let check = |node: &Node, when: &str| {
        for (p, patient) in &f.patients {
            let uses = uses_in_view(node, *p, NOW + 1_000);
            let want = expected.get(p).cloned().unwrap_or_default();
            let ids: Vec<&str> = uses.iter().map(|u| u.query_id.as_str()).collect();
            let want_ids: Vec<&str> = want.iter().map(|(id, _, _)| id.as_str()).collect();
            assert_eq!(ids, want_ids, "patient {} {when}", patient.record_id);
            for (used, (_, kind, epsilon)) in uses.iter().zip(&want) {
                let aggregate = match kind {
                    Kind::MeanHeartRateOver65 => "mean",
                    _ => "count",
                };
                assert_eq!(
                    (
                        used.researcher,
                        used.researcher_name.as_str(),
                        used.institution.as_str(),
                        used.project.as_str(),
                        used.purpose.as_str(),
                        used.aggregate.as_str(),
                        used.mode.as_str(),
                        used.delta,
                    ),
                    (
                        digest,
                        "Ada",
                        "University",
                        "p1",
                        "HMB",
                        aggregate,
                        "dp",
                        0.0
                    ),
                    "{when}"
                );
                assert!(close(used.epsilon, *epsilon), "{when}");
            }
        }
    };
    check(&f.node, "before the reopen");
    let some = f
        .patients
        .iter()
        .filter(|(p, _)| expected.get(p).is_some_and(|u| u.len() > 10))
        .count();
    assert!(some > 5, "the test includes patients in many answers");
    assert!(
        f.patients.iter().any(|(p, _)| !expected.contains_key(p)),
        "and some in none"
    );
    let dir = f.node.dir.0.clone();
    let Fixture { node, .. } = f;
    drop(node);
    let reopened = Node::open(&dir, NOW + 500).unwrap();
    check(&reopened, "after the reopen");
}

/// An account keeps its newest [`accounts::MAX_USES`] uses, and the view
/// lists exactly those; the totals still count every answer.
#[test]
fn a_patients_view_keeps_the_newest_uses_up_to_the_bound() {
    let f = fixture(1e6, 0);
    let r = researcher(&f, 2);
    let (p, _) = f.patients.iter().find(|(_, p)| p.consents).unwrap().clone();
    let asked = accounts::MAX_USES + 7;
    for n in 0..asked {
        let query = Kind::CountAll.query(&format!("b{n}"), 0.001);
        ask(&f, &r, &query, NOW + n as i64).unwrap();
    }
    let a = account(&f, &p);
    assert_eq!(a.answers, asked as u64);
    assert_eq!(a.uses.len(), accounts::MAX_USES);
    let ids: Vec<String> = uses_in_view(&f.node, p, NOW + 1_000)
        .into_iter()
        .map(|u| u.query_id)
        .collect();
    let want: Vec<String> = (asked - accounts::MAX_USES..asked)
        .map(|n| format!("b{n}"))
        .collect();
    assert_eq!(ids, want);
}

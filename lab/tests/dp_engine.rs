//! The DP query engine and budget ledger on real data: interval coverage, racing budgets, replays, suppression.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use witmed_crypto::{Envelope, KeyPair, Role};
use witmed_lab::setup;
use witmed_node::engine::{self, Error};
use witmed_node::import;
use witmed_node::ledger;
use witmed_node::node::{self, Node};
use witmed_policies::credential::verify_credential;
use witmed_protocol::query::Query;

const NOW: i64 = 1_790_000_000;

struct Fixture {
    _tmp: tempfile::TempDir,
    node: Arc<Node>,
    researcher: KeyPair,
    credential: Envelope,
}

/// A node holding `set`, every patient consenting to HMB, trusting one authority.
fn fixture(set: &Path, budget: f64, min_cohort: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    node::init(&dir, "General", vec![], NOW).unwrap();
    let node = Node::open(&dir, NOW).unwrap();
    let options = import::Options {
        now: NOW,
        ..import::Options::default()
    };
    import::import_physionet(
        &node.store,
        node.pseudonyms(),
        set,
        Some(&outcomes_a()),
        &options,
    )
    .unwrap();
    node.invalidate_index();
    witmed_node::consent_ops::allow_demonstration_data(&node, NOW).unwrap();
    witmed_lab::simulate::simulate(&node, 1.0, &["HMB".to_string()], 1, NOW).unwrap();
    let authority = KeyPair::from_seed(Role::Authority, &[1; 32]);
    let researcher = KeyPair::from_seed(Role::Researcher, &[2; 32]);
    setup::trust_issuer(&node, authority.public(), budget, min_cohort, NOW).unwrap();
    let credential = setup::credential(&authority, researcher.public(), &["HMB"], NOW);
    Fixture {
        _tmp: tmp,
        node: Arc::new(node),
        researcher,
        credential,
    }
}

/// Every charge of the fixture's researcher, oldest first.
fn charges(f: &Fixture) -> Vec<ledger::Charge> {
    let credential = verify_credential(&f.credential, &[f.credential.signer], NOW).unwrap();
    let account = f.node.ledger.account(&credential);
    f.node.ledger.charges(&f.node.store, &account).unwrap()
}

fn count_query(id: &str, epsilon: f64) -> Query {
    Query::from_toml(&witmed_protocol::examples::count_over_65(id, epsilon)).unwrap()
}

fn mean_hr_query(id: &str) -> Query {
    Query::from_toml(&witmed_protocol::examples::mean_heart_rate_over_65(
        id, "HMB", 1.0,
    ))
    .unwrap()
}

fn covers(answer: &witmed_protocol::Answer, exact: f64) -> bool {
    let (lo, hi) = answer.released.ci95.unwrap();
    lo <= exact && exact <= hi
}

#[test]
fn intervals_cover_the_exact_answer_on_set_a() {
    let set = set_a();
    let Over65 {
        count: exact_count,
        mean_hr: exact_mean,
        ..
    } = over_65(&physionet_files(&set));
    let f = fixture(&set, 1e9, 0);
    let runs = 500;
    let (mut count_hits, mut mean_hits) = (0, 0);
    for i in 0..runs {
        let count = engine::answer(
            &f.node,
            &count_query(&format!("c{i}"), 1.0),
            &f.researcher.public(),
            &f.credential,
            NOW,
        )
        .unwrap();
        count_hits += covers(&count, exact_count) as usize;
        let mean = engine::answer(
            &f.node,
            &mean_hr_query(&format!("m{i}")),
            &f.researcher.public(),
            &f.credential,
            NOW,
        )
        .unwrap();
        mean_hits += covers(&mean, exact_mean) as usize;
    }
    let (count_rate, mean_rate) = (
        count_hits as f64 / runs as f64,
        mean_hits as f64 / runs as f64,
    );
    assert!(
        count_rate >= 0.93,
        "count interval covered the exact {exact_count} in only {count_rate:.3} of runs"
    );
    assert!(
        mean_rate >= 0.93,
        "mean interval covered the exact {exact_mean:.3} in only {mean_rate:.3} of runs"
    );
}

#[test]
fn racing_queries_never_overspend_and_exactly_the_accepted_are_charged() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path(), 60);
    let f = fixture(&set, 5.0, 0);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let node = f.node.clone();
            let researcher = f.researcher.public();
            let credential = f.credential.clone();
            std::thread::spawn(move || {
                let mut accepted = 0;
                for i in 0..25 {
                    let query = count_query(&format!("race-{t}-{i}"), 0.1);
                    match engine::answer(&node, &query, &researcher, &credential, NOW) {
                        Ok(_) => accepted += 1,
                        Err(Error::BudgetExhausted { .. }) => {}
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let charges = charges(&f);
    let total: f64 = charges.iter().map(|c| c.epsilon).sum();
    assert_eq!(
        charges.len(),
        accepted,
        "every accepted query charged once, no other"
    );
    assert!(
        total <= 5.0 + 1e-9,
        "ledger total {total} exceeds the budget"
    );
    assert_eq!(
        accepted, 50,
        "a budget of 5 holds exactly 50 charges of 0.1"
    );
}

#[test]
fn replayed_id_returns_the_stored_answer_and_an_altered_query_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path(), 40);
    let f = fixture(&set, 10.0, 0);
    let r = f.researcher.public();
    let first = engine::answer(&f.node, &count_query("q", 1.0), &r, &f.credential, NOW).unwrap();
    let again =
        engine::answer(&f.node, &count_query("q", 1.0), &r, &f.credential, NOW + 60).unwrap();
    assert_eq!(
        first, again,
        "a replay returns the stored answer, not fresh noise"
    );
    assert_eq!(charges(&f).len(), 1);
    let altered = engine::answer(&f.node, &count_query("q", 2.0), &r, &f.credential, NOW);
    assert!(matches!(altered, Err(Error::IdReused(_))), "{altered:?}");
    assert_eq!(charges(&f).len(), 1);
}

#[test]
fn exhausted_budget_is_refused_with_the_amount_left() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path(), 40);
    let f = fixture(&set, 1.5, 0);
    let r = f.researcher.public();
    engine::answer(&f.node, &count_query("a", 1.0), &r, &f.credential, NOW).unwrap();
    match engine::answer(&f.node, &count_query("b", 1.0), &r, &f.credential, NOW) {
        Err(Error::BudgetExhausted {
            reason: ledger::Exhausted::Window { needed, left, .. },
            ..
        }) => {
            assert!((needed.epsilon - 1.0).abs() < 1e-9);
            assert!((left.epsilon - 0.5).abs() < 1e-9);
        }
        other => panic!("expected an exhausted budget, got {other:?}"),
    }
}

#[test]
fn small_cohorts_are_suppressed_and_still_charged() {
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path(), 40);
    let f = fixture(&set, 10.0, 1_000);
    let r = f.researcher.public();
    let answer = engine::answer(&f.node, &mean_hr_query("small"), &r, &f.credential, NOW).unwrap();
    assert!(answer.released.suppressed);
    assert!(answer.released.value.is_none() && answer.released.components.is_empty());
    let charges = charges(&f);
    assert_eq!(charges.len(), 1);
    assert!((answer.budget_left - (10.0 - charges[0].epsilon)).abs() < 1e-9);
}

#[test]
fn every_patient_counts_once_whatever_their_number_of_observations() {
    // Patients have dozens of heart-rate readings each; the engine must still
    // give exactly one value per patient aged 65+ who has any.
    let tmp = tempfile::tempdir().unwrap();
    let set = small_set(tmp.path(), 30);
    let f = fixture(&set, 10.0, 0);
    let index = f.node.index().unwrap();
    let values = engine::values_for(&index, &mean_hr_query("unit"), |_| true);
    let exact = over_65(&physionet_files(&set));
    assert!(
        exact.with_hr > 0.0,
        "the sample has no patient aged 65+ with a heart rate"
    );
    assert_eq!(values.len() as f64, exact.with_hr);
}

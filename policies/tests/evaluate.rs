//! `query_allowed` and `Use`: every refusal that applies is listed, and only those.

mod common;

use std::collections::BTreeSet;

use common::*;
use witmed_crypto::Role;
use witmed_policies::credential::{verify_credential, VerifiedCredential};
use witmed_policies::evaluate::{query_allowed, Refusal, Request, Use};
use witmed_policies::{Error, NodePolicy};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};

/// README's example query, for a disease-specific purpose.
fn hr_over_65() -> String {
    witmed_protocol::examples::mean_heart_rate_over_65("hr-over-65", "DS-C0011849", 1.0)
}

fn request() -> Request {
    Request::from_query(&Query::from_toml(&hr_over_65()).unwrap(), researcher())
}

fn verified_credential() -> VerifiedCredential {
    verify_credential(
        &credential().sign(&authority_key()),
        &[authority_key().public()],
        NOW,
    )
    .unwrap()
}

fn codes(result: Result<(), Vec<Refusal>>) -> Vec<&'static str> {
    result
        .err()
        .unwrap_or_default()
        .iter()
        .map(Refusal::code)
        .collect()
}

/// Applies `edit` to a valid (policy, request, now) and returns the refusal codes.
fn check(edit: impl FnOnce(&mut NodePolicy, &mut Request, &mut i64), expected: &[&str]) {
    let (mut p, mut r, mut now) = (policy(), request(), NOW);
    edit(&mut p, &mut r, &mut now);
    assert_eq!(
        codes(query_allowed(&p, &verified_credential(), &r, now)),
        expected
    );
}

#[test]
fn request_from_query_takes_what_policy_decides_on() {
    let r = request();
    assert_eq!(r.purpose, "DS-C0011849");
    assert_eq!(r.kind, "mean");
    assert_eq!(r.mode, Mode::Dp);
    assert_eq!(r.epsilon, 1.0);
    assert_eq!(
        r.categories,
        BTreeSet::from([Category::Demographics, Category::VitalSigns])
    );
}

#[test]
fn each_reason_alone_is_the_only_refusal() {
    check(|_, _, _| {}, &[]);
    check(
        |_, r, _| r.researcher = key(Role::Researcher, 8).public(),
        &["wrong_researcher"],
    );
    check(|p, _, _| p.trusted_issuers.clear(), &["untrusted_issuer"]);
    check(|_, _, now| *now += 400 * DAY, &["credential_expired"]);
    check(|_, _, now| *now -= 2 * DAY, &["credential_not_yet_valid"]);
    check(
        |_, r, _| r.purpose = "GRU".into(),
        &["purpose_not_approved"],
    );
    check(
        |_, r, _| r.purpose = "POA".into(),
        &["purpose_not_approved"],
    );
    check(|_, r, _| r.purpose = "bogus".into(), &["unknown_purpose"]);
    check(
        |p, _, _| {
            p.query_kinds.remove("mean");
        },
        &["kind_not_allowed"],
    );
    check(
        |p, _, _| {
            p.modes.remove(&Mode::Dp);
        },
        &["mode_not_allowed"],
    );
    check(
        |p, _, _| {
            p.categories.remove(&Category::VitalSigns);
        },
        &["category_not_exposed"],
    );
    check(|_, r, _| r.epsilon = 10.5, &["epsilon_over_budget"]);
    check(|_, r, _| r.epsilon = f64::NAN, &["invalid_epsilon"]);
    // The whole budget itself is allowed; what remains of it is the store's to check.
    check(|_, r, _| r.epsilon = 10.0, &[]);
}

#[test]
fn every_reason_is_listed_when_all_apply() {
    let mut p = policy();
    p.trusted_issuers.clear();
    p.query_kinds.clear();
    p.modes = BTreeSet::from([Mode::Encrypted]);
    p.categories = BTreeSet::from([Category::Labs]);
    p.budget.epsilon = 0.5;
    let mut r = request();
    r.researcher = key(Role::Researcher, 8).public();
    r.purpose = "GRU".into();
    let refusals = query_allowed(&p, &verified_credential(), &r, NOW + 400 * DAY).unwrap_err();
    let got: Vec<_> = refusals.iter().map(Refusal::code).collect();
    assert_eq!(
        got,
        [
            "wrong_researcher",
            "untrusted_issuer",
            "credential_expired",
            "purpose_not_approved",
            "kind_not_allowed",
            "mode_not_allowed",
            "category_not_exposed",
            "category_not_exposed",
            "epsilon_over_budget",
        ]
    );
    assert_eq!(
        refusals[6],
        Refusal::CategoryNotExposed {
            category: Category::Demographics
        }
    );
    let shown = refusals[8].to_string();
    assert!(shown.contains("at most 0.5"), "{shown}");
    let shown = refusals[3].to_string();
    assert!(shown.contains("GRU") && shown.contains("HMB"), "{shown}");
}

#[test]
fn use_comes_from_request_and_credential() {
    let cred = verified_credential();
    let u = Use::new(node(), &request(), &cred).unwrap();
    assert_eq!(u.purpose.to_string(), "DS-C0011849");
    assert!(!u.commercial && u.not_for_profit);
    assert_eq!(u.project, "sepsis-2024");
    let mut r = request();
    r.purpose = "NCU".into();
    assert_eq!(
        Use::new(node(), &r, &cred),
        Err(Error::UnknownPurpose("NCU".into()))
    );
}

//! Every time check in `policies` is total: any i64 times, from `i64::MIN` to `i64::MAX`, give a decision, never a panic.
//!
//! Times reach these checks from signed objects an attacker can make
//! (credentials, consent tokens, directories, policies), and `now` is the
//! node's clock. Each property states the decision exactly, against a model
//! written here with i128 arithmetic that cannot overflow, and the extremes
//! are included explicitly because random i64s rarely land on them.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use witmed_policies::consent::verify_token;
use witmed_policies::credential::verify_credential;
use witmed_policies::evaluate::{patient_eligible, query_allowed, Refusal, Request, Use};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::{Category, Mode};

const HMB_COUNT: &str = r#"
version = 1
id = "time-totality"
purpose = "HMB"
aggregate = "count"
[privacy]
mode = "dp"
epsilon = 1.0
"#;

/// Any i64, with the extremes and their neighbours and values near [`NOW`] drawn often.
fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MIN + 1),
        Just(i64::MAX),
        Just(i64::MAX - 1),
        Just(0),
        (NOW - 3 * DAY)..(NOW + 3 * DAY),
    ]
}

fn request() -> Request {
    Request::from_query(&Query::from_toml(HMB_COUNT).unwrap(), researcher())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A credential verifies exactly when `issued_at < expires` and `issued_at <= now < expires`.
    #[test]
    fn credential_validity_is_decided_for_any_times(issued_at in time(), expires in time(), now in time()) {
        let mut c = credential();
        c.issued_at = issued_at;
        c.expires = expires;
        let signed = c.sign(&authority_key());
        let result = verify_credential(&signed, &[authority_key().public()], now);
        let expected = issued_at < expires && issued_at <= now && now < expires;
        prop_assert_eq!(result.is_ok(), expected, "{:?}", result.err());
    }

    /// The node policy's credential time refusals, at any `now`, for a credential with any window.
    #[test]
    fn credential_time_refusals_are_decided_for_any_now(issued_at in time(), length in 1i64..=i64::MAX, now in time()) {
        let mut c = credential();
        c.issued_at = issued_at;
        c.expires = issued_at.saturating_add(length);
        let expires = c.expires;
        prop_assume!(issued_at < expires);
        let signed = c.sign(&authority_key());
        let verified = verify_credential(&signed, &[authority_key().public()], issued_at).unwrap();
        let refusals = query_allowed(&policy(), &verified, &request(), now).err().unwrap_or_default();
        let not_yet = refusals.iter().any(|r| matches!(r, Refusal::CredentialNotYetValid { .. }));
        let expired = refusals.iter().any(|r| matches!(r, Refusal::CredentialExpired { .. }));
        prop_assert_eq!(not_yet, now < issued_at);
        prop_assert_eq!(expired, now >= expires);
        prop_assert_eq!(verified.valid_at(now), !not_yet && !expired);
    }

    /// A consent token verifies exactly when `not_before < expires` and it has not expired at `now`;
    /// it makes a patient eligible only inside `[not_before, expires)`.
    #[test]
    fn consent_validity_is_decided_for_any_times(not_before in time(), expires in time(), now in time(), later in time()) {
        let mut t = token();
        t.not_before = not_before;
        t.expires = expires;
        let signed = t.sign(&patient_key());
        let result = verify_token(&signed, &node(), &enrolled, now);
        let expected = not_before < expires && now < expires;
        prop_assert_eq!(result.is_ok(), expected, "{:?}", result.as_ref().err());
        if let Ok(verified) = result {
            let inside = i128::from(not_before) <= i128::from(later) && i128::from(later) < i128::from(expires);
            prop_assert_eq!(verified.token().valid_at(later), inside);
            let cred = verify_credential(&credential().sign(&authority_key()), &[authority_key().public()], NOW).unwrap();
            let use_ = Use::new(node(), &request(), &cred).unwrap();
            let eligible = patient_eligible(&[&verified], &BTreeSet::new(), &use_, later);
            prop_assert!(!eligible || inside, "eligible outside the token's window");
        }
    }

    /// A directory with any `issued_at` and serial validates and is compared without overflow.
    #[test]
    fn directory_times_and_serials_are_total(issued_at in time(), serial in any::<u64>(), current in any::<u64>()) {
        let mut d = witmed_policies::directory::Directory::new("consortium");
        d.issued_at = issued_at;
        d.serial = serial;
        let mut installed = witmed_policies::directory::Directory::new("consortium");
        installed.serial = current;
        let accepted = witmed_policies::directory::accept_update(Some(&installed), d);
        prop_assert_eq!(accepted.is_ok(), serial > current);
    }

    /// A policy with any `issued_at`, serial and budget window validates without overflow.
    #[test]
    fn policy_times_are_total(issued_at in time(), window in time(), serial in any::<u64>()) {
        let mut p = policy();
        p.issued_at = issued_at;
        p.budget.window_seconds = window;
        p.serial = serial;
        let valid = p.validate();
        prop_assert_eq!(valid.is_ok(), window > 0, "{:?}", valid.err());
        let _ = p.check_supersedes(&policy());
    }
}

#[test]
fn a_consent_token_covering_every_mode_and_category_is_still_bounded_by_time() {
    // A sanity anchor for the properties above: the fixture is valid at NOW.
    let signed = token().sign(&patient_key());
    let verified = verify_token(&signed, &node(), &enrolled, NOW).unwrap();
    assert!(verified.token().valid_at(NOW));
    assert!(!verified.token().valid_at(i64::MAX));
    assert!(!verified.token().valid_at(i64::MIN));
    assert!(verified.token().modes.contains(&Mode::Dp));
    assert!(verified
        .token()
        .categories
        .contains(&Category::Demographics));
}

//! Property tests: consent eligibility against an independent model, and who may sign a policy.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use witmed_crypto::{KeyPair, Role};
use witmed_policies::consent::{verify_revocation, verify_token, Token, Verified};
use witmed_policies::duo::Purpose;
use witmed_policies::evaluate::{patient_eligible, Use};
use witmed_policies::policy::load_policy;
use witmed_policies::Error;
use witmed_protocol::vocab::{Category, Mode};

const PRIMARIES: [&str; 5] = ["GRU", "HMB", "POA", "DS-a", "DS-b"];
const MODIFIERS: [&str; 3] = ["NCU", "NPU", "IRB"];

/// DUO coverage written out as a table, independently of `duo::covers`:
/// (consented, requested) pairs that are covered; every other pair is not.
const COVERED: &[(&str, &str)] = &[
    ("GRU", "GRU"),
    ("GRU", "HMB"),
    ("GRU", "POA"),
    ("GRU", "DS-a"),
    ("GRU", "DS-b"),
    ("HMB", "HMB"),
    ("HMB", "DS-a"),
    ("HMB", "DS-b"),
    ("POA", "POA"),
    ("DS-a", "DS-a"),
    ("DS-b", "DS-b"),
];

fn covered(consented: &str, requested: &str) -> bool {
    COVERED.contains(&(consented, requested))
}

/// What a generated token says, in plain values the model reads.
#[derive(Debug, Clone)]
struct Consent {
    primaries: Vec<&'static str>,
    modifiers: Vec<&'static str>,
    categories: Vec<Category>,
    modes: Vec<Mode>,
    not_before: i64,
    length: i64,
}

fn consent() -> impl Strategy<Value = Consent> {
    (
        subsequence(PRIMARIES.to_vec(), 1..=3),
        subsequence(MODIFIERS.to_vec(), 0..=3),
        subsequence(Category::ALL.to_vec(), 1..=5),
        subsequence(vec![Mode::Dp, Mode::Encrypted], 1..=2),
        -1000i64..1000,
        1i64..1000,
    )
        .prop_map(
            |(primaries, modifiers, categories, modes, not_before, length)| Consent {
                primaries,
                modifiers,
                categories,
                modes,
                not_before,
                length,
            },
        )
}

/// A use in plain values, for the model, and as the crate's `Use`.
#[derive(Debug, Clone)]
struct Asked {
    purpose: &'static str,
    categories: Vec<Category>,
    mode: Mode,
    commercial: bool,
    not_for_profit: bool,
    project: &'static str,
}

fn asked() -> impl Strategy<Value = Asked> {
    (
        select(PRIMARIES.to_vec()),
        subsequence(Category::ALL.to_vec(), 0..=5),
        select(vec![Mode::Dp, Mode::Encrypted]),
        any::<bool>(),
        any::<bool>(),
        select(vec!["", "  ", "sepsis-2024"]),
    )
        .prop_map(
            |(purpose, categories, mode, commercial, not_for_profit, project)| Asked {
                purpose,
                categories,
                mode,
                commercial,
                not_for_profit,
                project,
            },
        )
}

/// A consent with a use and a time near it: each condition of eligibility
/// holds in a good share of cases, so the model's answer is often yes and
/// changing any one condition in the code changes some answers.
fn consent_with_nearby_use() -> impl Strategy<Value = (Consent, Asked, i64)> {
    consent()
        .prop_flat_map(|c| {
            let own = c.categories.clone();
            let times = (c.not_before - 3)..(c.not_before + c.length + 3);
            (
                Just(c),
                subsequence(own.clone(), 0..=own.len()),
                prop::option::weighted(0.25, select(Category::ALL.to_vec())),
                asked(),
                times,
            )
        })
        .prop_map(|(c, categories, extra, asked, now)| {
            let categories = categories.into_iter().chain(extra).collect();
            (
                c,
                Asked {
                    categories,
                    ..asked
                },
                now,
            )
        })
}

fn to_use(a: &Asked) -> Use {
    Use {
        node: node(),
        purpose: a.purpose.parse().unwrap(),
        categories: a.categories.iter().copied().collect(),
        mode: a.mode,
        commercial: a.commercial,
        not_for_profit: a.not_for_profit,
        project: a.project.to_string(),
    }
}

fn to_token(c: &Consent, index: u8) -> Token {
    let mut purposes: Vec<String> = c.primaries.iter().map(|s| s.to_string()).collect();
    purposes.extend(c.modifiers.iter().map(|s| s.to_string()));
    Token {
        id: token_id_for(index),
        purposes,
        categories: c.categories.iter().copied().collect(),
        modes: c.modes.iter().copied().collect(),
        not_before: c.not_before,
        expires: c.not_before + c.length,
        ..token()
    }
}

fn token_id_for(index: u8) -> String {
    witmed_policies::consent::token_id([index; 16])
}

/// The model: does this one consent permit this use at `now`?
fn model_permits(c: &Consent, a: &Asked, now: i64) -> bool {
    let in_window = c.not_before <= now && now < c.not_before + c.length;
    let purpose = c.primaries.iter().any(|p| covered(p, a.purpose));
    let categories = a.categories.iter().all(|x| c.categories.contains(x));
    let mode = c.modes.contains(&a.mode);
    let modifiers = c.modifiers.iter().all(|m| match *m {
        "NCU" => !a.commercial,
        "NPU" => a.not_for_profit,
        "IRB" => !a.project.trim().is_empty(),
        _ => unreachable!(),
    });
    in_window && purpose && categories && mode && modifiers
}

fn verify(envelope_token: Token, key: &KeyPair, now: i64) -> Result<Verified, Error> {
    verify_token(&envelope_token.sign(key), &node(), &enrolled, now)
}

/// A use the token fully permits, so that only the injected fault can make it ineligible.
fn matching_use(c: &Consent) -> Use {
    Use {
        node: node(),
        purpose: c.primaries[0].parse().unwrap(),
        categories: c.categories.iter().copied().collect(),
        mode: c.modes[0],
        commercial: false,
        not_for_profit: true,
        project: "sepsis-2024".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Eligibility equals the model over any set of tokens, revocations and `now`;
    /// with no tokens (opt-in) it is always false.
    #[test]
    fn eligibility_matches_the_model(
        consents in prop::collection::vec(consent(), 0..4),
        revoked_mask in prop::collection::vec(any::<bool>(), 4),
        asked in asked(),
        submitted_at in -1500i64..2500,
        now in -1500i64..2500,
    ) {
        let mut verified = Vec::new();
        let mut model = false;
        let mut revoked = BTreeSet::new();
        for (i, c) in consents.iter().enumerate() {
            let token = to_token(c, i as u8);
            let expired_at_submission = submitted_at >= token.expires;
            match verify(token.clone(), &patient_key(), submitted_at) {
                Ok(v) => {
                    prop_assert!(!expired_at_submission);
                    verified.push(v);
                }
                Err(e) => {
                    prop_assert!(expired_at_submission, "{e:?}");
                    prop_assert_eq!(e.error_code(), "expired");
                    continue;
                }
            }
            if revoked_mask[i] {
                revoked.insert(token.id.clone());
            } else {
                model |= model_permits(c, &asked, now);
            }
        }
        let refs: Vec<&Verified> = verified.iter().collect();
        prop_assert_eq!(patient_eligible(&refs, &revoked, &to_use(&asked), now), model);
    }

    /// One token: eligibility equals the model, close to every boundary.
    #[test]
    fn one_token_eligibility_matches_the_model((c, asked, now) in consent_with_nearby_use()) {
        let token = to_token(&c, 0);
        let v = verify(token, &patient_key(), c.not_before).unwrap();
        prop_assert_eq!(
            patient_eligible(&[&v], &BTreeSet::new(), &to_use(&asked), now),
            model_permits(&c, &asked, now)
        );
    }

    /// A token consenting to purpose P makes the patient eligible for exactly the purposes P covers.
    #[test]
    fn a_purpose_covers_exactly_what_duo_says(consented in select(PRIMARIES.to_vec())) {
        let c = Consent {
            primaries: vec![consented],
            modifiers: vec![],
            categories: Category::ALL.to_vec(),
            modes: vec![Mode::Dp, Mode::Encrypted],
            not_before: NOW - DAY,
            length: 2 * DAY,
        };
        let v = verify(to_token(&c, 0), &patient_key(), NOW).unwrap();
        for requested in PRIMARIES {
            let use_ = Use { purpose: requested.parse::<Purpose>().unwrap(), ..matching_use(&c) };
            prop_assert_eq!(
                patient_eligible(&[&v], &BTreeSet::new(), &use_, NOW),
                covered(consented, requested),
                "{} for {}", consented, requested
            );
        }
    }

    /// Each fault alone makes an otherwise permitting token useless, or unverifiable.
    #[test]
    fn faults_never_make_a_patient_eligible(c in consent(), offset in 0i64..1000, seed in 10u8..255) {
        let token = to_token(&c, 0);
        let use_ = matching_use(&c);
        let none = BTreeSet::new();
        let inside = token.not_before;
        let v = verify(token.clone(), &patient_key(), inside).unwrap();
        // Without a fault the token permits: the faults below are what refuse.
        prop_assert!(patient_eligible(&[&v], &none, &use_, inside));

        // Expired: refused at submission, and ignored if stored from before.
        for expired in [token.expires, token.expires + offset] {
            prop_assert_eq!(verify(token.clone(), &patient_key(), expired).unwrap_err().error_code(), "expired");
            prop_assert!(!patient_eligible(&[&v], &none, &use_, expired));
        }

        // Not yet valid: accepted, but not eligible before not_before.
        for early in [token.not_before - 1, token.not_before - 1 - offset] {
            let pending = verify(token.clone(), &patient_key(), early).unwrap();
            prop_assert!(!patient_eligible(&[&pending], &none, &use_, early));
        }

        // Revoked, through a verified revocation of this very token.
        let revocation = witmed_policies::consent::Revocation { token_id: token.id.clone(), ..revocation() };
        let r = verify_revocation(&revocation.sign(&patient_key()), &node(), &enrolled).unwrap();
        prop_assert!(r.revokes(&v));
        let revoked = BTreeSet::from([r.token_id.clone()]);
        prop_assert!(!patient_eligible(&[&v], &revoked, &use_, inside));

        // Signed by a key other than the enrolled one: never verified.
        let stranger = KeyPair::from_seed(Role::Patient, &[seed; 32]);
        prop_assert_eq!(verify(token.clone(), &stranger, inside).unwrap_err().error_code(), "wrong_patient_key");

        // For another node: refused here, and useless here even if verified there.
        let elsewhere = Token { node: other_node(), ..token.clone() };
        prop_assert_eq!(verify(elsewhere.clone(), &patient_key(), inside).unwrap_err().error_code(), "other_node");
        let there = verify_token(&elsewhere.sign(&patient_key()), &other_node(), &enrolled, inside).unwrap();
        prop_assert!(!patient_eligible(&[&there], &none, &use_, inside));
    }

    /// A policy loads only when signed by the hospital administrator key and made for this node.
    #[test]
    fn only_the_hospital_key_can_sign_a_policy(
        hospital_seed in any::<[u8; 32]>(),
        signer_seed in any::<[u8; 32]>(),
        signer_is_hospital in any::<bool>(),
        for_this_node in any::<bool>(),
    ) {
        let hospital = KeyPair::from_seed(Role::Hospital, &hospital_seed);
        let signer = if signer_is_hospital { KeyPair::from_seed(Role::Hospital, &hospital_seed) } else { KeyPair::from_seed(Role::Hospital, &signer_seed) };
        let mut p = policy();
        if !for_this_node {
            p.node = other_node();
        }
        let result = load_policy(&p.clone().sign(&signer), &hospital.public(), &node());
        let by_hospital = signer.public() == hospital.public();
        match result {
            Ok(loaded) => {
                prop_assert!(by_hospital && for_this_node);
                prop_assert_eq!(loaded, p);
            }
            Err(Error::PolicyNotSignedByHospital { signer: s }) => {
                prop_assert!(!by_hospital);
                prop_assert_eq!(s, signer.public());
            }
            Err(Error::OtherNode { .. }) => prop_assert!(by_hospital && !for_this_node),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

//! Fixtures shared by the integration tests: fixed keys and valid objects to vary.
#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeSet;

use witmed_crypto::{KeyPair, Pseudonym, PublicKey, Role};
use witmed_policies::consent::{Revocation, Token, REVOCATION_VERSION, TOKEN_VERSION};
use witmed_policies::credential::{Credential, CREDENTIAL_VERSION};
use witmed_policies::policy::NodePolicy;
use witmed_protocol::vocab::{Category, Mode};

pub const NOW: i64 = 1_700_000_000;
pub const DAY: i64 = 86_400;

pub fn key(role: Role, seed: u8) -> KeyPair {
    KeyPair::from_seed(role, &[seed; 32])
}

pub fn patient_key() -> KeyPair {
    key(Role::Patient, 1)
}
pub fn other_patient_key() -> KeyPair {
    key(Role::Patient, 2)
}
pub fn node() -> PublicKey {
    key(Role::Node, 3).public()
}
pub fn other_node() -> PublicKey {
    key(Role::Node, 4).public()
}
pub fn hospital_key() -> KeyPair {
    key(Role::Hospital, 5)
}
pub fn authority_key() -> KeyPair {
    key(Role::Authority, 6)
}
pub fn researcher() -> PublicKey {
    key(Role::Researcher, 7).public()
}

pub const PATIENT: Pseudonym = Pseudonym([0x11; 16]);

/// The enrolment lookup of a node where only [`PATIENT`] is enrolled, with [`patient_key`].
pub fn enrolled(p: &Pseudonym) -> Option<PublicKey> {
    (*p == PATIENT).then(|| patient_key().public())
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A token valid from a day ago for a year, for HMB, all categories, both modes.
pub fn token() -> Token {
    Token {
        version: TOKEN_VERSION,
        id: "0123456789abcdef0123456789abcdef".into(),
        node: node(),
        patient: PATIENT,
        purposes: strings(&["HMB"]),
        categories: Category::ALL.into_iter().collect(),
        modes: BTreeSet::from([Mode::Dp, Mode::Encrypted]),
        not_before: NOW - DAY,
        expires: NOW + 365 * DAY,
        simulated: false,
    }
}

pub fn revocation() -> Revocation {
    Revocation {
        version: REVOCATION_VERSION,
        token_id: token().id,
        node: node(),
        patient: PATIENT,
        issued_at: NOW,
    }
}

/// A non-commercial HMB credential for [`researcher`], valid from a day ago for a year.
pub fn credential() -> Credential {
    Credential {
        version: CREDENTIAL_VERSION,
        researcher: researcher(),
        researcher_id: "ada@university".into(),
        name: "Ada Researcher".into(),
        institution: "University Hospital".into(),
        commercial: false,
        not_for_profit: true,
        project: "sepsis-2024".into(),
        purposes: strings(&["HMB"]),
        issued_at: NOW - DAY,
        expires: NOW + 365 * DAY,
    }
}

/// The default policy of [`node`], trusting [`authority_key`].
pub fn policy() -> NodePolicy {
    NodePolicy::default_for(node(), vec![authority_key().public()])
}

//! Who may use which patient data for what: consent tokens, researcher credentials, node policy, and the decisions over them. No IO.
//!
//! # The model
//!
//! * **Patients opt in.** A patient signs a consent [`consent::Token`] with
//!   their own key. It names one hospital node, the patient's pseudonym
//!   there, the GA4GH DUO purposes ([`duo`]), data categories and privacy
//!   modes allowed, and a validity window. A patient without a token that
//!   permits a use is never counted.
//! * **Hospital staff enrol patient keys.** A node accepts a token only if
//!   it is signed by the key staff enrolled for that pseudonym (the caller
//!   supplies that lookup), so nobody can consent on a patient's behalf, and a
//!   token made for one node cannot be replayed at another.
//! * **Revocation is immediate.** A patient-signed [`consent::Revocation`]
//!   withdraws a token; from then on [`evaluate::patient_eligible`] ignores it.
//! * **Patients may cap their own loss.** A patient-signed
//!   [`cap::CapRequest`] (one node, time-bounded, applied once per id) sets
//!   the total epsilon after which the node stops using their data.
//! * **Researchers hold credentials.** An authority the node trusts signs a
//!   [`credential::Credential`] (in the spirit of a GA4GH Passport visa)
//!   binding a researcher key to an identity, a project, approved DUO
//!   purposes, and whether the use is commercial or not-for-profit.
//! * **The hospital signs the node policy.** The [`policy::NodePolicy`],
//!   signed by the hospital administrator key, lists trusted issuers, allowed
//!   query kinds, modes and categories, the privacy budget and the minimum
//!   cohort.
//! * **The consortium authority signs the directory.** The
//!   [`directory::Directory`] lists the member hospitals: each node's peer id,
//!   addresses and the identity key that signs its answers. A node takes a
//!   new directory only if the authority signed it and its serial is higher.
//!
//! A query is answered only if [`evaluate::query_allowed`] finds no refusal,
//! and then counts only patients for whom [`evaluate::patient_eligible`] holds.
//!
//! Every signed object travels in a [`witmed_crypto::Envelope`] with its own
//! domain, carries a `version` that is checked, and is bounded by
//! [`MAX_SIGNED_BYTES`] (the directory, which can list a thousand hospitals,
//! by [`MAX_DIRECTORY_BYTES`]). Verifying returns a type only verification can make
//! ([`consent::Verified`], [`credential::VerifiedCredential`]), so unchecked
//! objects cannot reach a decision.
//!
//! **Architecture Invariant:** this crate does no IO and never reads the
//! clock; time arrives as `now`, unix seconds.

pub mod cap;
pub mod consent;
pub mod credential;
pub mod directory;
pub mod duo;
pub mod error;
pub mod evaluate;
pub mod policy;
pub mod signed;

pub use consent::{verify_revocation, verify_token, Verified, VerifiedRevocation};
pub use credential::{verify_credential, VerifiedCredential};
pub use directory::{
    parse_signed_directory, parse_signed_directory_bytes, verify_directory, Directory,
    MAX_DIRECTORY_BYTES,
};
pub use error::{Error, Object};
pub use evaluate::{patient_eligible, query_allowed, Refusal, Request, Use};
pub use policy::{load_policy, NodePolicy};
pub use signed::{parse_signed, parse_signed_bytes, MAX_SIGNED_BYTES};

//! Wire and file formats of witmed: queries, answers and the names they share. No IO.
//!
//! Every type here that is stored or sent carries a `version` field, checked
//! when it is read; a breaking change adds a new version and an upgrade step.
//! People read and write queries as TOML ([`query::Query::from_toml`]);
//! nodes exchange them as compact postcard bytes inside signed
//! [`witmed_crypto::Envelope`]s.

pub mod analysis;
pub mod answer;
pub mod combine;
pub mod encrypted;
pub mod examples;
pub mod interval;
pub mod limbs;
pub mod observation;
pub mod patient_request;
pub mod query;
pub mod status;
pub mod vocab;
pub mod wire;

pub use answer::{Answer, Component, Released};
pub use query::Query;

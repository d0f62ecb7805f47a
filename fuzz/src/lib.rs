//! Fuzz harnesses for every witmed decoder of untrusted input, run by a small engine on stable Rust.
//!
//! libFuzzer (cargo-fuzz) needs a nightly toolchain, which this project
//! cannot fetch, so witmed fuzzes with its own loop ([`engine`]): valid
//! seed inputs built in code ([`seeds`]: a real signed token, a real study
//! key and ciphertext, a real FHIR bundle and PhysioNet file) mutated at
//! the byte level, plus structure-aware typed values built with `arbitrary`
//! through each type's own `Deserialize` ([`generate`]). Each harness in
//! [`targets`] asserts totality (no panic, no allocation out of proportion
//! to the input, measured by [`alloc`]) and round trips (what decodes
//! re-encodes to something that decodes to the same value).
//!
//! Run one with `bash scripts/fuzz.sh TARGET SECONDS` (or `all`); findings are
//! shrunk, saved under `fuzz-logs/crashes/` and printed in hex, and
//! `witmed-fuzz replay TARGET FILE` runs one saved input again.

pub mod alloc;
pub mod engine;
pub mod generate;
pub mod seeds;
pub mod targets;

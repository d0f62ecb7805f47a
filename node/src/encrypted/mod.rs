//! Encrypted mode: study keys, hospitals' encrypted noisy shares, the keyless aggregator, and the researcher's decryption.
//!
//! The flow of one encrypted query:
//! 1. the researcher made a study key pair (`witmed study keygen`) and
//!    published its public key to every member (`witmed study publish`);
//!    each node verified the researcher's signature and credential and
//!    refused a malformed or degenerate key before caching it ([`study`]);
//! 2. the researcher sends the signed query to the aggregator it names,
//!    which checks the credential and its own policy before anything else;
//! 3. round 1, prepare: the aggregator forwards the same signed query to
//!    every other member; each checks the researcher's signature and
//!    credential, that the connected peer is the named aggregator, applies
//!    policy, consent and budget, adds its noise share ([`shares`]) to its
//!    local aggregate, encrypts it under the study key and keeps it with a
//!    fresh ephemeral X25519 key, charged in one synced batch
//!    (`engine::prepare`); it answers with a signed Ready;
//! 4. round 2, seal: the aggregator sends the roster (the Readys, at least
//!    `min_hospitals`) signed by itself; each member checks it, adds its
//!    pairwise masks for exactly that roster (`witmed_crypto::secagg`) and
//!    answers with the masked ciphertext and a signed receipt
//!    (`engine::seal`), once per query id: the same roster gets the same
//!    answer, another roster a refusal;
//! 5. the aggregator checks every receipt ([`aggregate`]), keeps the total
//!    (a re-asked id gets exactly it) and returns roster, ciphertexts and
//!    receipts;
//! 6. the researcher checks every Ready and receipt against the directory,
//!    adds the ciphertexts and decrypts the sum ([`reveal`]).
//!
//! No one holds a decryption key but the researcher, and each ciphertext
//! decrypts alone to a uniformly masked value: a hospital's share is seen
//! only if every other roster member reveals its masks.

pub mod aggregate;
pub mod shares;
pub mod study;

/// Environment variable that turns noise shares off, honoured only in builds
/// with the `insecure-noise-off` feature (the test suite's exact-equality checks).
pub const NOISE_OFF_ENV: &str = "WITMED_INSECURE_NOISE_OFF";

/// Whether this build can switch noise shares off (the test-only
/// `insecure-noise-off` feature); tests that need it fail by name without it.
pub const NOISE_OFF_AVAILABLE: bool = cfg!(feature = "insecure-noise-off");

/// Whether shares get noise: always, unless a test build asks otherwise.
pub fn noise_enabled() -> bool {
    #[cfg(feature = "insecure-noise-off")]
    {
        std::env::var(NOISE_OFF_ENV).map_or(true, |v| v != "1")
    }
    #[cfg(not(feature = "insecure-noise-off"))]
    {
        true
    }
}

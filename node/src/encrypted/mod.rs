//! Encrypted mode: study keys, hospitals' encrypted noisy shares, the keyless aggregator, and the researcher's decryption.
//!
//! The flow of one encrypted query:
//! 1. the researcher made a study key pair (`witmed study keygen`) and
//!    published its public key to every member (`witmed study publish`);
//!    each node verified the researcher's signature and credential and
//!    cached it under its id ([`study`]);
//! 2. the researcher sends the signed query to the aggregator it names;
//! 3. the aggregator forwards the same signed query to every other member;
//!    each member checks the researcher's signature and credential, that the
//!    connected peer is the named aggregator, applies policy, consent and
//!    budget, adds its noise share ([`shares`]) to its local aggregate,
//!    encrypts it under the study key and answers with the ciphertext;
//! 4. the aggregator checks each answer is signed by a member and is for
//!    this query and study, adds the ciphertexts ([`aggregate`]) and returns
//!    the encrypted total, naming who is in it and who is not;
//! 5. the researcher decrypts the total ([`reveal`]).
//!
//! The aggregator never holds a decryption key; the researcher never sees
//! one hospital's ciphertext.

pub mod aggregate;
pub mod reveal;
pub mod shares;
pub mod study;

/// Environment variable that turns noise shares off, honoured only in builds
/// with the `insecure-noise-off` feature (the test suite's exact-equality checks).
pub const NOISE_OFF_ENV: &str = "WITMED_INSECURE_NOISE_OFF";

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

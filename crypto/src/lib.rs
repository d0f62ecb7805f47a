//! Cryptographic building blocks of witmed: keys, signed envelopes, encryption at rest, pseudonyms.
//!
//! Everything here is pure computation over values (apart from reading and
//! writing key files in [`keys`]); no sockets, no clock, no storage engine.
//! Primitives come from audited libraries: ed25519 signatures from
//! `ed25519-dalek`, AES-256-GCM, HKDF and HMAC-SHA256 from `ring`, LWE from `tfhe`. No cipher,
//! hash or random source is implemented here.
//!
//! * [`keys`]: ed25519 key pairs saved as versioned TOML files with 0600
//!   permissions, and the public keys that name patients, researchers,
//!   hospitals and authorities.
//! * [`envelope`]: the one signed container used for every signed object
//!   (consent tokens, credentials, policies, queries, answers). The signature
//!   covers a domain tag, the format version and the canonical payload bytes,
//!   so a signature made for one kind of object never verifies as another.
//! * [`at_rest`]: AES-256-GCM record encryption, with a key per storage area
//!   derived by HKDF from the node's master key and the storage key bound as
//!   associated data.
//! * [`code_digest`]: keyed HMAC-SHA256 digests of clinical codes, so
//!   storage keys hold no diagnosis or observation code in clear.
//! * [`fhe`]: TFHE's LWE encryption under a compact public key, for
//!   encrypted aggregation: hospitals encrypt, an aggregator adds without
//!   any key, only the researcher decrypts the total.
//! * [`pseudonym`]: keyed HMAC-SHA256 pseudonyms, so that source-system
//!   patient identifiers never reach the store in clear.
//! * [`secagg`]: pairwise-cancelling masks (ephemeral X25519 from
//!   `x25519-dalek`, HKDF and HMAC from `ring`) so that only the sum of a
//!   whole roster of encrypted shares decrypts to anything.

pub mod at_rest;
pub mod code_digest;
pub mod envelope;
pub mod fhe;
pub mod keys;
pub mod pseudonym;
pub mod secagg;
pub mod versioned;

pub use envelope::Envelope;
pub use keys::{KeyPair, PublicKey, Role};
pub use pseudonym::Pseudonym;

/// SHA-256 of `bytes`, used for content identifiers (query digests, study key hashes).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Fills `buf` from the operating system's random source.
///
/// Returns an error only if the OS cannot provide randomness, in which case
/// nothing that needs secrets should go on.
pub fn fill_random(buf: &mut [u8]) -> Result<(), ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(buf)
}

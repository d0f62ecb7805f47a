//! Keyed digests of clinical codes, so storage keys never hold a diagnosis or lab code in clear.
//!
//! Storage keys must stay deterministic (a patient's observations of one
//! code are one range scan), so codes cannot be encrypted with a random
//! nonce. An unkeyed hash is no protection: code systems are public lists
//! (LOINC, SNOMED CT), and hashing every entry inverts it. A code therefore
//! becomes HMAC-SHA256 under a key derived from the node's master key,
//! truncated to [`CODE_DIGEST_LEN`] bytes: stable at one node, meaningless
//! without the key, and different at every node.

use std::fmt;

use ring::hmac;

use crate::at_rest::MasterKey;

/// Bytes kept of each digest: 128 bits, far beyond the number of distinct
/// codes a node holds for collisions, and short keys.
pub const CODE_DIGEST_LEN: usize = 16;

/// HKDF purpose of the code-digest key (changing it changes every storage key).
const PURPOSE: &str = "code-digest/v1";

/// A keyed digest of one code.
pub type CodeDigest = [u8; CODE_DIGEST_LEN];

/// Computes code digests with the node's code key.
#[derive(Clone)]
pub struct CodeDigester {
    key: hmac::Key,
}

impl fmt::Debug for CodeDigester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeDigester(..)")
    }
}

impl CodeDigester {
    /// The digester of the node with this master key.
    pub fn new(master: &MasterKey) -> Self {
        let material = master.derive(PURPOSE);
        CodeDigester {
            key: hmac::Key::new(hmac::HMAC_SHA256, material.as_ref()),
        }
    }

    /// Digest of an observation code (LOINC, or a PhysioNet variable name).
    pub fn observation(&self, code: &str) -> CodeDigest {
        self.digest(&[b"observation", code.as_bytes()])
    }

    /// Digest of a diagnosis: its code system and code.
    pub fn condition(&self, system: &str, code: &str) -> CodeDigest {
        self.digest(&[b"condition", system.as_bytes(), code.as_bytes()])
    }

    /// Digest of an imported file's content (and any `extra` input it was
    /// imported with), naming its import marker: an unkeyed hash would let
    /// anyone holding a patient's source file confirm it was imported here.
    pub fn imported_file(&self, system: &str, content: &[u8], extra: &[u8]) -> CodeDigest {
        self.digest(&[b"imported-file", system.as_bytes(), content, extra])
    }

    /// HMAC over length-prefixed parts, so ("ab", "c") and ("a", "bc") differ.
    fn digest(&self, parts: &[&[u8]]) -> CodeDigest {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; CODE_DIGEST_LEN];
        out.copy_from_slice(&tag.as_ref()[..CODE_DIGEST_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_key_distinct_across_keys_kinds_and_systems() {
        let a = CodeDigester::new(&MasterKey::from_bytes([1; 32]));
        let b = CodeDigester::new(&MasterKey::from_bytes([2; 32]));
        assert_eq!(a.observation("8867-4"), a.observation("8867-4"));
        assert_ne!(a.observation("8867-4"), b.observation("8867-4"));
        assert_ne!(a.observation("8867-4"), a.observation("8310-5"));
        assert_ne!(
            a.condition("snomed", "44054006"),
            a.condition("icd10", "44054006")
        );
        assert_ne!(a.condition("ab", "c"), a.condition("a", "bc"));
        assert_ne!(
            a.imported_file("fhir", b"{}", b""),
            b.imported_file("fhir", b"{}", b"")
        );
        let unkeyed = crate::sha256(b"8867-4");
        assert_ne!(&a.observation("8867-4")[..], &unkeyed[..CODE_DIGEST_LEN]);
    }
}

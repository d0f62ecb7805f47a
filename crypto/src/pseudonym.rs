//! Keyed pseudonyms: source-system patient identifiers become HMAC-SHA256 values.
//!
//! The pseudonym key is derived from the node's master key, so the same
//! source id always maps to the same pseudonym at one node (imports are
//! idempotent and consent can name the patient), while nobody without the key
//! can link a pseudonym to a source id or across hospitals.

use std::fmt;
use std::str::FromStr;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::at_rest::MasterKey;

/// Bytes in a pseudonym: 128 bits is far beyond any hospital's patient count
/// for collisions and keeps storage keys short.
pub const PSEUDONYM_LEN: usize = 16;

/// A patient's pseudonym at one node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; PSEUDONYM_LEN]);

impl Pseudonym {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({})", self.to_hex())
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A string that is not a 32-hex-character pseudonym.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pseudonym {0:?} is not 32 hex characters")]
pub struct BadPseudonym(pub String);

impl FromStr for Pseudonym {
    type Err = BadPseudonym;
    fn from_str(s: &str) -> Result<Self, BadPseudonym> {
        let bytes = hex::decode(s.trim()).map_err(|_| BadPseudonym(s.to_string()))?;
        bytes
            .try_into()
            .map(Pseudonym)
            .map_err(|_| BadPseudonym(s.to_string()))
    }
}

impl Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Pseudonym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)?
                .parse()
                .map_err(serde::de::Error::custom)
        } else {
            Ok(Pseudonym(<[u8; PSEUDONYM_LEN]>::deserialize(d)?))
        }
    }
}

/// Computes pseudonyms with the node's pseudonym key.
pub struct Pseudonymizer {
    key: hmac::Key,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer(..)")
    }
}

impl Pseudonymizer {
    /// The pseudonymizer of the node with this master key.
    pub fn new(master: &MasterKey) -> Self {
        let material = master.derive("pseudonym/v1");
        Pseudonymizer {
            key: hmac::Key::new(hmac::HMAC_SHA256, material.as_ref()),
        }
    }

    /// The pseudonym of `source_id` from `source_system` (e.g. "physionet2012", "fhir").
    ///
    /// The system name is part of the input so equal ids from two systems do not collide.
    pub fn pseudonym(&self, source_system: &str, source_id: &str) -> Pseudonym {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(source_system.len() as u32).to_le_bytes());
        ctx.update(source_system.as_bytes());
        ctx.update(source_id.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; PSEUDONYM_LEN];
        out.copy_from_slice(&tag.as_ref()[..PSEUDONYM_LEN]);
        Pseudonym(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_key_and_distinct_across_keys_and_systems() {
        let a = Pseudonymizer::new(&MasterKey::from_bytes([1; 32]));
        let b = Pseudonymizer::new(&MasterKey::from_bytes([2; 32]));
        assert_eq!(a.pseudonym("fhir", "p1"), a.pseudonym("fhir", "p1"));
        assert_ne!(a.pseudonym("fhir", "p1"), b.pseudonym("fhir", "p1"));
        assert_ne!(
            a.pseudonym("fhir", "p1"),
            a.pseudonym("physionet2012", "p1")
        );
        let p = a.pseudonym("fhir", "p1");
        assert_eq!(p.to_hex().parse::<Pseudonym>().unwrap(), p);
        assert!(!p.to_hex().contains("p1"));
    }
}

//! Encrypted mode on the wire: study announcements, hospitals' encrypted shares and the aggregator's total.
//!
//! A study's public key is announced once, signed by the researcher who
//! holds its decryption key, and cached by each node under its id (the
//! SHA-256 of the key's bytes). In a query, each hospital answers the
//! aggregator with a [`Contribution`]: its local aggregate plus its share of
//! the noise, encrypted under the study key. The aggregator answers the
//! researcher with an [`EncryptedTotal`]: the sum of the contributions, and
//! who is in it and who is not. Ciphertexts and keys travel as tfhe
//! safe-serialized bytes, read back with size limits after the envelope's
//! signature has been checked.

use serde::{Deserialize, Serialize};
use witmed_crypto::{Envelope, KeyPair};

/// Envelope domain of a researcher's signed study announcement.
pub const STUDY_DOMAIN: &str = "witmed/study/v1";
/// Version of the types in this module.
pub const ENCRYPTED_VERSION: u32 = 1;

/// What a researcher signs to publish a study's public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyAnnouncement {
    pub version: u32,
    /// The parameter set (`witmed_crypto::fhe::params::ID`).
    pub params: String,
    /// Safe-serialized `witmed_crypto::fhe::CompactPublicKey`.
    pub public_key: Vec<u8>,
    /// The researcher's credential, as envelope wire bytes.
    pub credential: Vec<u8>,
    /// Unix seconds when signed.
    pub issued_at: i64,
}

impl StudyAnnouncement {
    /// Signs the announcement with the researcher's key.
    pub fn sign(&self, researcher: &KeyPair) -> Envelope {
        Envelope::seal(STUDY_DOMAIN, self, researcher)
    }

    /// The study id: SHA-256 of the public key bytes.
    pub fn study_id(&self) -> [u8; 32] {
        witmed_crypto::sha256(&self.public_key)
    }
}

/// One hospital's encrypted share, sent to the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub version: u32,
    pub study: [u8; 32],
    /// Safe-serialized `witmed_crypto::fhe::Ciphertext` of `values` values.
    pub ciphertext: Vec<u8>,
    pub values: u32,
    /// Standard deviation of this hospital's discrete Gaussian noise share.
    pub share_scale: f64,
    /// Privacy loss charged at this hospital for the total (epsilon, delta).
    pub epsilon_spent: f64,
    pub delta_spent: f64,
    /// Researcher's budget left at this hospital after the charge.
    pub budget_left: f64,
    /// Unix seconds when first computed (a replay returns the same ciphertext).
    pub answered_at: i64,
}

impl Contribution {
    /// Compact stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("contributions serialize")
    }

    /// Parses the stored form, checking the version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Contribution, String> {
        let c: Contribution = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        if c.version != ENCRYPTED_VERSION {
            return Err(format!(
                "contribution version {} is not {ENCRYPTED_VERSION}",
                c.version
            ));
        }
        Ok(c)
    }
}

/// A hospital whose share is in the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Included {
    pub node: String,
    pub share_scale: f64,
    pub epsilon_spent: f64,
    pub delta_spent: f64,
    pub budget_left: f64,
}

/// A hospital left out of the total, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub node: String,
    /// `refused`, `unreachable`, `timed out` or `invalid`.
    pub status: String,
    pub reason: String,
}

/// The aggregator's answer to the researcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptedTotal {
    pub version: u32,
    pub study: [u8; 32],
    /// Safe-serialized `witmed_crypto::fhe::Ciphertext`: the sum of the included shares.
    pub ciphertext: Vec<u8>,
    pub values: u32,
    pub included: Vec<Included>,
    pub left_out: Vec<LeftOut>,
}

/// Half-width at level `alpha` of a sum of `contributions` independent
/// discrete Gaussian shares of scale `share_scale`.
///
/// A discrete Gaussian of scale sigma is sigma-sub-Gaussian (Canonne, Kamath
/// and Steinke 2020), so the sum is sub-Gaussian with variance proxy
/// `c * sigma^2` and `P(|Z| >= t) <= 2 exp(-t^2 / (2 c sigma^2))`: the bound is
/// rigorous, not a normal approximation.
pub fn gaussian_sum_halfwidth(share_scale: f64, contributions: usize, alpha: f64) -> f64 {
    let variance = contributions as f64 * share_scale * share_scale;
    (2.0 * variance * (2.0 / alpha).ln()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halfwidth_grows_with_the_square_root_of_contributions() {
        let one = gaussian_sum_halfwidth(10.0, 1, 0.05);
        // sqrt(2 ln 40) = 2.716...: wider than the normal 1.96, as a tail bound must be.
        assert!((one / 10.0 - 2.716).abs() < 1e-3, "{one}");
        let four = gaussian_sum_halfwidth(10.0, 4, 0.05);
        assert!((four / one - 2.0).abs() < 1e-12);
    }

    #[test]
    fn contributions_round_trip_and_check_their_version() {
        let c = Contribution {
            version: ENCRYPTED_VERSION,
            study: [7; 32],
            ciphertext: vec![1, 2, 3],
            values: 1,
            share_scale: 2.5,
            epsilon_spent: 1.0,
            delta_spent: 1e-6,
            budget_left: 3.0,
            answered_at: 5,
        };
        assert_eq!(Contribution::from_bytes(&c.to_bytes()).unwrap(), c);
        let mut old = c.clone();
        old.version = 99;
        assert!(Contribution::from_bytes(&old.to_bytes()).is_err());
    }
}

//! Encrypted mode on the wire: study announcements, members' Ready and sealed shares with their receipts, and the aggregator's verifiable total.
//!
//! A study's public key is announced once, signed by the researcher who
//! holds its decryption key, and cached by each node under its id (the
//! SHA-256 of the key's bytes). A query then takes two rounds through the
//! aggregator the query names (secure aggregation with pairwise masks,
//! `witmed_crypto::secagg`):
//! 1. **prepare**: each member checks the researcher's signed query, computes
//!    and encrypts its noisy share ([`Contribution`], kept at the member), and
//!    answers with a signed [`Ready`] carrying a fresh ephemeral X25519 key;
//! 2. **seal**: the aggregator sends every member the roster (the Readys it
//!    got) in a signed [`SealRequest`]; each member checks the roster, adds
//!    its pairwise masks for exactly that roster to its ciphertext, and
//!    answers with the masked ciphertext and a signed [`Receipt`] binding it
//!    to this query and this roster ([`SealedShare`]).
//!
//! The researcher receives the roster and every sealed share
//! ([`EncryptedTotal`]), checks every Ready and receipt against the
//! directory, adds the ciphertexts and decrypts the sum: the masks cancel
//! only over the whole roster, so one ciphertext alone decrypts to noise.
//! Ciphertexts and keys travel as tfhe safe-serialized bytes, read back with
//! size limits after the envelope's signature has been checked.

use serde::{Deserialize, Serialize};
use witmed_crypto::versioned::{self, Evolving, Layout};
use witmed_crypto::{single_version, Envelope, KeyPair, PublicKey};

/// Envelope domain of a researcher's signed study announcement.
pub const STUDY_DOMAIN: &str = "witmed/study/v1";
/// Version of study announcements, study files and [`Contribution`].
pub const ENCRYPTED_VERSION: u32 = 1;
/// Envelope domain of a member's signed [`Ready`].
pub const READY_DOMAIN: &str = "witmed/encrypted-ready/v1";
/// Envelope domain of the aggregator's signed [`SealRequest`].
pub const SEAL_DOMAIN: &str = "witmed/encrypted-seal/v1";
/// Envelope domain of a member's signed [`Receipt`].
pub const RECEIPT_DOMAIN: &str = "witmed/encrypted-receipt/v1";
/// Version of [`Ready`], [`SealRequest`], [`Receipt`] and [`EncryptedTotal`].
pub const SECAGG_VERSION: u32 = 2;

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

/// One hospital's encrypted (unmasked) share, kept at the hospital between the two rounds; never sent.
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

single_version!(StudyAnnouncement, "study announcement", ENCRYPTED_VERSION);
single_version!(Contribution, "encrypted contribution", ENCRYPTED_VERSION);
single_version!(Ready, "ready message", SECAGG_VERSION);
single_version!(SealRequest, "seal request", SECAGG_VERSION);
single_version!(Receipt, "seal receipt", SECAGG_VERSION);

/// Why a version 1 total is refused rather than upgraded.
pub const TOTAL_V1_OBSOLETE: &str = "version 1 carried one summed ciphertext, which cannot be \
    checked against the members' signed receipts; ask the aggregator again with a witmed that \
    speaks version 2";

impl Evolving for EncryptedTotal {
    const WHAT: &'static str = "encrypted total";
    const CURRENT: u32 = SECAGG_VERSION;
    fn from_version(version: u32, layout: Layout<'_>) -> Result<Self, versioned::Error> {
        match version {
            SECAGG_VERSION => layout.read::<EncryptedTotal>(),
            1 => Err(versioned::obsolete::<Self>(1, TOTAL_V1_OBSOLETE)),
            found => Err(versioned::unknown::<Self>(found)),
        }
    }
}

impl Contribution {
    /// Compact stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("contributions serialize")
    }

    /// Parses the stored form, checking the version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Contribution, String> {
        versioned::decode(bytes).map_err(|e| e.to_string())
    }
}

/// Round 1: a member is ready to seal, with its ephemeral key for this query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub version: u32,
    pub query_digest: [u8; 32],
    pub researcher: PublicKey,
    /// The member's name in the directory.
    pub member: String,
    /// Its ephemeral X25519 public key for this query.
    pub ephemeral: [u8; 32],
}

impl Ready {
    /// Signs with the member's node key.
    pub fn sign(&self, member: &KeyPair) -> Envelope {
        Envelope::seal(READY_DOMAIN, self, member)
    }
}

/// Round 2: the aggregator asks each member of `roster` to seal its share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealRequest {
    pub version: u32,
    /// The researcher's signed query request, as envelope wire bytes.
    pub query: Vec<u8>,
    /// Every member's signed [`Ready`], the aggregator's own included.
    pub roster: Vec<Envelope>,
}

impl SealRequest {
    /// Signs with the aggregator's node key.
    pub fn sign(&self, aggregator: &KeyPair) -> Envelope {
        Envelope::seal(SEAL_DOMAIN, self, aggregator)
    }
}

/// What a member signs about the masked share it sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u32,
    pub query_digest: [u8; 32],
    pub researcher: PublicKey,
    pub member: String,
    pub study: [u8; 32],
    /// [`roster_hash`] of the roster it sealed for.
    pub roster_hash: [u8; 32],
    /// SHA-256 of the masked ciphertext's bytes.
    pub ciphertext_hash: [u8; 32],
    pub values: u32,
    /// Standard deviation of this member's discrete Gaussian noise share.
    pub share_scale: f64,
    /// Privacy loss charged at this member for the total (epsilon, delta).
    pub epsilon_spent: f64,
    pub delta_spent: f64,
    /// Researcher's budget left at this member after the charge.
    pub budget_left: f64,
}

impl Receipt {
    /// Signs with the member's node key.
    pub fn sign(&self, member: &KeyPair) -> Envelope {
        Envelope::seal(RECEIPT_DOMAIN, self, member)
    }
}

/// One member's masked ciphertext and its signed [`Receipt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedShare {
    pub member: String,
    /// Safe-serialized `witmed_crypto::fhe::Ciphertext`: share plus this member's masks.
    pub ciphertext: Vec<u8>,
    pub receipt: Envelope,
}

impl SealedShare {
    /// Compact stored form (a member keeps what it sealed, to answer a replay identically).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("sealed shares serialize")
    }

    /// Parses the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedShare, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
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

impl Included {
    /// What a member's receipt says about its share.
    pub fn from_receipt(r: &Receipt) -> Included {
        Included {
            node: r.member.clone(),
            share_scale: r.share_scale,
            epsilon_spent: r.epsilon_spent,
            delta_spent: r.delta_spent,
            budget_left: r.budget_left,
        }
    }
}

/// A hospital left out of the total, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub node: String,
    /// `refused`, `unreachable`, `timed out` or `invalid`.
    pub status: String,
    pub reason: String,
}

/// The aggregator's answer to the researcher: everything needed to check and add the shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptedTotal {
    pub version: u32,
    pub study: [u8; 32],
    pub values: u32,
    /// The signed [`Ready`] of every member the shares were masked for.
    pub roster: Vec<Envelope>,
    /// One sealed share per roster member.
    pub shares: Vec<SealedShare>,
    /// The aggregator's summary of the receipts (checked against them by the researcher).
    pub included: Vec<Included>,
    /// Members that were asked but are not in the roster (the aggregator's word).
    pub left_out: Vec<LeftOut>,
}

impl EncryptedTotal {
    /// Compact stored form (the aggregator answers a re-asked query id with it).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("totals serialize")
    }

    /// Parses the stored form, checking the version.
    pub fn from_bytes(bytes: &[u8]) -> Result<EncryptedTotal, String> {
        versioned::decode(bytes).map_err(|e| e.to_string())
    }
}

/// One verified roster entry: a member and its ephemeral key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RosterEntry {
    pub member: String,
    pub ephemeral: [u8; 32],
}

/// Most members in one roster (each share's noise bound adds up; see `witmed_crypto::fhe::params`).
pub const MAX_ROSTER: usize = witmed_crypto::fhe::params::MAX_CONTRIBUTIONS;

/// Checks every signed [`Ready`] of `roster` for query `digest` of
/// `researcher` against the directory's `members` (name, signing key), and
/// returns the entries sorted by member name.
///
/// Refused: a Ready not signed by the key the directory lists for the member
/// it names, for another query or researcher, of another version; a member
/// named twice; an empty roster or one over [`MAX_ROSTER`].
pub fn verify_roster(
    roster: &[Envelope],
    digest: &[u8; 32],
    researcher: &PublicKey,
    members: &[(String, PublicKey)],
) -> Result<Vec<RosterEntry>, String> {
    if roster.is_empty() || roster.len() > MAX_ROSTER {
        return Err(format!(
            "the roster holds {} members; it must hold 1 to {MAX_ROSTER}",
            roster.len()
        ));
    }
    let mut entries = Vec::with_capacity(roster.len());
    for envelope in roster {
        let ready: Ready = envelope
            .open(READY_DOMAIN)
            .map_err(|e| format!("a roster entry does not verify: {e}"))?;
        let listed = members.iter().find(|(name, _)| *name == ready.member);
        match listed {
            None => {
                return Err(format!(
                    "the roster names {}, which is not a member",
                    ready.member
                ))
            }
            Some((_, key)) if *key != envelope.signer => {
                return Err(format!(
                    "the roster entry of {} is not signed by its directory key",
                    ready.member
                ))
            }
            _ => {}
        }
        if ready.version != SECAGG_VERSION
            || ready.query_digest != *digest
            || ready.researcher != *researcher
        {
            return Err(format!(
                "the roster entry of {} is for another query, researcher or version",
                ready.member
            ));
        }
        entries.push(RosterEntry {
            member: ready.member,
            ephemeral: ready.ephemeral,
        });
    }
    entries.sort();
    if let Some(w) = entries.windows(2).find(|w| w[0].member == w[1].member) {
        return Err(format!("the roster names {} twice", w[0].member));
    }
    Ok(entries)
}

/// The hash every receipt binds: the query, the researcher and the sorted roster.
/// It is also the context of the pairwise masks, so masks of one roster cancel only with each other.
pub fn roster_hash(digest: &[u8; 32], researcher: &PublicKey, entries: &[RosterEntry]) -> [u8; 32] {
    let bytes = postcard::to_stdvec(&("witmed/roster/v1", digest, researcher, entries))
        .expect("rosters serialize");
    witmed_crypto::sha256(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn ready(key: &KeyPair, member: &str, digest: [u8; 32], researcher: PublicKey) -> Envelope {
        Ready {
            version: SECAGG_VERSION,
            query_digest: digest,
            researcher,
            member: member.into(),
            ephemeral: [member.len() as u8; 32],
        }
        .sign(key)
    }

    #[test]
    fn rosters_verify_against_the_directory_and_hash_in_any_order() {
        use witmed_crypto::Role;
        let keys: Vec<KeyPair> = (0..3)
            .map(|_| KeyPair::generate(Role::Node).unwrap())
            .collect();
        let members: Vec<(String, PublicKey)> = ["a", "bb", "ccc"]
            .iter()
            .zip(&keys)
            .map(|(n, k)| (n.to_string(), k.public()))
            .collect();
        let researcher = KeyPair::generate(Role::Researcher).unwrap().public();
        let digest = [4; 32];
        let roster: Vec<Envelope> = members
            .iter()
            .zip(&keys)
            .map(|((n, _), k)| ready(k, n, digest, researcher))
            .collect();
        let entries = verify_roster(&roster, &digest, &researcher, &members).unwrap();
        let mut reversed = roster.clone();
        reversed.reverse();
        let again = verify_roster(&reversed, &digest, &researcher, &members).unwrap();
        assert_eq!(
            roster_hash(&digest, &researcher, &entries),
            roster_hash(&digest, &researcher, &again)
        );
        assert_ne!(
            roster_hash(&digest, &researcher, &entries),
            roster_hash(&digest, &researcher, &entries[1..])
        );
        let check = |roster: &[Envelope], needle: &str| {
            let err = verify_roster(roster, &digest, &researcher, &members).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        // Signed by another member's key, for another query, a member twice, none.
        check(
            &[ready(&keys[0], "bb", digest, researcher)],
            "not signed by its directory key",
        );
        check(
            &[ready(&keys[0], "a", [5; 32], researcher)],
            "another query",
        );
        check(&[roster[0].clone(), roster[0].clone()], "twice");
        check(
            &[ready(&keys[0], "mallory", digest, researcher)],
            "not a member",
        );
        check(&[], "1 to");
    }

    /// An aggregator's answer of the most members, each sealing the longest
    /// vector an analysis sends, still fits one response a client reads.
    #[test]
    fn the_largest_encrypted_total_fits_one_response() {
        use crate::wire::{NodeResponse, Outcome, MAX_RESPONSE_BYTES, WIRE_VERSION};
        use witmed_crypto::fhe::{params, ClientKey};
        use witmed_crypto::Role;
        let (_, public) = ClientKey::generate();
        let ciphertext = public
            .encrypt(&vec![-1; params::MAX_VALUES])
            .unwrap()
            .to_bytes();
        let key = KeyPair::generate(Role::Node).unwrap();
        let researcher = KeyPair::generate(Role::Researcher).unwrap().public();
        let digest = [3; 32];
        let members: Vec<String> = (0..MAX_ROSTER)
            .map(|i| format!("hospital-{i:03}"))
            .collect();
        let receipt = |member: &str| Receipt {
            version: SECAGG_VERSION,
            query_digest: digest,
            researcher,
            member: member.into(),
            study: [1; 32],
            roster_hash: [2; 32],
            ciphertext_hash: witmed_crypto::sha256(&ciphertext),
            values: params::MAX_VALUES as u32,
            share_scale: 1.5,
            epsilon_spent: 1.0,
            delta_spent: 1e-6,
            budget_left: 9.0,
        };
        let total = EncryptedTotal {
            version: SECAGG_VERSION,
            study: [1; 32],
            values: params::MAX_VALUES as u32,
            roster: members
                .iter()
                .map(|m| ready(&key, m, digest, researcher))
                .collect(),
            shares: members
                .iter()
                .map(|m| SealedShare {
                    member: m.clone(),
                    ciphertext: ciphertext.clone(),
                    receipt: receipt(m).sign(&key),
                })
                .collect(),
            included: members
                .iter()
                .map(|m| Included::from_receipt(&receipt(m)))
                .collect(),
            left_out: vec![],
        };
        let response = NodeResponse {
            version: WIRE_VERSION,
            node: key.public(),
            node_name: "hospital-000".into(),
            query_id: "q".repeat(64),
            query_digest: digest,
            outcome: Outcome::Aggregated(total),
        }
        .sign(&key);
        let bytes = response.to_bytes().len();
        assert!(bytes <= MAX_RESPONSE_BYTES, "{bytes} bytes");
    }
}

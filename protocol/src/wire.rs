//! Messages between a researcher's client and hospital nodes: signed queries and signed node responses.
//!
//! A request carries one [`Envelope`] signed by the researcher over a
//! [`QueryRequest`]: the query, the researcher's credential (itself signed
//! by an authority), a fresh nonce and the time of signing. The researcher's
//! libp2p identity is the same ed25519 key, so a node checks that the
//! envelope's signer is the peer it is talking to: a signed query replayed by
//! another peer is refused, and one replayed by the same peer is caught by
//! its nonce.
//!
//! A response carries one [`Envelope`] signed by the node's identity key over
//! a [`NodeResponse`]: the node, the query id and digest, and either the
//! released answer or a refusal with a stable code and a reason.

use serde::{Deserialize, Serialize};
use witmed_crypto::{single_version, Envelope, KeyPair, PublicKey};

use crate::answer::Answer;
use crate::encrypted::{EncryptedTotal, SealedShare};
use crate::query::Query;

/// The libp2p protocol name of query exchange.
pub const PROTOCOL: &str = "/witmed/query/1";
/// Envelope domain of a researcher's signed query.
pub const QUERY_DOMAIN: &str = "witmed/signed-query/v1";
/// Envelope domain of a node's signed response.
pub const RESPONSE_DOMAIN: &str = "witmed/node-response/v1";
/// Version of [`QueryRequest`] and [`NodeResponse`].
pub const WIRE_VERSION: u32 = 1;
/// Largest request a node reads; larger ones are cut off unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response a client reads.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How far a query's signing time may be from the node's clock.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// What a researcher signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    pub version: u32,
    pub query: Query,
    /// The researcher's credential, as envelope wire bytes.
    pub credential: Vec<u8>,
    /// Fresh random bytes: a node refuses a nonce it has seen.
    pub nonce: [u8; 16],
    /// Unix seconds when signed.
    pub issued_at: i64,
}

impl QueryRequest {
    /// Signs the request with the researcher's key.
    pub fn sign(&self, researcher: &KeyPair) -> Envelope {
        Envelope::seal(QUERY_DOMAIN, self, researcher)
    }
}

/// What a node decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The released answer.
    Answered(Answer),
    /// Refused: a stable code and a reason a person can act on.
    Refused { code: String, reason: String },
    /// Encrypted mode, round 1, from a member to the aggregator: its signed `Ready`.
    Ready(Envelope),
    /// Encrypted mode, round 2, from a member to the aggregator: its masked share and receipt.
    Sealed(SealedShare),
    /// Encrypted mode, from the aggregator to the researcher: the encrypted total.
    Aggregated(EncryptedTotal),
    /// A study's public key was verified and cached (`query_digest` holds the study id).
    StudyInstalled,
}

/// What a node signs in reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResponse {
    pub version: u32,
    /// The node's identity key (also its signing key).
    pub node: PublicKey,
    pub node_name: String,
    pub query_id: String,
    /// Digest of the query this responds to (all zero when the request did not decode).
    pub query_digest: [u8; 32],
    pub outcome: Outcome,
}

impl NodeResponse {
    /// Signs the response with the node's key.
    pub fn sign(&self, node: &KeyPair) -> Envelope {
        Envelope::seal(RESPONSE_DOMAIN, self, node)
    }
}

single_version!(QueryRequest, "query request", WIRE_VERSION);
single_version!(NodeResponse, "node response", WIRE_VERSION);

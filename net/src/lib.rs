//! witmed over libp2p: the hospital node's peer, the researcher's client, and their codec.
//!
//! Transport: TCP with Noise (authenticated encryption, peers identified by
//! their ed25519 keys) and Yamux multiplexing. One request-response
//! protocol, [`witmed_protocol::wire::PROTOCOL`], carries signed queries,
//! study announcements and signed responses with explicit size limits in
//! both directions. In encrypted mode the aggregator ([`aggregator`]) is also
//! a client of the other members, under its own node key.
//!
//! Identities: a node's libp2p identity is its node key, a researcher's
//! client uses the researcher's key, so "who signed" and "who is connected"
//! are checked to be the same party.
//!
//! Bounds (libp2p's rule: bound everything): connection limits in total, per
//! peer and per source IP address ([`ip_limits`]), a handshake timeout, a
//! bounded number of requests being authenticated per address and in total,
//! a bounded number of queries in flight (more are refused as busy rather
//! than queued), a bounded replay cache that only authenticated requests
//! reach, and request and response size limits.

pub mod aggregator;
pub mod client;
pub mod codec;
pub mod decision;
pub mod ip_limits;
pub mod replay;
pub mod reveal;
pub mod server;

use libp2p::identity;
use libp2p::PeerId;
use witmed_crypto::{KeyPair, PublicKey};

/// The tokio runtime witmed's network commands run on (two workers: the machines it targets are small).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// The libp2p identity of a witmed key pair (same ed25519 key).
pub fn libp2p_keypair(key: &KeyPair) -> identity::Keypair {
    let mut seed = *key.secret_seed();
    identity::Keypair::ed25519_from_bytes(&mut seed)
        .expect("a 32-byte ed25519 seed is always valid")
}

/// The peer id of a witmed public key, or None if the key is not a valid ed25519 point.
pub fn peer_id_of(key: &PublicKey) -> Option<PeerId> {
    let public = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(public)))
}

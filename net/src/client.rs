//! The researcher's client: a short-lived peer that asks every member at once and verifies every answer.
//!
//! The client signs one request, sends it to each hospital concurrently,
//! and waits at most the timeout: a hospital that has not answered by then
//! is reported as timed out, one that cannot be dialled as unreachable. An
//! answer counts only if it is signed by the key the directory lists for
//! that hospital, names that hospital, and answers this very query.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use witmed_crypto::{Envelope, KeyPair, PublicKey};
use witmed_protocol::answer::Answer;
use witmed_protocol::query::Query;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, RESPONSE_DOMAIN, WIRE_VERSION};

use crate::codec::{self, Codec};
use crate::libp2p_keypair;

/// One hospital to ask.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub peer: PeerId,
    pub addresses: Vec<Multiaddr>,
    /// The key its answers must be signed with.
    pub signing_key: PublicKey,
}

/// The hospitals that answered, with their answers.
pub fn answered(results: &[HospitalResult]) -> Vec<(&str, &Answer)> {
    results
        .iter()
        .filter_map(|r| match &r.status {
            Status::Answered(a) => Some((r.name.as_str(), a)),
            _ => None,
        })
        .collect()
}

/// Combines every answer in `results`; None when no hospital answered.
pub fn combine_answered(
    query: &Query,
    results: &[HospitalResult],
) -> Result<Option<witmed_protocol::combine::Combined>, witmed_protocol::combine::Error> {
    let answers = answered(results);
    let parts: Vec<witmed_protocol::combine::Part<'_>> = answers
        .iter()
        .map(|(node, a)| witmed_protocol::combine::Part {
            node,
            released: &a.released,
        })
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    witmed_protocol::combine::combine(query, &parts).map(Some)
}

/// A fresh request for `query`: random nonce, signed-at time `now`.
pub fn request_for(query: Query, credential: &Envelope, now: i64) -> Result<QueryRequest, String> {
    let mut nonce = [0u8; 16];
    witmed_crypto::fill_random(&mut nonce)
        .map_err(|_| "the OS random source failed".to_string())?;
    Ok(QueryRequest {
        version: WIRE_VERSION,
        query,
        credential: credential.to_bytes(),
        nonce,
        issued_at: now,
    })
}

/// Why a consortium directory file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Refused(#[from] witmed_policies::Error),
}

impl DirectoryError {
    /// Stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            DirectoryError::Read { .. } => "read_failed",
            DirectoryError::Refused(e) => e.error_code(),
        }
    }
}

/// Reads and verifies a signed consortium directory. `authority` pins the
/// signer; without it the directory's own signer is accepted (and returned,
/// so the caller can show whom it trusted).
pub fn load_directory(
    path: &std::path::Path,
    authority: Option<PublicKey>,
) -> Result<(witmed_policies::directory::Directory, PublicKey), DirectoryError> {
    use witmed_policies::directory;
    let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let envelope = directory::parse_signed_directory(&text)?;
    let signer = authority.unwrap_or(envelope.signer);
    Ok((directory::verify_directory(&envelope, &signer)?, signer))
}

/// The targets of every member of a directory.
pub fn targets(dir: &witmed_policies::directory::Directory) -> Result<Vec<Target>, String> {
    dir.members
        .iter()
        .map(|m| {
            let peer: PeerId = m
                .peer_id
                .parse()
                .map_err(|e| format!("member {}: peer id: {e}", m.name))?;
            let addresses = m
                .addresses
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .map_err(|e| format!("member {}: {a}: {e}", m.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Target {
                name: m.name.clone(),
                peer,
                addresses,
                signing_key: m.signing_key,
            })
        })
        .collect()
}

pub use witmed_protocol::status::{HospitalResult, Status};

/// Errors that stop the client before it asks anyone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the network transport: {0}")]
    Transport(String),
}

type ClientSwarm = Swarm<request_response::Behaviour<Codec>>;

fn build_swarm(
    researcher: &KeyPair,
    timeout: Duration,
    codec: Codec,
) -> Result<ClientSwarm, Error> {
    let err = |e: &dyn std::fmt::Display| Error::Transport(e.to_string());
    let config = request_response::Config::default().with_request_timeout(timeout);
    Ok(
        libp2p::SwarmBuilder::with_existing_identity(libp2p_keypair(researcher))
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| err(&e))?
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    codec,
                    [(codec::protocol(), ProtocolSupport::Outbound)],
                    config,
                )
            })
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(5)))
            .build(),
    )
}

/// Sends `request`, signed by `researcher`, to every target and collects what each did within `timeout`.
pub async fn ask(
    researcher: &KeyPair,
    request: &QueryRequest,
    targets: &[Target],
    timeout: Duration,
) -> Result<Vec<HospitalResult>, Error> {
    ask_signed(
        researcher,
        &request.sign(researcher),
        request.query.digest(),
        targets,
        timeout,
        Codec::default(),
    )
    .await
}

/// Like [`ask`] with an already signed envelope and explicit codec limits (tests use it to misbehave).
pub async fn ask_signed(
    researcher: &KeyPair,
    envelope: &Envelope,
    digest: [u8; 32],
    targets: &[Target],
    timeout: Duration,
    codec: Codec,
) -> Result<Vec<HospitalResult>, Error> {
    let mut swarm = build_swarm(researcher, timeout, codec)?;
    let mut pending: HashMap<OutboundRequestId, usize> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        let id = swarm.behaviour_mut().send_request_with_addresses(
            &t.peer,
            envelope.clone(),
            t.addresses.clone(),
        );
        pending.insert(id, i);
    }
    let mut results: Vec<Option<Status>> = vec![None; targets.len()];
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while !pending.is_empty() {
        tokio::select! {
            _ = &mut deadline => break,
            event = swarm.select_next_some() => {
                if let Some((i, status)) = on_event(event, &mut pending, targets, digest) {
                    results[i] = Some(status);
                }
            }
        }
    }
    Ok(targets
        .iter()
        .zip(results)
        .map(|(t, status)| HospitalResult {
            name: t.name.clone(),
            status: status.unwrap_or(Status::TimedOut),
        })
        .collect())
}

fn on_event(
    event: SwarmEvent<request_response::Event<Envelope, Envelope>>,
    pending: &mut HashMap<OutboundRequestId, usize>,
    targets: &[Target],
    digest: [u8; 32],
) -> Option<(usize, Status)> {
    match event {
        SwarmEvent::Behaviour(request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        }) => {
            let i = pending.remove(&request_id)?;
            Some((i, verify(&targets[i], &response, digest)))
        }
        SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
            request_id,
            error,
            ..
        }) => {
            let i = pending.remove(&request_id)?;
            Some((i, failure_status(error)))
        }
        _ => None,
    }
}

fn failure_status(error: OutboundFailure) -> Status {
    match error {
        OutboundFailure::Timeout => Status::TimedOut,
        OutboundFailure::DialFailure => Status::Unreachable("cannot connect".into()),
        other => Status::Unreachable(other.to_string()),
    }
}

/// Checks a response: signed by the target's listed key, about this query.
pub fn verify(target: &Target, envelope: &Envelope, digest: [u8; 32]) -> Status {
    if envelope.signer != target.signing_key {
        return Status::Invalid(format!(
            "answer signed by {}, which is not {}'s key in the directory",
            envelope.signer.short(),
            target.name
        ));
    }
    let response: NodeResponse = match envelope.open(RESPONSE_DOMAIN) {
        Ok(r) => r,
        Err(e) => return Status::Invalid(format!("answer does not verify: {e}")),
    };
    if response.node != target.signing_key {
        return Status::Invalid("answer names another node".into());
    }
    match response.outcome {
        Outcome::Answered(answer)
            if answer.query_digest == digest && response.query_digest == digest =>
        {
            Status::Answered(answer)
        }
        Outcome::Ready(r) if response.query_digest == digest => Status::Ready(r),
        Outcome::Sealed(s) if response.query_digest == digest => Status::Sealed(s),
        Outcome::Aggregated(t) if response.query_digest == digest => Status::Aggregated(t),
        Outcome::StudyInstalled if response.query_digest == digest => Status::StudyInstalled,
        Outcome::Answered(_)
        | Outcome::Ready(_)
        | Outcome::Sealed(_)
        | Outcome::Aggregated(_)
        | Outcome::StudyInstalled => Status::Invalid("answer is for another query".into()),
        Outcome::Refused { code, reason } => Status::Refused { code, reason },
    }
}

//! The hospital node as a libp2p peer: `witmed node run`.
//!
//! Each inbound request is checked in this order, and the first failure is
//! the signed refusal sent back: the envelope is a signed query (or a study
//! announcement, see [`super::aggregator`]); its signer is the connected
//! peer, or for an encrypted query the connected peer is the aggregator the
//! query names; the request is fresh and not a replay; the credential and
//! query decode. Then [`crate::engine::answer`] (or, in encrypted mode,
//! [`crate::engine::prepare`]) applies the node policy, consent, the
//! privacy engine and the budget. Queries run on
//! blocking threads, at most [`Config::max_in_flight`] at once; a request
//! beyond that is refused as busy at once rather than queued, so remote
//! load cannot pile up work in the node. A peer that sends something that
//! is not a valid signed query is disconnected after its refusal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{connection_limits, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, Semaphore};
use witmed_crypto::{Envelope, PublicKey};
use witmed_protocol::query::Query;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, QUERY_DOMAIN, WIRE_VERSION};

use witmed_policies::directory::Directory;
use witmed_protocol::encrypted::{SEAL_DOMAIN, STUDY_DOMAIN};
use witmed_protocol::vocab::Mode;

pub use super::fault::Misbehave;

use super::codec::{self, Codec};
use super::{aggregator, fault, libp2p_keypair, peer_id_of, replay};
use crate::engine;
use crate::node::Node;

/// Limits of a running node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Queries computed at once; more are refused as busy.
    pub max_in_flight: usize,
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections per peer.
    pub max_connections_per_peer: u32,
    /// Nonces remembered for replay protection.
    pub replay_capacity: usize,
    /// Close idle connections after this long.
    pub idle_timeout: Duration,
    /// Fault injection for simnet: answer wrongly on purpose. Never set in production.
    pub misbehave: Option<Misbehave>,
    /// The installed consortium directory: who may relay encrypted queries, whom an aggregator asks.
    pub directory: Option<Directory>,
    /// How long an aggregator waits for the other members' encrypted shares.
    pub aggregate_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["/ip4/0.0.0.0/tcp/4001".parse().expect("valid multiaddr")],
            max_in_flight: 4,
            max_connections: 256,
            max_connections_per_peer: 2,
            replay_capacity: 100_000,
            idle_timeout: Duration::from_secs(30),
            misbehave: None,
            directory: None,
            aggregate_timeout: Duration::from_secs(8),
        }
    }
}

/// The node's network behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    queries: request_response::Behaviour<Codec>,
}

/// Errors that stop the node's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the network transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}; is another process using the port?")]
    Listen { addr: Multiaddr, reason: String },
}

fn behaviour(config: &Config) -> Behaviour {
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(config.max_connections / 4 + 1));
    let rr_config =
        request_response::Config::default().with_request_timeout(Duration::from_secs(60));
    Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        queries: request_response::Behaviour::with_codec(
            Codec::default(),
            [(codec::protocol(), ProtocolSupport::Inbound)],
            rr_config,
        ),
    }
}

fn build_swarm(node: &Node, config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let transport_err = |e: &dyn std::fmt::Display| Error::Transport(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(libp2p_keypair(node.key()))
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_err(&e))?
        .with_behaviour(|_| behaviour(config))
        .map_err(|e| transport_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}

/// A finished query, sent back to the event loop.
struct Done {
    channel: ResponseChannel<Envelope>,
    response: Envelope,
    peer: PeerId,
    misbehaved: bool,
}

/// Runs the node's peer until `shutdown` completes.
///
/// Prints one `listening on ADDR/p2p/PEER` line per listen address on stdout
/// (scripts and tests read them).
pub async fn run(
    node: Arc<Node>,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut swarm = build_swarm(&node, &config)?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    let state = Arc::new(State {
        misbehave: config.misbehave,
        directory: config.directory.clone(),
        aggregate_timeout: config.aggregate_timeout,
        node,
        replay: Mutex::new(replay::Guard::new(config.replay_capacity)),
        to_disconnect: Mutex::new(VecDeque::new()),
    });
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(config.max_in_flight);
    tokio::pin!(shutdown);
    let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = housekeeping.tick() => disconnect_due(&mut swarm, &state),
            Some(done) = done_rx.recv() => finish(&mut swarm, &state, done),
            event = swarm.select_next_some() => {
                on_event(&mut swarm, event, &state, &in_flight, &done_tx);
            }
        }
    }
    tracing::info!("node {} shutting down", state.node.config.name);
    Ok(())
}

struct State {
    node: Arc<Node>,
    misbehave: Option<Misbehave>,
    directory: Option<Directory>,
    aggregate_timeout: Duration,
    replay: Mutex<replay::Guard>,
    /// Misbehaving peers to disconnect once their refusal has had time to arrive.
    to_disconnect: Mutex<VecDeque<(PeerId, Instant)>>,
}

/// Misbehaving peers remembered at once; beyond that they are disconnected at once.
const MAX_PENDING_DISCONNECTS: usize = 1024;
/// Time given to a refusal to reach a misbehaving peer before its connection is closed.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

fn finish(swarm: &mut Swarm<Behaviour>, state: &State, done: Done) {
    let sent = swarm
        .behaviour_mut()
        .queries
        .send_response(done.channel, done.response)
        .is_ok();
    if !sent {
        tracing::debug!(peer = %done.peer, "requester went away before the response");
    }
    if done.misbehaved {
        tracing::warn!(peer = %done.peer, "peer sent an invalid request; disconnecting it after the refusal");
        let mut pending = state.to_disconnect.lock().expect("disconnect lock");
        if !sent || pending.len() >= MAX_PENDING_DISCONNECTS {
            let _ = swarm.disconnect_peer_id(done.peer);
        } else {
            pending.push_back((done.peer, Instant::now() + DISCONNECT_GRACE));
        }
    }
}

/// Disconnects misbehaving peers whose grace time is over.
fn disconnect_due(swarm: &mut Swarm<Behaviour>, state: &State) {
    let mut pending = state.to_disconnect.lock().expect("disconnect lock");
    while pending
        .front()
        .is_some_and(|(_, due)| *due <= Instant::now())
    {
        if let Some((peer, _)) = pending.pop_front() {
            let _ = swarm.disconnect_peer_id(peer);
        }
    }
}

fn on_event(
    swarm: &mut Swarm<Behaviour>,
    event: SwarmEvent<BehaviourEvent>,
    state: &Arc<State>,
    in_flight: &Arc<Semaphore>,
    done_tx: &mpsc::Sender<Done>,
) {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            println!("listening on {address}/p2p/{}", swarm.local_peer_id());
        }
        SwarmEvent::Behaviour(BehaviourEvent::Queries(request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        })) => dispatch(swarm, peer, request, channel, state, in_flight, done_tx),
        SwarmEvent::Behaviour(BehaviourEvent::Queries(
            request_response::Event::InboundFailure { peer, error, .. },
        )) => {
            tracing::warn!(%peer, %error, "inbound request failed (oversized, malformed or cut off); disconnecting");
            let _ = swarm.disconnect_peer_id(peer);
        }
        SwarmEvent::IncomingConnectionError {
            send_back_addr,
            error,
            ..
        } => {
            tracing::info!(%send_back_addr, %error, "incoming connection refused");
        }
        _ => {}
    }
}

/// Starts a query on a blocking thread, or refuses it as busy.
fn dispatch(
    swarm: &mut Swarm<Behaviour>,
    peer: PeerId,
    request: Envelope,
    channel: ResponseChannel<Envelope>,
    state: &Arc<State>,
    in_flight: &Arc<Semaphore>,
    done_tx: &mpsc::Sender<Done>,
) {
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        let response = refusal(
            &state.node,
            "",
            [0; 32],
            "busy",
            "the node is answering other queries; try again shortly",
        );
        let _ = swarm
            .behaviour_mut()
            .queries
            .send_response(channel, response);
        return;
    };
    let state = state.clone();
    let done_tx = done_tx.clone();
    tokio::task::spawn_blocking(move || {
        let now = crate::unix_now();
        let decision = handle(
            &state.node,
            state.directory.as_ref(),
            &state.replay,
            peer,
            &request,
            now,
        );
        let (response, misbehaved) = match decision {
            Decision::Respond(response, misbehaved) => (response, misbehaved),
            Decision::Aggregate(query_request) => {
                let response = aggregator::aggregate_query(
                    &state.node,
                    state.directory.as_ref(),
                    state.aggregate_timeout,
                    &request,
                    &query_request,
                    now,
                );
                (response, false)
            }
        };
        let signed = match state.misbehave {
            Some(how) => fault::misbehave(&state.node, how, response),
            None => response.sign(state.node.key()),
        };
        // The channel holds max_in_flight and each permit sends once: never blocks for long.
        let _ = done_tx.blocking_send(Done {
            channel,
            response: signed,
            peer,
            misbehaved,
        });
        drop(permit);
    });
}

pub(super) fn refusal(
    node: &Node,
    query_id: &str,
    digest: [u8; 32],
    code: &str,
    reason: &str,
) -> Envelope {
    response(
        node,
        query_id,
        digest,
        Outcome::Refused {
            code: code.to_string(),
            reason: reason.to_string(),
        },
    )
    .sign(node.key())
}

pub(super) fn response(
    node: &Node,
    query_id: &str,
    digest: [u8; 32],
    outcome: Outcome,
) -> NodeResponse {
    NodeResponse {
        version: WIRE_VERSION,
        node: node.id(),
        node_name: node.config.name.clone(),
        query_id: query_id.to_string(),
        query_digest: digest,
        outcome,
    }
}

/// What to do with one request.
pub enum Decision {
    /// Send this response; the flag says the peer misbehaved (sent something
    /// that is not a valid signed request of its own).
    Respond(NodeResponse, bool),
    /// This node is the aggregator the encrypted query names: gather the shares.
    Aggregate(QueryRequest),
}

/// Decides one request.
pub fn handle(
    node: &Node,
    directory: Option<&Directory>,
    replay: &Mutex<replay::Guard>,
    peer: PeerId,
    envelope: &Envelope,
    now: i64,
) -> Decision {
    if envelope.domain == STUDY_DOMAIN {
        return aggregator::install_study(node, peer, envelope, now);
    }
    if envelope.domain == SEAL_DOMAIN {
        return aggregator::seal(node, directory, peer, envelope, now);
    }
    let request: QueryRequest = match envelope.open(QUERY_DOMAIN) {
        Ok(r) => r,
        Err(e) => {
            return Decision::Respond(
                refused(node, "", [0; 32], "bad_request", e.to_string()),
                true,
            )
        }
    };
    let query_id = request.query.id.clone();
    let digest = request.query.digest();
    let encrypted = request.query.privacy.mode == Mode::Encrypted;
    let relayed = encrypted && aggregator::is_named_aggregator(directory, &request.query, peer);
    if peer_id_of(&envelope.signer) != Some(peer) && !relayed {
        let reason =
            "the query is signed by another key than the connected peer's (replayed or relayed)"
                .to_string();
        return Decision::Respond(
            refused(node, &query_id, digest, "signer_not_peer", reason),
            true,
        );
    }
    if request.version != WIRE_VERSION {
        let reason = format!(
            "request version {} is not {WIRE_VERSION}; upgrade the client",
            request.version
        );
        return Decision::Respond(
            refused(node, &query_id, digest, "unsupported_version", reason),
            false,
        );
    }
    if let Err(e) = replay.lock().expect("replay lock").check(
        envelope.signer,
        request.nonce,
        request.issued_at,
        now,
    ) {
        let code = if matches!(e, replay::Error::Replayed) {
            "replayed"
        } else {
            "not_fresh"
        };
        let response = refused(node, &query_id, digest, code, e.to_string());
        return Decision::Respond(response, false);
    }
    let aggregator = request
        .query
        .privacy
        .aggregator
        .as_deref()
        .unwrap_or_default();
    let response = match (encrypted, relayed) {
        (false, _) => answer(node, &request, envelope.signer, now),
        (true, true) => aggregator::prepare(node, directory, &request, envelope.signer, now),
        (true, false) if aggregator == node.config.name => {
            return Decision::Aggregate(request);
        }
        (true, false) => refused(
            node,
            &query_id,
            digest,
            "not_aggregator",
            format!("send encrypted queries to the aggregator they name ({aggregator}); it asks the other members"),
        ),
    };
    Decision::Respond(response, false)
}

/// The query is well formed and the credential decodes: returns the
/// credential, or the refusal to send.
pub(super) fn checked_credential(
    node: &Node,
    request: &QueryRequest,
) -> Result<Envelope, Box<NodeResponse>> {
    let query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    query
        .validate()
        .map_err(|e| Box::new(refused(node, id, digest, "bad_query", e.to_string())))?;
    witmed_policies::parse_signed_bytes(&request.credential).map_err(|e| {
        Box::new(refused(
            node,
            id,
            digest,
            e.error_code(),
            format!("credential: {e}"),
        ))
    })
}

fn answer(node: &Node, request: &QueryRequest, researcher: PublicKey, now: i64) -> NodeResponse {
    let query: &Query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    let credential = match checked_credential(node, request) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    match engine::answer(node, query, &researcher, &credential, now) {
        Ok(answer) => {
            tracing::info!(query = id, researcher = %researcher.short(), "answered");
            response(node, id, digest, Outcome::Answered(answer))
        }
        Err(e) => {
            tracing::info!(query = id, researcher = %researcher.short(), code = e.code(), reason = %e, "refused");
            refused(node, id, digest, e.code(), e.to_string())
        }
    }
}

pub(super) fn refused(
    node: &Node,
    id: &str,
    digest: [u8; 32],
    code: &str,
    reason: String,
) -> NodeResponse {
    response(
        node,
        id,
        digest,
        Outcome::Refused {
            code: code.to_string(),
            reason,
        },
    )
}

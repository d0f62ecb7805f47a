//! The hospital node as a libp2p peer: `witmed node run`.
//!
//! Each inbound request is checked in this order, and the first failure is
//! the signed refusal sent back: the envelope is a signed query; its signer
//! is the connected peer; the request is fresh and not a replay; the
//! credential and query decode. Then [`crate::engine::answer`] applies the
//! node policy, consent, the privacy engine and the budget. Queries run on
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
use witmed_protocol::encrypted::STUDY_DOMAIN;
use witmed_protocol::vocab::Mode;

use super::codec::{self, Codec};
use super::{client, libp2p_keypair, peer_id_of, replay};
use crate::encrypted::{aggregate, study};
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

/// Ways a member can misbehave on purpose, so tests can check that researchers' clients cope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Answers with a corrupted signature.
    BadSignature,
    /// Answers with a validly signed envelope whose payload is junk.
    Garbage,
    /// Answers with a response over the client's size limit.
    Oversized,
    /// Answers as if to another query.
    WrongQuery,
    /// Encrypted mode: sends a truncated ciphertext as its share.
    TruncatedShare,
    /// Encrypted mode: sends a share encrypted for another study.
    ForeignShare,
    /// Encrypted mode: sends a share over the ciphertext size limit.
    OversizedShare,
    /// Encrypted mode, as aggregator: returns a forged total.
    LyingAggregator,
}

impl std::str::FromStr for Misbehave {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bad-signature" => Ok(Misbehave::BadSignature),
            "garbage" => Ok(Misbehave::Garbage),
            "oversized" => Ok(Misbehave::Oversized),
            "wrong-query" => Ok(Misbehave::WrongQuery),
            "truncated-share" => Ok(Misbehave::TruncatedShare),
            "foreign-share" => Ok(Misbehave::ForeignShare),
            "oversized-share" => Ok(Misbehave::OversizedShare),
            "lying-aggregator" => Ok(Misbehave::LyingAggregator),
            other => Err(format!(
                "unknown fault {other:?}; use bad-signature, garbage, oversized, wrong-query, \
                 truncated-share, foreign-share, oversized-share or lying-aggregator"
            )),
        }
    }
}

/// Applies a deliberate fault to a response (simnet only).
fn misbehave(node: &Node, how: Misbehave, mut response: NodeResponse) -> Envelope {
    use witmed_protocol::wire::{MAX_RESPONSE_BYTES, RESPONSE_DOMAIN};
    match how {
        Misbehave::BadSignature => {
            let mut signed = response.sign(node.key());
            signed.signature[0] ^= 1;
            signed
        }
        Misbehave::Garbage => Envelope::seal(RESPONSE_DOMAIN, &vec![0xA5u8; 300], node.key()),
        Misbehave::Oversized => Envelope::seal(
            RESPONSE_DOMAIN,
            &vec![0u8; MAX_RESPONSE_BYTES + 1],
            node.key(),
        ),
        Misbehave::WrongQuery => {
            response.query_digest[0] ^= 1;
            if let Outcome::Answered(answer) = &mut response.outcome {
                answer.query_digest[0] ^= 1;
            }
            response.sign(node.key())
        }
        Misbehave::TruncatedShare
        | Misbehave::ForeignShare
        | Misbehave::OversizedShare
        | Misbehave::LyingAggregator => {
            tamper_encrypted(how, &mut response.outcome);
            response.sign(node.key())
        }
    }
}

/// The encrypted-mode faults: a bad share, or a forged total.
fn tamper_encrypted(how: Misbehave, outcome: &mut Outcome) {
    use witmed_crypto::fhe::{self, Ciphertext};
    match (how, outcome) {
        (Misbehave::TruncatedShare, Outcome::Contributed(c)) => {
            c.ciphertext.truncate(c.ciphertext.len() / 2);
        }
        (Misbehave::ForeignShare, Outcome::Contributed(c)) => c.study[0] ^= 1,
        (Misbehave::OversizedShare, Outcome::Contributed(c)) => {
            c.ciphertext
                .resize(fhe::MAX_CIPHERTEXT_BYTES as usize + 1, 0);
        }
        (Misbehave::LyingAggregator, Outcome::Aggregated(t)) => {
            if let Ok(mut total) = Ciphertext::from_bytes(&t.ciphertext, t.values as usize) {
                // Not a multiple of delta: a forged total the researcher can detect.
                total.add_raw_plaintext(1 << (fhe::params::DELTA_LOG2 - 3));
                t.ciphertext = total.to_bytes();
            }
        }
        _ => {}
    }
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
            Decision::Aggregate(query_request) => (
                aggregate_query(&state, &request, &query_request, now),
                false,
            ),
        };
        let signed = match state.misbehave {
            Some(how) => misbehave(&state.node, how, response),
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

fn refusal(node: &Node, query_id: &str, digest: [u8; 32], code: &str, reason: &str) -> Envelope {
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

fn response(node: &Node, query_id: &str, digest: [u8; 32], outcome: Outcome) -> NodeResponse {
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
        return install_study(node, peer, envelope, now);
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
    let relayed = encrypted && is_named_aggregator(directory, &request.query, peer);
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
        (true, true) => contribute(node, directory, &request, envelope.signer, now),
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

/// True if `peer` is the member the encrypted `query` names as its aggregator.
fn is_named_aggregator(directory: Option<&Directory>, query: &Query, peer: PeerId) -> bool {
    let Some(name) = query.privacy.aggregator.as_deref() else {
        return false;
    };
    directory
        .and_then(|d| d.members.iter().find(|m| m.name == name))
        .and_then(|m| peer_id_of(&m.signing_key))
        == Some(peer)
}

/// A researcher publishes a study key: signed by the connected peer, checked, cached.
fn install_study(node: &Node, peer: PeerId, envelope: &Envelope, now: i64) -> Decision {
    if peer_id_of(&envelope.signer) != Some(peer) {
        let reason = "the study is signed by another key than the connected peer's".to_string();
        return Decision::Respond(refused(node, "", [0; 32], "signer_not_peer", reason), true);
    }
    match study::install(node, envelope, now) {
        Ok(id) => {
            tracing::info!(study = %hex::encode(id), researcher = %envelope.signer.short(), "study installed");
            Decision::Respond(response(node, "", id, Outcome::StudyInstalled), false)
        }
        Err(e) => {
            let misbehaved = matches!(e, study::Error::Announcement(_) | study::Error::Fhe(_));
            Decision::Respond(
                refused(node, "", [0; 32], e.code(), e.to_string()),
                misbehaved,
            )
        }
    }
}

/// A member's encrypted share, for the aggregator that relayed the query.
fn contribute(
    node: &Node,
    directory: Option<&Directory>,
    request: &QueryRequest,
    researcher: PublicKey,
    now: i64,
) -> NodeResponse {
    let query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    if let Err(e) = query.validate() {
        return refused(node, id, digest, "bad_query", e.to_string());
    }
    let members = directory.map_or(0, |d| d.members.len());
    let credential = match witmed_policies::parse_signed_bytes(&request.credential) {
        Ok(c) => c,
        Err(e) => return refused(node, id, digest, e.error_code(), format!("credential: {e}")),
    };
    match engine::contribute(node, query, &researcher, &credential, members, now) {
        Ok(c) => response(node, id, digest, Outcome::Contributed(c)),
        Err(e) => {
            tracing::info!(query = id, code = e.code(), reason = %e, "encrypted share refused");
            refused(node, id, digest, e.code(), e.to_string())
        }
    }
}

/// The aggregator's part: its own share, the other members' shares, their encrypted sum.
fn aggregate_query(
    state: &State,
    envelope: &Envelope,
    request: &QueryRequest,
    now: i64,
) -> NodeResponse {
    let node = &state.node;
    let query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    let Some(directory) = state.directory.as_ref() else {
        let reason = "this node has no consortium directory installed; install one to aggregate";
        return refused(node, id, digest, "no_directory", reason.into());
    };
    let others: Vec<client::Target> = match client::targets(directory) {
        Ok(t) => t
            .into_iter()
            .filter(|t| t.name != node.config.name)
            .collect(),
        Err(e) => return refused(node, id, digest, "bad_directory", e),
    };
    // The aggregator's own share is computed while the others are asked.
    let (own, asked) = std::thread::scope(|scope| {
        let own = scope.spawn(|| contribute(node, Some(directory), request, envelope.signer, now));
        let asked = tokio::runtime::Handle::current().block_on(client::ask_signed(
            node.key(),
            envelope,
            digest,
            &others,
            state.aggregate_timeout,
            Codec::default(),
        ));
        (own.join(), asked)
    });
    let own = match own {
        Ok(response) => own_status(response),
        Err(_) => client::Status::Invalid("computing the aggregator's own share failed".into()),
    };
    let mut outcomes = vec![(node.config.name.clone(), own)];
    match asked {
        Ok(results) => outcomes.extend(results.into_iter().map(|r| (r.name, r.status))),
        Err(e) => return refused(node, id, digest, "network_failed", e.to_string()),
    }
    match aggregate::aggregate(node, query, &envelope.signer, outcomes, now) {
        Ok(total) => {
            tracing::info!(
                query = id,
                included = total.included.len(),
                left_out = total.left_out.len(),
                "encrypted total sent"
            );
            response(node, id, digest, Outcome::Aggregated(total))
        }
        Err(e) => refused(node, id, digest, e.code(), e.to_string()),
    }
}

/// The aggregator's own share, as the status a member's answer would have.
fn own_status(own: NodeResponse) -> client::Status {
    match own.outcome {
        Outcome::Contributed(c) => client::Status::Contributed(c),
        Outcome::Refused { code, reason } => client::Status::Refused { code, reason },
        _ => client::Status::Invalid("no encrypted share".into()),
    }
}

fn answer(node: &Node, request: &QueryRequest, researcher: PublicKey, now: i64) -> NodeResponse {
    let query: &Query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    if let Err(e) = query.validate() {
        return refused(node, id, digest, "bad_query", e.to_string());
    }
    let credential = match witmed_policies::parse_signed_bytes(&request.credential) {
        Ok(c) => c,
        Err(e) => return refused(node, id, digest, e.error_code(), format!("credential: {e}")),
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

fn refused(node: &Node, id: &str, digest: [u8; 32], code: &str, reason: String) -> NodeResponse {
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

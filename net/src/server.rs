//! The hospital node as a libp2p peer: `witmed node run`.
//!
//! Each inbound request goes through two stages, and the first failure is
//! the signed refusal sent back.
//!
//! 1. **Authentication** ([`authenticate`]), cheap and stateless: the
//!    envelope is a signed query (or a study announcement, see
//!    [`crate::aggregator`]); its signer is the connected peer, or for an
//!    encrypted query the connected peer is the aggregator the query names;
//!    the version is this node's; the query is well formed; the credential
//!    is signed by an issuer the node policy trusts, issued to the signer,
//!    and valid now. At most [`Config::max_checks_per_ip`] requests per
//!    source address and [`Config::max_checks`] in total are checked at
//!    once; more are refused as busy at once.
//! 2. **Work** ([`decide`]), only for an authenticated request: the replay
//!    guard (the first state a request leaves), then
//!    [`witmed_node::engine::answer`] (or, in encrypted mode,
//!    [`witmed_node::engine::prepare`], [`witmed_node::engine::seal`] or the aggregator's
//!    part), which apply the
//!    node policy, consent, the privacy engine and the budget. At most
//!    [`Config::max_in_flight`] at once; a request beyond that is refused as
//!    busy at once rather than queued, so remote load cannot pile up work in
//!    the node.
//!
//! So nothing an unauthenticated peer sends is stored (no replay cache
//! entry, no study, no forwarded work), and a flood of unauthenticated
//! requests from one address takes neither the query permits nor the
//! checking capacity of other addresses. Both stages run on blocking threads
//! inside [`std::panic::catch_unwind`]: a bug that panics on one request
//! answers `internal_error` and the node keeps serving; locks are taken
//! through [`witmed_node::locks`], which a panic cannot wedge.
//!
//! Connections: at most [`Config::max_pending_per_ip`] handshakes and
//! [`Config::max_connections_per_ip`] established connections per source
//! IP address ([`crate::ip_limits`]), [`Config::max_connections_per_peer`]
//! per identity, and [`Config::max_pending`] and
//! [`Config::max_connections`] in total; a handshake not finished within
//! [`Config::handshake_timeout`] is dropped, and an idle connection after
//! [`Config::idle_timeout`]. A peer that sends something that is not a
//! valid signed request of its own is disconnected after its refusal.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{connection_limits, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, Semaphore};
use witmed_crypto::{envelope, Envelope, PublicKey};
use witmed_protocol::query::Query;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, QUERY_DOMAIN, WIRE_VERSION};

use witmed_policies::credential;
use witmed_policies::directory::Directory;
use witmed_protocol::encrypted::{StudyAnnouncement, SEAL_DOMAIN, STUDY_DOMAIN};
use witmed_protocol::vocab::Mode;

use crate::codec::{self, Codec};
use crate::decision::{checked_credential, refused, response, Decision};
use crate::{aggregator, ip_limits, libp2p_keypair, peer_id_of, replay};
use witmed_node::encrypted::study;
use witmed_node::engine;
use witmed_node::locks;
use witmed_node::node::Node;

/// Limits of a running node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Queries computed at once; more are refused as busy.
    pub max_in_flight: usize,
    /// Requests being authenticated at once, in total; more are refused as busy.
    pub max_checks: usize,
    /// Requests being authenticated at once per source IP address; more are refused as busy.
    pub max_checks_per_ip: usize,
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections per peer (identity).
    pub max_connections_per_peer: u32,
    /// Established inbound connections per source IP address.
    pub max_connections_per_ip: usize,
    /// Inbound connections still in their handshake, in total.
    pub max_pending: u32,
    /// Inbound connections still in their handshake, per source IP address.
    pub max_pending_per_ip: usize,
    /// A connection whose Noise and Yamux handshake is not done by then is dropped.
    pub handshake_timeout: Duration,
    /// Requests read or answered at once on one connection; more streams are dropped by libp2p.
    pub max_requests_per_connection: usize,
    /// Nonces remembered for replay protection.
    pub replay_capacity: usize,
    /// Close idle connections after this long.
    pub idle_timeout: Duration,
    /// Signs each response in place of the node's plain signature. Only
    /// witmed-lab sets it, to make a node answer wrongly on purpose (fault
    /// injection); the `witmed` binary never does.
    pub sign_response: Option<SignResponse>,
    /// The installed consortium directory: who may relay encrypted queries, whom an aggregator asks.
    pub directory: Option<Directory>,
    /// How long an aggregator waits for the other members' encrypted shares.
    pub aggregate_timeout: Duration,
}

/// A replacement for the node's signing of its responses (see [`Config::sign_response`]).
#[derive(Clone)]
pub struct SignResponse(pub Arc<SignFn>);

/// Signs `response` as `node` would, or not.
pub type SignFn = dyn Fn(&Node, NodeResponse) -> Envelope + Send + Sync;

impl std::fmt::Debug for SignResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignResponse(..)")
    }
}

/// The defaults, and why.
///
/// * 4 queries computed at once: a node has 2 cores; queries are CPU-bound.
/// * 16 requests checked at once, 4 per address: a check is two ed25519
///   verifications and a decode (well under a millisecond), so 4 per address
///   keep an honest client's pipeline full while one address can take at most
///   a quarter of the checking threads.
/// * 32 connections per address, 2 per identity, 256 in total: a researcher
///   or a member opens one connection per node; 32 leaves room for several
///   researchers behind one NAT, and a host minting identities gets 32, not 256.
/// * 8 handshakes per address, 64 in total, 5 s each: an honest Noise
///   handshake on loopback or a LAN takes milliseconds, a slow WAN one well
///   under a second; a socket that says nothing is gone after 5 s.
/// * 8 requests at once per connection (libp2p's default is 100): each may
///   buffer up to the 64 KiB request limit, so all connections together hold
///   at most 256 x 8 x 64 KiB = 128 MiB, one address 16 MiB. An honest client
///   sends one request per connection, an aggregator one per query in flight.
/// * 30 s idle timeout, 100,000 nonces remembered (reached only by
///   authenticated requests, so only by credentialed researchers).
impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["/ip4/0.0.0.0/tcp/4001".parse().expect("valid multiaddr")],
            max_in_flight: 4,
            max_checks: 16,
            max_checks_per_ip: 4,
            max_connections: 256,
            max_connections_per_peer: 2,
            max_connections_per_ip: 32,
            max_pending: 64,
            max_pending_per_ip: 8,
            handshake_timeout: Duration::from_secs(5),
            max_requests_per_connection: 8,
            replay_capacity: 100_000,
            idle_timeout: Duration::from_secs(30),
            sign_response: None,
            directory: None,
            aggregate_timeout: Duration::from_secs(8),
        }
    }
}

/// The node's network behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    // Per address first: a flood from one address is refused before it counts against the totals.
    ip_limits: ip_limits::Behaviour,
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
        .with_max_pending_incoming(Some(config.max_pending));
    let rr_config = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(60))
        .with_max_concurrent_streams(config.max_requests_per_connection.max(1));
    Behaviour {
        ip_limits: ip_limits::Behaviour::new(ip_limits::Config {
            max_pending_per_ip: config.max_pending_per_ip,
            max_established_per_ip: config.max_connections_per_ip,
        }),
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
        .with_connection_timeout(config.handshake_timeout)
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
        sign_response: config.sign_response.clone(),
        directory: config.directory.clone(),
        aggregate_timeout: config.aggregate_timeout,
        node,
        replay: Mutex::new(replay::Guard::new(config.replay_capacity)),
        to_disconnect: Mutex::new(VecDeque::new()),
        checks: Checks::new(config.max_checks, config.max_checks_per_ip),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
    });
    // Every task holds a check slot or a query permit, so this many never block for long.
    let capacity = config
        .max_checks
        .saturating_add(config.max_in_flight)
        .max(1);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(capacity);
    tokio::pin!(shutdown);
    // Polled once before the loop, so that whatever the shutdown future sets
    // up (a SIGTERM handler) is in place before `listening on` is printed:
    // `select!` polls its branches in random order.
    if futures::poll!(&mut shutdown).is_ready() {
        return Ok(());
    }
    let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = housekeeping.tick() => disconnect_due(&mut swarm, &state),
            Some(done) = done_rx.recv() => finish(&mut swarm, &state, done),
            event = swarm.select_next_some() => {
                on_event(&mut swarm, event, &state, &done_tx);
            }
        }
    }
    tracing::info!("node {} shutting down", state.node.config.name);
    Ok(())
}

struct State {
    node: Arc<Node>,
    sign_response: Option<SignResponse>,
    directory: Option<Directory>,
    aggregate_timeout: Duration,
    replay: Mutex<replay::Guard>,
    /// Misbehaving peers to disconnect once their refusal has had time to arrive.
    to_disconnect: Mutex<VecDeque<(PeerId, Instant)>>,
    /// Requests being authenticated, per source address and in total.
    checks: Arc<Checks>,
    /// Authenticated queries being computed.
    in_flight: Arc<Semaphore>,
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
        let mut pending = locks::lock(&state.to_disconnect);
        if !sent || pending.len() >= MAX_PENDING_DISCONNECTS {
            let _ = swarm.disconnect_peer_id(done.peer);
        } else {
            pending.push_back((done.peer, Instant::now() + DISCONNECT_GRACE));
        }
    }
}

/// Disconnects misbehaving peers whose grace time is over.
fn disconnect_due(swarm: &mut Swarm<Behaviour>, state: &State) {
    let mut pending = locks::lock(&state.to_disconnect);
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
    done_tx: &mpsc::Sender<Done>,
) {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            println!("listening on {address}/p2p/{}", swarm.local_peer_id());
        }
        SwarmEvent::Behaviour(BehaviourEvent::Queries(request_response::Event::Message {
            peer,
            connection_id,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
        })) => dispatch(swarm, peer, connection_id, request, channel, state, done_tx),
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
            tracing::debug!(%send_back_addr, %error, "incoming connection refused");
        }
        _ => {}
    }
}

/// Requests being authenticated, counted per source address and in total.
///
/// The per-address count keeps one flooding address from taking the checking
/// capacity of the others; the total bounds the threads checks occupy.
struct Checks {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<CheckCounts>,
}

#[derive(Default)]
struct CheckCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One request's place among the checks; freed when dropped (also on a panic).
struct CheckSlot {
    checks: Arc<Checks>,
    ip: IpAddr,
}

impl Checks {
    fn new(max_total: usize, max_per_ip: usize) -> Arc<Checks> {
        Arc::new(Checks {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Mutex::new(CheckCounts::default()),
        })
    }

    /// A place for one more check from `ip`, or None if its address or the node is at the limit.
    fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Option<CheckSlot> {
        let mut counts = locks::lock(&self.counts);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= self.max_total || from_ip >= self.max_per_ip {
            return None;
        }
        counts.total = counts.total.saturating_add(1);
        counts.per_ip.insert(ip, from_ip.saturating_add(1));
        Some(CheckSlot {
            checks: self.clone(),
            ip,
        })
    }
}

impl Drop for CheckSlot {
    fn drop(&mut self) {
        let mut counts = locks::lock(&self.checks.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Starts checking a request on a blocking thread, or refuses it as busy.
fn dispatch(
    swarm: &mut Swarm<Behaviour>,
    peer: PeerId,
    connection: ConnectionId,
    request: Envelope,
    channel: ResponseChannel<Envelope>,
    state: &Arc<State>,
    done_tx: &mpsc::Sender<Done>,
) {
    // Requests arrive on inbound connections only, which all have an address;
    // an unknown one shares a single bucket rather than escaping the limit.
    let ip = swarm
        .behaviour()
        .ip_limits
        .remote_ip(connection)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let Some(slot) = state.checks.try_enter(ip) else {
        let response = refusal(
            &state.node,
            "",
            [0; 32],
            "busy",
            "too many requests from your address are being checked; wait for their answers before sending more",
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
        let now = witmed_node::unix_now();
        let (response, misbehaved) = serve(&state, peer, &request, slot, now);
        let signed = match &state.sign_response {
            Some(sign) => (sign.0)(&state.node, response),
            None => response.sign(state.node.key()),
        };
        let _ = done_tx.blocking_send(Done {
            channel,
            response: signed,
            peer,
            misbehaved,
        });
    });
}

/// Both stages of one request: authentication under its check slot, then the work under a query permit.
fn serve(
    state: &State,
    peer: PeerId,
    request: &Envelope,
    slot: CheckSlot,
    now: i64,
) -> (NodeResponse, bool) {
    let node = &state.node;
    let directory = state.directory.as_ref();
    let checked = match caught(|| authenticate(node, directory, peer, request, now)) {
        Some(Ok(checked)) => checked,
        Some(Err(refusal)) => return (refusal.response, refusal.misbehaved),
        None => return (internal_error(node), false),
    };
    drop(slot);
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        let reason = "the node is answering other queries; try again shortly".to_string();
        return (refused(node, "", [0; 32], "busy", reason), false);
    };
    let decision = caught(|| decide(node, directory, &state.replay, peer, request, checked, now));
    match decision {
        Some(Decision::Respond(response, misbehaved)) => (response, misbehaved),
        Some(Decision::Aggregate(query_request)) => {
            let aggregated = caught(|| {
                aggregator::aggregate_query(
                    node,
                    directory,
                    state.aggregate_timeout,
                    request,
                    &query_request,
                    now,
                )
            });
            (aggregated.unwrap_or_else(|| internal_error(node)), false)
        }
        None => (internal_error(node), false),
    }
}

/// `work`'s result, or None if it panicked: a bug in one request ends that request only.
fn caught<T>(work: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(work)).ok()
}

/// The refusal sent for a request whose handling panicked.
fn internal_error(node: &Node) -> NodeResponse {
    tracing::error!("a request panicked; answered internal_error and kept serving");
    let reason = "the node failed while handling this request (a bug, logged at the node); it keeps serving others: send the request again, and tell the node's operator if it repeats";
    refused(node, "", [0; 32], "internal_error", reason.to_string())
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

/// A refusal from the authentication stage.
pub struct Refusal {
    /// The response to sign and send.
    pub response: NodeResponse,
    /// The peer sent something that is not a valid signed request of its own.
    pub misbehaved: bool,
}

/// A request that passed authentication.
pub enum Checked {
    /// A study announcement whose signature and credential verified.
    Study,
    /// An encrypted query's roster (round 2), signed by the connected peer;
    /// [`aggregator::seal`] checks the rest before anything is stored.
    Seal,
    /// A query whose signature, signer (or relaying aggregator), version, form and credential verified.
    Query {
        /// The query request.
        request: Box<QueryRequest>,
        /// Relayed by the aggregator the encrypted query names.
        relayed: bool,
    },
}

/// Decides one request: [`authenticate`], then [`decide`].
pub fn handle(
    node: &Node,
    directory: Option<&Directory>,
    replay: &Mutex<replay::Guard>,
    peer: PeerId,
    envelope: &Envelope,
    now: i64,
) -> Decision {
    match authenticate(node, directory, peer, envelope, now) {
        Ok(checked) => decide(node, directory, replay, peer, envelope, checked, now),
        Err(refusal) => Decision::Respond(refusal.response, refusal.misbehaved),
    }
}

/// The authentication stage: checks that leave no state anywhere.
///
/// Signature, signer is the connected peer (or the aggregator the encrypted
/// query names relays it), version, the query's form, and the credential:
/// signed by an issuer the node policy trusts, issued to the signer, valid at
/// `now`. Nothing is stored and nothing is forwarded before these pass.
pub fn authenticate(
    node: &Node,
    directory: Option<&Directory>,
    peer: PeerId,
    envelope: &Envelope,
    now: i64,
) -> Result<Checked, Box<Refusal>> {
    if envelope.domain == STUDY_DOMAIN {
        return authenticate_study(node, peer, envelope, now).map(|()| Checked::Study);
    }
    let refuse = |response: NodeResponse, misbehaved: bool| {
        Box::new(Refusal {
            response,
            misbehaved,
        })
    };
    if envelope.domain == SEAL_DOMAIN {
        if peer_id_of(&envelope.signer) != Some(peer) {
            let reason =
                "the roster is signed by another key than the connected peer's".to_string();
            return Err(refuse(
                refused(node, "", [0; 32], "signer_not_peer", reason),
                true,
            ));
        }
        return Ok(Checked::Seal);
    }
    let request: QueryRequest = envelope.open(QUERY_DOMAIN).map_err(|e| match e {
        // A newer client is not misbehaving: tell it, without a penalty.
        envelope::Error::PayloadVersion(_) => refuse(
            refused(node, "", [0; 32], "unsupported_version", e.to_string()),
            false,
        ),
        e => refuse(
            refused(node, "", [0; 32], "bad_request", e.to_string()),
            true,
        ),
    })?;
    let query_id = request.query.id.clone();
    let digest = request.query.digest();
    let encrypted = request.query.privacy.mode == Mode::Encrypted;
    let relayed = encrypted && aggregator::is_named_aggregator(directory, &request.query, peer);
    if peer_id_of(&envelope.signer) != Some(peer) && !relayed {
        let reason =
            "the query is signed by another key than the connected peer's (replayed or relayed)"
                .to_string();
        return Err(refuse(
            refused(node, &query_id, digest, "signer_not_peer", reason),
            true,
        ));
    }
    if request.version != WIRE_VERSION {
        let reason = format!(
            "request version {} is not {WIRE_VERSION}; upgrade the client",
            request.version
        );
        return Err(refuse(
            refused(node, &query_id, digest, "unsupported_version", reason),
            false,
        ));
    }
    let credential = checked_credential(node, &request).map_err(|r| refuse(*r, false))?;
    trusted_credential_of(node, &credential, &envelope.signer, now).map_err(|reason| {
        refuse(
            refused(node, &query_id, digest, CREDENTIAL_REFUSED, reason),
            false,
        )
    })?;
    Ok(Checked::Query {
        request: Box::new(request),
        relayed,
    })
}

/// The credential is signed by an issuer the node policy trusts, valid at `now`, and issued to `signer`.
///
/// Refused with the code `credential_refused` and a reason saying what to fix.
fn trusted_credential_of(
    node: &Node,
    credential: &Envelope,
    signer: &PublicKey,
    now: i64,
) -> Result<(), String> {
    let verified = credential::verify_credential(credential, &node.policy().trusted_issuers, now)
        .map_err(|e| engine::Error::Credential(e).to_string())?;
    if verified.researcher != *signer {
        return Err(format!(
            "credential refused: it names researcher {}, but the request is signed by {}; sign with the key the credential names",
            verified.researcher.short(),
            signer.short()
        ));
    }
    Ok(())
}

/// The stable code of a refused credential (the engine's).
const CREDENTIAL_REFUSED: &str = "credential_refused";

/// A study announcement is signed by the connected peer and carries a trusted credential issued to it.
///
/// [`aggregator::install_study`] checks these again with the key before it
/// stores anything; here they only decide whether the request may take a
/// query permit at all.
fn authenticate_study(
    node: &Node,
    peer: PeerId,
    envelope: &Envelope,
    now: i64,
) -> Result<(), Box<Refusal>> {
    if peer_id_of(&envelope.signer) != Some(peer) {
        let reason = "the study is signed by another key than the connected peer's".to_string();
        return Err(Box::new(Refusal {
            response: refused(node, "", [0; 32], "signer_not_peer", reason),
            misbehaved: true,
        }));
    }
    // The same codes and wording as the install's own checks.
    let refuse = |reason: String| {
        let e = study::Error::Announcement(reason);
        Box::new(Refusal {
            response: refused(node, "", [0; 32], e.code(), e.to_string()),
            misbehaved: true,
        })
    };
    let announcement: StudyAnnouncement = envelope
        .open(STUDY_DOMAIN)
        .map_err(|e| refuse(e.to_string()))?;
    let credential = witmed_policies::parse_signed_bytes(&announcement.credential)
        .map_err(|e| refuse(format!("credential: {e}")))?;
    trusted_credential_of(node, &credential, &envelope.signer, now).map_err(refuse)
}

/// The work stage, for an authenticated request: the replay guard, then the query (or the study).
pub fn decide(
    node: &Node,
    directory: Option<&Directory>,
    replay: &Mutex<replay::Guard>,
    peer: PeerId,
    envelope: &Envelope,
    checked: Checked,
    now: i64,
) -> Decision {
    let (request, relayed) = match checked {
        Checked::Study => return aggregator::install_study(node, peer, envelope, now),
        Checked::Seal => return aggregator::seal(node, directory, peer, envelope, now),
        Checked::Query { request, relayed } => (*request, relayed),
    };
    let query_id = request.query.id.clone();
    let digest = request.query.digest();
    let fresh = locks::lock(replay).check(envelope.signer, request.nonce, request.issued_at, now);
    if let Err(e) = fresh {
        let code = if matches!(e, replay::Error::Replayed) {
            "replayed"
        } else {
            "not_fresh"
        };
        let response = refused(node, &query_id, digest, code, e.to_string());
        return Decision::Respond(response, false);
    }
    let encrypted = request.query.privacy.mode == Mode::Encrypted;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_panics_under_the_replay_lock_leaves_the_guard_usable() {
        let replay = Mutex::new(replay::Guard::new(4));
        let key = PublicKey::from_bytes([1; 32]);
        let result: Option<()> = caught(|| {
            let _guard = locks::lock(&replay);
            panic!("a bug while the replay lock is held");
        });
        assert!(result.is_none());
        assert!(replay.is_poisoned());
        assert_eq!(locks::lock(&replay).check(key, [1; 16], 10, 10), Ok(()));
        assert_eq!(caught(|| 7), Some(7));
    }

    #[test]
    fn checks_are_bounded_per_address_and_in_total_and_freed_when_done() {
        let checks = Checks::new(3, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
        );
        let a1 = checks.try_enter(a);
        let a2 = checks.try_enter(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(
            checks.try_enter(a).is_none(),
            "a third check from one address"
        );
        let b1 = checks.try_enter(b);
        assert!(b1.is_some(), "another address still gets a place");
        assert!(checks.try_enter(c).is_none(), "the total is reached");
        drop(a1);
        assert!(checks.try_enter(c).is_some());
        drop((a2, b1));
        assert_eq!(locks::lock(&checks.counts).total, 0);
        assert!(locks::lock(&checks.counts).per_ip.is_empty());
    }
}

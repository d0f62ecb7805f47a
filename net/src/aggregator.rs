//! Encrypted mode at a node: caching study keys, the two rounds of a member (prepare, seal), and the named aggregator's part.
//!
//! A member prepares (round 1) an encrypted query only when it is relayed by
//! the aggregator the query names (the connected peer is that member's key
//! in the installed directory); the researcher's signature, nonce and
//! credential are checked as for any query. It seals (round 2) only for a
//! roster signed by that aggregator and made of Readys signed by directory
//! members. The aggregator checks the credential and its own policy before
//! it forwards anything, prepares its own share while it asks every other
//! member with the researcher's signed envelope, then seals its own share
//! while it sends the roster, and hands the outcomes to
//! [`witmed_node::encrypted::aggregate`].

use std::time::Duration;

use libp2p::PeerId;
use witmed_crypto::{envelope, Envelope, PublicKey};
use witmed_policies::directory::Directory;
use witmed_protocol::encrypted::{
    roster_hash, verify_roster, SealRequest, SEAL_DOMAIN, SECAGG_VERSION,
};
use witmed_protocol::query::Query;
use witmed_protocol::vocab::Mode;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, MAX_REQUEST_BYTES, QUERY_DOMAIN};

use crate::codec::Codec;
use crate::decision::{checked_credential, refused, response, Decision};
use crate::{client, peer_id_of};
use witmed_node::encrypted::{aggregate, study};
use witmed_node::engine;
use witmed_node::node::Node;

/// True if `peer` is the member the encrypted `query` names as its aggregator.
pub(super) fn is_named_aggregator(
    directory: Option<&Directory>,
    query: &Query,
    peer: PeerId,
) -> bool {
    let Some(name) = query.privacy.aggregator.as_deref() else {
        return false;
    };
    directory
        .and_then(|d| d.members.iter().find(|m| m.name == name))
        .and_then(|m| peer_id_of(&m.signing_key))
        == Some(peer)
}

/// A researcher publishes a study key: signed by the connected peer, checked, cached.
pub(super) fn install_study(node: &Node, peer: PeerId, envelope: &Envelope, now: i64) -> Decision {
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

/// Round 1 at a member: its signed Ready, for the aggregator that relayed the query.
pub(super) fn prepare(
    node: &Node,
    directory: Option<&Directory>,
    request: &QueryRequest,
    researcher: PublicKey,
    now: i64,
) -> NodeResponse {
    match checked_credential(node, request) {
        Ok(credential) => match own_ready(
            node,
            directory,
            &request.query,
            &credential,
            researcher,
            now,
        ) {
            Ok(ready) => response(
                node,
                &request.query.id,
                request.query.digest(),
                Outcome::Ready(ready),
            ),
            Err(refusal) => *refusal,
        },
        Err(refusal) => *refusal,
    }
}

/// This node's Ready for a checked query, or the refusal to send.
fn own_ready(
    node: &Node,
    directory: Option<&Directory>,
    query: &Query,
    credential: &Envelope,
    researcher: PublicKey,
    now: i64,
) -> Result<Envelope, Box<NodeResponse>> {
    let (id, digest) = (query.id.as_str(), query.digest());
    let members = directory.map_or(0, |d| d.members.len());
    engine::prepare(node, query, &researcher, credential, members, now).map_err(|e| {
        tracing::info!(query = id, code = e.code(), reason = %e, "encrypted share refused");
        Box::new(refused(node, id, digest, e.code(), e.to_string()))
    })
}

/// The directory's members as (name, signing key).
fn members_of(directory: &Directory) -> Vec<(String, PublicKey)> {
    directory
        .members
        .iter()
        .map(|m| (m.name.clone(), m.signing_key))
        .collect()
}

/// Round 2 at a member: the aggregator's signed roster; answers with the masked share and its receipt.
///
/// Checked in order: the seal request is signed by the connected peer; it
/// carries a query signed by a researcher; the peer is the aggregator that
/// query names; every Ready of the roster is signed by the directory key of
/// the member it names, for this query and researcher, no member twice;
/// the roster holds at least `min_hospitals`. Then [`engine::seal`] seals
/// once per query id.
pub(super) fn seal(
    node: &Node,
    directory: Option<&Directory>,
    peer: PeerId,
    envelope: &Envelope,
    now: i64,
) -> Decision {
    let refuse = |id: &str, digest: [u8; 32], code: &str, reason: String, misbehaved: bool| {
        Decision::Respond(refused(node, id, digest, code, reason), misbehaved)
    };
    if peer_id_of(&envelope.signer) != Some(peer) {
        let reason = "the roster is signed by another key than the connected peer's".to_string();
        return refuse("", [0; 32], "signer_not_peer", reason, true);
    }
    let request: SealRequest = match envelope.open(SEAL_DOMAIN) {
        Ok(r) => r,
        // A newer member is not misbehaving: tell it, without a penalty.
        Err(e @ envelope::Error::PayloadVersion(_)) => {
            return refuse("", [0; 32], "unsupported_version", e.to_string(), false)
        }
        Err(e) => return refuse("", [0; 32], "bad_request", e.to_string(), true),
    };
    if request.version != SECAGG_VERSION {
        let reason = format!(
            "roster version {} is not {SECAGG_VERSION}; upgrade the aggregator",
            request.version
        );
        return refuse("", [0; 32], "unsupported_version", reason, false);
    }
    let signed_query = match Envelope::from_bytes(&request.query, MAX_REQUEST_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|e| {
            e.open::<QueryRequest>(QUERY_DOMAIN)
                .map(|q| (e.signer, q))
                .map_err(|e| e.to_string())
        }) {
        Ok(q) => q,
        Err(e) => {
            return refuse(
                "",
                [0; 32],
                "bad_request",
                format!("the roster's query: {e}"),
                true,
            )
        }
    };
    let (researcher, query_request) = signed_query;
    let query = &query_request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    if let Err(e) = query.validate() {
        return refuse(id, digest, "bad_query", e.to_string(), true);
    }
    if query.privacy.mode != Mode::Encrypted || !is_named_aggregator(directory, query, peer) {
        let reason = "only the aggregator an encrypted query names may send its roster".to_string();
        return refuse(id, digest, "not_aggregator", reason, true);
    }
    let Some(directory) = directory else {
        let reason = "this node has no consortium directory installed; install one to take part";
        return refuse(id, digest, "no_directory", reason.into(), false);
    };
    let entries = match verify_roster(
        &request.roster,
        &digest,
        &researcher,
        &members_of(directory),
    ) {
        Ok(e) => e,
        Err(reason) => return refuse(id, digest, "bad_roster", reason, false),
    };
    let min = query.privacy.min_hospitals.unwrap_or(1) as usize;
    if entries.len() < min {
        let reason = format!(
            "the roster holds {} members, fewer than the query's min_hospitals = {min}",
            entries.len()
        );
        return refuse(id, digest, "too_few_hospitals", reason, false);
    }
    let hash = roster_hash(&digest, &researcher, &entries);
    let credential = match witmed_policies::parse_signed_bytes(&query_request.credential) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                id,
                digest,
                e.error_code(),
                format!("credential: {e}"),
                false,
            )
        }
    };
    match engine::seal(node, query, &researcher, &credential, &entries, hash, now) {
        Ok(share) => Decision::Respond(response(node, id, digest, Outcome::Sealed(share)), false),
        Err(e) => {
            tracing::info!(query = id, code = e.code(), reason = %e, "seal refused");
            refuse(id, digest, e.code(), e.to_string(), false)
        }
    }
}

/// The aggregator's part: check the query, gather Readys (round 1), send the roster and gather sealed shares (round 2).
///
/// Nothing is forwarded before the researcher's credential and this node's
/// policy accept the query. A query id already aggregated is answered with
/// the kept total, never aggregated again.
pub(super) fn aggregate_query(
    node: &Node,
    directory: Option<&Directory>,
    timeout: Duration,
    envelope: &Envelope,
    request: &QueryRequest,
    now: i64,
) -> NodeResponse {
    let query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    let researcher = envelope.signer;
    let credential = match checked_credential(node, request) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    let Some(directory) = directory else {
        let reason = "this node has no consortium directory installed; install one to aggregate";
        return refused(node, id, digest, "no_directory", reason.into());
    };
    // Credential and policy first: a refused query reaches no other member.
    if let Err(e) = engine::authorize(node, query, &researcher, &credential, now) {
        tracing::info!(query = id, code = e.code(), reason = %e, "encrypted query refused before forwarding");
        return refused(node, id, digest, e.code(), e.to_string());
    }
    match aggregate::replayed_total(node, query, &researcher) {
        Ok(Some(total)) => return response(node, id, digest, Outcome::Aggregated(total)),
        Ok(None) => {}
        Err(e) => return refused(node, id, digest, e.code(), e.to_string()),
    }
    let study = match aggregate::study_of(query) {
        Ok(s) => s,
        Err(e) => return refused(node, id, digest, e.code(), e.to_string()),
    };
    let others: Vec<client::Target> = match client::targets(directory) {
        Ok(t) => t
            .into_iter()
            .filter(|t| t.name != node.config.name)
            .collect(),
        Err(e) => return refused(node, id, digest, "bad_directory", e),
    };
    let (own, asked) = std::thread::scope(|scope| {
        let own =
            scope.spawn(|| own_ready(node, Some(directory), query, &credential, researcher, now));
        let asked = ask(node, envelope, digest, &others, timeout);
        (own.join(), asked)
    });
    let own = match own {
        Ok(Ok(ready)) => client::Status::Ready(ready),
        Ok(Err(refusal)) => status_of(*refusal),
        Err(_) => client::Status::Invalid("preparing the aggregator's own share failed".into()),
    };
    let asked = match asked {
        Ok(a) => a,
        Err(e) => return refused(node, id, digest, "network_failed", e.to_string()),
    };
    let mut outcomes = vec![aggregate::Outcome {
        name: node.config.name.clone(),
        key: node.key().public(),
        status: own,
    }];
    outcomes.extend(outcomes_of(&others, asked));
    let (roster, left_out) = match aggregate::roster(query, &researcher, &outcomes) {
        Ok(r) => r,
        Err(e) => return refused(node, id, digest, e.code(), e.to_string()),
    };
    let binding = |roster_hash| aggregate::Binding {
        query,
        researcher: &researcher,
        study,
        roster_hash,
        values: aggregate::expected_values(query),
    };
    match seal_round(node, directory, timeout, (envelope, request), &roster, now) {
        Ok(round) => {
            let binding = binding(round.roster_hash);
            match aggregate::total(node, &binding, roster, round.outcomes, left_out, now) {
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
        Err(refusal) => *refusal,
    }
}

/// What round 2 gave: the roster's hash and what each roster member did.
struct SealRound {
    roster_hash: [u8; 32],
    outcomes: Vec<aggregate::Outcome>,
}

/// Round 2 from the aggregator: sends the signed roster to its members (sealing its own share alongside).
fn seal_round(
    node: &Node,
    directory: &Directory,
    timeout: Duration,
    (envelope, request): (&Envelope, &QueryRequest),
    roster: &[Envelope],
    now: i64,
) -> Result<SealRound, Box<NodeResponse>> {
    let query = &request.query;
    let (id, digest) = (query.id.as_str(), query.digest());
    let credential = checked_credential(node, request)?;
    let researcher = envelope.signer;
    let entries = verify_roster(roster, &digest, &researcher, &members_of(directory))
        .map_err(|reason| Box::new(refused(node, id, digest, "bad_roster", reason)))?;
    let hash = roster_hash(&digest, &researcher, &entries);
    let sealing = SealRequest {
        version: SECAGG_VERSION,
        query: envelope.to_bytes(),
        roster: roster.to_vec(),
    }
    .sign(node.key());
    let in_roster = |name: &str| entries.iter().any(|e| e.member == name);
    let members: Vec<client::Target> = client::targets(directory)
        .map_err(|e| Box::new(refused(node, id, digest, "bad_directory", e)))?
        .into_iter()
        .filter(|t| t.name != node.config.name && in_roster(&t.name))
        .collect();
    let me_in_roster = in_roster(&node.config.name);
    let (own, asked) = std::thread::scope(|scope| {
        let own = scope.spawn(|| {
            me_in_roster
                .then(|| engine::seal(node, query, &researcher, &credential, &entries, hash, now))
        });
        let asked = ask(node, &sealing, digest, &members, timeout);
        (own.join(), asked)
    });
    let asked =
        asked.map_err(|e| Box::new(refused(node, id, digest, "network_failed", e.to_string())))?;
    let mut outcomes = Vec::new();
    let own = match own {
        Ok(None) => None,
        Ok(Some(Ok(share))) => Some(client::Status::Sealed(share)),
        Ok(Some(Err(e))) => Some(client::Status::Refused {
            code: e.code().to_string(),
            reason: e.to_string(),
        }),
        Err(_) => Some(client::Status::Invalid(
            "sealing the aggregator's own share failed".into(),
        )),
    };
    if let Some(status) = own {
        outcomes.push(aggregate::Outcome {
            name: node.config.name.clone(),
            key: node.key().public(),
            status,
        });
    }
    outcomes.extend(outcomes_of(&members, asked));
    Ok(SealRound {
        roster_hash: hash,
        outcomes,
    })
}

/// Sends `envelope` to `targets` under this node's key and collects their answers.
fn ask(
    node: &Node,
    envelope: &Envelope,
    digest: [u8; 32],
    targets: &[client::Target],
    timeout: Duration,
) -> Result<Vec<client::HospitalResult>, client::Error> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    tokio::runtime::Handle::current().block_on(client::ask_signed(
        node.key(),
        envelope,
        digest,
        targets,
        timeout,
        Codec::default(),
    ))
}

/// Each asked target's outcome, with the directory key its answers must carry.
fn outcomes_of(
    targets: &[client::Target],
    results: Vec<client::HospitalResult>,
) -> Vec<aggregate::Outcome> {
    targets
        .iter()
        .zip(results)
        .map(|(t, r)| aggregate::Outcome {
            name: r.name,
            key: t.signing_key,
            status: r.status,
        })
        .collect()
}

/// A refusal this node made of its own share, as the status a member's answer would have.
fn status_of(own: NodeResponse) -> client::Status {
    match own.outcome {
        Outcome::Refused { code, reason } => client::Status::Refused { code, reason },
        _ => client::Status::Invalid("no Ready".into()),
    }
}

//! Encrypted mode at a node: caching study keys, answering the aggregator with an encrypted share, and aggregating as the named aggregator.
//!
//! A member answers an encrypted query only when it is relayed by the
//! aggregator the query names (the connected peer is that member's key in
//! the installed directory); the researcher's signature, nonce and
//! credential are checked as for any query. The aggregator computes its own
//! share while it asks every other member with the same signed envelope,
//! then hands all outcomes to [`crate::encrypted::aggregate`].

use std::time::Duration;

use libp2p::PeerId;
use witmed_crypto::{Envelope, PublicKey};
use witmed_policies::directory::Directory;
use witmed_protocol::query::Query;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest};

use super::codec::Codec;
use super::server::{checked_credential, refused, response, Decision};
use super::{client, peer_id_of};
use crate::encrypted::{aggregate, study};
use crate::engine;
use crate::node::Node;

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

/// A member's encrypted share, for the aggregator that relayed the query.
pub(super) fn contribute(
    node: &Node,
    directory: Option<&Directory>,
    request: &QueryRequest,
    researcher: PublicKey,
    now: i64,
) -> NodeResponse {
    match checked_credential(node, request) {
        Ok(credential) => share(
            node,
            directory,
            &request.query,
            &credential,
            researcher,
            now,
        ),
        Err(refusal) => *refusal,
    }
}

/// This node's encrypted share of a checked query.
fn share(
    node: &Node,
    directory: Option<&Directory>,
    query: &Query,
    credential: &Envelope,
    researcher: PublicKey,
    now: i64,
) -> NodeResponse {
    let (id, digest) = (query.id.as_str(), query.digest());
    let members = directory.map_or(0, |d| d.members.len());
    match engine::contribute(node, query, &researcher, credential, members, now) {
        Ok(c) => response(node, id, digest, Outcome::Contributed(c)),
        Err(e) => {
            tracing::info!(query = id, code = e.code(), reason = %e, "encrypted share refused");
            refused(node, id, digest, e.code(), e.to_string())
        }
    }
}

/// The aggregator's part: its own share, the other members' shares, their encrypted sum.
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
    // Checked before anything is asked of the members or of the aggregate.
    let credential = match checked_credential(node, request) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    let Some(directory) = directory else {
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
        let own = scope.spawn(|| {
            share(
                node,
                Some(directory),
                query,
                &credential,
                envelope.signer,
                now,
            )
        });
        let asked = tokio::runtime::Handle::current().block_on(client::ask_signed(
            node.key(),
            envelope,
            digest,
            &others,
            timeout,
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

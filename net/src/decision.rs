//! What a node does with one request, and the signed responses and refusals that the member and aggregator sides both build.
//!
//! Shared by [`crate::server`] (which decides) and [`crate::aggregator`]
//! (which the server hands encrypted queries to), so that neither imports
//! the other's internals.

use witmed_crypto::Envelope;
use witmed_node::node::Node;
use witmed_protocol::wire::{NodeResponse, Outcome, QueryRequest, WIRE_VERSION};

/// A response of this node to query `query_id`, to be signed by the caller.
pub fn response(node: &Node, query_id: &str, digest: [u8; 32], outcome: Outcome) -> NodeResponse {
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

/// The query is well formed and the credential decodes: returns the
/// credential, or the refusal to send.
pub fn checked_credential(
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

/// A refusal with a stable code and a reason for the researcher.
pub fn refused(
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

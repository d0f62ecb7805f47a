//! `GET /api/v1/health`: whether the node answers, and which node it is.

use std::sync::Arc;

use axum::extract::State as Extract;

use crate::server::State;

/// `GET /api/v1/health`: the node answers.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, description = "the node answers", body = Health)))]
pub async fn health(Extract(state): Extract<Arc<State>>) -> axum::Json<Health> {
    axum::Json(Health {
        node: state.node.config.name.clone(),
        node_id: state.node.id().to_hex(),
    })
}

/// A node's name and id.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub node: String,
    pub node_id: String,
}

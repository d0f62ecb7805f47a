//! Hospital staff over HTTP: look a patient up, enrol a patient's public key, list consent tokens, and the admin protocol's commands.

use std::sync::Arc;

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use witmed_crypto::{Pseudonym, PublicKey};
use witmed_node::store::cf;
use witmed_node::{admin, consent_ops};

use crate::error::ApiError;
use crate::server::{blocking, now, FromStaff, State};

/// `?system=physionet2012&id=132539`: a patient as the source system names them.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LookupParams {
    /// `physionet2012` or `fhir`.
    pub system: String,
    /// The patient's id in that system.
    pub id: String,
}

/// A patient's pseudonym at this node and whether a key is enrolled.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lookup {
    pub pseudonym: String,
    pub node_id: String,
    /// The node holds records of this patient.
    pub has_records: bool,
    /// A key is enrolled for the patient.
    pub enrolled: bool,
}

/// `GET /api/v1/staff/patients`: the pseudonym of a patient named by their source id.
#[utoipa::path(get, path = "/api/v1/staff/patients", params(LookupParams),
    responses((status = 200, body = Lookup), (status = 401, body = crate::error::ErrorBody)))]
pub async fn lookup(
    Extract(state): Extract<Arc<State>>,
    params: Result<Query<LookupParams>, axum::extract::rejection::QueryRejection>,
    _staff: FromStaff,
) -> Result<Json<Lookup>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let node = state.node.clone();
    blocking(move || {
        let p = node.pseudonyms().pseudonym(&params.system, &params.id);
        let has_records = node
            .store
            .contains(cf::PATIENTS, &p.0)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let enrolled = node.consent_registry().enrolled_key(&p).is_some();
        Ok(Json(Lookup {
            pseudonym: p.to_hex(),
            node_id: node.id().to_hex(),
            has_records,
            enrolled,
        }))
    })
    .await
}

/// Enrol `public_key` (hex) for the patient `pseudonym` (hex).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    pub pseudonym: String,
    pub public_key: String,
}

/// What was enrolled.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    pub pseudonym: String,
    pub public_key: String,
}

/// `POST /api/v1/staff/enrolments`: binds a patient's public key to their record.
#[utoipa::path(post, path = "/api/v1/staff/enrolments", request_body = Enrolment,
    responses((status = 200, body = Enrolled), (status = 422, body = crate::error::ErrorBody)))]
pub async fn enrol(
    Extract(state): Extract<Arc<State>>,
    staff: FromStaff,
) -> Result<Json<Enrolled>, ApiError> {
    let asked: Enrolment = staff.json()?;
    let p: Pseudonym = asked
        .pseudonym
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("pseudonym: {e}")))?;
    let key: PublicKey = asked
        .public_key
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("public_key: {e}")))?;
    let node = state.node.clone();
    blocking(move || {
        consent_ops::enrol(&node, p, key, now()).map_err(|e| ApiError::Refused {
            code: e.code(),
            message: e.to_string(),
        })?;
        Ok(Json(Enrolled {
            pseudonym: p.to_hex(),
            public_key: key.to_hex(),
        }))
    })
    .await
}

/// One consent token as staff see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub patient: String,
    pub purposes: Vec<String>,
    pub not_before: i64,
    pub expires: i64,
    pub revoked: bool,
}

/// `GET /api/v1/staff/consents`: every consent token at this node.
#[utoipa::path(get, path = "/api/v1/staff/consents", responses((status = 200, body = Vec<TokenView>)))]
pub async fn consents(
    Extract(state): Extract<Arc<State>>,
    _staff: FromStaff,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    Ok(Json(tokens(&state, |_| true)))
}

/// The tokens whose patient passes `keep`.
pub fn tokens(state: &State, keep: impl Fn(&Pseudonym) -> bool) -> Vec<TokenView> {
    let registry = state.node.consent_registry();
    registry
        .tokens()
        .map(|v| v.token())
        .filter(|t| keep(&t.patient))
        .map(|t| TokenView {
            id: t.id.clone(),
            patient: t.patient.to_hex(),
            purposes: t.purposes.clone(),
            not_before: t.not_before,
            expires: t.expires,
            revoked: registry.is_revoked(&t.id),
        })
        .collect()
}

/// `POST /api/v1/staff/commands`: one request of the node's admin protocol
/// (`witmed_node::admin::Frame`, the same requests and the same decision
/// function as the local admin socket), so `witmed patient …` and `witmed
/// consent …` reach a running node over this API. Requests that change a
/// patient's consent, key or cap carry the patient's (or the hospital
/// admin's) own signature: the staff token relays them, it cannot forge them.
#[utoipa::path(post, path = "/api/v1/staff/commands",
    request_body(description = "an admin frame: {\"version\": 1, \"request\": {\"op\": \"submit\" | \"lookup\" | \"enrol\" | \"reenrol\" | \"cap\" | \"account\" | \"consents\" | …}}", content_type = "application/json"),
    responses(
        (status = 200, description = "the admin response, tagged by `result`"),
        (status = 422, description = "the node refused: `{\"result\": \"error\", \"code\", \"message\"}`"),
        (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody)))]
pub async fn command(
    Extract(state): Extract<Arc<State>>,
    staff: FromStaff,
) -> Result<(StatusCode, Json<admin::Response>), ApiError> {
    let frame: admin::Frame = staff.json()?;
    if frame.version != admin::ADMIN_VERSION {
        return Err(ApiError::BadRequest(format!(
            "admin frame version {} (this node speaks {}); use the same witmed version as the node",
            frame.version,
            admin::ADMIN_VERSION
        )));
    }
    let node = state.node.clone();
    blocking(move || {
        let response = admin::execute(&node, &frame.request, now());
        let status = match response {
            admin::Response::Error { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        Ok((status, Json(response)))
    })
    .await
}

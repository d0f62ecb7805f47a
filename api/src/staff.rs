//! Hospital staff over HTTP: look a patient up, enrol a patient's public key, list consent tokens.

use std::sync::Arc;

use axum::extract::{Query, State as Extract};
use axum::Json;
use serde::{Deserialize, Serialize};
use witmed_crypto::{Pseudonym, PublicKey};
use witmed_node::consent_ops;
use witmed_node::store::cf;

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

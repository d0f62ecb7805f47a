//! Patients over HTTP, each request signed with their own enrolled key: their record, vital signs and consents; grant and revoke.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State as Extract};
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use serde::{Deserialize, Serialize};
use witmed_node::consent_ops::{self, Submitted};
use witmed_node::store::{self, cf, ObservationRecord, PatientRecord};
use witmed_protocol::vocab::VITAL_SIGN_CODES;

use crate::error::ApiError;
use crate::server::{blocking, now, parse, patient_request, require_json, State};
use crate::staff::{tokens, TokenView};

/// A patient's own record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub pseudonym: String,
    pub node: String,
    pub age_years: Option<f64>,
    pub sex: String,
    /// Numeric attributes by name (`icu_type`, `length_of_stay_days`, ...).
    pub attributes: Vec<(String, f64)>,
}

/// `GET /api/v1/patient/me`: the signing patient's own record.
#[utoipa::path(get, path = "/api/v1/patient/me",
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(
    Extract(state): Extract<Arc<State>>,
    from: ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Me>, ApiError> {
    let (p, _) = patient_request(&state, from, (&method, &uri, &headers), body).await?;
    let node = state.node.clone();
    blocking(move || {
        let record: PatientRecord = node
            .store
            .get(cf::PATIENTS, &p.0)
            .map_err(internal)?
            .ok_or_else(|| ApiError::UnknownPatient("this node holds no record of you".into()))?;
        Ok(Json(Me {
            pseudonym: p.to_hex(),
            node: node.config.name.clone(),
            age_years: record.age_years,
            sex: format!("{:?}", record.sex).to_lowercase(),
            attributes: record.attributes,
        }))
    })
    .await
}

/// One vital sign over time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Series {
    /// LOINC code.
    pub code: String,
    /// `[time, value]`: time in seconds since the record's time origin.
    pub points: Vec<(i64, f64)>,
}

/// `GET /api/v1/patient/observations`: the signing patient's vital signs, one series per code.
#[utoipa::path(get, path = "/api/v1/patient/observations", responses((status = 200, body = Vec<Series>)))]
pub async fn observations(
    Extract(state): Extract<Arc<State>>,
    from: ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<Series>>, ApiError> {
    let (p, _) = patient_request(&state, from, (&method, &uri, &headers), body).await?;
    let node = state.node.clone();
    blocking(move || {
        let mut all = Vec::new();
        for code in VITAL_SIGN_CODES {
            let prefix = store::observation_prefix(&p, &node.store.codes().observation(code));
            let mut points = Vec::new();
            node.store
                .scan_records::<ObservationRecord>(cf::OBSERVATIONS, &prefix, |key, r| {
                    if let Some((_, _, time)) = store::parse_observation_key(key) {
                        points.push((time, r.value));
                    }
                    Ok(())
                })
                .map_err(internal)?;
            if !points.is_empty() {
                all.push(Series {
                    code: code.to_string(),
                    points,
                });
            }
        }
        Ok(Json(all))
    })
    .await
}

/// `GET /api/v1/patient/consents`: the signing patient's own consent tokens.
#[utoipa::path(get, path = "/api/v1/patient/consents", responses((status = 200, body = Vec<TokenView>)))]
pub async fn consents(
    Extract(state): Extract<Arc<State>>,
    from: ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let (p, _) = patient_request(&state, from, (&method, &uri, &headers), body).await?;
    Ok(Json(tokens(&state, |q| *q == p)))
}

/// A signed consent token or revocation, in its text form (`witmed consent grant` / `revoke`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub signed: String,
}

/// What the node stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stored {
    /// `token` or `revocation`.
    pub kind: String,
    /// The token's id (for a revocation, the revoked token's).
    pub token_id: String,
}

/// `POST /api/v1/patient/consents`: grants or revokes consent, in force for the next query.
#[utoipa::path(post, path = "/api/v1/patient/consents", request_body = Submission,
    responses((status = 200, body = Stored), (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn submit(
    Extract(state): Extract<Arc<State>>,
    from: ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Stored>, ApiError> {
    let (p, body) = patient_request(&state, from, (&method, &uri, &headers), body).await?;
    require_json(&headers)?;
    let asked: Submission = parse(&body)?;
    let node = state.node.clone();
    blocking(move || {
        // Only the patient's own signed consent: checked before anything is stored.
        let envelope = witmed_policies::parse_signed(&asked.signed)
            .map_err(|e| ApiError::BadRequest(format!("signed: {e}")))?;
        if node.consent_registry().enrolled_key(&p) != Some(envelope.signer) {
            return Err(ApiError::Forbidden(
                "the consent is not signed with your enrolled key; submit only your own".into(),
            ));
        }
        let stored =
            consent_ops::submit(&node, &asked.signed, now()).map_err(|e| ApiError::Refused {
                code: e.code(),
                message: e.to_string(),
            })?;
        Ok(Json(match stored {
            Submitted::Token { id, .. } => Stored {
                kind: "token".into(),
                token_id: id,
            },
            Submitted::Revocation { token_id, .. } => Stored {
                kind: "revocation".into(),
                token_id,
            },
        }))
    })
    .await
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

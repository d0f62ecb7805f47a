//! NEWS2 alerts for clinicians over HTTP: list, acknowledge, a live stream (server-sent events); a patient's vitals and hypercapnic flag.
//!
//! The stream is bounded both ways: at most [`crate::server::MAX_ALERT_STREAMS`] clients at once,
//! each fed from a bounded broadcast channel; a client that falls behind is
//! disconnected (it reconnects and lists what it missed), so a slow client
//! never holds up ingestion.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State as Extract};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use witmed_crypto::Pseudonym;
use witmed_node::devices::{self, AlertFilter};
use witmed_protocol::device_request as wire;

use crate::error::ApiError;
use crate::server::{blocking, now, FromStaff, State};

/// `?open=true`: only alerts not yet acknowledged.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    #[serde(default)]
    pub open: bool,
}

/// `GET /api/v1/staff/alerts`: the newest alerts (200 at most), newest first.
#[utoipa::path(get, path = "/api/v1/staff/alerts", params(AlertParams),
    responses((status = 200, description = "the alerts (protocol::device_request::Alert)")))]
pub async fn list(
    Extract(state): Extract<Arc<State>>,
    params: Result<Query<AlertParams>, axum::extract::rejection::QueryRejection>,
    _staff: FromStaff,
) -> Result<Json<Vec<wire::Alert>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let node = state.node.clone();
    blocking(move || {
        let filter = AlertFilter {
            open_only: params.open,
            patient: None,
        };
        devices::alerts(&node, filter)
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
}

/// `POST /api/v1/staff/alerts/{id}/ack`: a clinician acknowledges an alert.
#[utoipa::path(post, path = "/api/v1/staff/alerts/{id}/ack",
    params(("id" = String, Path, description = "the alert's id")),
    request_body(content_type = "application/json", description = "{by}: the clinician"),
    responses((status = 200, description = "the alert, acknowledged"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn ack(
    Extract(state): Extract<Arc<State>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    staff: FromStaff,
) -> Result<Json<wire::Alert>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let asked: wire::Ack = staff.json()?;
    let node = state.node.clone();
    blocking(move || {
        devices::acknowledge(&node, &id, &asked.by, now())
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
}

/// `GET /api/v1/staff/alerts/stream`: alerts as they are raised, as server-sent events (`event: alert`).
#[utoipa::path(get, path = "/api/v1/staff/alerts/stream",
    responses((status = 200, description = "text/event-stream of `alert` events (protocol::device_request::Alert)"),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn stream(
    Extract(state): Extract<Arc<State>>,
    _staff: FromStaff,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let slot = state
        .alert_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy)?;
    let receiver = state.node.devices.subscribe();
    // The slot lives as long as the stream; a lagging or closed channel ends it.
    let events = futures::stream::unfold((receiver, slot), |(mut receiver, slot)| async move {
        match receiver.recv().await {
            Ok(alert) => {
                let event = Event::default()
                    .event("alert")
                    .id(alert.id.clone())
                    .json_data(&alert)
                    .unwrap_or_else(|_| Event::default().comment("unencodable alert"));
                Some((Ok(event), (receiver, slot)))
            }
            Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => None,
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn patient_of(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Pseudonym, ApiError> {
    let Path(p) = path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    p.parse()
        .map_err(|e| ApiError::BadRequest(format!("patient: {e}")))
}

/// `GET /api/v1/staff/patients/{patient}/vitals`: recent device readings, the hypercapnic flag, alerts.
#[utoipa::path(get, path = "/api/v1/staff/patients/{patient}/vitals",
    params(("patient" = String, Path, description = "the patient's pseudonym, hex")),
    responses((status = 200, description = "protocol::device_request::Vitals"), (status = 422, body = crate::error::ErrorBody)))]
pub async fn vitals(
    Extract(state): Extract<Arc<State>>,
    patient: Result<Path<String>, axum::extract::rejection::PathRejection>,
    _staff: FromStaff,
) -> Result<Json<wire::Vitals>, ApiError> {
    let patient = patient_of(patient)?;
    let node = state.node.clone();
    blocking(move || {
        devices::vitals(&node, &patient, now())
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
}

/// `POST /api/v1/staff/patients/{patient}/hypercapnic`: score SpO2 on NEWS2 scale 2 (or back on 1).
#[utoipa::path(post, path = "/api/v1/staff/patients/{patient}/hypercapnic",
    params(("patient" = String, Path, description = "the patient's pseudonym, hex")),
    request_body(content_type = "application/json", description = "{hypercapnic: bool}"),
    responses((status = 200, description = "the flag now"), (status = 422, body = crate::error::ErrorBody)))]
pub async fn hypercapnic(
    Extract(state): Extract<Arc<State>>,
    patient: Result<Path<String>, axum::extract::rejection::PathRejection>,
    staff: FromStaff,
) -> Result<Json<wire::Hypercapnic>, ApiError> {
    let patient = patient_of(patient)?;
    let asked: wire::Hypercapnic = staff.json()?;
    let node = state.node.clone();
    blocking(move || {
        devices::set_hypercapnic(&node, patient, asked.hypercapnic, now())
            .map(|()| Json(asked))
            .map_err(ApiError::from)
    })
    .await
}

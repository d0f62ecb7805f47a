//! The OpenAPI document of the HTTP API, derived from the handlers; `GET /api/v1/openapi.json` serves it and `docs/openapi.json` keeps it.

use axum::Json;
use utoipa::OpenApi;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "witmed node API",
        description = "Hospital staff (bearer token from the node's data dir) and patients (requests signed with their own enrolled Ed25519 key: see docs/patient-requests.md) act on a running node."
    ),
    paths(
        crate::health::health,
        serve,
        crate::staff::lookup,
        crate::staff::enrol,
        crate::staff::consents,
        crate::staff::command,
        crate::patient::me,
        crate::patient::observations,
        crate::patient::consents,
        crate::patient::submit,
        crate::patient::audit,
        crate::patient::account,
        crate::patient::cap,
        crate::device::readings,
        crate::device::list,
        crate::device::enrol,
        crate::device::retire,
        crate::alerts::list,
        crate::alerts::ack,
        crate::alerts::stream,
        crate::alerts::vitals,
        crate::alerts::hypercapnic,
        crate::clinician_page::ward_view,
        crate::clinician_page::patient_view,
    )
)]
pub struct Doc;

/// The document as pretty JSON (what docs/openapi.json holds).
pub fn json() -> String {
    Doc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "the OpenAPI document")))]
pub async fn serve() -> Json<serde_json::Value> {
    Json(serde_json::to_value(Doc::openapi()).unwrap_or_default())
}

//! The router: every route, and serving it on a listener next to the node's libp2p side.

use std::sync::Arc;

use axum::http::Uri;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::server::State;
use crate::transport::{self, Limits};
use crate::{alerts, device, health, openapi, page, patient, staff};

/// Every route the server serves, as `(method, path)`; the OpenAPI document lists exactly these.
pub const ROUTES: [(&str, &str); 24] = [
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/staff/patients"),
    ("POST", "/api/v1/staff/enrolments"),
    ("GET", "/api/v1/staff/consents"),
    ("POST", "/api/v1/staff/commands"),
    ("GET", "/api/v1/patient/me"),
    ("GET", "/api/v1/patient/observations"),
    ("GET", "/api/v1/patient/consents"),
    ("POST", "/api/v1/patient/consents"),
    ("GET", "/api/v1/patient/audit"),
    ("GET", "/api/v1/patient/account"),
    ("POST", "/api/v1/patient/cap"),
    // Devices and NEWS2 alerts.
    ("POST", "/api/v1/device/readings"),
    ("GET", "/api/v1/staff/devices"),
    ("POST", "/api/v1/staff/devices"),
    ("POST", "/api/v1/staff/devices/{device}/retire"),
    ("GET", "/api/v1/staff/alerts"),
    ("POST", "/api/v1/staff/alerts/{id}/ack"),
    ("GET", "/api/v1/staff/alerts/stream"),
    ("GET", "/api/v1/staff/patients/{patient}/vitals"),
    ("POST", "/api/v1/staff/patients/{patient}/hypercapnic"),
    // The clinician page's data.
    ("GET", "/api/v1/staff/ward"),
    ("GET", "/api/v1/staff/ward/{patient}"),
];

/// The API's router, with the patient page (see [`page::PAGE_ROUTES`]).
pub fn router(state: Arc<State>) -> Router {
    api_router()
        .merge(page::router())
        .fallback(not_found)
        .layer(axum::middleware::map_response(page::security_headers))
        .with_state(state)
}

fn api_router() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/staff/patients", get(staff::lookup))
        .route("/api/v1/staff/enrolments", post(staff::enrol))
        .route("/api/v1/staff/consents", get(staff::consents))
        .route("/api/v1/staff/commands", post(staff::command))
        .route("/api/v1/patient/me", get(patient::me))
        .route("/api/v1/patient/observations", get(patient::observations))
        .route(
            "/api/v1/patient/consents",
            get(patient::consents).post(patient::submit),
        )
        .route("/api/v1/patient/audit", get(patient::audit))
        .route("/api/v1/patient/account", get(patient::account))
        .route("/api/v1/patient/cap", post(patient::cap))
        // Devices and NEWS2 alerts.
        .route("/api/v1/device/readings", post(device::readings))
        .route(
            "/api/v1/staff/devices",
            get(device::list).post(device::enrol),
        )
        .route(
            "/api/v1/staff/devices/{device}/retire",
            post(device::retire),
        )
        .route("/api/v1/staff/alerts", get(alerts::list))
        .route("/api/v1/staff/alerts/{id}/ack", post(alerts::ack))
        .route("/api/v1/staff/alerts/stream", get(alerts::stream))
        .route(
            "/api/v1/staff/patients/{patient}/vitals",
            get(alerts::vitals),
        )
        .route(
            "/api/v1/staff/patients/{patient}/hypercapnic",
            post(alerts::hypercapnic),
        )
        // The clinician page: static files and its ward views.
        .merge(crate::clinician_page::router())
}

/// Serves the API in plain HTTP on `listener` (loopback) until `shutdown` completes.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    transport::serve(router(state), listener, None, Limits::default(), shutdown).await
}

/// Serves the API through TLS with `tls` on `listener` until `shutdown` completes.
pub async fn serve_tls(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    transport::serve(
        router(state),
        listener,
        Some(tls),
        Limits::default(),
        shutdown,
    )
    .await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

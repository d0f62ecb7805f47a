//! Bedside devices over HTTP: a device's signed batch of readings; staff enrol, list and retire devices.
//!
//! A batch is checked in this order, and nothing is stored unless every
//! step passes: the body's size (while it is read); the headers; the
//! request's time against the node's clock; the device enrolled and not
//! retired; the signature over [`device_request::message`] with that key;
//! the device's rate; the body parsed strictly; then, in the node
//! ([`witmed_node::ingest`]), each reading's code, unit, value, time and
//! sequence number, and one synced write. The receipt is sent only after it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State as Extract};
use axum::http::HeaderMap;
use axum::Json;
use witmed_crypto::{Pseudonym, PublicKey};
use witmed_node::devices;
use witmed_protocol::device_request::{self as wire, BodyError, Request};

use crate::auth::MAX_SKEW_SECONDS;
use crate::error::ApiError;
use crate::server::{admit, blocking, now, FromStaff, State};

/// A device's header, or which one is missing or malformed.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::BadHeader(name))
}

/// The signed parts of a device request's headers.
struct Signed {
    device: PublicKey,
    time: i64,
    signature: [u8; 64],
}

fn signed_headers(headers: &HeaderMap) -> Result<Signed, ApiError> {
    let device = header(headers, wire::HEADER_DEVICE)?
        .parse()
        .map_err(|_| ApiError::BadHeader(wire::HEADER_DEVICE))?;
    let time = header(headers, wire::HEADER_TIME)?
        .parse()
        .map_err(|_| ApiError::BadHeader(wire::HEADER_TIME))?;
    let signature = hex::decode(header(headers, wire::HEADER_SIGNATURE)?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ApiError::BadHeader(wire::HEADER_SIGNATURE))?;
    Ok(Signed {
        device,
        time,
        signature,
    })
}

fn body_error(e: BodyError) -> ApiError {
    let status = match e {
        BodyError::ContentType(_) => axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        BodyError::TooMany(_) => axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        _ => axum::http::StatusCode::BAD_REQUEST,
    };
    ApiError::Device {
        status,
        code: e.code(),
        message: e.to_string(),
    }
}

/// `POST /api/v1/device/readings`: a device's signed batch; the receipt only once it is durable.
#[utoipa::path(post, path = "/api/v1/device/readings",
    request_body(content_type = "application/json", description = "a batch (protocol::device_request::Batch) or a FHIR R4 Bundle of Observations (application/fhir+json), signed by the device key: headers x-witmed-device, x-witmed-time, x-witmed-signature"),
    responses((status = 200, description = "stored: {stored, last_seq, alerts}"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn readings(
    Extract(state): Extract<Arc<State>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<wire::Receipt>, ApiError> {
    let body = admit(&state, from, body).await?;
    let signed = signed_headers(&headers)?;
    let now = now();
    let skew = now.abs_diff(signed.time);
    if skew > MAX_SKEW_SECONDS {
        return Err(ApiError::Stale { skew });
    }
    let node = state.node.clone();
    let device = signed.device;
    blocking(move || devices::active(&node, &device).map_err(ApiError::from)).await?;
    let message = wire::message(&Request {
        node: &state.node.id().to_hex(),
        device: &device.to_hex(),
        method: method.as_str(),
        path: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        time: signed.time,
        body_sha256: witmed_crypto::sha256(&body),
    });
    if !device.verify(&message, &signed.signature) {
        return Err(ApiError::BadSignature);
    }
    if !state
        .by_key
        .allow(&format!("device:{}", device.to_hex()), now)
    {
        return Err(ApiError::RateLimited("this device"));
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let readings = wire::parse_body(content_type, &body).map_err(body_error)?;
    let node = state.node.clone();
    let settings = state.devices;
    blocking(move || {
        witmed_node::ingest::ingest(&node, &device, &readings, &settings, now)
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
}

/// `POST /api/v1/staff/devices`: enrols a device key for a patient.
#[utoipa::path(post, path = "/api/v1/staff/devices",
    request_body(content_type = "application/json", description = "{device, patient, label}"),
    responses((status = 200, description = "the device"), (status = 422, body = crate::error::ErrorBody)))]
pub async fn enrol(
    Extract(state): Extract<Arc<State>>,
    staff: FromStaff,
) -> Result<Json<wire::Device>, ApiError> {
    let asked: wire::Enrol = staff.json()?;
    let device: PublicKey = asked
        .device
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("device: {e}")))?;
    let patient: Pseudonym = asked
        .patient
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("patient: {e}")))?;
    let node = state.node.clone();
    blocking(move || {
        devices::enrol(&node, device, patient, &asked.label, now())
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
}

/// `GET /api/v1/staff/devices`: every device, enrolled or retired.
#[utoipa::path(get, path = "/api/v1/staff/devices",
    responses((status = 200, description = "the devices")))]
pub async fn list(
    Extract(state): Extract<Arc<State>>,
    _staff: FromStaff,
) -> Result<Json<Vec<wire::Device>>, ApiError> {
    let node = state.node.clone();
    blocking(move || devices::list(&node).map(Json).map_err(ApiError::from)).await
}

/// `POST /api/v1/staff/devices/{device}/retire`: its readings are refused from now on.
#[utoipa::path(post, path = "/api/v1/staff/devices/{device}/retire",
    params(("device" = String, Path, description = "the device's public key, hex")),
    responses((status = 200, description = "the device"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn retire(
    Extract(state): Extract<Arc<State>>,
    device: Result<Path<String>, axum::extract::rejection::PathRejection>,
    _staff: FromStaff,
) -> Result<Json<wire::Device>, ApiError> {
    let Path(device) = device.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let device: PublicKey = device
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("device: {e}")))?;
    let node = state.node.clone();
    blocking(move || {
        devices::retire(&node, device, now())
            .map(Json)
            .map_err(ApiError::from)
    })
    .await
}

//! What every request shares: the state, the limits, admitting a body, authenticating staff and patients, running store work.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Uri};
use witmed_crypto::Pseudonym;
use witmed_node::node::Node;

use crate::auth::{self, Nonces, Signed};
use crate::error::ApiError;
use crate::limits::RateLimit;

/// Live alert streams served at once.
pub const MAX_ALERT_STREAMS: usize = 32;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Limits of the HTTP side of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requests per minute from one source address.
    pub per_address_per_minute: u32,
    /// Requests per minute signed by one patient key (or with the staff token, or by one device).
    pub per_key_per_minute: u32,
    /// NEWS2 window and alert band for device readings.
    pub devices: witmed_node::ingest::Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            per_address_per_minute: 600,
            per_key_per_minute: 120,
            devices: witmed_node::ingest::Settings::default(),
        }
    }
}

/// What every handler shares.
pub struct State {
    pub node: Arc<Node>,
    pub staff_token: String,
    pub nonces: Nonces,
    pub by_address: RateLimit<std::net::IpAddr>,
    pub by_key: RateLimit<String>,
    /// NEWS2 settings of device ingestion.
    pub devices: witmed_node::ingest::Settings,
    /// Slots of live alert streams ([`MAX_ALERT_STREAMS`]).
    pub alert_streams: Arc<tokio::sync::Semaphore>,
}

impl State {
    /// State for `node`, reading (or creating) its staff token.
    pub fn new(node: Arc<Node>, config: &Config) -> std::io::Result<State> {
        let staff_token = auth::staff_token(&node.dir.0)?;
        Ok(State {
            node,
            staff_token,
            nonces: Nonces::default(),
            by_address: RateLimit::new(config.per_address_per_minute),
            by_key: RateLimit::new(config.per_key_per_minute),
            devices: config.devices,
            alert_streams: Arc::new(tokio::sync::Semaphore::new(MAX_ALERT_STREAMS)),
        })
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    witmed_node::unix_now()
}

/// The common start of every request: the address's rate, then the body, bounded.
pub async fn admit(state: &State, from: SocketAddr, body: Body) -> Result<Bytes, ApiError> {
    if !state.by_address.allow(&from.ip(), now()) {
        return Err(ApiError::RateLimited("your address"));
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY_BYTES))
}

/// Refuses a body that is not declared as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Parses a JSON body strictly (the types refuse unknown fields).
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the JSON body is not valid: {e}")))
}

/// Staff: admits, then checks the token and the staff rate.
pub async fn staff_request(
    state: &State,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let body = admit(state, from, body).await?;
    auth::check_staff(headers, &state.staff_token)?;
    if !state.by_key.allow(&"staff".to_string(), now()) {
        return Err(ApiError::RateLimited("the staff token"));
    }
    Ok(body)
}

/// Patients: admits, then authenticates the signed request and counts its key's rate.
pub async fn patient_request(
    state: &State,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    body: Body,
) -> Result<(Pseudonym, Bytes), ApiError> {
    let body = admit(state, from, body).await?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let signed = Signed {
        method: method.as_str(),
        path_and_query,
        body: &body,
    };
    let patient = auth::check_patient(&state.node, &state.nonces, headers, &signed, now())?;
    if !state.by_key.allow(&patient.to_hex(), now()) {
        return Err(ApiError::RateLimited("your key"));
    }
    Ok((patient, body))
}

/// Runs store work off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("a request task failed: {e}")))?
}

/// The address the request came from (axum's connect info, set by [`crate::serve`]).
fn peer(parts: &axum::http::request::Parts) -> Result<ConnectInfo<SocketAddr>, ApiError> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
        .ok_or_else(|| ApiError::Internal("the request carries no peer address".into()))
}

/// A patient's authenticated request, as a handler's last argument: who
/// signed it and its body, read within the limit (see [`patient_request`]).
pub struct SignedByPatient {
    pub patient: Pseudonym,
    pub body: Bytes,
    headers: HeaderMap,
}

impl SignedByPatient {
    /// The body as `T`: declared JSON and parsed strictly.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        require_json(&self.headers)?;
        parse(&self.body)
    }
}

impl axum::extract::FromRequest<Arc<State>> for SignedByPatient {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<State>,
    ) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let from = peer(&parts)?;
        let (patient, body) = patient_request(
            state,
            from,
            (&parts.method, &parts.uri, &parts.headers),
            body,
        )
        .await?;
        Ok(SignedByPatient {
            patient,
            body,
            headers: parts.headers,
        })
    }
}

/// A staff request, as a handler's last argument: token and rate checked, body read within the limit.
pub struct FromStaff {
    pub body: Bytes,
    headers: HeaderMap,
}

impl FromStaff {
    /// The body as `T`: declared JSON and parsed strictly.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        require_json(&self.headers)?;
        parse(&self.body)
    }
}

impl axum::extract::FromRequest<Arc<State>> for FromStaff {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<State>,
    ) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let from = peer(&parts)?;
        let body = staff_request(state, from, &parts.headers, body).await?;
        Ok(FromStaff {
            body,
            headers: parts.headers,
        })
    }
}

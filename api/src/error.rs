//! One error shape for every refusal: an HTTP status, a stable code for scripts and a message that says what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}; send `Authorization: Bearer TOKEN` with the token in DIR/admin/api.token")]
    StaffUnauthorized(&'static str),
    #[error("missing or malformed {0} header; sign the request as docs/patient-requests.md says")]
    BadHeader(&'static str),
    #[error("the request was made {skew} s away from this node's clock (at most 300 s); check the device's clock and sign again")]
    Stale { skew: u64 },
    #[error("this nonce was already used; sign every request with a fresh random nonce")]
    Replayed,
    #[error("no key is enrolled for this patient at this node; ask hospital staff to enrol your public key")]
    NotEnrolled,
    #[error("the signature does not verify with the key enrolled for this patient; sign with your own key")]
    BadSignature,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is over {0} bytes; send less")]
    TooLarge(usize),
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("too many requests from {0}; wait a minute and retry")]
    RateLimited(&'static str),
    #[error("the node is busy checking too many requests; retry in a moment")]
    Busy,
    #[error("no such route: {0}; see /api/v1/openapi.json")]
    NotFound(String),
    #[error("{0}")]
    UnknownPatient(String),
    /// A refusal decided by the node core, with its own stable code.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("internal error: {0}; the node logged it")]
    Internal(String),
    /// A device request or device/alert operation refused, with its own status and stable code.
    #[error("{message}")]
    Device {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl From<witmed_node::devices::Error> for ApiError {
    fn from(e: witmed_node::devices::Error) -> Self {
        use witmed_node::devices::Error as E;
        let status = match &e {
            E::Store(_) => return ApiError::Internal(e.to_string()),
            E::NotEnrolled(_) => StatusCode::UNAUTHORIZED,
            E::Retired { .. } => StatusCode::FORBIDDEN,
            E::OtherPatient { .. } => StatusCode::CONFLICT,
            E::UnknownPatient(_) | E::UnknownAlert(_) => StatusCode::NOT_FOUND,
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::Reading { code, .. } if code.ends_with("_sequence") => StatusCode::CONFLICT,
            E::Reading { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::Device {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::StaffUnauthorized(_) => "staff_unauthorized",
            ApiError::BadHeader(_) => "bad_signature_header",
            ApiError::Stale { .. } => "stale_request",
            ApiError::Replayed => "replayed_request",
            ApiError::NotEnrolled => "not_enrolled",
            ApiError::BadSignature => "bad_signature",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Busy => "busy",
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownPatient(_) => "unknown_patient",
            ApiError::Refused { code, .. } => code,
            ApiError::Internal(_) => "internal_error",
            ApiError::Device { code, .. } => code,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::StaffUnauthorized(_)
            | ApiError::BadHeader(_)
            | ApiError::Stale { .. }
            | ApiError::Replayed
            | ApiError::NotEnrolled
            | ApiError::BadSignature => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) | ApiError::UnknownPatient(_) => StatusCode::NOT_FOUND,
            ApiError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Device { status, .. } => *status,
        }
    }
}

/// The JSON body of every error: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable code and a message for a person.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!("HTTP API: {e}");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        };
        (self.status(), axum::Json(body)).into_response()
    }
}

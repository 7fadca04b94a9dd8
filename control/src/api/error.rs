//! Every way a request fails, and the one place failures become HTTP: a
//! status code and the body `{"error": {"code": "...", "message": "..."}}`.
//!
//! ```text
//!  ConfigError (rejected by apply) ─┐
//!  ServiceError (no leader, ...)  ──┼─> ApiError ─> (status, {"error": {code, message}})
//!  axum rejections, auth, routing ──┘
//! ```

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use trellis_api::{ErrorBody, ErrorDetail};

use crate::config::ConfigError;
use crate::service::ServiceError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header, or the wrong token.
    #[error("missing or wrong API token (send Authorization: Bearer <token>)")]
    Unauthorized,
    /// The cluster refused or could not carry out the request.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The JSON body is malformed or does not fit the request (the message
    /// names the field).
    #[error("invalid request body: {0}")]
    Body(String),
    /// The body is larger than the API takes.
    #[error("the request body is too large ({0})")]
    TooLarge(String),
    /// The body lacks a JSON content type.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    NotJson,
    /// A field is well-formed JSON but its value is refused here.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A path parameter does not parse (a LUN that is not a number).
    #[error("invalid path: {0}")]
    Path(String),
    /// No such endpoint.
    #[error("no such endpoint")]
    NoRoute,
    /// The endpoint exists but not with this method.
    #[error("method not allowed on this endpoint")]
    WrongMethod,
    /// The request (its body, or the work it asked for) took longer than
    /// the API allows one request. A write may still be applied: resend it
    /// with the same idempotency key.
    #[error("the request took longer than {0:?} and was cut (a write may still apply: resend it with the same Idempotency-Key)")]
    Timeout(std::time::Duration),
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::Service(ServiceError::Rejected(e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::NotJson,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge(strip_axum_prefix(&other.body_text()))
            }
            other => ApiError::Body(strip_axum_prefix(&other.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::Path(r.body_text())
    }
}

/// axum prefixes serde's message ("size: invalid type ... at line 1") with
/// its own sentence; keep serde's part, which names the field.
fn strip_axum_prefix(text: &str) -> String {
    text.split_once("target type: ")
        .map_or(text, |(_, rest)| rest)
        .to_owned()
}

impl ApiError {
    /// The HTTP status and the stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ConfigError as C;
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Body(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::InvalidField { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            ApiError::Path(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::WrongMethod => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
            ApiError::Service(ServiceError::NoLeader) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
            }
            ApiError::Service(ServiceError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Service(ServiceError::Internal(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            ApiError::Service(ServiceError::Rejected(e)) => match e {
                C::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                C::LunNotMapped { .. } => (StatusCode::NOT_FOUND, "lun_not_mapped"),
                C::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
                C::NodeIdTaken { .. } => (StatusCode::CONFLICT, "node_id_taken"),
                C::UuidTaken { .. } => (StatusCode::CONFLICT, "uuid_taken"),
                C::LunTaken { .. } => (StatusCode::CONFLICT, "lun_taken"),
                C::DeviceMapped { .. } => (StatusCode::CONFLICT, "device_mapped"),
                C::InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_name"),
                C::NoLinks { .. } => (StatusCode::BAD_REQUEST, "no_links"),
                C::WitnessWithPortals { .. } => (StatusCode::BAD_REQUEST, "witness_with_portals"),
                C::InvalidBlockSize { .. } => (StatusCode::BAD_REQUEST, "invalid_block_size"),
                C::InvalidSize { .. } | C::SizeTooLarge { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_size")
                }
                C::Shrink { .. } => (StatusCode::BAD_REQUEST, "shrink"),
                C::LunOutOfRange { .. } => (StatusCode::BAD_REQUEST, "lun_out_of_range"),
                C::InvalidChapUser { .. } => (StatusCode::BAD_REQUEST, "invalid_chap_user"),
                C::ChapSecretLength { .. } => (StatusCode::BAD_REQUEST, "chap_secret_length"),
                C::MutualSecretReused => (StatusCode::BAD_REQUEST, "mutual_secret_reused"),
                C::InvalidBacking { .. } => (StatusCode::BAD_REQUEST, "invalid_backing"),
                C::BackingTaken { .. } => (StatusCode::CONFLICT, "backing_taken"),
                C::NodeIdRange { .. } => (StatusCode::BAD_REQUEST, "node_id_range"),
                C::KeyReused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
                C::NestedOnce => (StatusCode::BAD_REQUEST, "nested_once"),
                C::InvalidSet { .. } => (StatusCode::BAD_REQUEST, "invalid_set"),
                C::StaleEpoch { .. } => (StatusCode::CONFLICT, "stale_epoch"),
                C::Witness { .. } => (StatusCode::BAD_REQUEST, "witness"),
                C::DeviceStateMoved { .. } => (StatusCode::CONFLICT, "device_state_moved"),
                C::DeviceStateTooLarge { .. } => {
                    (StatusCode::BAD_REQUEST, "device_state_too_large")
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "management API request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

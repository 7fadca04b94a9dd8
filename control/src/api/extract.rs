//! axum's JSON-body and path extractors with their rejections turned into
//! [`ApiError`], so that a bad body gets the same error shape as
//! everything else.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::config::once::check_key;
use crate::config::Command;

/// The request header naming a write for [`IdempotencyKey`].
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A JSON request body.
#[derive(Debug)]
pub(super) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Body(value))
    }
}

/// Path parameters.
#[derive(Debug)]
pub(super) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathParams(value))
    }
}

/// The `Idempotency-Key` header of a write, if any: the same key sent again
/// gets the first answer instead of a second application.
#[derive(Debug, Clone, Default)]
pub(super) struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// `command`, applied at most once when a key was given.
    pub(super) fn wrap(&self, command: Command) -> Command {
        match &self.0 {
            Some(key) => Command::Once {
                key: key.clone(),
                command: Box::new(command),
            },
            None => command,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        let invalid = |reason: String| ApiError::InvalidField {
            field: "Idempotency-Key header",
            reason,
        };
        let key = value
            .to_str()
            .map_err(|_| invalid("is not ASCII text".to_owned()))?;
        check_key(key).map_err(invalid)?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

//! Every refusal of the admin API as one type: a status code and a JSON body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use loadwise_core::registry::BackendId;

/// Why an admin request was not served. The response body is always
/// `{"error": "<message>"}`; internal details are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No service has this name.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// No backend is registered under this id.
    #[error("no backend {} is registered", .0.0)]
    UnknownBackend(BackendId),
    /// The backend id in the path is not a number.
    #[error("backend id {0:?} is not a number")]
    BadBackendId(String),
    /// The service has no backend that takes clients.
    #[error("no live backend in service {0:?}")]
    NoBackend(String),
    /// An action came without the bearer token, or with a wrong one.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// No token is configured, so actions are refused.
    #[error("operator actions are disabled: no admin token is configured")]
    ActionsDisabled,
    /// The dispatcher is not serving.
    #[error("the dispatcher is not serving")]
    NotReady,
    /// No endpoint at this path.
    #[error("no such endpoint")]
    NoRoute,
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Something failed inside; the detail goes to the log only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownService(_) | ApiError::UnknownBackend(_) | ApiError::NoRoute => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadBackendId(_) => StatusCode::BAD_REQUEST,
            ApiError::NoBackend(_) | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ActionsDisabled => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "admin request failed");
        }
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

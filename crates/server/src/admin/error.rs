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
    /// The slot service's backends have no free place this dispatcher may fill.
    #[error("no free place in service {0:?}: every backend is full, or its places are promised")]
    NoFreePlace(String),
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
    /// The Host header names none of the allowed hosts.
    #[error("this server does not answer for host {0:?}; add it to admin_allowed_hosts")]
    MisdirectedHost(String),
    /// A state-changing request came from a page of another origin.
    #[error("requests from origin {0:?} are refused")]
    ForeignOrigin(String),
    /// A request body that is not JSON.
    #[error("the request body must be JSON, sent with Content-Type: application/json")]
    NotJson,
    /// A query parameter out of its bounds or not understood.
    #[error("{0}")]
    BadQuery(String),
    /// A pick asked for with GET: picks change state, so they take POST.
    #[error("a pick changes state: use POST")]
    PickNeedsPost,
    /// Too many lists were being built at once.
    #[error("busy: too many lists are being built at once, retry shortly")]
    Busy,
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
            ApiError::BadBackendId(_) | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::NoBackend(_) | ApiError::NoFreePlace(_) | ApiError::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ActionsDisabled => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed | ApiError::PickNeedsPost => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
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
        let headers = response.headers_mut();
        match self {
            ApiError::PickNeedsPost => drop(headers.insert(header::ALLOW, HeaderValue::from_static("POST"))),
            ApiError::Busy => drop(headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"))),
            _ => {}
        }
        response
    }
}

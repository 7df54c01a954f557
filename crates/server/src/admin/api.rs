//! The JSON handlers: health, services, backends, HTTP picks and operator actions.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::authorize;
use super::error::ApiError;
use super::guard::{check_origin, expensive_read};
use super::state::AdminState;
use super::views::{BackendList, BackendPage, BackendView, PickView, ServiceList, StateView};
use crate::pick_answer::ServicePick;
use loadwise_core::dispatcher::Dispatcher;
use loadwise_core::model::PickRequest;
use loadwise_core::registry::BackendId;
use loadwise_core::selection::BackendState;
use loadwise_protocol::v2::{ErrorCode, ServiceName};

/// `GET /healthz`: the process is up and answering.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the dispatcher is listening and serving.
pub(crate) async fn readyz(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    if state.is_ready() { Ok(Json(json!({ "status": "ready" }))) } else { Err(ApiError::NotReady) }
}

/// `GET /v1/services`.
pub(crate) async fn services(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let dispatcher = Arc::clone(state.dispatcher());
    build_list(&state, move || {
        let services = dispatcher.services();
        let backends = dispatcher.snapshot();
        Ok(Json(ServiceList::new(&services, &backends, dispatcher.policy())).into_response())
    })
    .await
}

/// `GET /v1/services/{service}/backends?limit=&after=&state=`: a page of the
/// service's backends in id order. A service is known while it has a backend; the
/// default one always is.
pub(crate) async fn backends(
    State(state): State<AdminState>,
    Path(service): Path<String>,
    Query(page): Query<BackendPage>,
) -> Result<Response, ApiError> {
    let page = page.checked()?;
    let name = service_name(&service)?;
    let dispatcher = Arc::clone(state.dispatcher());
    build_list(&state, move || {
        let mut snapshots: Vec<_> =
            dispatcher.snapshot().into_iter().filter(|snapshot| snapshot.service == name).collect();
        if snapshots.is_empty() && !is_default(&dispatcher, &name) {
            return Err(ApiError::UnknownService(service));
        }
        snapshots.sort_unstable_by_key(|snapshot| snapshot.id);
        let now = Instant::now();
        let (shown, next_after) = page.select(&snapshots);
        let backends = shown.iter().map(|snapshot| BackendView::new(snapshot, now)).collect();
        let list = BackendList {
            service,
            policy: dispatcher.policy(),
            ttl_seconds: dispatcher.ttl().as_secs_f64(),
            backends,
            next_after: next_after.map(|id| id.0),
        };
        Ok(Json(list).into_response())
    })
    .await
}

/// Builds a list, JSON body included, under a permit and on a blocking thread: a
/// large table takes milliseconds of CPU to write, which must not hold up the
/// runtime's workers that answer picks on the dispatcher's port.
async fn build_list(
    state: &AdminState,
    build: impl FnOnce() -> Result<Response, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let permit = expensive_read(state).await?;
    let built = tokio::task::spawn_blocking(move || {
        let response = build();
        drop(permit);
        response
    })
    .await;
    built.map_err(|error| ApiError::Internal(format!("building a list: {error}")))?
}

/// `POST /v1/services/{service}/pick`: a pick with the same selection and accounting
/// as a login over TCP or a v2 PickRequest. A body is optional; one sent must be
/// JSON, so that a cross-site form (which cannot send that type without a
/// preflight) is refused, as is any request whose `Origin` is another site.
pub(crate) async fn pick(
    State(state): State<AdminState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PickView>, ApiError> {
    check_origin(&headers)?;
    let asked = pick_body(&headers, &body)?;
    let dispatcher = state.dispatcher();
    let name = service_name(&service)?;
    let key = asked.key.as_deref().unwrap_or_default().as_bytes();
    match ServicePick::of(dispatcher.pick(&PickRequest::http(&name).with_key(key), Instant::now())) {
        Ok(picked) => {
            tracing::debug!(backend = %picked.id, %service, "http pick answered");
            Ok(Json(PickView::new(&service, &picked)))
        }
        // The default service is known even while it has no backend.
        Err(ErrorCode::UNKNOWN_SERVICE) if !is_default(dispatcher, &name) => {
            Err(ApiError::UnknownService(service))
        }
        Err(ErrorCode::NO_FREE_PLACE) => Err(ApiError::NoFreePlace(service)),
        Err(_) => Err(ApiError::NoBackend(service)),
    }
}

/// What an HTTP pick may say in its body: `{"key": "player-42"}` for a sticky pick.
#[derive(Debug, Default, serde::Deserialize)]
struct PickBody {
    /// The affinity key, as in a v2 PickRequest: at most 64 bytes.
    key: Option<String>,
}

/// An empty body asks for an unkeyed pick; any other must be declared JSON and be an
/// object whose `key`, if given, is a string of at most 64 bytes.
fn pick_body(headers: &HeaderMap, body: &[u8]) -> Result<PickBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PickBody::default());
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"));
    if !declared || serde_json::from_slice::<Value>(body).is_err() {
        return Err(ApiError::NotJson);
    }
    let asked: PickBody =
        serde_json::from_slice(body).map_err(|error| ApiError::BadQuery(format!("body: {error}")))?;
    if let Some(key) = &asked.key
        && key.len() > loadwise_protocol::v2::MAX_KEY_LEN
    {
        let limit = loadwise_protocol::v2::MAX_KEY_LEN;
        return Err(ApiError::BadQuery(format!("key: {} bytes, at most {limit}", key.len())));
    }
    Ok(asked)
}

/// `POST /v1/backends/{id}/drain`.
pub(crate) async fn drain(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<StateView>, ApiError> {
    set_state(&state, &id, &headers, BackendState::Draining)
}

/// `POST /v1/backends/{id}/undrain`.
pub(crate) async fn undrain(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<StateView>, ApiError> {
    set_state(&state, &id, &headers, BackendState::Ready)
}

/// `POST /v1/backends/{id}/maintenance`.
pub(crate) async fn maintenance(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<StateView>, ApiError> {
    set_state(&state, &id, &headers, BackendState::Maintenance)
}

/// Authorizes first, so that refused callers learn nothing about which ids exist.
/// The id is the dispatcher's, whatever the backend's service and protocol.
fn set_state(
    state: &AdminState,
    id: &str,
    headers: &HeaderMap,
    target: BackendState,
) -> Result<Json<StateView>, ApiError> {
    authorize(state.token().as_deref(), headers)?;
    let id = BackendId(id.parse().map_err(|_| ApiError::BadBackendId(id.to_owned()))?);
    let dispatcher = state.dispatcher();
    dispatcher.set_state(id, target).map_err(|_| ApiError::UnknownBackend(id))?;
    // Actions are rare: a whole snapshot to learn the state in force costs little.
    let snapshot = dispatcher.snapshot().into_iter().find(|snapshot| snapshot.id == id);
    Ok(Json(StateView::new(id.0, target, snapshot.as_ref())))
}

/// The service a path names; a name no service can have is unknown.
fn service_name(service: &str) -> Result<ServiceName, ApiError> {
    ServiceName::new(service).map_err(|_| ApiError::UnknownService(service.to_owned()))
}

/// Whether `name` is the service legacy traffic belongs to (`DispatchSettings::default_service`).
fn is_default(dispatcher: &Dispatcher, name: &ServiceName) -> bool {
    dispatcher.settings().default_service == *name
}

//! The JSON handlers: health, services, backends, HTTP picks and operator actions.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::AdminState;
use super::auth::authorize;
use super::error::ApiError;
use super::views::{BackendList, BackendView, PickView, ServiceList, StateView};
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
pub(crate) async fn services(State(state): State<AdminState>) -> Json<ServiceList> {
    let dispatcher = state.dispatcher();
    let services = dispatcher.services();
    let backends = dispatcher.snapshot();
    Json(ServiceList::new(&services, &backends, dispatcher.policy()))
}

/// `GET /v1/services/{service}/backends`: a service is known while it has a
/// backend; the default one always is.
pub(crate) async fn backends(
    State(state): State<AdminState>,
    Path(service): Path<String>,
) -> Result<Json<BackendList>, ApiError> {
    let dispatcher = state.dispatcher();
    let name = service_name(&service)?;
    let now = Instant::now();
    let backends: Vec<_> = dispatcher
        .snapshot()
        .iter()
        .filter(|snapshot| snapshot.service == name)
        .map(|snapshot| BackendView::new(snapshot, now))
        .collect();
    if backends.is_empty() && !is_default(dispatcher, &name) {
        return Err(ApiError::UnknownService(service));
    }
    Ok(Json(BackendList {
        service,
        policy: dispatcher.policy(),
        ttl_seconds: dispatcher.ttl().as_secs_f64(),
        backends,
    }))
}

/// `GET /v1/services/{service}/pick`: a pick with the same selection and accounting
/// as a login over TCP or a v2 PickRequest.
pub(crate) async fn pick(
    State(state): State<AdminState>,
    Path(service): Path<String>,
) -> Result<Json<PickView>, ApiError> {
    let dispatcher = state.dispatcher();
    let name = service_name(&service)?;
    match ServicePick::of(dispatcher.pick(&PickRequest::http(&name), Instant::now())) {
        Ok(picked) => {
            tracing::debug!(backend = %picked.id, %service, "http pick answered");
            Ok(Json(PickView::new(&service, &picked)))
        }
        // The default service is known even while it has no backend.
        Err(ErrorCode::UNKNOWN_SERVICE) if !is_default(dispatcher, &name) => {
            Err(ApiError::UnknownService(service))
        }
        Err(_) => Err(ApiError::NoBackend(service)),
    }
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

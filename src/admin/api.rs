//! The JSON handlers: health, services, backends, HTTP picks and operator actions.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::AdminState;
use super::auth::authorize;
use super::error::ApiError;
use super::views::{BackendList, BackendView, PickView, ServiceList, ServiceSummary, StateCounts, StateView};
use crate::dispatcher::DEFAULT_SERVICE;
use crate::registry::BackendId;
use crate::selection::BackendState;

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
    let backends = dispatcher.snapshot();
    let summary = ServiceSummary {
        name: DEFAULT_SERVICE.to_owned(),
        policy: dispatcher.policy(),
        backends: backends.len(),
        states: StateCounts::of(&backends),
    };
    Json(ServiceList { services: vec![summary] })
}

/// `GET /v1/services/{service}/backends`.
pub(crate) async fn backends(
    State(state): State<AdminState>,
    Path(service): Path<String>,
) -> Result<Json<BackendList>, ApiError> {
    known_service(&service)?;
    let dispatcher = state.dispatcher();
    let now = Instant::now();
    let backends = dispatcher.snapshot().iter().map(|snapshot| BackendView::new(snapshot, now)).collect();
    Ok(Json(BackendList {
        service,
        policy: dispatcher.policy(),
        ttl_seconds: dispatcher.ttl().as_secs_f64(),
        backends,
    }))
}

/// `GET /v1/services/{service}/pick`: a pick with the same selection and accounting
/// as a login over TCP.
pub(crate) async fn pick(
    State(state): State<AdminState>,
    Path(service): Path<String>,
) -> Result<Json<PickView>, ApiError> {
    known_service(&service)?;
    match state.dispatcher().pick_for_client(Instant::now()).ok() {
        Some(picked) => {
            tracing::debug!(backend = %picked.id, "http pick answered");
            Ok(Json(PickView::new(&service, &picked)))
        }
        None => Err(ApiError::NoBackend(service)),
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
fn set_state(
    state: &AdminState,
    id: &str,
    headers: &HeaderMap,
    target: BackendState,
) -> Result<Json<StateView>, ApiError> {
    authorize(state.token().as_deref(), headers)?;
    let id = BackendId(id.parse().map_err(|_| ApiError::BadBackendId(id.to_owned()))?);
    state.dispatcher().set_state(id, target).map_err(|_| ApiError::UnknownBackend(id))?;
    Ok(Json(StateView { id: id.0, state: target }))
}

/// The only service until the protocol can name others.
fn known_service(service: &str) -> Result<(), ApiError> {
    if service == DEFAULT_SERVICE { Ok(()) } else { Err(ApiError::UnknownService(service.to_owned())) }
}

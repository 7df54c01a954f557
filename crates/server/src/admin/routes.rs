//! The table of endpoints: the router is built from it and the OpenAPI test reads it.

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};

use super::error::ApiError;
use super::state::AdminState;
use super::{api, dashboard, guard, metrics, openapi};
use tower_http::limit::RequestBodyLimitLayer;

/// One endpoint: a method, a path in OpenAPI form, and its handler.
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<AdminState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AdminState>) -> Route {
    Route { method, path, handler }
}

/// Every endpoint the admin server answers.
pub(crate) fn table() -> Vec<Route> {
    vec![
        route(Method::GET, "/", get(dashboard::page)),
        route(Method::GET, "/assets/dashboard.js", get(dashboard::script)),
        route(Method::GET, "/assets/dashboard.css", get(dashboard::style)),
        route(Method::GET, "/healthz", get(api::healthz)),
        route(Method::GET, "/readyz", get(api::readyz)),
        route(Method::GET, "/metrics", get(metrics::metrics)),
        route(Method::GET, "/v1/openapi.json", get(openapi::document)),
        route(Method::GET, "/v1/services", get(api::services)),
        route(Method::GET, "/v1/services/{service}/backends", get(api::backends)),
        // A GET is answered 405 with `Allow: POST`: a pick changes state, and a GET
        // is what a cross-site link or image makes a browser send.
        route(
            Method::POST,
            "/v1/services/{service}/pick",
            post(api::pick).get(|| async { ApiError::PickNeedsPost }),
        ),
        route(Method::POST, "/v1/backends/{id}/drain", post(api::drain)),
        route(Method::POST, "/v1/backends/{id}/undrain", post(api::undrain)),
        route(Method::POST, "/v1/backends/{id}/maintenance", post(api::maintenance)),
    ]
}

/// The router for [`table`], answering unknown paths and methods with JSON errors,
/// within the state's limits: a request timeout (408, the one in force at each
/// request), a body limit (413) and the Host check (421).
pub(crate) fn router(state: AdminState) -> Router {
    let limits = state.limits();
    table()
        .into_iter()
        .fold(Router::new(), |router, route| router.route(route.path, route.handler))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(map_response(not_stored))
        .layer(RequestBodyLimitLayer::new(limits.body_limit))
        .layer(from_fn_with_state(state.clone(), guard::check_host))
        .layer(from_fn_with_state(state.clone(), guard::within_request_timeout))
        .with_state(state)
}

/// Live data and picks must never come from a cache; the assets say otherwise themselves.
async fn not_stored(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

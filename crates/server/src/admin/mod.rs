//! The admin side of the dispatcher: an HTTP API, Prometheus metrics and a live dashboard.
//!
//! Everything here reads or steers one
//! [`Dispatcher`](loadwise_core::dispatcher::Dispatcher) shared with the TCP server,
//! and reads that server's wire counters ([`WireStats`](crate::stats::WireStats));
//! the admin side never touches the legacy sockets.
//!
//! # Layout
//!
//! | file | its one job |
//! |---|---|
//! | `mod.rs` | the [`router`] and the list of endpoints |
//! | `state.rs` | the configuration ([`AdminConfig`], [`AdminLimits`]) and the shared state ([`AdminState`]) |
//! | `routes.rs` | the table of endpoints the router is built from |
//! | `api.rs` | the JSON handlers: health, services, backends, picks, operator actions |
//! | `views.rs` | the JSON shapes, built from dispatcher snapshots (pure, `now` injected) |
//! | `auth.rs` | bearer tokens for the actions, compared in constant time |
//! | `guard.rs` | what every request must pass: the Host check, the limits on expensive reads |
//! | `error.rs` | [`ApiError`]: every refusal as a status and a JSON body |
//! | `metrics.rs` | the Prometheus collector that reads the dispatcher's counters on scrape |
//! | `openapi.rs` | the OpenAPI description of these endpoints |
//! | `dashboard.rs` | the web page and its script and style, embedded in the binary |
//! | `write_deadline.rs` | a stream whose writes fail once the client has taken nothing for a bound |
//! | `server.rs` | [`AdminServer`]: bind, accept within a cap, serve, graceful shutdown |
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), loadwise_server::admin::AdminError> {
//! use std::sync::Arc;
//! use loadwise_server::admin::{AdminConfig, AdminServer};
//! use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
//!
//! let dispatcher = Arc::new(Dispatcher::new(DispatchSettings::default()));
//! let config = AdminConfig { token: Some("s3cret".into()), ..AdminConfig::default() };
//! // Without a TCP server, its wire counters stay at zero.
//! let wire = Arc::default();
//! let server = AdminServer::bind("127.0.0.1:8524".parse().unwrap(), config, dispatcher, wire).await?;
//! println!("dashboard at http://{}/", server.local_addr());
//! server.run(async { tokio::signal::ctrl_c().await.unwrap() }).await;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod dashboard;
mod error;
mod guard;
mod metrics;
mod openapi;
mod routes;
mod server;
mod state;
mod views;
mod write_deadline;

pub use error::ApiError;
pub use server::{AdminError, AdminServer, SHUTDOWN_GRACE};
pub use state::{AdminConfig, AdminLimits, AdminState};

/// The admin HTTP API, metrics and dashboard, ready to serve or to call with
/// `tower::ServiceExt::oneshot`.
pub fn router(state: AdminState) -> axum::Router {
    routes::router(state)
}

/// Every `(method, path)` the [`router`] answers, paths in OpenAPI form
/// (`/v1/services/{service}/backends`); the OpenAPI document lists exactly these.
pub fn endpoints() -> Vec<(axum::http::Method, &'static str)> {
    routes::table().into_iter().map(|route| (route.method, route.path)).collect()
}

//! The admin side of the dispatcher: an HTTP API, Prometheus metrics and a live dashboard.
//!
//! Everything here reads or steers one [`Dispatcher`] shared with the TCP server; the
//! admin side never touches the legacy sockets.
//!
//! # Layout
//!
//! | file | its one job |
//! |---|---|
//! | `mod.rs` | the shared state ([`AdminState`]) and the [`router`] |
//! | `routes.rs` | the table of endpoints the router is built from |
//! | `api.rs` | the JSON handlers: health, services, backends, picks, operator actions |
//! | `views.rs` | the JSON shapes, built from dispatcher snapshots (pure, `now` injected) |
//! | `auth.rs` | bearer tokens for the actions, compared in constant time |
//! | `error.rs` | [`ApiError`]: every refusal as a status and a JSON body |
//! | `metrics.rs` | the Prometheus collector that reads the dispatcher's counters on scrape |
//! | `openapi.rs` | the OpenAPI description of these endpoints |
//! | `dashboard.rs` | the web page and its script and style, embedded in the binary |
//! | `server.rs` | [`AdminServer`]: bind, serve, graceful shutdown |
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
//! let config = AdminConfig { token: Some("s3cret".into()) };
//! let server = AdminServer::bind("127.0.0.1:8524".parse().unwrap(), config, dispatcher).await?;
//! println!("dashboard at http://{}/", server.local_addr());
//! server.run(async { tokio::signal::ctrl_c().await.unwrap() }).await;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod dashboard;
mod error;
mod metrics;
mod openapi;
mod routes;
mod server;
mod views;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

pub use error::ApiError;
pub use server::{AdminError, AdminServer, SHUTDOWN_GRACE};

use loadwise_core::dispatcher::Dispatcher;

/// How the admin side is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The bearer token that operator actions (drain, undrain, maintenance) must
    /// present. `None` (or an empty token) refuses every action.
    pub token: Option<String>,
}

/// What every admin handler shares: the dispatcher, the action token, readiness and
/// the metrics registry. Cloning is cheap and every clone sees the same state, so a
/// configuration reload can change the token while the server runs.
#[derive(Debug, Clone)]
pub struct AdminState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dispatcher: Arc<Dispatcher>,
    /// Replaced as a whole on reload; never held across an await.
    token: RwLock<Option<Arc<str>>>,
    /// Whether the dispatcher is serving; `/readyz` answers 503 while it is false.
    ready: Arc<AtomicBool>,
    metrics: prometheus_client::registry::Registry,
}

impl AdminState {
    /// State for `dispatcher`, ready by default.
    pub fn new(dispatcher: Arc<Dispatcher>, config: AdminConfig) -> Self {
        let metrics = metrics::registry(Arc::clone(&dispatcher));
        let shared = Shared {
            dispatcher,
            token: RwLock::new(usable_token(config.token)),
            ready: Arc::new(AtomicBool::new(true)),
            metrics,
        };
        AdminState { inner: Arc::new(shared) }
    }

    /// The dispatcher this state reads and steers.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.inner.dispatcher
    }

    /// Replaces the action token at run time; `None` or an empty token refuses actions.
    pub fn set_token(&self, token: Option<String>) {
        *self.inner.token.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = usable_token(token);
    }

    /// Whether operator actions are enabled (a token is configured).
    pub fn actions_enabled(&self) -> bool {
        self.token().is_some()
    }

    pub(crate) fn token(&self) -> Option<Arc<str>> {
        self.inner.token.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Marks the dispatcher as serving (`true`) or not, for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    /// The flag behind [`set_ready`](Self::set_ready), for code that would rather own it.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.ready)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn metrics(&self) -> &prometheus_client::registry::Registry {
        &self.inner.metrics
    }
}

/// An empty token would let an empty `Bearer` header through, so it disables actions.
fn usable_token(token: Option<String>) -> Option<Arc<str>> {
    token.filter(|token| !token.is_empty()).map(Arc::from)
}

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

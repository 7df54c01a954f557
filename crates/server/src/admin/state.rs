//! The admin side's configuration and the state every handler shares: the dispatcher,
//! the action token, readiness, the metrics registry and the limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::FromRef;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::metrics;
use crate::stats::WireStats;
use loadwise_core::dispatcher::Dispatcher;

/// How the admin side is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The bearer token that operator actions (drain, undrain, maintenance) must
    /// present. `None` (or an empty token) refuses every action.
    pub token: Option<String>,
    pub limits: AdminLimits,
    /// The names a request's Host header may carry (without port): a page of another
    /// site whose name was made to resolve to this address (DNS rebinding) sends its
    /// own name, and is refused; IP addresses always pass (rebinding needs a name).
    /// Empty checks nothing; `AdminServer::bind` adds the bound address's host and
    /// the loopback names.
    pub allowed_hosts: Vec<String>,
}

impl AdminConfig {
    /// The names that always reach a server bound to `addr`: its host (unless it is
    /// the unspecified address, which no client names), `localhost`, `127.0.0.1`, `[::1]`.
    pub fn with_default_hosts(mut self, addr: SocketAddr) -> Self {
        let mut defaults = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned()];
        if !addr.ip().is_unspecified() {
            defaults.push(match addr {
                SocketAddr::V4(addr) => addr.ip().to_string(),
                SocketAddr::V6(addr) => format!("[{}]", addr.ip()),
            });
        }
        for host in defaults {
            if !self.allowed_hosts.iter().any(|known| known.eq_ignore_ascii_case(&host)) {
                self.allowed_hosts.push(host);
            }
        }
        self
    }
}

/// What one admin client may take: connections, time, body size and expensive reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLimits {
    /// Connections open at once; further ones are closed as they are accepted (and
    /// counted). They hold descriptors the main listener also needs.
    pub max_connections: usize,
    /// A connection that has not sent a request's whole header this long after it
    /// was opened, or after its last response, is closed.
    pub header_read_timeout: Duration,
    /// A request not answered within this is answered 408.
    pub request_timeout: Duration,
    /// A connection whose client takes no bytes of a response for this long is
    /// closed: one that asks for a large list and stops reading holds a slot otherwise.
    pub write_timeout: Duration,
    /// The largest request body read; a longer one is answered 413.
    pub body_limit: usize,
    /// Backend and service lists built at once; a further one waits up to
    /// `busy_wait`, then is answered 503 with `Retry-After`.
    pub expensive_reads: usize,
    pub busy_wait: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            expensive_reads: 2,
            busy_wait: Duration::from_millis(500),
        }
    }
}

/// What every admin handler shares: the dispatcher, the action token, readiness and
/// the metrics registry. Cloning is cheap and every clone sees the same state, so a
/// configuration reload can change the token and the timeouts while the server runs.
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
    metrics: Arc<Registry>,
    /// The timeouts in it are replaced on reload; the sizes stay as at start. Never
    /// held across an await.
    limits: RwLock<AdminLimits>,
    /// Lower-case; empty checks nothing.
    allowed_hosts: Vec<String>,
    /// Permits for building backend and service lists.
    expensive_reads: Arc<Semaphore>,
    refused_connections: Counter,
    busy_refusals: Counter,
    write_timeouts: Counter,
}

impl AdminState {
    /// State for `dispatcher` and the wire counters of the server that feeds it
    /// ([`Server::wire_stats`](crate::Server::wire_stats)), ready by default.
    pub fn new(dispatcher: Arc<Dispatcher>, wire: Arc<WireStats>, config: AdminConfig) -> Self {
        let mut metrics = metrics::registry(Arc::clone(&dispatcher), wire);
        let (refused_connections, busy_refusals) = (Counter::default(), Counter::default());
        let write_timeouts = Counter::default();
        metrics.register(
            "admin_connections_refused",
            "Admin API connections closed on accept: admin_max_connections were open",
            refused_connections.clone(),
        );
        metrics.register(
            "admin_busy_refusals",
            "Admin API list requests answered 503: too many were being built at once",
            busy_refusals.clone(),
        );
        metrics.register(
            "admin_write_timeouts",
            "Admin API connections closed because their client took no response bytes for admin_write_timeout",
            write_timeouts.clone(),
        );
        let shared = Shared {
            dispatcher,
            token: RwLock::new(usable_token(config.token)),
            ready: Arc::new(AtomicBool::new(true)),
            metrics: Arc::new(metrics),
            expensive_reads: Arc::new(Semaphore::new(config.limits.expensive_reads.max(1))),
            limits: RwLock::new(config.limits),
            allowed_hosts: config.allowed_hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
            refused_connections,
            busy_refusals,
            write_timeouts,
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

    /// The limits in force: those the server was set up with, and the timeouts of
    /// the latest [`set_timeouts`](Self::set_timeouts).
    pub fn limits(&self) -> AdminLimits {
        self.inner.limits.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Takes up the header-read, request and write timeouts of `limits` at run time:
    /// from each connection's next accept (header read, write) or request. The
    /// connection cap and the list permits keep their sizes from the start.
    pub fn set_timeouts(&self, limits: &AdminLimits) {
        let mut current = self.inner.limits.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        current.header_read_timeout = limits.header_read_timeout;
        current.request_timeout = limits.request_timeout;
        current.write_timeout = limits.write_timeout;
    }

    pub(crate) fn allowed_hosts(&self) -> &[String] {
        &self.inner.allowed_hosts
    }

    pub(crate) fn expensive_reads(&self) -> &Arc<Semaphore> {
        &self.inner.expensive_reads
    }

    pub(crate) fn count_refused_connection(&self) {
        self.inner.refused_connections.inc();
    }

    /// The counter of connections closed for their write timeout, for their streams.
    pub(crate) fn write_timeouts(&self) -> Counter {
        self.inner.write_timeouts.clone()
    }

    pub(crate) fn count_busy_refusal(&self) {
        self.inner.busy_refusals.inc();
    }
}

/// An empty token would let an empty `Bearer` header through, so it disables actions.
fn usable_token(token: Option<String>) -> Option<Arc<str>> {
    token.filter(|token| !token.is_empty()).map(Arc::from)
}

/// The `/metrics` handler takes the registry alone, so that it needs nothing else of
/// the state.
impl FromRef<AdminState> for Arc<Registry> {
    fn from_ref(state: &AdminState) -> Self {
        Arc::clone(&state.inner.metrics)
    }
}

//! loadwise-server: the dispatcher's network side. The crate root is the TCP server:
//! it binds, accepts within the connection budgets, sweeps expired backends, and shuts
//! down gracefully; the decision itself is `loadwise-core`'s.
//!
//! Every connection is pending from its accept until its first heartbeat, login or
//! pick says what it is; backend, client and pending connections each have a budget
//! of their own (see `connection::budget`), and client and pending ones a cap per
//! peer address. A connection over the pending headroom or its peer's cap is closed
//! as it arrives.
//!
//! An optional second listener accepts TLS. Its connections share the budgets and
//! the connection ids with the plain ones, and once their handshake is done they are
//! served exactly alike: TLS is only the transport.
//!
//! Every task it spawns is tracked. On shutdown it stops accepting, lets each
//! connection answer what it has already read, and after a bounded grace period
//! stops whatever is left.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | crate root | the TCP server: bind, run, reload, graceful shutdown |
//! | `config` | what a server is started with, its defaults and checks, and why it could not start |
//! | `accept` | the listeners (plain and TLS), the accept loop under the budgets, TLS handshakes, and what a closed connection leaves behind |
//! | `sweep` | removing backends whose TTL has passed and ending ejections whose time is up, waking only when one may have |
//! | `connection` | the only code that reads and writes the dispatcher's sockets (with `budget`, the v2 `session` and the `legacy` rules) |
//! | `limits` | what each connection applies (timeouts, frame lengths, legacy doors, the v2 secret), and what a reload changes |
//! | `shared` | the state every connection task shares, and the rate-limited log of refusals |
//! | [`pick_answer`] | the core's pick outcome as the v2 and HTTP answers name a backend: its id, its endpoint, or the refusal's code |
//! | [`tls`] | the dispatcher's TLS settings: its certificate and key |
//! | [`netlist`] | lists of IP networks: who may send unauthenticated legacy heartbeats |
//! | `log_limit` | repeated warnings logged once per period |
//! | [`stats`] | the wire counters: connections by kind and outcome, protocol errors, v2 refusals |
//! | [`admin`] | the admin HTTP API, Prometheus metrics and the live dashboard |
#![forbid(unsafe_code)]

mod accept;
pub mod admin;
mod config;
mod connection;
mod limits;
mod log_limit;
pub mod netlist;
pub mod pick_answer;
mod shared;
pub mod stats;
mod sweep;
pub mod tls;

pub use accept::{LISTEN_BACKLOG, TLS_HANDSHAKE_TIMEOUT, listen};
pub use config::{
    DEFAULT_LISTEN, DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MAX_PENDING_CONNECTIONS, MAX_TICKET_LIFETIME, ServerConfig, ServerError, TlsListen,
};
pub use connection::legacy::legacy_report;
pub use limits::ConnectionLimits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{Listeners, TlsListener, accept_loop};
use crate::config::live_limits;
use crate::connection::budget::Budgets;
use crate::limits::LiveLimits;
use crate::log_limit::RateLimitedLog;
use crate::shared::Shared;
use crate::stats::WireStats;
use crate::sweep::sweep;
use loadwise_core::dispatcher::Dispatcher;
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::entropy::{self};

/// Changes a running server's settings (from [`Server::reload_handle`]).
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    dispatcher: Arc<Dispatcher>,
    limits: watch::Sender<LiveLimits>,
    budgets: Arc<Budgets>,
}

impl ReloadHandle {
    /// Applies every setting of `config` except `listen` and `tls` (the sockets stay
    /// bound, and the certificate read at start stays in use):
    /// the dispatcher's at once, connection limits from each connection's next frame,
    /// the budgets from the next accept or classification (closing nothing). Invalid
    /// settings are refused and the old ones stay.
    pub fn apply(&self, config: &ServerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.dispatcher.reconfigure(&config.dispatch);
        self.budgets.resize(config.budgets());
        self.limits.send_replace(live_limits(config));
        Ok(())
    }
}

/// At most one warning of each kind per period, however many peers misbehave.
const WARNING_PERIOD: Duration = Duration::from_secs(1);

/// The least time between two warnings about legacy heartbeats refused for their peer.
const DOOR_WARNING_PERIOD: Duration = Duration::from_secs(10);

/// A bound dispatcher, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    listeners: Listeners,
    limits: watch::Sender<LiveLimits>,
    dispatcher: Arc<Dispatcher>,
    wire: Arc<WireStats>,
    budgets: Arc<Budgets>,
}

impl Server {
    /// Validates `config`, reads the TLS certificate and key if there is a TLS
    /// listener, and binds the listen addresses. Fails if a port is taken: the
    /// sockets are not shared (no `SO_REUSEPORT`), so a second dispatcher cannot
    /// silently split the traffic.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        // Challenge nonces and ticket nonces need the system's randomness: better no
        // start than a panic on the first authenticated peer.
        entropy::check_os_randomness()?;
        // The files before any socket: nothing is bound only to be released again.
        let tls = match &config.tls {
            Some(settings) => Some((settings.listen, tls::server_config(&settings.cert, &settings.key)?)),
            None => None,
        };
        let bind = |addr| listen(addr).map_err(|error| ServerError::Bind { addr, error });
        let listener = bind(config.listen)?;
        let server = Server::with_listener(listener, config);
        match tls {
            Some((addr, tls_config)) => Ok(server.with_tls(bind(addr)?, tls_config)),
            None => Ok(server),
        }
    }

    /// Wraps an already bound listener; `config.listen` and `config.tls` are ignored
    /// (add a TLS listener with [`with_tls`](Self::with_tls)).
    pub fn with_listener(listener: TcpListener, config: ServerConfig) -> Server {
        let dispatcher = Arc::new(Dispatcher::new(config.dispatch.clone()));
        let wire = Arc::new(WireStats::default());
        let budgets = Budgets::new(config.budgets(), Arc::clone(&wire));
        let (limits, _) = watch::channel(live_limits(&config));
        Server { listeners: Listeners { plain: listener, tls: None }, limits, dispatcher, wire, budgets }
    }

    /// Also accepts TLS connections on `listener`, with `config` (from
    /// [`tls::server_config`]), within the same budgets.
    pub fn with_tls(mut self, listener: TcpListener, config: Arc<tls::rustls::ServerConfig>) -> Server {
        self.listeners.tls = Some(TlsListener { listener, config });
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.plain.local_addr()
    }

    /// The address the TLS listener actually bound, if there is one.
    pub fn tls_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.listeners.tls.as_ref().map(|tls| tls.listener.local_addr())
    }

    /// The live table, for inspection.
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        Arc::clone(&self.dispatcher)
    }

    /// The wire counters (connections, protocol errors, v2 refusals), which the
    /// admin API's metrics read with the dispatcher's own.
    pub fn wire_stats(&self) -> Arc<WireStats> {
        Arc::clone(&self.wire)
    }

    /// A handle that changes the settings while the server runs (for SIGHUP).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            dispatcher: Arc::clone(&self.dispatcher),
            limits: self.limits.clone(),
            budgets: Arc::clone(&self.budgets),
        }
    }

    /// Serves until `shutdown` completes, then drains gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listeners, limits, dispatcher, wire, budgets } = self;
        let shared = Arc::new(Shared {
            dispatcher,
            wire,
            limits: limits.subscribe(),
            shutdown: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            abort: CancellationToken::new(),
            protocol_error_log: RateLimitedLog::new(WARNING_PERIOD),
            refusal_log: RateLimitedLog::new(WARNING_PERIOD),
            door_log: RateLimitedLog::new(DOOR_WARNING_PERIOD),
            budgets,
            budget_log: RateLimitedLog::new(WARNING_PERIOD),
            next_connection: AtomicU64::new(1),
            wake_sweeper: Arc::new(tokio::sync::Notify::new()),
        });
        let tracker = TaskTracker::new();
        let wake = Arc::clone(&shared.wake_sweeper);
        tracker.spawn(sweep(Arc::clone(&shared.dispatcher), wake, shared.shutdown.clone()));
        listeners.log_addresses();
        tokio::select! {
            () = accept_loop(&listeners, &shared, &tracker) => {}
            () = shutdown => tracing::info!("shutting down: no longer accepting"),
        }
        drop(listeners);
        shared.stopping.store(true, Ordering::Release);
        shared.shutdown.cancel();
        tracker.close();
        let shutdown_grace = limits.borrow().shutdown_grace;
        if tokio::time::timeout(shutdown_grace, tracker.wait()).await.is_err() {
            tracing::warn!(grace = ?shutdown_grace, remaining = tracker.len(), "grace period over: closing remaining connections");
            shared.abort.cancel();
            tracker.wait().await;
        }
        let stats = shared.dispatcher.stats().snapshot();
        let wire = shared.wire.snapshot();
        tracing::info!(
            logins_answered = stats.logins_answered,
            logins_refused = stats.logins_no_backend + stats.logins_clock_skew,
            heartbeats = stats.heartbeats,
            connections_accepted = wire.connections_accepted,
            protocol_errors = wire.protocol_errors,
            "stopped"
        );
    }
}

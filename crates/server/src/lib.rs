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
//! | crate root | the TCP server: bind, accept under the budgets, sweep, reload, graceful shutdown |
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

pub mod admin;
mod connection;
mod limits;
mod log_limit;
pub mod netlist;
pub mod pick_answer;
mod shared;
pub mod stats;
pub mod tls;

pub use connection::legacy::legacy_report;
pub use limits::ConnectionLimits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connection::budget::{BudgetSizes, Budgets, Slot};
use crate::limits::LiveLimits;
use crate::log_limit::RateLimitedLog;
use crate::shared::{Shared, log_refusal};
use crate::stats::{CloseReason, WireStats, bump};
use crate::tls::TlsError;
use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::ConnectionId;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::entropy::{self, NoRandomness};
use loadwise_protocol::v2;
use loadwise_protocol::{Heartbeat, MAX_FRAME_LEN};

/// The dispatcher's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8523";

/// Everything `loadwise serve` can be told. Defaults are the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub dispatch: DispatchSettings,
    pub connection: ConnectionLimits,
    /// The most client connections open at once (those that have sent a login or
    /// a pick and no heartbeat); a further one gets the error reply and is closed.
    /// Backend connections have `dispatch.max_backends` as theirs.
    pub max_client_connections: usize,
    /// The most connections open at once that have not yet said what they are;
    /// further ones are closed as they arrive. They are short-lived (see
    /// `connection.first_frame_timeout`), so little headroom suffices.
    pub max_pending_connections: usize,
    /// The most client and pending connections open at once from one IP address,
    /// so that one host cannot fill the pending headroom or the client budget.
    pub max_connections_per_peer: usize,
    /// How long shutdown waits for connections to finish before stopping them.
    pub shutdown_grace: Duration,
    /// A second listener whose connections speak TLS; `None` for none.
    pub tls: Option<TlsListen>,
}

/// Where TLS connections are accepted, and the certificate they are served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub listen: SocketAddr,
    /// PEM file: the server certificate, then any intermediates.
    pub cert: std::path::PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("the default listen address parses"),
            dispatch: DispatchSettings::default(),
            connection: ConnectionLimits::default(),
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// The default client budget: with the default `max_backends` (10 000) and pending
/// headroom it fits a hard open-file limit of 20 000.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 8_192;

/// The default pending headroom. Legacy backends send their first heartbeat a
/// second after connecting, so this is also about how many may connect within one
/// second.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 1_024;

/// The default cap per peer address: room for many clients behind one NAT, which
/// connect once per login, yet a quarter of the pending headroom.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

impl ServerConfig {
    /// The size of each connection budget.
    pub fn budgets(&self) -> BudgetSizes {
        BudgetSizes {
            backends: self.dispatch.max_backends,
            clients: self.max_client_connections,
            pending: self.max_pending_connections,
            per_peer: self.max_connections_per_peer,
        }
    }

    /// Rejects settings that would make the dispatcher useless or unsafe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be greater than zero";
        ensure(!self.dispatch.ttl.is_zero(), "ttl", positive)?;
        ensure(self.dispatch.max_backends > 0, "max-backends", "must be at least 1")?;
        self.dispatch.load.validate()?;
        self.dispatch.validate_affinity()?;
        ensure(self.max_client_connections > 0, "max-client-connections", "must be at least 1")?;
        ensure(self.max_pending_connections > 0, "max-pending-connections", "must be at least 1")?;
        ensure(self.max_connections_per_peer > 0, "max-connections-per-peer", "must be at least 1")?;
        ensure(!self.connection.frame_timeout.is_zero(), "frame-timeout", positive)?;
        ensure(!self.connection.first_frame_timeout.is_zero(), "first-frame-timeout", positive)?;
        ensure(!self.connection.write_timeout.is_zero(), "write-timeout", positive)?;
        let idle_ok = self.connection.idle_timeout.is_none_or(|t| !t.is_zero());
        ensure(idle_ok, "idle-timeout", "must be greater than zero, or off")?;
        let whole_seconds = self.dispatch.max_clock_skew.subsec_nanos() == 0;
        ensure(whole_seconds, "max-clock-skew", "must be whole seconds (login timestamps are in seconds)")?;
        let frame_ok = usize::from(self.connection.max_frame_len) >= Heartbeat::LEN;
        let reason = format!("must be from {} (a heartbeat) to {MAX_FRAME_LEN}", Heartbeat::LEN);
        ensure(frame_ok, "max-frame-len", &reason)?;
        let v2_frame_ok = usize::from(self.connection.max_v2_frame_len) >= v2::MAX_MESSAGE_LEN;
        let reason =
            format!("must be from {} (the largest v2 message) to {MAX_FRAME_LEN}", v2::MAX_MESSAGE_LEN);
        ensure(v2_frame_ok, "max-v2-frame-len", &reason)?;
        // Port 0 twice is two ephemeral ports; any other port twice cannot be bound.
        let tls_apart =
            self.tls.as_ref().is_none_or(|tls| tls.listen.port() == 0 || tls.listen != self.listen);
        ensure(
            tls_apart,
            "tls-listen",
            "must differ from listen (one port speaks plain TCP, the other TLS)",
        )?;
        let lifetime = self.connection.ticket_lifetime;
        // A ticket is a pass to one backend; one valid for longer than a day outlives
        // any reason to hold it, and a leaked one would stay usable as long.
        let lifetime_ok = (Duration::from_secs(1)..=MAX_TICKET_LIFETIME).contains(&lifetime)
            && lifetime.subsec_nanos() == 0;
        ensure(
            lifetime_ok,
            "ticket-lifetime",
            "must be whole seconds, from 1 to 86400 (a day; tickets carry unix seconds)",
        )
    }
}

/// The longest a ticket may be valid for: a day.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(86_400);

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // The I/O error is part of the message rather than a `source`, so that the
    // hint follows it and error chains do not print it twice.
    #[error("cannot listen on {addr}: {error}{hint}", hint = bind_hint(error))]
    Bind { addr: SocketAddr, error: std::io::Error },
    /// The TLS certificate or key could not be used; the error names the file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Nonces for challenges and tickets cannot be drawn.
    #[error(transparent)]
    NoRandomness(#[from] NoRandomness),
}

fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => " (is another dispatcher already running on this port?)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

/// The settings of `config` a reload can change while connections stay open.
fn live_limits(config: &ServerConfig) -> LiveLimits {
    LiveLimits { connection: config.connection.clone(), shutdown_grace: config.shutdown_grace }
}

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

/// The most a TLS handshake may take; a lower `frame_timeout` or
/// `first_frame_timeout` bounds it further. A handshake is a few round trips, so
/// this is generous, and a peer that does not finish in time holds a pending slot
/// for nothing.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets the server accepts on.
#[derive(Debug)]
struct Listeners {
    plain: TcpListener,
    tls: Option<TlsListener>,
}

/// A listener whose connections begin with a TLS handshake.
#[derive(Debug)]
struct TlsListener {
    listener: TcpListener,
    config: Arc<tls::rustls::ServerConfig>,
}

/// What an accepted connection speaks over TCP.
enum Transport {
    Plain,
    Tls(TlsAcceptor),
}

impl Listeners {
    /// The next connection from either listener, and what it speaks. Cancel safe,
    /// as each listener's `accept` is.
    async fn accept(&self) -> (std::io::Result<(TcpStream, SocketAddr)>, Transport) {
        let Some(tls) = &self.tls else {
            return (self.plain.accept().await, Transport::Plain);
        };
        tokio::select! {
            accepted = self.plain.accept() => (accepted, Transport::Plain),
            accepted = tls.listener.accept() => {
                let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
                (accepted, Transport::Tls(acceptor))
            }
        }
    }

    /// Logs where the server listens, as it starts.
    fn log_addresses(&self) {
        if let Ok(addr) = self.plain.local_addr() {
            tracing::info!(%addr, "listening");
        }
        if let Some(Ok(addr)) = self.tls.as_ref().map(|tls| tls.listener.local_addr()) {
            tracing::info!(%addr, "listening for TLS");
        }
    }
}

/// Connections the kernel may hold established but not yet accepted. The usual
/// default (128, the standard library's) overflows when many clients connect at
/// once, and every connection it drops waits a second for its SYN to be resent.
/// The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for listening as `TcpListener::bind` does (`SO_REUSEADDR`, so a
/// restart need not wait for old connections to time out; no `SO_REUSEPORT`), with
/// an accept queue of [`LISTEN_BACKLOG`]. Must be called within a tokio runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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
        });
        let tracker = TaskTracker::new();
        tracker.spawn(sweep(Arc::clone(&shared.dispatcher), shared.shutdown.clone()));
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

/// Accepts from every listener within one set of budgets, numbering connections in
/// one sequence.
async fn accept_loop(listeners: &Listeners, shared: &Arc<Shared>, tracker: &TaskTracker) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (accepted, transport) = listeners.accept().await;
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                // Typically EMFILE/ENFILE: wait for descriptors to be released.
                let delay = backoff.next();
                tracing::error!(%error, ?delay, "accept failed; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let accepted_at = tokio::time::Instant::now();
        let slot = match shared.budgets.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                log_refusal(shared, peer, refusal);
                drop(stream);
                continue;
            }
        };
        bump(&shared.wire.connections_accepted);
        let id = shared.next_connection();
        let shared = Arc::clone(shared);
        tracker.spawn(async move {
            let mut open = OpenConnection::new(id, peer, slot, &shared);
            let accepted = connection::Accepted { peer, id, at: accepted_at };
            serve_connection(stream, transport, accepted, &shared, open.slot()).await;
        });
    }
}

/// Accounts for one open connection. Dropping it (when the task ends, panics or
/// is stopped) removes the connection's backend, frees its slot in the budgets and
/// updates the count, so nothing outlives the connection.
struct OpenConnection<'a> {
    id: ConnectionId,
    peer: SocketAddr,
    slot: Option<Slot>,
    shared: &'a Shared,
}

impl<'a> OpenConnection<'a> {
    fn new(id: ConnectionId, peer: SocketAddr, slot: Slot, shared: &'a Shared) -> Self {
        shared.wire.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { id, peer, slot: Some(slot), shared }
    }

    /// The connection's slot, which its frames classify.
    fn slot(&mut self) -> &mut Slot {
        self.slot.as_mut().expect("the slot is taken only on drop")
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        let (id, peer) = (self.id, self.peer);
        for (backend_number, backend) in self.shared.dispatcher.disconnect(id) {
            let service = self.shared.dispatcher.service_of(&backend);
            let address = backend.address();
            match &backend.v2 {
                Some(detail) => {
                    let backend_id = detail.backend_id;
                    tracing::info!(%service, backend = %address, id = %backend_number, backend_id, %peer, "backend removed: connection closed");
                }
                None => {
                    tracing::info!(%service, backend = %address, id = %backend_number, %peer, "backend removed: connection closed")
                }
            }
        }
        // The backend is gone before its slot is free, so that a backend taking the
        // slot does not find the table still full. The slot is released before the
        // count drops, so that a connection accepted once the count shows room is
        // never refused.
        drop(self.slot.take());
        self.shared.wire.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(
    stream: TcpStream,
    transport: Transport,
    accepted: connection::Accepted,
    shared: &Shared,
    slot: &mut Slot,
) {
    let peer = accepted.peer;
    // Replies are tiny and latency matters more than coalescing.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
    }
    let span =
        tracing::debug_span!("conn", id = accepted.id.0, %peer, tls = matches!(transport, Transport::Tls(_)));
    let serve = async {
        match transport {
            Transport::Plain => connection::serve(stream, accepted, shared, slot).await,
            Transport::Tls(acceptor) => match handshake(&acceptor, stream, shared).await {
                Ok(stream) => connection::serve(stream, accepted, shared, slot).await,
                Err(reason) => shared.wire.count_close(reason),
            },
        }
    };
    // A disabled span (the default, at info level) would still be entered and left
    // on every poll.
    if span.is_disabled() { serve.await } else { serve.instrument(span).await }
}

/// Completes the TLS handshake within [`handshake_timeout`]. A handshake that fails
/// or runs out of time (a peer speaking plain TCP to the TLS port, one trusting
/// another CA, one that stalls) closes this connection only, and is logged at
/// debug: any peer can cause it. Shutdown abandons a handshake at once, as nothing
/// is owed to the peer yet. A connection that ends here ends for the reason returned.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    shared: &Shared,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, CloseReason> {
    let timeout = handshake_timeout(&shared.limits.borrow().connection);
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, acceptor.accept(stream)) => outcome,
        () = shared.shutdown.cancelled() => {
            tracing::debug!("TLS handshake abandoned: shutting down");
            return Err(CloseReason::Shutdown);
        }
    };
    match outcome {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            Err(CloseReason::TlsHandshake)
        }
        Err(_) => {
            tracing::debug!(?timeout, "TLS handshake timed out");
            Err(CloseReason::TlsHandshake)
        }
    }
}

/// [`TLS_HANDSHAKE_TIMEOUT`], or the frame or first-frame timeout if shorter: a
/// handshake is bytes owed like an incomplete frame, and it comes before the first
/// frame, while the connection holds a pending slot.
fn handshake_timeout(limits: &ConnectionLimits) -> Duration {
    limits.frame_timeout.min(limits.first_frame_timeout).min(TLS_HANDSHAKE_TIMEOUT)
}

/// Removes expired backends in the background, sleeping until the next expiry so
/// an idle dispatcher does not wake up needlessly.
async fn sweep(dispatcher: Arc<Dispatcher>, shutdown: CancellationToken) {
    loop {
        let now = tokio::time::Instant::now();
        dispatcher.expire(now.into_std());
        // With no backend, nothing can expire sooner than one TTL from now. A TTL
        // too large to add to the clock means nothing ever expires.
        let wake = match dispatcher.next_expiry() {
            Some(expiry) => Some(tokio::time::Instant::from_std(expiry)),
            None => now.checked_add(dispatcher.ttl()),
        };
        let Some(wake) = wake else {
            shutdown.cancelled().await;
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Exponential delay between failed accepts: 10 ms doubling to 1 s.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(10) * 2u32.saturating_pow(self.failures.min(7));
        self.failures += 1;
        delay.min(Duration::from_secs(1))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<_> = (0..9).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(10));
    }

    #[test]
    fn default_config_is_valid_and_bad_settings_are_named() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
        let mut config = ServerConfig::default();
        config.connection.max_frame_len = 22;
        assert_eq!(config.validate().unwrap_err().setting, "max-frame-len");
        for (config, setting) in [
            (ServerConfig { max_client_connections: 0, ..ServerConfig::default() }, "max-client-connections"),
            (
                ServerConfig { max_pending_connections: 0, ..ServerConfig::default() },
                "max-pending-connections",
            ),
            (
                ServerConfig { max_connections_per_peer: 0, ..ServerConfig::default() },
                "max-connections-per-peer",
            ),
        ] {
            assert_eq!(config.validate().unwrap_err().setting, setting);
        }
        let mut config = ServerConfig::default();
        config.connection.first_frame_timeout = Duration::ZERO;
        assert_eq!(config.validate().unwrap_err().setting, "first-frame-timeout");
        let tls =
            |listen: &str| TlsListen { listen: listen.parse().unwrap(), cert: "c".into(), key: "k".into() };
        let listen = "127.0.0.1:8523".parse().unwrap();
        let config = ServerConfig { listen, tls: Some(tls("127.0.0.1:8523")), ..ServerConfig::default() };
        assert_eq!(config.validate().unwrap_err().setting, "tls-listen");
        let config = ServerConfig { listen, tls: Some(tls("127.0.0.1:8525")), ..ServerConfig::default() };
        assert_eq!(config.validate(), Ok(()));
        let ephemeral = "127.0.0.1:0".parse().unwrap();
        let config =
            ServerConfig { listen: ephemeral, tls: Some(tls("127.0.0.1:0")), ..ServerConfig::default() };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_handshake_is_bounded_by_the_first_frame_timeout() {
        let mut limits = ConnectionLimits::default();
        assert_eq!(handshake_timeout(&limits), Duration::from_secs(5));
        limits.first_frame_timeout = Duration::from_secs(60);
        assert_eq!(handshake_timeout(&limits), TLS_HANDSHAKE_TIMEOUT);
        limits.frame_timeout = Duration::from_secs(2);
        assert_eq!(handshake_timeout(&limits), Duration::from_secs(2));
    }
}

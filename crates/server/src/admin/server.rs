//! The admin HTTP server: bind, accept within a connection cap, serve each connection
//! with header-read and write timeouts, shut down gracefully within a bound.
//!
//! Connections are served by hyper directly rather than through `axum::serve`, which
//! has neither a cap nor a header-read timeout: an admin client that opens many
//! connections, or sends half a request on each, must not take the descriptors the
//! main listener needs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::routes::router;
use super::state::{AdminConfig, AdminLimits, AdminState};
use super::write_deadline::WriteDeadline;
use crate::log_limit::RateLimitedLog;
use crate::stats::WireStats;
use loadwise_core::dispatcher::Dispatcher;

/// How long shutdown waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After a failed accept (out of descriptors, most often), the loop waits this long
/// before the next: retrying at once would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen for the admin API on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
}

/// A bound admin server, ready to [`run`](AdminServer::run).
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AdminState,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free one) for `dispatcher` and the wire counters
    /// of its server. The names the Host header may carry are the configured ones plus
    /// the bound address's host and the loopback names.
    pub async fn bind(
        addr: SocketAddr,
        config: AdminConfig,
        dispatcher: Arc<Dispatcher>,
        wire: Arc<WireStats>,
    ) -> Result<AdminServer, AdminError> {
        let bind_error = |error| AdminError::Bind { addr, error };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let config = config.with_default_hosts(local_addr);
        Ok(AdminServer { listener, local_addr, state: AdminState::new(dispatcher, wire, config) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state, to change the token or readiness while the server runs.
    pub fn state(&self) -> AdminState {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish for at
    /// most [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let AdminServer { listener, local_addr, state } = self;
        tracing::info!(addr = %local_addr, "admin API listening");
        let slots = Arc::new(Semaphore::new(state.limits().max_connections));
        let app = router(state.clone());
        let graceful = GracefulShutdown::new();
        let accept_errors = RateLimitedLog::new(Duration::from_secs(1));
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        if let Some(held_back) = accept_errors.should_log(Instant::now()) {
                            tracing::warn!(%error, held_back, "admin API cannot accept a connection");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            // Over the cap the connection is closed at once: it holds a descriptor
            // only for the moment it takes to count it.
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                state.count_refused_connection();
                continue;
            };
            // The timeouts in force now: a reload changes them from the next connection.
            let limits = state.limits();
            let stream = WriteDeadline::new(stream, limits.write_timeout, state.write_timeouts());
            serve_connection(stream, slot, &app, &limits, &graceful);
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("admin API stopped"),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "admin API grace period over: dropping requests in flight"),
        }
    }
}

/// Serves one connection in a task of its own, which holds `slot` until it ends.
fn serve_connection(
    stream: WriteDeadline<TcpStream>,
    slot: OwnedSemaphorePermit,
    app: &axum::Router,
    limits: &AdminLimits,
    graceful: &GracefulShutdown,
) {
    let service = TowerToHyperService::new(app.clone());
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        // Timeouts and resets are routine for an HTTP server: not worth more than debug.
        if let Err(error) = connection.await {
            tracing::debug!(%error, "admin connection closed");
        }
        drop(slot);
    });
}

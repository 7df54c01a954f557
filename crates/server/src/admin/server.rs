//! The admin HTTP server: bind, serve the router, shut down gracefully within a bound.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{AdminConfig, AdminState, router};
use loadwise_core::dispatcher::Dispatcher;

/// How long shutdown waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// Binds `addr` (port 0 picks a free one) for `dispatcher`.
    pub async fn bind(
        addr: SocketAddr,
        config: AdminConfig,
        dispatcher: Arc<Dispatcher>,
    ) -> Result<AdminServer, AdminError> {
        let bind_error = |error| AdminError::Bind { addr, error };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(AdminServer { listener, local_addr, state: AdminState::new(dispatcher, config) })
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
        let (stopping, stopped) = oneshot::channel();
        let signal = async move {
            shutdown.await;
            let _ = stopping.send(());
        };
        let serve = axum::serve(listener, router(state)).with_graceful_shutdown(signal);
        let grace_over = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serve => match result {
                Ok(()) => tracing::info!("admin API stopped"),
                Err(error) => tracing::error!(%error, "admin API failed"),
            },
            () = grace_over => tracing::warn!(grace = ?SHUTDOWN_GRACE, "admin API grace period over: dropping requests in flight"),
        }
    }
}

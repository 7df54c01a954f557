//! Servers started inside the bench process, each on runtime threads of its own, so
//! their CPU time can be read apart from the bench's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::ceiling;
use super::error::BenchError;
use loadwise_core::dispatcher::{Dispatcher, StatsSnapshot};
use loadwise_server::stats::{WireSnapshot, WireStats};
use loadwise_server::{Server, ServerConfig};

/// Name of the in-process dispatcher's runtime threads.
pub const DISPATCHER_THREADS: &str = "lw-dispatcher";
/// Name of the in-process ceiling server's runtime threads.
pub const CEILING_THREADS: &str = "lw-ceiling";

/// A server running on its own runtime in this process.
#[derive(Debug)]
pub struct LocalServer {
    addr: SocketAddr,
    threads: &'static str,
    /// The dispatcher and its server's wire counters, if this is a dispatcher.
    dispatcher: Option<(Arc<Dispatcher>, Arc<WireStats>)>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    runtime: Option<Runtime>,
}

impl LocalServer {
    /// Starts a dispatcher with `config`, listening on `127.0.0.1:0`.
    pub async fn dispatcher(mut config: ServerConfig, threads: Option<usize>) -> Result<Self, BenchError> {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let runtime = runtime(DISPATCHER_THREADS, threads)?;
        let server = runtime.spawn(Server::bind(config)).await.expect("binding does not panic")?;
        let addr = server.local_addr().map_err(BenchError::Runtime)?;
        let dispatcher = Some((server.dispatcher(), server.wire_stats()));
        let stop = CancellationToken::new();
        let task = runtime.spawn(server.run(stop.clone().cancelled_owned()));
        Ok(LocalServer {
            addr,
            threads: DISPATCHER_THREADS,
            dispatcher,
            stop,
            task: Some(task),
            runtime: Some(runtime),
        })
    }

    /// Starts the no-logic ceiling server on `127.0.0.1:0`, answering with `replies`.
    pub async fn ceiling(threads: Option<usize>, replies: ceiling::Replies) -> Result<Self, BenchError> {
        let runtime = runtime(CEILING_THREADS, threads)?;
        // The same accept queue as the dispatcher's, for a fair comparison.
        let bind = runtime.spawn(async { loadwise_server::listen(SocketAddr::from(([127, 0, 0, 1], 0))) });
        let listener = bind.await.expect("binding does not panic").map_err(BenchError::Runtime)?;
        let addr = listener.local_addr().map_err(BenchError::Runtime)?;
        let stop = CancellationToken::new();
        let task = runtime.spawn(ceiling::serve(listener, replies, stop.clone()));
        Ok(LocalServer {
            addr,
            threads: CEILING_THREADS,
            dispatcher: None,
            stop,
            task: Some(task),
            runtime: Some(runtime),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name prefix of its runtime threads.
    pub fn threads(&self) -> &'static str {
        self.threads
    }

    /// The dispatcher's and its server's counters, if this is a dispatcher.
    pub fn stats(&self) -> Option<(StatsSnapshot, WireSnapshot)> {
        self.dispatcher.as_ref().map(|(d, wire)| (d.stats().snapshot(), wire.snapshot()))
    }

    /// Shuts the server down, waits for it, and stops its runtime.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // The dispatcher drains within its grace period; do not wait longer.
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Does not block, so it is safe inside the caller's runtime.
            runtime.shutdown_background();
        }
    }
}

fn runtime(name: &'static str, threads: Option<usize>) -> Result<Runtime, BenchError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder.thread_name(name).on_thread_start(quiet_logs).enable_all().build().map_err(BenchError::Runtime)
}

/// In-process servers log warnings only (unless `RUST_LOG` says otherwise): a line
/// per registered backend would drown the bench's own output.
fn quiet_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).finish();
    // Dropping the guard would restore the process-wide subscriber; the runtime
    // thread keeps this one for its whole life instead.
    std::mem::forget(tracing::subscriber::set_default(subscriber));
}

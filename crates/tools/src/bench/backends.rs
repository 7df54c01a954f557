//! Fake backends: each on its own connection, registered before the load starts and
//! heart-beating with a changing load every interval until the run ends, in the run's
//! protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::outcome::ErrorKind;
use super::register;
use super::wire::{BackendFrames, Wire};

/// Registrations in progress at once. A backend counts against its address's cap of
/// client and pending connections until its first heartbeat is read, and the fake
/// ones all come from one address: half the dispatcher's default cap (256).
const PARALLEL_REGISTRATIONS: usize = 128;

/// What the fake backends did during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendsReport {
    /// Backends registered (each confirmed by a login, v2 a pick, on its connection).
    pub registered: u64,
    /// Logins (v2: picks) sent to confirm registrations (one per backend; the server
    /// counts them).
    pub setup_logins: u64,
    /// Heartbeats written, the registering ones included.
    pub heartbeats_sent: u64,
    /// Backends whose connection failed during the run.
    pub lost: u64,
}

/// A registration that failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fake backend {index} could not register: {kind}")]
pub struct RegistrationFailed {
    pub index: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Default)]
struct Counters {
    heartbeats_sent: AtomicU64,
    lost: AtomicU64,
}

/// The running fake backends. [`stop`](Self::stop) ends every one of their tasks.
#[derive(Debug)]
pub struct FakeBackends {
    registered: u64,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl FakeBackends {
    /// Registers `n` backends at `addr`, speaking `wire`, and keeps them
    /// heart-beating every `interval`.
    pub async fn start(
        addr: SocketAddr,
        wire: &Wire,
        n: usize,
        interval: Duration,
        timeout: Duration,
    ) -> Result<FakeBackends, RegistrationFailed> {
        let backends = FakeBackends {
            registered: 0,
            counters: Arc::default(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        backends.register_all(addr, wire, n, interval, timeout).await
    }

    async fn register_all(
        mut self,
        addr: SocketAddr,
        wire: &Wire,
        n: usize,
        interval: Duration,
        timeout: Duration,
    ) -> Result<FakeBackends, RegistrationFailed> {
        let mut pending = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < n || !pending.is_empty() {
            while next < n && pending.len() < PARALLEL_REGISTRATIONS {
                let (index, wire) = (next, wire.clone());
                pending.spawn(async move { (index, register::backend(addr, index, &wire, timeout).await) });
                next += 1;
            }
            let Some(joined) = pending.join_next().await else { break };
            let (index, result) = joined.expect("a registration task does not panic");
            let (stream, frames) = result.map_err(|kind| RegistrationFailed { index, kind })?;
            self.registered += 1;
            self.counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            let beat = Beat { index, n, interval, counters: Arc::clone(&self.counters) };
            self.tracker.spawn(beat.run(stream, frames, self.stop.clone()));
        }
        Ok(self)
    }

    /// What the backends did so far.
    pub fn report(&self) -> BackendsReport {
        BackendsReport {
            registered: self.registered,
            setup_logins: self.registered,
            heartbeats_sent: self.counters.heartbeats_sent.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
        }
    }

    /// Stops every backend and closes its connection.
    pub async fn stop(self) -> BackendsReport {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.report()
    }
}

impl Drop for FakeBackends {
    fn drop(&mut self) {
        // Tasks end at their next wake-up even if `stop` was never awaited.
        self.stop.cancel();
    }
}

/// One backend's heartbeat loop.
struct Beat {
    index: usize,
    n: usize,
    interval: Duration,
    counters: Arc<Counters>,
}

impl Beat {
    async fn run(self, mut stream: TcpStream, mut frames: BackendFrames, stop: CancellationToken) {
        // Spread the backends over one interval so their heartbeats do not coincide;
        // the registering heartbeat was just sent, so the first is up to one later.
        let phase = self.interval.mul_f64((self.index + 1) as f64 / self.n as f64);
        let mut next = Instant::now() + phase;
        for tick in 1.. {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = stop.cancelled() => return,
            }
            let frame = frames.heartbeat(tick);
            if !matches!(tokio::time::timeout(self.interval, stream.write_all(frame)).await, Ok(Ok(()))) {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            next += self.interval;
        }
    }
}

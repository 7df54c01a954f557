//! The state every connection task of one server shares, and the rate-limited log of
//! connections refused for a budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::connection::budget::Budgets;
use crate::limits::LiveLimits;
use crate::log_limit::RateLimitedLog;
use crate::stats::{ConnectionRefusal, WireStats};
use loadwise_core::dispatcher::Dispatcher;
use loadwise_core::model::ConnectionId;

/// State every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dispatcher: Arc<Dispatcher>,
    /// What the sockets count: connections, protocol errors, v2 refusals.
    pub wire: Arc<WireStats>,
    /// The connection limits in force; each connection follows changes between frames.
    pub limits: watch::Receiver<LiveLimits>,
    /// Cancelled to begin a graceful shutdown: stop reading, answer, close.
    pub shutdown: CancellationToken,
    /// Set just before `shutdown` is cancelled. A connection reads it at every
    /// wake-up, which costs a load, where the token's state is behind a mutex.
    pub stopping: AtomicBool,
    /// Cancelled when the grace period is over: stop at once.
    pub abort: CancellationToken,
    /// Limits warnings about protocol errors, which any peer can cause.
    pub protocol_error_log: RateLimitedLog,
    /// Limits warnings about refused heartbeats.
    pub refusal_log: RateLimitedLog,
    /// Limits warnings about legacy heartbeats from outside the allowed networks: the
    /// first, then one every `DOOR_WARNING_PERIOD` (10 s) with the count held back, since a
    /// misconfigured fleet sends them every second per backend.
    pub door_log: RateLimitedLog,
    /// The connection budgets, which every connection's slot belongs to.
    pub budgets: Arc<Budgets>,
    /// Limits warnings about connections refused for a budget or closed unclassified.
    pub budget_log: RateLimitedLog,
    /// The number the next accepted connection gets.
    pub next_connection: AtomicU64,
    /// Wakes the sweeper when an ejection begins: its end is a new deadline, which
    /// may come before the one the sweeper sleeps until.
    pub wake_sweeper: Arc<Notify>,
}

impl Shared {
    /// A number for a newly accepted connection: never handed out twice.
    pub fn next_connection(&self) -> ConnectionId {
        ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed))
    }
}

/// Logs a connection refused for a budget or closed unclassified, at most once a
/// period across all connections: any peer can cause it. (It is counted by the budgets.)
pub(crate) fn log_refusal(shared: &Shared, peer: SocketAddr, refusal: ConnectionRefusal) {
    if let Some(suppressed) = shared.budget_log.should_log(Instant::now()) {
        tracing::warn!(%peer, reason = refusal.name(), suppressed, "connection refused: {}", refusal.describe());
    }
}

//! The server's wire counters: connections by kind, outcome and close reason, protocol
//! errors and v2 refusals; lock-free atomics, read as a snapshot or scraped.
//!
//! The decision's own counters (heartbeats, picks, evictions, pick latency) are the
//! core's ([`loadwise_core::dispatcher::Stats`]); these are what only the sockets see.

use std::sync::atomic::{AtomicU64, Ordering};

mod failures;

pub use failures::{FailureSnapshot, FailureStats, ReportVerdict};
pub use loadwise_core::dispatcher::bump;
use loadwise_protocol::v2::ErrorCode;

/// Counters of what the server's sockets have seen since it started.
#[derive(Debug, Default)]
pub struct WireStats {
    /// Legacy heartbeats (and unauthenticated v2 ones) from peers outside the allowed
    /// networks (also counted in the core's `refused_heartbeats`).
    pub heartbeats_not_allowed: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub skipped_frames: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Connections closed as they arrived: the peer's cap or the pending headroom
    /// was full (also counted by reason in `connection_refusals`).
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
    /// Connections open now, by kind: index [`ConnectionKind::index`].
    pub connections_by_kind: [AtomicU64; ConnectionKind::ALL.len()],
    /// Connections refused or closed for a budget, by reason: index
    /// [`ConnectionRefusal::index`].
    pub connection_refusals: [AtomicU64; ConnectionRefusal::ALL.len()],
    /// Accepted connections that have ended, by why: index [`CloseReason::index`].
    /// Each accepted connection ends once, so these and `connections_open` add up to
    /// `connections_accepted`.
    pub connections_closed: [AtomicU64; CloseReason::ALL.len()],
    /// v2 Registers accepted.
    pub v2_registrations: AtomicU64,
    /// v2 refusals sent (Error messages and failed PickReplies), by code: index 1 is
    /// code 1, and so on; the last counts codes this version does not know.
    pub v2_refusals: [AtomicU64; V2_REFUSAL_SLOTS],
    /// Clients' failure reports and the ejections they made.
    pub failures: FailureStats,
}

/// A point-in-time copy of [`WireStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireSnapshot {
    pub heartbeats_not_allowed: u64,
    pub protocol_errors: u64,
    pub skipped_frames: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_open: u64,
    pub connections_by_kind: [u64; ConnectionKind::ALL.len()],
    pub connection_refusals: [u64; ConnectionRefusal::ALL.len()],
    pub connections_closed: [u64; CloseReason::ALL.len()],
    pub v2_registrations: u64,
    pub v2_refusals: [u64; V2_REFUSAL_SLOTS],
    pub failures: FailureSnapshot,
}

/// One counter per v2 error code, 1 to 15, and one for any other code.
pub const V2_REFUSAL_SLOTS: usize = 17;

/// What an open connection is, by the first frame that said so. Each kind has a
/// budget of its own (see `connection::budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    /// Accepted, and not yet classified by a heartbeat, a login or a pick.
    Pending,
    /// Has sent a login or a v2 PickRequest, and no heartbeat.
    Client,
    /// Has sent a heartbeat (or a v2 Register); stays one until it closes.
    Backend,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 3] =
        [ConnectionKind::Pending, ConnectionKind::Client, ConnectionKind::Backend];

    /// Its index in per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectionKind::Pending => "pending",
            ConnectionKind::Client => "client",
            ConnectionKind::Backend => "backend",
        }
    }
}

/// Why a connection was refused, or closed before it said what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionRefusal {
    /// At accept: the peer's address already holds as many client and pending
    /// connections as `max_connections_per_peer` allows.
    PeerLimit,
    /// At accept: the pending headroom (`max_pending_connections`) is full.
    PendingLimit,
    /// At its first login or pick: the client budget is full.
    ClientLimit,
    /// At its first heartbeat or Register: the backend budget (`max_backends`) is full.
    BackendLimit,
    /// Sent nothing that classifies it within `first_frame_timeout`.
    FirstFrameTimeout,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 5] = [
        ConnectionRefusal::PeerLimit,
        ConnectionRefusal::PendingLimit,
        ConnectionRefusal::ClientLimit,
        ConnectionRefusal::BackendLimit,
        ConnectionRefusal::FirstFrameTimeout,
    ];

    /// Its index in per-reason arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectionRefusal::PeerLimit => "peer_limit",
            ConnectionRefusal::PendingLimit => "pending_limit",
            ConnectionRefusal::ClientLimit => "client_limit",
            ConnectionRefusal::BackendLimit => "backend_limit",
            ConnectionRefusal::FirstFrameTimeout => "first_frame_timeout",
        }
    }

    /// What happened, for logs.
    pub const fn describe(self) -> &'static str {
        match self {
            ConnectionRefusal::PeerLimit => {
                "the peer holds max_connections_per_peer client and pending connections"
            }
            ConnectionRefusal::PendingLimit => {
                "max_pending_connections connections are waiting for their first frame"
            }
            ConnectionRefusal::ClientLimit => "max_client_connections client connections are open",
            ConnectionRefusal::BackendLimit => "max_backends backend connections are open",
            ConnectionRefusal::FirstFrameTimeout => "no heartbeat, login or pick within first_frame_timeout",
        }
    }
}

/// Why an accepted connection ended: one of a small fixed set, so that routine closes
/// are counted rather than logged one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer closed it cleanly, between frames.
    PeerClosed,
    /// It failed: reset by the peer, or another I/O error.
    PeerReset,
    /// A malformed frame (or one left incomplete at the peer's close).
    ProtocolError,
    /// It did no work for `idle_timeout`.
    IdleTimeout,
    /// It held an incomplete frame for `frame_timeout`.
    FrameTimeout,
    /// Its peer did not take the replies for `write_timeout`.
    WriteTimeout,
    /// It said nothing that classifies it within `first_frame_timeout`.
    FirstFrameTimeout,
    /// Its first heartbeat, login or pick found its kind's budget full.
    Budget,
    /// A v2 refusal that ends the session (a failed authentication, a wrong identity).
    Refused,
    /// Its TLS handshake failed or took too long.
    TlsHandshake,
    /// The dispatcher shut down.
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
        CloseReason::PeerClosed,
        CloseReason::PeerReset,
        CloseReason::ProtocolError,
        CloseReason::IdleTimeout,
        CloseReason::FrameTimeout,
        CloseReason::WriteTimeout,
        CloseReason::FirstFrameTimeout,
        CloseReason::Budget,
        CloseReason::Refused,
        CloseReason::TlsHandshake,
        CloseReason::Shutdown,
    ];

    /// Its index in per-reason arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerReset => "peer_reset",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::FrameTimeout => "frame_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::FirstFrameTimeout => "first_frame_timeout",
            CloseReason::Budget => "budget",
            CloseReason::Refused => "refused",
            CloseReason::TlsHandshake => "tls_handshake",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

impl WireStats {
    pub fn snapshot(&self) -> WireSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WireSnapshot {
            heartbeats_not_allowed: get(&self.heartbeats_not_allowed),
            protocol_errors: get(&self.protocol_errors),
            skipped_frames: get(&self.skipped_frames),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_open: get(&self.connections_open),
            connections_by_kind: std::array::from_fn(|kind| get(&self.connections_by_kind[kind])),
            connection_refusals: std::array::from_fn(|reason| get(&self.connection_refusals[reason])),
            connections_closed: std::array::from_fn(|reason| get(&self.connections_closed[reason])),
            v2_registrations: get(&self.v2_registrations),
            v2_refusals: std::array::from_fn(|slot| get(&self.v2_refusals[slot])),
            failures: self.failures.snapshot(),
        }
    }

    /// Counts a v2 refusal sent with `code`.
    pub fn count_v2_refusal(&self, code: ErrorCode) {
        let slot = usize::from(code.get()).min(V2_REFUSAL_SLOTS - 1);
        bump(&self.v2_refusals[slot]);
    }

    /// Counts an accepted connection that ended for `reason`.
    pub fn count_close(&self, reason: CloseReason) {
        bump(&self.connections_closed[reason.index()]);
    }

    /// Counts a connection refused or closed for `reason`.
    pub fn count_connection_refusal(&self, reason: ConnectionRefusal) {
        bump(&self.connection_refusals[reason.index()]);
        if matches!(reason, ConnectionRefusal::PeerLimit | ConnectionRefusal::PendingLimit) {
            bump(&self.connections_refused);
        }
    }
}

impl WireSnapshot {
    /// How many v2 refusals were sent with `code`.
    pub fn v2_refusals_with(&self, code: ErrorCode) -> u64 {
        self.v2_refusals[usize::from(code.get()).min(V2_REFUSAL_SLOTS - 1)]
    }

    /// How many connections of `kind` are open.
    pub fn open(&self, kind: ConnectionKind) -> u64 {
        self.connections_by_kind[kind.index()]
    }

    /// How many connections were refused or closed for `reason`.
    pub fn refused(&self, reason: ConnectionRefusal) -> u64 {
        self.connection_refusals[reason.index()]
    }

    /// How many accepted connections ended for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.connections_closed[reason.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_at_accept_are_also_connections_refused() {
        let stats = WireStats::default();
        for reason in ConnectionRefusal::ALL {
            stats.count_connection_refusal(reason);
        }
        let snapshot = stats.snapshot();
        assert!(ConnectionRefusal::ALL.iter().all(|&reason| snapshot.refused(reason) == 1));
        assert_eq!(snapshot.connections_refused, 2, "the peer and pending limits only");
    }

    #[test]
    fn close_reasons_have_distinct_names_and_their_own_counters() {
        let names: std::collections::BTreeSet<_> = CloseReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), CloseReason::ALL.len());
        assert!(names.iter().all(|name| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        let stats = WireStats::default();
        for (count, &reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), count);
            (0..=count).for_each(|_| stats.count_close(reason));
        }
        let snapshot = stats.snapshot();
        for (count, &reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(snapshot.closed(reason), count as u64 + 1, "{reason:?}");
        }
    }

    #[test]
    fn v2_refusals_are_counted_by_code_and_unknown_codes_together() {
        let stats = WireStats::default();
        stats.count_v2_refusal(ErrorCode::BUSY);
        stats.count_v2_refusal(ErrorCode::new(999).unwrap());
        stats.count_v2_refusal(ErrorCode::new(16).unwrap());
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.v2_refusals_with(ErrorCode::BUSY), 1);
        assert_eq!(snapshot.v2_refusals[V2_REFUSAL_SLOTS - 1], 2);
    }
}

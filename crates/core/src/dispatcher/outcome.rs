//! What applying a heartbeat or an operator action did, or why it did nothing.

use crate::registry::{BackendId, RegistryFull};
use crate::slots::LeaseAnswer;
use loadwise_protocol::v2::ServiceName;

/// Why a legacy heartbeat registered nothing. (One with an unusable address never
/// reaches the core: its session refuses it.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatRefused {
    #[error(transparent)]
    Full(#[from] RegistryFull),
}

/// What an accepted heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAccepted {
    /// The backend the heartbeat is from.
    pub id: BackendId,
    /// The heartbeat registered a backend that was not in the table.
    pub registered: bool,
    /// The first report above 100 from this backend (to be logged once).
    pub first_invalid_report: bool,
}

/// An operator action named a backend that is not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no backend {0} is registered")]
pub struct UnknownBackend(pub BackendId);

/// Why a v2 heartbeat registered nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V2HeartbeatRefused {
    /// The default service is shared with legacy clients, whose replies hold an
    /// address as at most 15 characters of text.
    #[error(
        "the default service {service} is shared with legacy clients: its backends' address must fit in 15 characters (an IPv4 address, or a short IPv6 address or host name)"
    )]
    LegacyAddress { service: ServiceName },
    #[error(transparent)]
    Full(#[from] RegistryFull),
}

/// What an accepted v2 heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V2HeartbeatAccepted {
    /// The dispatcher's id of the backend.
    pub id: BackendId,
    /// The heartbeat registered a backend that was not in the table.
    pub registered: bool,
    /// The load its service's scoring made; `None` when a figure was missing.
    pub score: Option<f64>,
    /// For a slot backend, the LeaseReport its connection is owed.
    pub lease: Option<LeaseAnswer>,
}

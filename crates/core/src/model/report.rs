//! A heartbeat as the core sees it: who sent it, where its clients go, how loaded it
//! is and what it says of itself, whatever protocol carried it.

use std::num::NonZeroU16;

use loadwise_protocol::v2::ServiceName;

use super::endpoint::Endpoint;
use super::key::BackendKey;
use super::load::{Load, Metrics};
use super::state::State;

/// One heartbeat, translated by the session that decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Who sent it.
    pub key: BackendKey,
    /// Where its clients go; `None` for a legacy backend, whose address is its name
    /// and is read as an endpoint only when a client asks for one.
    pub endpoint: Option<Endpoint>,
    /// Its load, scored by its service.
    pub load: Load,
    /// Its relative capacity; 100 is the norm.
    pub weight: NonZeroU16,
    /// What it says of itself: draining, maintenance; legacy backends are ready.
    pub state: State,
}

/// The weight of a backend that states none.
pub const DEFAULT_WEIGHT: NonZeroU16 = NonZeroU16::new(100).expect("100 is not zero");

impl Report {
    /// A legacy heartbeat: a name, a load, nothing else.
    pub fn legacy(key: BackendKey, load: Load) -> Report {
        Report { key, endpoint: None, load, weight: DEFAULT_WEIGHT, state: State::Ready }
    }
}

/// A v2 heartbeat, translated by the session that decoded it: who sent it, where its
/// clients connect, its figures and what it says of itself. Its service's scoring
/// makes a [`Load`] of the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Report {
    /// The service it named.
    pub service: ServiceName,
    /// The id it chose: unique in its service, kept across reconnects.
    pub backend_id: u64,
    /// Where its clients connect.
    pub endpoint: Endpoint,
    /// Its figures, with the precision they were sent in.
    pub metrics: Metrics,
    /// Its relative capacity; 100 is the norm.
    pub weight: NonZeroU16,
    /// What it says of itself: ready, draining, maintenance.
    pub state: State,
}

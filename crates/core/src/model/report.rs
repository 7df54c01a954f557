//! A heartbeat as the core sees it: who sent it, where its clients go, how loaded it
//! is and what it says of itself, whatever protocol carried it.

use std::num::NonZeroU16;

use super::endpoint::Endpoint;
use super::key::BackendKey;
use super::load::Load;
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

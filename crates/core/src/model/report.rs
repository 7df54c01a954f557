//! A heartbeat as the core sees it: who sent it, where its clients go, how loaded it
//! is and what it says of itself, whatever protocol carried it.

use std::num::NonZeroU16;

use loadwise_protocol::v2::ServiceName;

use super::endpoint::Endpoint;
use super::key::LegacyName;
use super::load::{Load, Metrics};
use super::state::{Health, State};

/// A legacy heartbeat, translated by the session that decoded it and checked there:
/// the backend's name, which is also what its clients are sent (the bytes echoed
/// verbatim), and its load. Nothing else: a legacy backend is ready and of the
/// default weight, in the default service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegacyReport {
    pub name: LegacyName,
    /// `mem` as a percent; above 100 it is [`Load::Invalid`].
    pub load: Load,
}

/// The weight of a backend that states none.
pub const DEFAULT_WEIGHT: NonZeroU16 = NonZeroU16::new(100).expect("100 is not zero");

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
    /// What its own checks say.
    pub health: Health,
    /// Its places and this dispatcher's grant, if it has capacity slots.
    pub slots: Option<SlotReport>,
}

/// A slot backend's places and the grant its heartbeat gives this dispatcher: the
/// clients it may have sent there, in all, on the heartbeat's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotReport {
    pub capacity: u32,
    pub in_use: u32,
    pub grant_seq: u32,
    pub grant_total: u64,
}

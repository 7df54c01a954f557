//! loadwise-core: the decision. Who is alive, how loaded each backend is, and who gets
//! the next client; no I/O, with `now` and the RNG injected.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`model`] | the core's own types: backend identity, endpoint, load, state and its causes, report, pick request and outcome |
//! | [`affinity`] | sticky picks: the consistent-hash ring of a key's backends, and the load bound (no I/O) |
//! | [`registry`] | who is alive: backends, their last report, TTL expiry (no I/O, `now` injected) |
//! | [`ejection`] | outlier ejection: failure reports from distinct clients that were sent to a backend take it out for a while (no I/O, `now` injected) |
//! | [`scoring`] | how a v2 backend's metrics combine into one load (per service) |
//! | [`selection`] | who gets picked: effective load, the policies, slow start (no I/O) |
//! | [`slots`] | capacity slots, the dispatcher's side: each slot backend's grant and the clients sent on it; picks in slot services by free places (no I/O) |
//! | [`dispatcher`] | registry and selection kept in step under one lock; the one pick entry point ([`dispatcher::Dispatcher::pick`]), services, which connections carry which backends (`dispatcher/carriers.rs`), stats, and operators' holds of departed backends (`dispatcher/holds.rs`) |
//!
//! The pick is asked and answered in the core's own terms ([`model::PickRequest`],
//! [`model::PickOutcome`]); each protocol session of `loadwise-server` encodes the
//! outcome in its own wire format, and translates heartbeats into the core's reports
//! ([`model::LegacyReport`], [`model::V2Report`]). `tests/no_wire_types.rs` keeps the
//! protocol's wire structs out of the core's sources.
//!
//! A backend is not its connection: it is named by its service and what it brings
//! ([`model::BackendKey`]: a v2 backend's chosen id, a legacy backend's address bytes
//! and port), numbered by the dispatcher ([`model::BackendId`]) apart from the
//! connections that carry it ([`model::ConnectionId`]), and it leaves when the last of
//! them closes or its TTL passes.
#![forbid(unsafe_code)]

pub mod affinity;
pub mod dispatcher;
pub mod ejection;
pub mod model;
pub mod registry;
pub mod scoring;
pub mod selection;
pub mod slots;

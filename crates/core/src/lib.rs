//! loadwise-core: the decision. Who is alive, how loaded each backend is, and who gets
//! the next client; no I/O, with `now` and the RNG injected.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`affinity`] | sticky picks: the consistent-hash ring of a key's backends, and the load bound (no I/O) |
//! | [`registry`] | who is alive: backends, their last report, TTL expiry (no I/O, `now` injected) |
//! | [`scoring`] | how a v2 backend's metrics combine into one load (per service) |
//! | [`selection`] | who gets picked: effective load, the policies, slow start (no I/O) |
//! | [`dispatcher`] | registry and selection kept in step under one lock; answers logins, services, stats |
#![forbid(unsafe_code)]

pub mod affinity;
pub mod dispatcher;
pub mod registry;
pub mod scoring;
pub mod selection;

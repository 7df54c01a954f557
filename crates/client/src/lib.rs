//! loadwise-client: the client side. Ask a dispatcher for a backend with one login, read
//! one reply (legacy, [`pick`]; or v2 for a named service, [`pick_service`]); or ask
//! several replicas in turn ([`Failover`]), given or found in DNS ([`discover`]). Each
//! has a form that can speak TLS ([`pick_over`], [`pick_service_over`],
//! [`FailoverConfig::tls`]). Or have it pick and connect for you ([`connect()`]):
//! a backend that cannot be reached is reported to the dispatcher and another is
//! asked for, a bounded number of times.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | crate root | re-exports only |
//! | `single` | one login, one reply: [`pick`], [`pick_service`] and their TLS forms |
//! | `failover` | several dispatchers in turn, within one deadline: [`Failover`] |
//! | [`mod@connect`] | pick, connect within a deadline, report a failure and pick again: [`connect()`], [`report_failure`] |
//! | [`dial`] | outgoing connections: resolve a name, try each address, TLS on top when asked |
//! | [`discover`] | replica sets published in DNS: `dns:NAME:PORT` and `dns+srv:NAME`, followed with a grace period |
//! | [`tls`] | the peers' TLS settings: the CA they trust dispatchers by, the name they expect |
#![forbid(unsafe_code)]

pub mod connect;
pub mod dial;
pub mod discover;
mod failover;
mod single;
pub mod tls;

pub use connect::{
    BackendAttempt, BackendError, ConnectError, ConnectOptions, Connected, connect, failure_reason,
    report_failure,
};
pub use failover::{Answer, Attempt, Failover, FailoverConfig, FailoverError, SetupError, attempt_order};
pub use single::{
    Assigned, PickError, pick, pick_keyed_over, pick_over, pick_service, pick_service_over,
    pick_with_timestamp, read_reply,
};

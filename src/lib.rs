//! loadwise: a load-aware dispatcher that sends each new client to the backend with
//! the most room, and a drop-in replacement for the C++ LoadBanceServer.
//!
//! Backends run an [agent] that keeps one TCP connection to each dispatcher replica
//! and sends a heartbeat with its address and memory use every second. A dispatcher
//! keeps a live table of backends, removes those that disconnect or fall silent, and answers
//! each client's login with the `ip:port` of the least-loaded backend. Clients use
//! the [client] module, which fails over between replicas (or any program speaking
//! the legacy protocol).
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`protocol`] | the wire formats, legacy and v2: frame header, message kinds, pure parse and encode |
//! | [`ticket`] | signed, short-lived admission tickets: issue and verify (no I/O, `now` injected) |
//! | [`codec`] | a `tokio_util` codec that frames a byte stream into requests |
//! | [`registry`] | who is alive: backends, their last report, TTL expiry (no I/O, `now` injected) |
//! | [`netlist`] | lists of IP networks: who may send unauthenticated legacy heartbeats |
//! | [`scoring`] | how a v2 backend's metrics combine into one load (per service) |
//! | [`selection`] | who gets picked: effective load, the policies, slow start (no I/O) |
//! | [`dispatcher`] | registry and selection kept in step under one lock; answers logins |
//! | [`simulate`] | a seeded discrete-event simulation of a pool, driving the real dispatcher |
//! | [`server`] | the TCP server: bind, accept under a cap, sweep, graceful shutdown |
//! | `connection` | the only code that reads and writes the dispatcher's sockets |
//! | [`agent`] | the backend side: one sampler, a heartbeat link per dispatcher, reconnects with backoff |
//! | [`meminfo`] | memory use in percent from `/proc/meminfo` text |
//! | [`cgroup`] | memory use in percent of a cgroup v2 limit, for backends in containers |
//! | [`cpustat`] | CPU use in percent from two readings of `/proc/stat` |
//! | [`backoff`] | reconnect delays with jitter from an injected RNG |
//! | [`config`] | the error settings checks return, naming the setting |
//! | [`settings`] | `serve`'s settings from file, environment and flags: merge, validate, reload diff |
//! | [`dial`] | outgoing connections: resolve a name, try each address, TLS on top when asked |
//! | [`tls`] | TLS settings from PEM files: the dispatcher's certificate and key, the CA its peers trust |
//! | [`client`] | the client side: one login, one reply; failover over several dispatchers |
//! | [`bench`](mod@bench) | the load generator behind `loadwise bench`, and a no-logic ceiling server |
//! | [`admin`] | the admin HTTP API, Prometheus metrics and the live dashboard |
//!
//! The `loadwise` binary (`serve`, `agent`, `pick`, `bench`, `simulate`, ...) is a thin
//! layer over these.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), loadwise::client::PickError> {
//! use std::time::Duration;
//! let backend = loadwise::client::pick("127.0.0.1:8523", Duration::from_secs(3)).await?;
//! println!("connect to {backend}");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod settings;

pub use loadwise_agent::{self as agent, backoff, cgroup, cpustat, meminfo};
pub use loadwise_client::{self as client, dial};
pub use loadwise_core::{dispatcher, registry, scoring, selection};
pub use loadwise_protocol::{self as protocol, codec, config, ticket};
pub use loadwise_server::{self as server, ConnectionLimits, admin, netlist, tls};
pub use loadwise_tools::{bench, simulate};

/// Compiles the README's Rust example as a doctest, so the documentation cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

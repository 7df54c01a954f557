//! loadwise: a load-aware dispatcher that sends each new client to the backend with
//! the most room, and a drop-in replacement for the C++ LoadBanceServer. This crate is
//! the library a Rust program imports: the backend's agent, the client, and the wire
//! formats they share.
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
//! | [`agent`] | the backend side: one sampler, a heartbeat link per dispatcher, reconnects with backoff (`loadwise-agent`) |
//! | [`client`] | the client side: one login, one reply; failover over several dispatchers; dialing and TLS (`loadwise-client`) |
//! | [`protocol`] | the wire formats, legacy and v2: frame header, message kinds, pure parse and encode (`loadwise-protocol`) |
//! | [`ticket`] | signed, short-lived admission tickets: issue and verify (no I/O, `now` injected) |
//! | [`codec`] | `tokio_util` codecs that frame a byte stream into requests |
//! | [`config`] | the error settings checks return, naming the setting |
//! | `ffi` | the C ABI (`include/loadwise.h`): the agent, picks and ticket checks for C and C++ (feature `capi`, on by default) |
//!
//! The dispatcher itself is not here, so a program that embeds the agent or the client
//! compiles no web server: its decision is `loadwise-core`, its network side
//! `loadwise-server`, the bench and the simulation `loadwise-tools`, and the
//! `loadwise` binary (`serve`, `agent`, `pick`, `bench`, `simulate`, ...) is
//! `loadwise-cli`, a thin layer over them all.
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
// The C ABI cannot do without `unsafe`: it is allowed in the `ffi` module alone, and
// every block there says why it is sound.
#![deny(unsafe_code)]

pub use loadwise_agent as agent;
pub use loadwise_client as client;
pub use loadwise_protocol as protocol;
pub use loadwise_protocol::{codec, config, ticket};

#[cfg(feature = "capi")]
#[allow(unsafe_code)]
pub mod ffi;

/// Compiles the README's Rust example as a doctest, so the documentation cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

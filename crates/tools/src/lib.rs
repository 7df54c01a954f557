//! loadwise-tools: the tools that measure and model a dispatcher, behind `loadwise bench`
//! and `loadwise simulate`.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`bench`](mod@bench) | the load generator behind `loadwise bench`, and a no-logic ceiling server |
//! | [`simulate`] | a seeded discrete-event simulation of a pool, driving the real dispatcher |
#![forbid(unsafe_code)]

pub mod bench;
pub mod simulate;

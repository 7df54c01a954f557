//! A regression suite of attacks on the real binary, each small and bounded, while a
//! legitimate backend heartbeats and a legitimate client picks. Each asserts that
//! the legitimate picks keep being answered within a bound, that the dispatcher's
//! descriptors come back to their baseline, and that a second round does not grow
//! its memory beyond the first. `LOADWISE_ABUSE_REPORT=1` prints each attack's
//! figures; `LOADWISE_ABUSE_BIN=PATH` attacks another build (to compare).
//!
//! | module | its one job |
//! |---|---|
//! | `harness.rs` | the dispatcher child, the legitimate peers, `/proc` readings, rounds |
//! | `admin.rs` | attacks on the admin API |
//! | `port.rs` | attacks on the dispatcher's port |
//! | `settings.rs` | settings at their edges: errors, never panics |

mod admin;
mod harness;
mod port;
mod settings;

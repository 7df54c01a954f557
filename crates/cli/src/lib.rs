//! loadwise-cli: the `loadwise` binary (`src/main.rs`), a thin layer over the other
//! crates. Its library part holds what the binary's tests read too: the settings of
//! `loadwise serve` and the exit statuses.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`exit`] | the exit statuses, one table for the code, `--help` and the README |
//! | [`settings`] | `serve`'s settings, each defined once; from file, environment and flags: merge, validate, reload diff |
//! | `main.rs` (binary) | parses the command line and runs one subcommand |
//! | `cli.rs`, `cli/` (binary) | the command line (clap), and `serve`, `demo`, `bench`, `simulate` |
#![forbid(unsafe_code)]

pub mod exit;
pub mod settings;

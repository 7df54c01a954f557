//! The C ABI: `lw_*` functions that give C, C++ and any language with a C FFI the agent,
//! the client and ticket checks.
//!
//! `include/loadwise.h` is generated from this module by cbindgen (`tests/header.rs`
//! fails when the checked-in header differs; `LOADWISE_BLESS=1` rewrites it), and
//! `include/loadwise.hpp` wraps it in RAII classes for C++. `docs/c-api.md` is the
//! guide.
//!
//! # What every entry point keeps to
//!
//! - No panic crosses into C: each one runs under `catch_unwind` and turns a panic
//!   into `LW_E_PANIC`. This relies on the default `panic = "unwind"`; built with
//!   `panic = "abort"`, a panic would end the process instead (still never unwinding
//!   into C).
//! - Every pointer is checked for NULL (and alignment) before use; a string is read
//!   up to its NUL and never more than `LW_MAX_STRING_LEN` bytes; byte buffers
//!   longer than that are refused before anything is read or allocated.
//! - Functions returning an `int` return `LW_OK` or a negative `LW_E_*` code, and
//!   set this thread's `lw_last_error_message` (empty on success).
//! - Every object handed out is freed by its matching `lw_*_free`.
//!
//! # Structs that can grow
//!
//! A struct passed by pointer starts with its `size`, which the caller sets to
//! `sizeof` the struct as its header knows it (the header's `*_init` functions do).
//! Later versions only append fields, each at or past the previous version's `sizeof`
//! (never in its trailing padding), so a program built against an older header keeps
//! working: fields past its `size` take their defaults. Fields past what this library
//! knows must be zero. Capacity and in-use counts for the agent, and key and slot
//! options for picks, are planned to arrive this way.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | this file | the version and the last error message |
//! | `codes` | the status codes and the constants of the C ABI |
//! | `boundary` | the crossing: panics caught, the last error kept, C pointers and strings read within bounds |
//! | `client` | picks: `lw_pick`, `lw_pick_ex` and the `lw_picked` result; `lw_connect`, which also connects |
//! | `ticket` | admission tickets: `lw_ticket_verify`, `lw_ticket_verify_at`, `lw_secret_read_file` |
//! | `agent` | an agent inside the backend process: `lw_agent_start` and its setters |
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod agent;
mod boundary;
mod client;
mod codes;
mod ticket;

use std::ffi::{CStr, c_char};

pub use agent::{
    lw_agent, lw_agent_arrive, lw_agent_backend_id, lw_agent_free, lw_agent_leave, lw_agent_options,
    lw_agent_remove_metric, lw_agent_set_connections, lw_agent_set_draining, lw_agent_set_healthy,
    lw_agent_set_in_use, lw_agent_set_metric, lw_agent_start, lw_agent_stop,
};
pub use client::{
    lw_connect, lw_connect_options, lw_pick, lw_pick_ex, lw_pick_options, lw_pick_with, lw_picked,
    lw_picked_addr, lw_picked_backend_id, lw_picked_dispatcher, lw_picked_free, lw_picked_ticket,
};
pub use codes::{
    LW_ABI_VERSION, LW_ADDR_LEN, LW_DEFAULT_TIMEOUT_MS, LW_MAX_KEY_LEN, LW_MAX_STRING_LEN, LW_NOT_REPORTED,
    LW_PROTOCOL_LEGACY, LW_PROTOCOL_V2, LW_TICKET_TEXT_LEN, lw_status,
};
pub use ticket::{lw_secret_read_file, lw_ticket_claims, lw_ticket_verify, lw_ticket_verify_at};

const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(version) => version,
    Err(_) => panic!("the package version has no NUL inside"),
};

/// The library's version, such as `"0.1.0"`: a static string, never freed.
#[unsafe(no_mangle)]
pub extern "C" fn lw_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The library's C ABI version (`LW_ABI_VERSION` of the header it was built with).
/// A program can compare it with the header's at start-up.
#[unsafe(no_mangle)]
pub extern "C" fn lw_abi_version() -> u32 {
    LW_ABI_VERSION
}

/// The message of the last `int`-returning `lw_*` call on this thread: why it failed,
/// or the empty string if it succeeded. Never NULL. The string belongs to the library
/// and stays valid until the next `lw_*` call on the same thread; copy it to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn lw_last_error_message() -> *const c_char {
    boundary::last_error_message()
}

#[cfg(test)]
mod tests;

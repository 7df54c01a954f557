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
//! | this file | the codes, the version, the last error message |
//! | `boundary` | the crossing: panics caught, the last error kept, C pointers and strings read within bounds |
//! | `client` | picks: `lw_pick`, `lw_pick_ex` and the `lw_picked` result |
//! | `ticket` | admission tickets: `lw_ticket_verify`, `lw_ticket_verify_at`, `lw_secret_read_file` |
//! | `agent` | an agent inside the backend process: `lw_agent_start` and its setters |
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod agent;
mod boundary;
mod client;
mod ticket;

use std::ffi::{CStr, c_char, c_int};

pub use agent::{
    lw_agent, lw_agent_backend_id, lw_agent_free, lw_agent_options, lw_agent_remove_metric,
    lw_agent_set_connections, lw_agent_set_draining, lw_agent_set_healthy, lw_agent_set_metric,
    lw_agent_start, lw_agent_stop,
};
pub use client::{
    lw_pick, lw_pick_ex, lw_pick_options, lw_pick_with, lw_picked, lw_picked_addr, lw_picked_backend_id,
    lw_picked_dispatcher, lw_picked_free, lw_picked_ticket,
};
pub use ticket::{lw_secret_read_file, lw_ticket_claims, lw_ticket_verify, lw_ticket_verify_at};

/// What an `int`-returning function returns: `LW_OK` or a negative error code, with
/// `lw_last_error_message()` saying why.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum lw_status {
    /// Success.
    LW_OK = 0,
    /// A pointer that must not be NULL was NULL.
    LW_E_NULL = -1,
    /// An argument is unusable: not UTF-8, too long, or not a valid address, name or
    /// option. The message names it.
    LW_E_INVALID = -2,
    /// The output buffer is too small; nothing was written to it.
    LW_E_BUFFER = -3,
    /// A dispatcher answered and had no backend to give: an empty pool, an unknown
    /// service, or clocks too far apart.
    LW_E_REFUSED = -4,
    /// No dispatcher answered: unreachable, closed, or a malformed reply.
    LW_E_UNREACHABLE = -5,
    /// Time ran out: no dispatcher answered within the timeout, or an agent did not
    /// stop within its bound.
    LW_E_TIMEOUT = -6,
    /// The ticket is malformed or its signature does not verify: forged, altered, or
    /// signed with another secret.
    LW_E_TICKET_INVALID = -7,
    /// The ticket is genuine but for another backend or another service.
    LW_E_TICKET_MISMATCH = -8,
    /// The ticket is genuine but expired (or issued further ahead than clocks may drift).
    LW_E_TICKET_EXPIRED = -9,
    /// The agent has been stopped.
    LW_E_STOPPED = -10,
    /// A file could not be read.
    LW_E_IO = -11,
    /// A thread or an I/O runtime could not be started.
    LW_E_RUNTIME = -12,
    /// An internal error: a panic was caught at the boundary. The message says where.
    LW_E_PANIC = -99,
}

// The codes as the `int`s functions return.
pub(crate) const LW_OK: c_int = lw_status::LW_OK as c_int;
pub(crate) const LW_E_NULL: c_int = lw_status::LW_E_NULL as c_int;
pub(crate) const LW_E_INVALID: c_int = lw_status::LW_E_INVALID as c_int;
pub(crate) const LW_E_BUFFER: c_int = lw_status::LW_E_BUFFER as c_int;
pub(crate) const LW_E_REFUSED: c_int = lw_status::LW_E_REFUSED as c_int;
pub(crate) const LW_E_UNREACHABLE: c_int = lw_status::LW_E_UNREACHABLE as c_int;
pub(crate) const LW_E_TIMEOUT: c_int = lw_status::LW_E_TIMEOUT as c_int;
pub(crate) const LW_E_TICKET_INVALID: c_int = lw_status::LW_E_TICKET_INVALID as c_int;
pub(crate) const LW_E_TICKET_MISMATCH: c_int = lw_status::LW_E_TICKET_MISMATCH as c_int;
pub(crate) const LW_E_TICKET_EXPIRED: c_int = lw_status::LW_E_TICKET_EXPIRED as c_int;
pub(crate) const LW_E_STOPPED: c_int = lw_status::LW_E_STOPPED as c_int;
pub(crate) const LW_E_IO: c_int = lw_status::LW_E_IO as c_int;
pub(crate) const LW_E_RUNTIME: c_int = lw_status::LW_E_RUNTIME as c_int;
pub(crate) const LW_E_PANIC: c_int = lw_status::LW_E_PANIC as c_int;

/// The version of the C ABI: the N of the library's SONAME `libloadwise.so.N`. It
/// changes only when a change would break programs built against an older header.
pub const LW_ABI_VERSION: u32 = 1;

/// The longest string any function reads, in bytes without the NUL; also the most
/// bytes of a secret.
pub const LW_MAX_STRING_LEN: usize = 65536;

/// The longest affinity key a pick may carry, in bytes (`lw_pick_options.key_len`).
pub const LW_MAX_KEY_LEN: usize = loadwise_protocol::v2::MAX_KEY_LEN;

/// A buffer of this many bytes holds any address `lw_pick` writes, NUL included: a
/// 253-byte host name, `:` and a 5-digit port.
pub const LW_ADDR_LEN: usize = 260;

/// The length of a ticket's text form (hex digits, without the NUL).
pub const LW_TICKET_TEXT_LEN: usize = 130;

/// `lw_agent_set_connections` with this value stops reporting a connection count.
pub const LW_NOT_REPORTED: u32 = u32::MAX;

/// The default timeout of a pick, when 0 is passed.
pub const LW_DEFAULT_TIMEOUT_MS: u32 = 3000;

/// `lw_agent_options::protocol`: protocol v2 (the default): services, all metrics,
/// drain and health, authentication and tickets.
pub const LW_PROTOCOL_V2: u32 = 0;
/// `lw_agent_options::protocol`: the legacy heartbeat (memory only), for the C++
/// LoadBanceServer.
pub const LW_PROTOCOL_LEGACY: u32 = 1;

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

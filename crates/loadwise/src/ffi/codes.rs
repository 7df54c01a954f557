//! The status codes every `int`-returning function returns, and the constants of the C ABI.

use std::ffi::c_int;

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
    /// `lw_connect`: backends were named, but none could be connected to within the
    /// attempts (each failure was reported to the dispatcher).
    LW_E_UNCONNECTED = -13,
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
pub(crate) const LW_E_UNCONNECTED: c_int = lw_status::LW_E_UNCONNECTED as c_int;
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

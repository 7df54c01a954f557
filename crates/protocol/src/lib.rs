//! loadwise-protocol: what both ends of a connection share. The wire formats, legacy
//! and [`v2`], admission tickets and the stream codecs: frame header, message kinds,
//! pure parsing and encoding; and the PEM files TLS is configured from.
//!
//! The legacy LoadBanceServer format is re-exported at the crate root; [`v2`] is the versioned one that
//! shares its header on the same port. Every frame starts with a 4-byte header, `len: u16` then `cmd: u16`, both
//! little-endian; `len` counts the whole frame including the header. Nothing here
//! touches a socket: functions take byte slices and return values, so they can be
//! tested exhaustively (split reads, coalesced frames, arbitrary input).
//!
//! See `docs/protocol.md` for the byte tables and test vectors.
//!
//! # Layout
//!
//! | module | its one job |
//! |---|---|
//! | crate root | re-exports only |
//! | `header`, [`cmd`], `heartbeat`, `login`, `request` | the legacy format: header, commands, heartbeat, login and reply, a dispatcher's parse |
//! | [`v2`] | protocol v2: frames, messages, names, addresses, the Register MAC ([`v2::auth`]) |
//! | [`ticket`] | signed, short-lived admission tickets: issue and verify (no I/O, `now` injected) |
//! | [`codec`] | `tokio_util` codecs that frame a byte stream into requests (and v2 messages for peers) |
//! | [`config`] | the error settings checks return, naming the setting |
//! | [`entropy`] | randomness from the operating system without a panic, and a clock-derived fallback |
//! | [`pem`] | the PEM files TLS is configured from: certificates and keys, errors naming the file |
#![forbid(unsafe_code)]

pub mod cmd;
pub mod codec;
pub mod config;
pub mod entropy;
mod header;
mod heartbeat;
mod login;
pub mod pem;
mod request;
pub mod ticket;
pub mod v2;

pub use header::{HEADER_LEN, Header, MAX_FRAME_LEN};

pub use heartbeat::{AddressDisplay, AddressError, Heartbeat, IP_FIELD_LEN, IpField, MAX_IP_CHARS};
pub use login::{LoginReply, LoginRequest, ReplyError, unix_time_now};
pub use request::{FrameError, Parsed, Request, parse_request};

#[cfg(test)]
pub(crate) mod doc_vectors;
#[cfg(test)]
mod tests;

//! loadwise-protocol: what both ends of a connection share. The wire formats, legacy
//! and [`v2`], admission tickets and the stream codecs: frame header, message kinds,
//! pure parsing and encoding; and the PEM files TLS is configured from.
//!
//! The crate root holds the legacy LoadBanceServer format; [`v2`] the versioned one that
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
//! | crate root, `heartbeat`, `login` | the legacy format: header, commands, heartbeat, login and reply |
//! | [`v2`] | protocol v2: frames, messages, names, addresses, the Register MAC ([`v2::auth`]) |
//! | [`ticket`] | signed, short-lived admission tickets: issue and verify (no I/O, `now` injected) |
//! | [`codec`] | `tokio_util` codecs that frame a byte stream into requests (and v2 messages for peers) |
//! | [`config`] | the error settings checks return, naming the setting |
//! | [`entropy`] | randomness from the operating system without a panic, and a clock-derived fallback |
//! | [`pem`] | the PEM files TLS is configured from: certificates and keys, errors naming the file |
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod entropy;
mod heartbeat;
mod login;
pub mod pem;
pub mod ticket;
pub mod v2;

pub use heartbeat::{AddressDisplay, AddressError, Heartbeat, IP_FIELD_LEN, IpField, MAX_IP_CHARS};
pub use login::{LoginReply, LoginRequest, ReplyError, unix_time_now};

/// Size of the `len` + `cmd` header that starts every frame.
pub const HEADER_LEN: usize = 4;

/// The largest frame the 16-bit `len` field can describe.
pub const MAX_FRAME_LEN: u16 = u16::MAX;

/// Command numbers of the legacy protocol.
pub mod cmd {
    /// Backend heartbeat ("Monitor").
    pub const HEARTBEAT: u16 = 0;
    /// Error reply to a login.
    pub const ERROR: u16 = 1;
    /// Client login request, and the success reply to it.
    pub const LOGIN: u16 = 2;
    /// Present in the original, meaningless to the balancer: skipped.
    pub const REGISTER: u16 = 3;
    /// Present in the original, meaningless to the balancer: skipped.
    pub const DESTROY: u16 = 4;
}

/// A message a dispatcher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A backend reports its address and load.
    Heartbeat(Heartbeat),
    /// A client asks for a backend.
    Login(LoginRequest),
}

/// What [`parse_request`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet to decide; read more and call again.
    Incomplete,
    /// A known message. The frame occupies `len` bytes, which may be more than were
    /// parsed (trailing bytes beyond the command's size are ignored, as the original
    /// does) and more than are buffered yet; the caller skips the rest.
    Request { request: Request, len: usize },
    /// A command the dispatcher does not handle; the caller skips `len` bytes.
    Unknown { cmd: u16, len: usize },
}

/// A frame that cannot be valid, whatever bytes follow. The connection that sent it
/// cannot be re-synchronised (frames have no delimiter), so it must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `len` is smaller than the header itself (a `len` of 0 would never advance).
    #[error("frame length {len} is shorter than the {HEADER_LEN}-byte header")]
    ShorterThanHeader { len: u16 },
    /// `len` is smaller than the fixed size of its command.
    #[error("command {cmd} frame has length {len}, below its size of {min}")]
    ShorterThanCommand { cmd: u16, len: u16, min: u16 },
    /// `len` exceeds the configured maximum frame length.
    #[error("frame length {len} exceeds the limit of {max}")]
    TooLong { len: u16, max: u16 },
}

/// The frame header: total length and command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u16,
    pub cmd: u16,
}

impl Header {
    /// Reads a header from the first four bytes, if present.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            len: u16::from_le_bytes([bytes[0], bytes[1]]),
            cmd: u16::from_le_bytes([bytes[2], bytes[3]]),
        })
    }

    /// Encodes the header as four little-endian bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [l0, l1] = self.len.to_le_bytes();
        let [c0, c1] = self.cmd.to_le_bytes();
        [l0, l1, c0, c1]
    }
}

/// Parses the frame at the start of `buf`, as a dispatcher sees it.
///
/// Bounds are checked on the header alone, before anything is buffered or
/// allocated for the body: a frame longer than `max_len`, shorter than the header,
/// or shorter than its command's size is an error.
pub fn parse_request(buf: &[u8], max_len: u16) -> Result<Parsed, FrameError> {
    let Some(header) = Header::parse(buf) else {
        return Ok(Parsed::Incomplete);
    };
    check_len(header, max_len)?;
    let len = usize::from(header.len);
    let request = match header.cmd {
        cmd::HEARTBEAT => prefix(buf).map(|f| Request::Heartbeat(Heartbeat::decode(f))),
        cmd::LOGIN => prefix(buf).map(|f| Request::Login(LoginRequest::decode(f))),
        cmd => return Ok(Parsed::Unknown { cmd, len }),
    };
    Ok(request.map_or(Parsed::Incomplete, |request| Parsed::Request { request, len }))
}

/// The first `N` bytes of `buf` as an array, if buffered.
fn prefix<const N: usize>(buf: &[u8]) -> Option<&[u8; N]> {
    buf.get(..N)?.try_into().ok()
}

fn check_len(header: Header, max_len: u16) -> Result<(), FrameError> {
    let Header { len, cmd } = header;
    if usize::from(len) < HEADER_LEN {
        return Err(FrameError::ShorterThanHeader { len });
    }
    if len > max_len {
        return Err(FrameError::TooLong { len, max: max_len });
    }
    let min = match cmd {
        cmd::HEARTBEAT => Heartbeat::LEN,
        cmd::LOGIN => LoginRequest::LEN,
        _ => HEADER_LEN,
    };
    if usize::from(len) < min {
        // The sizes are small constants, so the cast cannot truncate.
        return Err(FrameError::ShorterThanCommand { cmd, len, min: min as u16 });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod doc_vectors;
#[cfg(test)]
mod tests;

//! What a dispatcher reads at the start of a legacy frame: a request, an unknown
//! command to skip, not enough bytes yet, or a frame that cannot be valid.

use crate::cmd;
use crate::header::{HEADER_LEN, Header};
use crate::heartbeat::Heartbeat;
use crate::login::LoginRequest;

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

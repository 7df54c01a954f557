//! The login request (cmd 2, 12 bytes) and its reply (22 bytes, cmd 2 or 1).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::cmd;
use crate::header::{HEADER_LEN, Header};
use crate::heartbeat::{IP_FIELD_LEN, IpField};

/// A client's request for a backend, stamped with the client's unix time in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    pub timestamp: u64,
}

impl LoginRequest {
    /// Size of a login request frame.
    pub const LEN: usize = HEADER_LEN + 8;

    /// Reads the fields of a login frame (header included; it is not checked here).
    pub fn decode(frame: &[u8; Self::LEN]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&frame[HEADER_LEN..]);
        LoginRequest { timestamp: u64::from_le_bytes(ts) }
    }

    /// Encodes the full frame, header included.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut frame = [0u8; Self::LEN];
        let header = Header { len: Self::LEN as u16, cmd: cmd::LOGIN };
        frame[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        frame[HEADER_LEN..].copy_from_slice(&self.timestamp.to_le_bytes());
        frame
    }
}

/// The current unix time in seconds, the unit of login timestamps (0 if the clock
/// is set before 1970).
pub fn unix_time_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The dispatcher's answer to a login: a backend, or the fixed error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginReply {
    /// Connect to this backend. `ip` holds the bytes the backend sent.
    Backend { ip: IpField, port: u16 },
    /// No backend can be offered (none alive, or the request's clock is off).
    Error,
}

/// A reply that is not one of the two forms a dispatcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply length field is {0}, expected {len}", len = LoginReply::LEN)]
    BadLength(u16),
    #[error("reply command is {0}, expected 1 (error) or 2 (login)")]
    BadCommand(u16),
}

impl LoginReply {
    /// Size of a reply frame, success or error.
    pub const LEN: usize = HEADER_LEN + 2 + IP_FIELD_LEN;

    /// Encodes the full frame, header included.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let (command, port, ip) = match self {
            LoginReply::Backend { ip, port } => (cmd::LOGIN, *port, *ip.as_bytes()),
            LoginReply::Error => (cmd::ERROR, u16::MAX, [0u8; IP_FIELD_LEN]),
        };
        let mut frame = [0u8; Self::LEN];
        let header = Header { len: Self::LEN as u16, cmd: command };
        frame[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        frame[4..6].copy_from_slice(&port.to_le_bytes());
        frame[6..].copy_from_slice(&ip);
        frame
    }

    /// Reads a reply frame. Any reply with cmd 1 is an error, whatever its body.
    pub fn decode(frame: &[u8; Self::LEN]) -> Result<Self, ReplyError> {
        let header = Header::parse(frame).expect("a reply frame holds a header");
        if usize::from(header.len) != Self::LEN {
            return Err(ReplyError::BadLength(header.len));
        }
        match header.cmd {
            cmd::ERROR => Ok(LoginReply::Error),
            cmd::LOGIN => {
                let mut ip = [0u8; IP_FIELD_LEN];
                ip.copy_from_slice(&frame[6..]);
                let port = u16::from_le_bytes([frame[4], frame[5]]);
                Ok(LoginReply::Backend { ip: IpField::from_bytes(ip), port })
            }
            other => Err(ReplyError::BadCommand(other)),
        }
    }
}

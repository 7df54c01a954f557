//! The authentication handshake: Hello, Challenge, Register and Registered.

use super::frame::{FieldError, Reader, Writer};
use super::limits::{MAC_LEN, NONCE_LEN, Nonce};
use super::names::ServiceName;

/// Backend → dispatcher, type 0x01: "send me a challenge". The body is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hello;

impl Hello {
    /// Size of the frame.
    pub const LEN: usize = 4;

    pub(crate) fn encode_body(&self, _w: &mut Writer) {}

    pub(crate) fn decode_body(_r: &mut Reader<'_>) -> Hello {
        Hello
    }
}

/// Dispatcher → backend, type 0x02: a fresh nonce for this connection's Register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// 16 random bytes, new for every Challenge; the Register MAC covers them, so a
    /// Register recorded on one connection is worthless on another.
    pub nonce: Nonce,
    /// The dispatcher's clock, unix seconds: lets a backend see its own clock skew.
    pub server_time: u64,
}

impl Challenge {
    /// Size of the frame.
    pub const LEN: usize = 4 + NONCE_LEN + 8;

    pub(crate) fn encode_body(&self, w: &mut Writer) {
        w.bytes(&self.nonce);
        w.u64(self.server_time);
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<Challenge, FieldError> {
        Ok(Challenge { nonce: r.array("nonce")?, server_time: r.u64("server time")? })
    }
}

/// Backend → dispatcher, type 0x03: who this backend is, proven with the shared secret.
/// Build a signed one with [`Register::signed`]; check one with
/// [`auth::verify_register`](super::auth::verify_register).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Chosen by the backend and kept across reconnects, so the dispatcher can tell a
    /// reconnecting backend from a new one.
    pub backend_id: u64,
    /// HMAC-SHA256 over the challenge nonce, the backend id and the service.
    pub mac: [u8; MAC_LEN],
    /// The service the backend serves.
    pub service: ServiceName,
}

impl Register {
    /// Size of the longest frame.
    pub const MAX_LEN: usize = 4 + 8 + MAC_LEN + 1 + ServiceName::MAX_LEN;

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), FieldError> {
        w.u64(self.backend_id);
        w.bytes(&self.mac);
        self.service.write(w)
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<Register, FieldError> {
        Ok(Register {
            backend_id: r.u64("backend id")?,
            mac: r.array("mac")?,
            service: ServiceName::read(r)?,
        })
    }
}

/// Dispatcher → backend, type 0x04: the Register was accepted; heartbeats may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The backend id of the accepted Register, echoed.
    pub backend_id: u64,
}

impl Registered {
    /// Size of the frame.
    pub const LEN: usize = 4 + 8;

    pub(crate) fn encode_body(&self, w: &mut Writer) {
        w.u64(self.backend_id);
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<Registered, FieldError> {
        Ok(Registered { backend_id: r.u64("backend id")? })
    }
}

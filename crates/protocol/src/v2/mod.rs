//! Protocol v2: versioned, length-bounded messages on the legacy port, with pure parse and encode.
//!
//! A v2 frame has the legacy 4-byte header (`len: u16`, `cmd: u16`, little-endian, `len`
//! counting the whole frame) with `cmd = 0x0200 | type`: the high byte is the protocol
//! version, so the first four bytes tell v2 from legacy (whose commands are 0 to 4).
//! Bodies are little-endian integers, `str8` strings (a `u8` length, then the bytes) and
//! a tagged [`Endpoint`]; bytes after the fields a receiver knows are ignored, so a later
//! v2.x can append fields.
//!
//! Nothing here touches a socket or a clock: [`decode`] takes a buffer and says
//! *incomplete*, *this message and this many bytes*, or why the frame is bad;
//! [`Message::encode`] gives a whole frame. [`auth`] holds the Register MAC.
//!
//! See `docs/protocol.md`, part "Protocol v2", for the byte tables and test vectors.

mod address;
pub mod auth;
mod code;
mod error;
mod failure;
mod frame;
mod handshake;
mod heartbeat;
mod kind;
mod lease;
mod limits;
mod name_error;
mod names;
mod pick;

pub use address::{Endpoint, Host, tag};
pub use code::ErrorCode;
pub use error::{ErrorMessage, MAX_ERROR_TEXT_LEN};
pub use failure::{FailureReason, FailureReport};
pub use frame::{DecodeError, FieldError};
pub use handshake::{Challenge, Hello, Register, Registered};
pub use heartbeat::{
    DEFAULT_WEIGHT, Health, Heartbeat, Metric, NOT_REPORTED_U16, NOT_REPORTED_U32, Percent, State,
    check_metrics,
};
pub use kind::{MessageType, VERSION, is_v2, version_of};
pub use lease::{LeaseReport, Slots};
pub use limits::MAX_METRICS;
pub use name_error::NameError;
pub use names::{HostName, MetricName, ServiceName};
pub use pick::{
    KeyTooLong, MAX_KEY_LEN, MAX_TICKET_LEN, PickKey, PickOutcome, PickReply, PickRequest, Picked,
};

use crate::header::{HEADER_LEN, Header};
use frame::{Reader, Writer};

/// The size of the largest message a v2 peer can send without trailing bytes: a
/// heartbeat with the longest names, a host name address and [`MAX_METRICS`] metrics.
/// A receiver's frame limit must be at least this.
pub const MAX_MESSAGE_LEN: usize = Heartbeat::MAX_LEN;

/// The longest v2 frame a dispatcher accepts unless configured otherwise: the
/// recommended 4096, above the largest v2 message (2703 bytes).
pub const DEFAULT_MAX_V2_FRAME_LEN: u16 = 4096;

/// One v2 message, as decoded or to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Type 0x01, backend → dispatcher.
    Hello(Hello),
    /// Type 0x02, dispatcher → backend.
    Challenge(Challenge),
    /// Type 0x03, backend → dispatcher.
    Register(Register),
    /// Type 0x04, dispatcher → backend.
    Registered(Registered),
    /// Type 0x05, backend → dispatcher.
    Heartbeat(Heartbeat),
    /// Type 0x06, dispatcher → backend.
    LeaseReport(LeaseReport),
    /// Type 0x10, client → dispatcher.
    PickRequest(PickRequest),
    /// Type 0x11, dispatcher → client.
    PickReply(PickReply),
    /// Type 0x12, client → dispatcher.
    FailureReport(FailureReport),
    /// Type 0x7f, dispatcher → any peer.
    Error(ErrorMessage),
}

impl Message {
    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Challenge(_) => MessageType::Challenge,
            Message::Register(_) => MessageType::Register,
            Message::Registered(_) => MessageType::Registered,
            Message::Heartbeat(_) => MessageType::Heartbeat,
            Message::LeaseReport(_) => MessageType::LeaseReport,
            Message::PickRequest(_) => MessageType::PickRequest,
            Message::PickReply(_) => MessageType::PickReply,
            Message::FailureReport(_) => MessageType::FailureReport,
            Message::Error(_) => MessageType::Error,
        }
    }

    /// Encodes the whole frame, header included, after checking every field against
    /// the limits a receiver enforces (so what is sent always decodes).
    pub fn encode(&self) -> Result<Vec<u8>, FieldError> {
        let mut w = Writer::new(self.message_type().cmd());
        match self {
            Message::Hello(m) => m.encode_body(&mut w),
            Message::Challenge(m) => m.encode_body(&mut w),
            Message::Register(m) => m.encode_body(&mut w)?,
            Message::Registered(m) => m.encode_body(&mut w),
            Message::Heartbeat(m) => m.encode_body(&mut w)?,
            Message::LeaseReport(m) => m.encode_body(&mut w),
            Message::PickRequest(m) => m.encode_body(&mut w)?,
            Message::PickReply(m) => m.encode_body(&mut w)?,
            Message::FailureReport(m) => m.encode_body(&mut w)?,
            Message::Error(m) => m.encode_body(&mut w)?,
        }
        w.finish()
    }

    /// Reads a message of type `kind` from a frame body (the bytes after the header).
    /// Bytes after the known fields are ignored.
    pub fn decode_body(kind: MessageType, body: &[u8]) -> Result<Message, FieldError> {
        let r = &mut Reader::new(body);
        Ok(match kind {
            MessageType::Hello => Message::Hello(Hello::decode_body(r)),
            MessageType::Challenge => Message::Challenge(Challenge::decode_body(r)?),
            MessageType::Register => Message::Register(Register::decode_body(r)?),
            MessageType::Registered => Message::Registered(Registered::decode_body(r)?),
            MessageType::Heartbeat => Message::Heartbeat(Heartbeat::decode_body(r)?),
            MessageType::LeaseReport => Message::LeaseReport(LeaseReport::decode_body(r)?),
            MessageType::PickRequest => Message::PickRequest(PickRequest::decode_body(r)?),
            MessageType::PickReply => Message::PickReply(PickReply::decode_body(r)?),
            MessageType::FailureReport => Message::FailureReport(FailureReport::decode_body(r)?),
            MessageType::Error => Message::Error(ErrorMessage::decode_body(r)?),
        })
    }
}

/// What a whole frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A v2 message this module knows.
    Message(Message),
    /// A v2 frame of a type this module does not know (a later v2.x). A dispatcher
    /// answers it with [`ErrorCode::UNKNOWN_TYPE`]; other peers skip it.
    UnknownType { msg_type: u8, len: usize },
    /// A frame of another protocol version (legacy is 0). A dispatcher hands version 0
    /// to the legacy parser and answers others with [`ErrorCode::UNSUPPORTED_VERSION`].
    OtherVersion { cmd: u16, len: usize },
}

impl Decoded {
    /// The error code a dispatcher answers this frame with, if it refuses it.
    pub fn refusal(&self) -> Option<ErrorCode> {
        match self {
            Decoded::Message(_) => None,
            Decoded::UnknownType { .. } => Some(ErrorCode::UNKNOWN_TYPE),
            Decoded::OtherVersion { .. } => Some(ErrorCode::UNSUPPORTED_VERSION),
        }
    }
}

/// Decodes the frame at the start of `buf`.
///
/// - `Ok(None)`: not enough bytes yet; read more and call again with the longer buffer.
/// - `Ok(Some((decoded, consumed)))`: a whole frame of `consumed` bytes (its `len`,
///   never more than `buf.len()`); the caller drops those bytes.
/// - `Err`: see [`DecodeError`]; [`DecodeError::is_fatal`] says whether the stream can
///   go on (a malformed body is skipped by its `len`; a bad `len` cannot be).
///
/// `len` is checked against the header size and `max_len` as soon as the header is
/// there, before anything is buffered for the body.
pub fn decode(buf: &[u8], max_len: u16) -> Result<Option<(Decoded, usize)>, DecodeError> {
    let Some(header) = Header::parse(buf) else {
        return Ok(None);
    };
    frame::check_len(header, max_len)?;
    let len = usize::from(header.len);
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    let body = &frame[HEADER_LEN..];
    decode_frame(header.cmd, body, len).map(|decoded| Some((decoded, len)))
}

fn decode_frame(cmd: u16, body: &[u8], len: usize) -> Result<Decoded, DecodeError> {
    if !is_v2(cmd) {
        return Ok(Decoded::OtherVersion { cmd, len });
    }
    let msg_type = cmd.to_le_bytes()[0];
    let Some(kind) = MessageType::from_u8(msg_type) else {
        return Ok(Decoded::UnknownType { msg_type, len });
    };
    Message::decode_body(kind, body).map(Decoded::Message).map_err(|reason| DecodeError::Malformed {
        kind,
        len,
        reason,
    })
}

#[cfg(test)]
mod tests;

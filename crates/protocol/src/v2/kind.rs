//! The v2 message types, and the `cmd` of a frame: the version in its high byte, the type in its low byte.

/// The protocol version this module speaks: the high byte of every v2 `cmd`.
pub const VERSION: u8 = 2;

/// The protocol version a frame's `cmd` belongs to: its high byte (0 is legacy).
pub const fn version_of(cmd: u16) -> u8 {
    cmd.to_be_bytes()[0]
}

/// True when `cmd` is a v2 command (`0x0200..=0x02ff`).
pub const fn is_v2(cmd: u16) -> bool {
    version_of(cmd) == VERSION
}

/// The v2 message types: the low byte of `cmd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Backend → dispatcher: asks for a [`Challenge`].
    Hello = 0x01,
    /// Dispatcher → backend: a fresh nonce for [`Register`].
    Challenge = 0x02,
    /// Backend → dispatcher: service, backend id and the MAC over the nonce.
    Register = 0x03,
    /// Dispatcher → backend: the Register was accepted.
    Registered = 0x04,
    /// Backend → dispatcher: address, load and state.
    Heartbeat = 0x05,
    /// Dispatcher → backend (v2.3): the grant it holds and the clients it sent.
    LeaseReport = 0x06,
    /// Client → dispatcher: asks for a backend of a service.
    PickRequest = 0x10,
    /// Dispatcher → client: the backend, or why there is none.
    PickReply = 0x11,
    /// Client → dispatcher (v2.2): the backend a PickReply named could not be used.
    FailureReport = 0x12,
    /// Dispatcher → any peer: a frame was refused.
    Error = 0x7f,
}

impl MessageType {
    /// Every type, in number order.
    pub const ALL: [MessageType; 10] = [
        MessageType::Hello,
        MessageType::Challenge,
        MessageType::Register,
        MessageType::Registered,
        MessageType::Heartbeat,
        MessageType::LeaseReport,
        MessageType::PickRequest,
        MessageType::PickReply,
        MessageType::FailureReport,
        MessageType::Error,
    ];

    /// The type with this number, if v2 defines one.
    pub fn from_u8(value: u8) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| *t as u8 == value)
    }

    /// The frame `cmd` of this type: `0x0200 | type`.
    pub const fn cmd(self) -> u16 {
        u16::from_be_bytes([VERSION, self as u8])
    }
}

//! Error codes: why something was refused, in an Error message or a failed PickReply.

use std::fmt;
use std::num::NonZeroU16;

/// Why something was refused: the `code` of an Error message and the `status` of a
/// failed PickReply. 0 means success and is never an error code. Later v2.x may add
/// codes: a receiver treats a code it does not know as a failure of unknown cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorCode(NonZeroU16);

const fn code(value: u16) -> ErrorCode {
    match NonZeroU16::new(value) {
        Some(v) => ErrorCode(v),
        None => panic!("0 is not an error code"),
    }
}

impl ErrorCode {
    /// PickReply: the service has live backends, but none is ready.
    pub const NO_BACKEND: ErrorCode = code(1);
    /// PickReply: the request's timestamp is too far from the dispatcher's clock.
    pub const CLOCK_SKEW: ErrorCode = code(2);
    /// PickReply: no live backend serves this service.
    pub const UNKNOWN_SERVICE: ErrorCode = code(3);
    /// A heartbeat without a successful Register, on a dispatcher with a secret.
    pub const AUTH_REQUIRED: ErrorCode = code(4);
    /// A Register whose MAC does not verify.
    pub const AUTH_FAILED: ErrorCode = code(5);
    /// A Register on a connection with no unused Challenge.
    pub const NO_CHALLENGE: ErrorCode = code(6);
    /// A heartbeat whose service or backend id differs from the registered ones.
    pub const IDENTITY_MISMATCH: ErrorCode = code(7);
    /// A frame of a known type whose body breaks a rule of this protocol.
    pub const MALFORMED: ErrorCode = code(8);
    /// A v2 frame of a type the dispatcher does not know.
    pub const UNKNOWN_TYPE: ErrorCode = code(9);
    /// A frame of a protocol version the dispatcher does not speak.
    pub const UNSUPPORTED_VERSION: ErrorCode = code(10);
    /// A frame whose `len` is below 4 or above the dispatcher's limit.
    pub const FRAME_LENGTH: ErrorCode = code(11);
    /// A message the dispatcher never accepts (Challenge, Registered, LeaseReport, PickReply, Error).
    pub const UNEXPECTED: ErrorCode = code(12);
    /// A heartbeat that would register more backends than the dispatcher allows; or
    /// a Register or first heartbeat on a connection over the backend budget, which
    /// is then closed.
    pub const BACKEND_LIMIT: ErrorCode = code(13);
    /// PickReply: the dispatcher has as many client connections as it allows; the
    /// connection is closed. Retry later, or ask another dispatcher.
    pub const BUSY: ErrorCode = code(14);
    /// PickReply (v2.3): the service's backends have capacity slots, and none has a
    /// free place this dispatcher may promise.
    pub const NO_FREE_PLACE: ErrorCode = code(15);

    /// Every code this version defines, with its name.
    pub const ALL: [(ErrorCode, &'static str); 15] = [
        (ErrorCode::NO_BACKEND, "no backend"),
        (ErrorCode::CLOCK_SKEW, "clock skew"),
        (ErrorCode::UNKNOWN_SERVICE, "unknown service"),
        (ErrorCode::AUTH_REQUIRED, "authentication required"),
        (ErrorCode::AUTH_FAILED, "authentication failed"),
        (ErrorCode::NO_CHALLENGE, "no challenge"),
        (ErrorCode::IDENTITY_MISMATCH, "identity mismatch"),
        (ErrorCode::MALFORMED, "malformed frame"),
        (ErrorCode::UNKNOWN_TYPE, "unknown message type"),
        (ErrorCode::UNSUPPORTED_VERSION, "unsupported protocol version"),
        (ErrorCode::FRAME_LENGTH, "bad frame length"),
        (ErrorCode::UNEXPECTED, "unexpected message"),
        (ErrorCode::BACKEND_LIMIT, "backend limit reached"),
        (ErrorCode::BUSY, "busy"),
        (ErrorCode::NO_FREE_PLACE, "no free place"),
    ];

    /// The code with this value; `None` for 0 (success).
    pub const fn new(value: u16) -> Option<ErrorCode> {
        match NonZeroU16::new(value) {
            Some(v) => Some(ErrorCode(v)),
            None => None,
        }
    }

    /// The value on the wire.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// The code's name, if this version defines it.
    pub fn name(self) -> Option<&'static str> {
        ErrorCode::ALL.iter().find(|(c, _)| *c == self).map(|(_, name)| *name)
    }
}

/// `no backend (1)`, or `error code 99` for a code this version does not define.
impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.get()),
            None => write!(f, "error code {}", self.get()),
        }
    }
}

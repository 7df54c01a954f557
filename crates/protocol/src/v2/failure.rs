//! A client's FailureReport (type 0x12): "the backend you sent me to could not be used".

use super::frame::{FieldError, Reader, Writer};
use super::names::ServiceName;
use super::pick::MAX_TICKET_LEN;

/// Why a client could not use the backend it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FailureReason {
    /// None of the others, or not known.
    Other = 0,
    /// The connection was refused (nothing listens on the port).
    Refused = 1,
    /// The connection did not complete within the client's deadline.
    Timeout = 2,
    /// The address could not be reached (no route, host unreachable, name not found).
    Unreachable = 3,
    /// The connection was made, then closed or reset before it could be used.
    Closed = 4,
}

impl FailureReason {
    /// Every reason, in number order.
    pub const ALL: [FailureReason; 5] = [
        FailureReason::Other,
        FailureReason::Refused,
        FailureReason::Timeout,
        FailureReason::Unreachable,
        FailureReason::Closed,
    ];

    /// The reason's name, as logs and metrics write it.
    pub fn name(self) -> &'static str {
        match self {
            FailureReason::Other => "other",
            FailureReason::Refused => "refused",
            FailureReason::Timeout => "timeout",
            FailureReason::Unreachable => "unreachable",
            FailureReason::Closed => "closed",
        }
    }

    fn from_u8(value: u8) -> Result<FailureReason, FieldError> {
        FailureReason::ALL.into_iter().find(|r| *r as u8 == value).ok_or(FieldError::FailureReason(value))
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Client → dispatcher (v2.2): the backend a PickReply named could not be used. The
/// dispatcher never replies to one it accepts; it counts it toward ejecting the
/// backend only from a client it sent there recently (see `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    /// The `backend_id` of the PickReply.
    pub backend_id: u64,
    /// What went wrong.
    pub reason: FailureReason,
    /// The service the client asked for.
    pub service: ServiceName,
    /// The PickReply's ticket, verbatim; empty when it carried none.
    pub ticket: Vec<u8>,
}

impl FailureReport {
    /// Size of the longest frame.
    pub const MAX_LEN: usize = 4 + 8 + 1 + 1 + ServiceName::MAX_LEN + 2 + MAX_TICKET_LEN;

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), FieldError> {
        w.u64(self.backend_id);
        w.u8(self.reason as u8);
        self.service.write(w)?;
        w.bytes16(&self.ticket, "ticket", MAX_TICKET_LEN)
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<FailureReport, FieldError> {
        let backend_id = r.u64("backend id")?;
        let reason = FailureReason::from_u8(r.u8("reason")?)?;
        let service = ServiceName::read(r)?;
        let ticket = r.bytes16("ticket", MAX_TICKET_LEN)?.to_vec();
        Ok(FailureReport { backend_id, reason, service, ticket })
    }
}

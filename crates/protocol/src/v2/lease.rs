//! Capacity slots on the wire (v2.3): what a heartbeat says of a backend's places and
//! the grant it gives, and the dispatcher's LeaseReport (type 0x06) in answer.

use super::frame::{FieldError, Reader, Writer};

/// A slot backend's places and the grant its heartbeat gives this dispatcher (appended
/// to the heartbeat after `health`; see `docs/protocol.md`, "Capacity slots").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slots {
    /// Places in total.
    pub capacity: u32,
    /// Places occupied now, as the backend counts them.
    pub in_use: u32,
    /// Numbers the grants the backend gives this dispatcher on this connection.
    pub grant_seq: u32,
    /// The clients this dispatcher may have sent to the backend, in all, since this
    /// connection began.
    pub grant_total: u64,
}

impl Slots {
    /// The size of the fields on the wire.
    pub const LEN: usize = 4 + 4 + 4 + 8;

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.capacity);
        w.u32(self.in_use);
        w.u32(self.grant_seq);
        w.u64(self.grant_total);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Slots, FieldError> {
        Ok(Slots {
            capacity: r.u32("capacity")?,
            in_use: r.u32("in use")?,
            grant_seq: r.u32("grant seq")?,
            grant_total: r.u64("grant total")?,
        })
    }
}

/// Dispatcher → backend, type 0x06 (v2.3): in answer to each heartbeat that carries
/// slots, the grant the dispatcher now holds and how many clients it has sent to the
/// backend on this connection, in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseReport {
    /// The `grant_seq` of the heartbeat answered.
    pub grant_seq: u32,
    /// Clients sent to the backend since the connection began.
    pub sent_total: u64,
}

impl LeaseReport {
    /// Size of the frame.
    pub const LEN: usize = 4 + 4 + 8;

    pub(crate) fn encode_body(&self, w: &mut Writer) {
        w.u32(self.grant_seq);
        w.u64(self.sent_total);
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<LeaseReport, FieldError> {
        Ok(LeaseReport { grant_seq: r.u32("grant seq")?, sent_total: r.u64("sent total")? })
    }
}

//! A client's PickRequest (type 0x10) and the dispatcher's PickReply (type 0x11).

use super::address::Endpoint;
use super::code::ErrorCode;
use super::frame::{FieldError, Reader, Writer};
use super::names::ServiceName;

/// The longest ticket a PickReply may carry, in bytes.
pub const MAX_TICKET_LEN: usize = 1024;

/// The longest affinity key a PickRequest may carry, in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// A client's affinity key: the picks that carry the same key go to the same backend
/// while it has room. Any bytes, at most [`MAX_KEY_LEN`]; empty is no key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PickKey(Vec<u8>);

/// A key longer than [`MAX_KEY_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a pick key holds at most 64 bytes, not {0}")]
pub struct KeyTooLong(pub usize);

impl PickKey {
    /// No key: the pick goes by load alone.
    pub const NONE: PickKey = PickKey(Vec::new());

    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<PickKey, KeyTooLong> {
        let bytes = bytes.into();
        if bytes.len() > MAX_KEY_LEN {
            return Err(KeyTooLong(bytes.len()));
        }
        Ok(PickKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Client → dispatcher: "which backend of this service should I use?"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickRequest {
    /// Echoed in the reply; any value (0 when the client does not care).
    pub request_id: u32,
    /// The client's clock, unix seconds; checked against the dispatcher's clock.
    pub timestamp: u64,
    /// The service a backend is wanted for.
    pub service: ServiceName,
    /// The client's affinity key (v2.1, appended): on the wire only when not empty,
    /// so that an unkeyed request is the v2.0 frame, and a v2.0 dispatcher, which
    /// skips trailing bytes, still answers a keyed one by load.
    pub key: PickKey,
}

impl PickRequest {
    /// Size of the longest frame.
    pub const MAX_LEN: usize = 4 + 4 + 8 + 1 + ServiceName::MAX_LEN + 1 + MAX_KEY_LEN;

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), FieldError> {
        w.u32(self.request_id);
        w.u64(self.timestamp);
        self.service.write(w)?;
        if !self.key.is_empty() {
            w.str8(self.key.as_bytes(), "key")?;
        }
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<PickRequest, FieldError> {
        let request_id = r.u32("request id")?;
        let timestamp = r.u64("timestamp")?;
        let service = ServiceName::read(r)?;
        // A v2.0 request ends here; a key length of 0 is no key either.
        let key = if r.is_empty() { PickKey::NONE } else { read_key(r)? };
        Ok(PickRequest { request_id, timestamp, service, key })
    }
}

/// A `str8` key, its length checked before its bytes are read.
fn read_key(r: &mut Reader<'_>) -> Result<PickKey, FieldError> {
    let len = usize::from(r.u8("key")?);
    if len > MAX_KEY_LEN {
        return Err(FieldError::TooLong { field: "key", len, max: MAX_KEY_LEN });
    }
    Ok(PickKey(r.bytes(len, "key")?.to_vec()))
}

/// Dispatcher → client: the answer to one PickRequest. Every PickRequest gets exactly
/// one PickReply, in order, success or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickReply {
    /// The request's `request_id`.
    pub request_id: u32,
    /// The backend, or the error code.
    pub outcome: PickOutcome,
}

/// A backend, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickOutcome {
    /// Status 0: connect here.
    Picked(Picked),
    /// A non-zero status, from the error code table ([`ErrorCode::NO_BACKEND`], ...).
    Refused(ErrorCode),
}

/// The backend a client should connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// The backend's stable id; a ticket names the same id.
    pub backend_id: u64,
    pub endpoint: Endpoint,
    /// A signed admission ticket for this backend ([`crate::ticket`]), to be shown to
    /// it; empty when the dispatcher has no secret. Opaque to the client.
    pub ticket: Vec<u8>,
}

impl PickReply {
    /// Size of the longest frame.
    pub const MAX_LEN: usize = 4 + 4 + 2 + 8 + Endpoint::MAX_LEN + 2 + MAX_TICKET_LEN;

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), FieldError> {
        w.u32(self.request_id);
        match &self.outcome {
            PickOutcome::Refused(code) => {
                w.u16(code.get());
                Ok(())
            }
            PickOutcome::Picked(picked) => {
                w.u16(0);
                picked.encode(w)
            }
        }
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<PickReply, FieldError> {
        let request_id = r.u32("request id")?;
        let outcome = match ErrorCode::new(r.u16("status")?) {
            Some(code) => PickOutcome::Refused(code),
            None => PickOutcome::Picked(Picked::decode(r)?),
        };
        Ok(PickReply { request_id, outcome })
    }
}

impl Picked {
    fn encode(&self, w: &mut Writer) -> Result<(), FieldError> {
        w.u64(self.backend_id);
        self.endpoint.write(w)?;
        w.bytes16(&self.ticket, "ticket", MAX_TICKET_LEN)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Picked, FieldError> {
        let backend_id = r.u64("backend id")?;
        let endpoint = Endpoint::read(r)?;
        let ticket = r.bytes16("ticket", MAX_TICKET_LEN)?.to_vec();
        Ok(Picked { backend_id, endpoint, ticket })
    }
}

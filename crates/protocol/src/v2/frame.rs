//! v2 framing: the header's length checks, the errors, and the reader and writer bodies use.

use super::code::ErrorCode;
use super::kind::MessageType;
use super::limits::MAX_METRICS;
use super::name_error::NameError;
use crate::header::{HEADER_LEN, Header};

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// `len` is smaller than the header itself. Fatal: the stream cannot be re-synchronised.
    #[error("frame length {len} is shorter than the {HEADER_LEN}-byte header")]
    ShorterThanHeader { len: u16 },
    /// `len` exceeds the receiver's limit. Fatal: the body is never buffered.
    #[error("frame length {len} exceeds the limit of {max}")]
    TooLong { len: u16, max: u16 },
    /// A whole frame of a known v2 type whose body breaks a rule. Not fatal: the
    /// frame's `len` bytes are skipped and the stream goes on.
    #[error("malformed {kind:?} frame ({len} bytes)")]
    Malformed {
        kind: MessageType,
        len: usize,
        #[source]
        reason: FieldError,
    },
}

impl DecodeError {
    /// True when the connection cannot go on: the frame boundaries are lost.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::Malformed { .. })
    }

    /// The code of the Error message a dispatcher answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::ShorterThanHeader { .. } | DecodeError::TooLong { .. } => ErrorCode::FRAME_LENGTH,
            DecodeError::Malformed { .. } => ErrorCode::MALFORMED,
        }
    }
}

/// A field that breaks a rule: found while decoding a body, or refused before encoding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldError {
    /// The body ends inside this field (a string or count reaching past the frame's end).
    #[error("the frame ends inside the field `{field}`")]
    Truncated { field: &'static str },
    /// A service, metric or host name breaks the naming rule.
    #[error("field `{field}`: {source}")]
    Name {
        field: &'static str,
        #[source]
        source: NameError,
    },
    /// The address tag is not 1 (IPv4), 2 (IPv6) or 3 (host name).
    #[error("unknown address tag {0}")]
    AddressTag(u8),
    /// A port of 0.
    #[error("the port is 0")]
    ZeroPort,
    /// A percentage above 10000 hundredths that is not the "not reported" value 0xffff.
    #[error("field `{field}` is {value} hundredths of a percent, above 10000")]
    Percent { field: &'static str, value: u16 },
    /// A count that would encode as the "not reported" value 0xffffffff.
    #[error("field `{field}` is 0xffffffff, the value that means \"not reported\"")]
    Reserved { field: &'static str },
    /// A weight of 0.
    #[error("the weight is 0")]
    ZeroWeight,
    /// A backend state other than 0 (ready), 1 (draining) or 2 (maintenance).
    #[error("unknown backend state {0}")]
    State(u8),
    /// More custom metrics than a heartbeat may carry.
    #[error("{count} custom metrics, more than the limit of {max}", max = MAX_METRICS)]
    TooManyMetrics { count: usize },
    /// Two custom metrics with the same name.
    #[error("the custom metric {0:?} appears twice")]
    DuplicateMetric(String),
    /// A custom metric that is NaN or infinite.
    #[error("the custom metric {0:?} is not a finite number")]
    NotFinite(String),
    /// Text that is not UTF-8.
    #[error("field `{field}` is not UTF-8")]
    NotUtf8 { field: &'static str },
    /// A byte string longer than its field allows.
    #[error("field `{field}` is {len} bytes long, above the limit of {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    /// An error code of 0, which means success.
    #[error("error code 0 means success")]
    ZeroErrorCode,
    /// A health other than 0 (healthy) or 1 (unhealthy).
    #[error("unknown health {0}")]
    Health(u8),
    /// A failure reason this version does not define.
    #[error("unknown failure reason {0}")]
    FailureReason(u8),
}

/// Checks the header's `len` against the header size and the limit.
pub(crate) fn check_len(header: Header, max_len: u16) -> Result<(), DecodeError> {
    let len = header.len;
    if usize::from(len) < HEADER_LEN {
        return Err(DecodeError::ShorterThanHeader { len });
    }
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    Ok(())
}

/// Reads fields off a body, front to back. Reading past the end is
/// [`FieldError::Truncated`], never a panic; nothing is allocated here.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Reader { rest: body }
    }

    /// Whether every byte has been read: a field appended by a later version is
    /// absent from an earlier peer's frame.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FieldError> {
        if self.rest.len() < n {
            return Err(FieldError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FieldError> {
        let bytes = self.bytes(N, field)?;
        bytes.try_into().map_err(|_| FieldError::Truncated { field })
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, FieldError> {
        self.array::<1>(field).map(|[b]| b)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, FieldError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, FieldError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, FieldError> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn f64(&mut self, field: &'static str) -> Result<f64, FieldError> {
        self.array(field).map(f64::from_le_bytes)
    }

    /// A `str8`: a `u8` length, then that many bytes.
    pub(crate) fn str8(&mut self, field: &'static str) -> Result<&'a [u8], FieldError> {
        let n = self.u8(field)?;
        self.bytes(usize::from(n), field)
    }

    /// A `u16` length, then that many bytes; a length above `max` is refused before
    /// the bytes are looked at.
    pub(crate) fn bytes16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], FieldError> {
        let n = usize::from(self.u16(field)?);
        if n > max {
            return Err(FieldError::TooLong { field, len: n, max });
        }
        self.bytes(n, field)
    }
}

/// Builds a frame: header first (its `len` filled in by [`Writer::finish`]), then fields.
/// The capacity a [`Writer`] starts with.
const TYPICAL_LEN: usize = 128;

pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(cmd: u16) -> Self {
        // Room for most messages at once (a PickReply with a ticket is 92 bytes), so a
        // reply costs one allocation rather than one per doubling.
        let mut buf = Vec::with_capacity(TYPICAL_LEN);
        buf.extend_from_slice(&Header { len: 0, cmd }.to_bytes());
        Writer { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A `str8`; longer than 255 bytes is refused.
    pub(crate) fn str8(&mut self, v: &[u8], field: &'static str) -> Result<(), FieldError> {
        let n = u8::try_from(v.len()).map_err(|_| FieldError::TooLong { field, len: v.len(), max: 255 })?;
        self.u8(n);
        self.bytes(v);
        Ok(())
    }

    /// A `u16` length then the bytes; longer than `max` is refused.
    pub(crate) fn bytes16(&mut self, v: &[u8], field: &'static str, max: usize) -> Result<(), FieldError> {
        let too_long = FieldError::TooLong { field, len: v.len(), max };
        let n = u16::try_from(v.len()).ok().filter(|_| v.len() <= max).ok_or(too_long)?;
        self.u16(n);
        self.bytes(v);
        Ok(())
    }

    /// The whole frame, with `len` filled in.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, FieldError> {
        let len = self.buf.len();
        let too_long = FieldError::TooLong { field: "len", len, max: usize::from(u16::MAX) };
        let len = u16::try_from(len).map_err(|_| too_long)?;
        self.buf[..2].copy_from_slice(&len.to_le_bytes());
        Ok(self.buf)
    }
}

//! The Error message (type 0x7f) the dispatcher sends when it refuses a frame.

use super::code::ErrorCode;
use super::frame::{FieldError, Reader, Writer};

/// The longest Error text, in bytes of UTF-8.
pub const MAX_ERROR_TEXT_LEN: usize = 255;

/// Dispatcher → any peer: a frame was refused. Only the dispatcher sends it; whether the
/// connection stays open depends on the code (see `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    /// What was refused, and why.
    pub code: ErrorCode,
    /// A short human-readable detail, at most 255 bytes of UTF-8; may be empty.
    pub text: String,
}

impl ErrorMessage {
    /// Size of the longest frame.
    pub const MAX_LEN: usize = 4 + 2 + 1 + MAX_ERROR_TEXT_LEN;

    /// An Error with `text` cut to at most 255 bytes, on a character boundary.
    pub fn new(code: ErrorCode, text: &str) -> ErrorMessage {
        let end = (0..=text.len().min(MAX_ERROR_TEXT_LEN)).rev().find(|&i| text.is_char_boundary(i));
        ErrorMessage { code, text: text[..end.unwrap_or(0)].to_owned() }
    }

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), FieldError> {
        w.u16(self.code.get());
        w.str8(self.text.as_bytes(), "text")
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<ErrorMessage, FieldError> {
        let code = ErrorCode::new(r.u16("code")?).ok_or(FieldError::ZeroErrorCode)?;
        let text = std::str::from_utf8(r.str8("text")?).map_err(|_| FieldError::NotUtf8 { field: "text" })?;
        Ok(ErrorMessage { code, text: text.to_owned() })
    }
}

//! `tokio_util` codecs: the dispatcher side of the legacy protocol (requests in, replies
//! out), and in [`v2`] the peer side of protocol v2.
//!
//! The codec adds to [`protocol::parse_request`](crate::parse_request) the one
//! piece of state that framing needs: how many bytes of the current frame remain to be
//! skipped. Unknown commands, and bytes beyond a known command's size, are discarded
//! as they arrive, so a large frame never has to be buffered.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::header::{HEADER_LEN, MAX_FRAME_LEN};
use crate::login::LoginReply;
use crate::request::{FrameError, Parsed, Request, parse_request};
use crate::v2 as wire;
use crate::v2::DEFAULT_MAX_V2_FRAME_LEN;

/// One decoded item: a request to act on, or a frame that was skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A legacy heartbeat or login.
    Request(Request),
    /// A frame with a command the dispatcher ignores; its `len` bytes are skipped.
    Skipped { cmd: u16, len: usize },
    /// A whole protocol v2 frame: a message, or a type this version does not know.
    V2(wire::Decoded),
    /// A v2 frame of a known type that breaks a rule; its `len` bytes were skipped.
    V2Malformed(wire::DecodeError),
}

/// Why decoding stopped. Either way the connection cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer sent a frame that can never be valid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A v2 frame whose `len` is below the header's size or above the v2 limit.
    #[error(transparent)]
    V2(wire::DecodeError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes [`Inbound`] items and encodes [`LoginReply`] frames.
#[derive(Debug, Clone)]
pub struct DispatcherCodec {
    max_frame_len: u16,
    /// v2 frames are buffered whole, so they have a limit of their own.
    max_v2_frame_len: u16,
    /// Bytes of the current frame still to be discarded.
    skip: usize,
}

impl Default for DispatcherCodec {
    fn default() -> Self {
        DispatcherCodec::new(MAX_FRAME_LEN)
    }
}

impl DispatcherCodec {
    /// A codec that rejects frames longer than `max_frame_len` bytes, and v2 frames
    /// longer than the default v2 limit.
    pub fn new(max_frame_len: u16) -> Self {
        DispatcherCodec::with_v2_limit(max_frame_len, DEFAULT_MAX_V2_FRAME_LEN)
    }

    /// A codec that rejects frames longer than `max_frame_len` bytes, and v2 frames
    /// longer than `max_v2_frame_len`.
    pub fn with_v2_limit(max_frame_len: u16, max_v2_frame_len: u16) -> Self {
        DispatcherCodec { max_frame_len, max_v2_frame_len, skip: 0 }
    }

    /// Decodes the v2 frame at the start of `src` once it is whole.
    fn decode_v2(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        match wire::decode(src, self.max_v2_frame_len) {
            Ok(None) => Ok(None),
            Ok(Some((decoded, len))) => {
                src.advance(len);
                Ok(Some(Inbound::V2(decoded)))
            }
            Err(error) if error.is_fatal() => Err(CodecError::V2(error)),
            Err(error) => {
                if let wire::DecodeError::Malformed { len, .. } = error {
                    src.advance(len);
                }
                Ok(Some(Inbound::V2Malformed(error)))
            }
        }
    }

    /// True while part of a frame has been received but not all of it: the state a
    /// frame timeout applies to.
    pub fn is_mid_frame(&self, buffered: &BytesMut) -> bool {
        self.skip > 0 || !buffered.is_empty()
    }

    fn discard_skipped(&mut self, src: &mut BytesMut) {
        let n = self.skip.min(src.len());
        src.advance(n);
        self.skip -= n;
    }

    /// Consumes a frame of `len` bytes of which some may not have arrived yet.
    fn consume(&mut self, src: &mut BytesMut, len: usize) {
        let n = len.min(src.len());
        src.advance(n);
        self.skip = len - n;
    }
}

impl Decoder for DispatcherCodec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        self.discard_skipped(src);
        if self.skip > 0 {
            return Ok(None);
        }
        if src.len() >= HEADER_LEN && wire::is_v2(u16::from_le_bytes([src[2], src[3]])) {
            return self.decode_v2(src);
        }
        match parse_request(src, self.max_frame_len)? {
            Parsed::Incomplete => {
                src.reserve(HEADER_LEN);
                Ok(None)
            }
            Parsed::Request { request, len } => {
                self.consume(src, len);
                Ok(Some(Inbound::Request(request)))
            }
            Parsed::Unknown { cmd, len } => {
                self.consume(src, len);
                Ok(Some(Inbound::Skipped { cmd, len }))
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if self.is_mid_frame(src) => Err(CodecError::Truncated { buffered: src.len() }),
            None => Ok(None),
        }
    }
}

impl Encoder<LoginReply> for DispatcherCodec {
    type Error = CodecError;

    fn encode(&mut self, reply: LoginReply, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&reply.encode());
        Ok(())
    }
}

pub mod v2;

#[cfg(test)]
mod tests;

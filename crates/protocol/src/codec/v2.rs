//! A `tokio_util` codec for the peers of a v2 dispatcher (agents and clients): v2
//! messages in and out.
//!
//! Frames of a type or version this side does not know are skipped, as the protocol
//! asks of every peer but the dispatcher. A frame that breaks the rules ends the
//! connection: a dispatcher that sends one cannot be trusted with the next.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::v2::{self, DecodeError, Decoded, FieldError, Message};

/// The longest frame a peer accepts from a dispatcher: room for the largest v2
/// message, with margin for fields a later v2.x appends.
pub const PEER_MAX_FRAME_LEN: u16 = 4096;

/// Why a v2 connection could not go on.
#[derive(Debug, thiserror::Error)]
pub enum PeerCodecError {
    #[error("the dispatcher sent a bad frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] FieldError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes v2 [`Message`]s and encodes them, for the agent and the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerCodec;

impl Decoder for PeerCodec {
    type Item = Message;
    type Error = PeerCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, PeerCodecError> {
        loop {
            let Some((decoded, consumed)) = v2::decode(src, PEER_MAX_FRAME_LEN)? else {
                return Ok(None);
            };
            src.advance(consumed);
            match decoded {
                Decoded::Message(message) => return Ok(Some(message)),
                Decoded::UnknownType { .. } | Decoded::OtherVersion { .. } => continue,
            }
        }
    }
}

impl Encoder<&Message> for PeerCodec {
    type Error = PeerCodecError;

    fn encode(&mut self, message: &Message, dst: &mut BytesMut) -> Result<(), PeerCodecError> {
        dst.extend_from_slice(&message.encode()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::{ErrorCode, ErrorMessage, Registered};

    #[test]
    fn skips_unknown_frames_and_waits_for_whole_ones() {
        let registered = Message::Registered(Registered { backend_id: 7 }).encode().unwrap();
        let unknown_type = [4, 0, 0x50, 0x02];
        let legacy_login = [12, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut stream = BytesMut::new();
        stream.extend_from_slice(&unknown_type);
        stream.extend_from_slice(&legacy_login);
        stream.extend_from_slice(&registered[..5]);
        let mut codec = PeerCodec;
        assert_eq!(codec.decode(&mut stream).unwrap(), None);
        assert_eq!(stream.len(), 5, "the skipped frames are consumed");
        stream.extend_from_slice(&registered[5..]);
        assert_eq!(
            codec.decode(&mut stream).unwrap(),
            Some(Message::Registered(Registered { backend_id: 7 }))
        );
        assert!(stream.is_empty());
    }

    #[test]
    fn a_bad_frame_is_an_error_and_messages_round_trip() {
        let mut codec = PeerCodec;
        let error = Message::Error(ErrorMessage::new(ErrorCode::AUTH_FAILED, "wrong secret"));
        let mut buf = BytesMut::new();
        codec.encode(&error, &mut buf).unwrap();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(error));
        let mut too_long = BytesMut::from(&[0xff, 0xff, 0x05, 0x02][..]);
        assert!(matches!(
            codec.decode(&mut too_long),
            Err(PeerCodecError::Decode(DecodeError::TooLong { .. }))
        ));
    }
}

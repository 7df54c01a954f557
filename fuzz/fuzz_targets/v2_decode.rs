//! Decodes arbitrary bytes as a stream of v2 frames, whole and split, and re-encodes
//! every message decoded.
//!
//! Input layout:
//! - bytes 0..2: the frame limit (u16 little-endian; any value, 0 included);
//! - bytes 2..4: where to split the stream (u16 little-endian, modulo its length + 1);
//! - the rest: the stream.
//!
//! Invariants checked:
//! - nothing panics;
//! - a decoded frame is at least a header long, within the limit and within the buffer;
//!   `Ok(None)` comes only when the frame is not all there, and a fatal error only once
//!   a header is;
//! - every decoded message encodes, and that encoding decodes to the same message and
//!   is no longer than the frame it came from;
//! - feeding the stream in two pieces gives the same frames and outcome as in one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loadwise_protocol::HEADER_LEN;
use loadwise_protocol::v2::{DecodeError, Decoded, decode};

/// One step of a stream: a frame (or a skipped malformed one), or a fatal end.
type Item = Result<Decoded, DecodeError>;

/// Decodes everything in `buf` that is whole, checking each answer, and drops what was
/// consumed. Returns `false` after a fatal error.
fn drain(buf: &mut Vec<u8>, max: u16, items: &mut Vec<Item>) -> bool {
    loop {
        match decode(buf, max) {
            Ok(None) => {
                check_incomplete(buf, max);
                return true;
            }
            Ok(Some((decoded, n))) => {
                assert!(n >= HEADER_LEN && n <= usize::from(max) && n <= buf.len(), "frame of {n} bytes");
                check_round_trip(&decoded, n);
                buf.drain(..n);
                items.push(Ok(decoded));
            }
            Err(e) if e.is_fatal() => {
                assert!(buf.len() >= HEADER_LEN, "fatal error {e} before a whole header");
                items.push(Err(e));
                return false;
            }
            Err(e) => {
                let DecodeError::Malformed { len, .. } = e else {
                    unreachable!("only Malformed is not fatal")
                };
                assert!(len >= HEADER_LEN && len <= buf.len(), "malformed frame of {len} bytes");
                buf.drain(..len);
                items.push(Err(e));
            }
        }
    }
}

/// `Ok(None)` only while the header or the frame it announces is not all there.
fn check_incomplete(buf: &[u8], max: u16) {
    if buf.len() >= HEADER_LEN {
        let len = usize::from(u16::from_le_bytes([buf[0], buf[1]]));
        assert!(buf.len() < len && len <= usize::from(max), "incomplete with {} of {len} bytes", buf.len());
    }
}

fn check_round_trip(decoded: &Decoded, frame_len: usize) {
    let Decoded::Message(message) = decoded else {
        return;
    };
    let encoded = message.encode().expect("a decoded message encodes");
    assert!(encoded.len() <= frame_len, "re-encoding grew from {frame_len} to {} bytes", encoded.len());
    let again = decode(&encoded, u16::MAX).expect("a re-encoded message decodes");
    assert_eq!(again, Some((decoded.clone(), encoded.len())), "round trip changed the message");
}

/// Feeds `pieces` one after the other, decoding after each.
fn run(pieces: &[&[u8]], max: u16) -> Vec<Item> {
    let mut buf = Vec::new();
    let mut items = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        if !drain(&mut buf, max, &mut items) {
            break;
        }
    }
    items
}

fuzz_target!(|data: &[u8]| {
    let [m0, m1, s0, s1, stream @ ..] = data else {
        return;
    };
    let max = u16::from_le_bytes([*m0, *m1]);
    let split = usize::from(u16::from_le_bytes([*s0, *s1])) % (stream.len() + 1);
    let whole = run(&[stream], max);
    let (a, b) = stream.split_at(split);
    assert_eq!(run(&[a, b], max), whole, "splitting at {split} changed the result");
});

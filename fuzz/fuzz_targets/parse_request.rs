//! Calls `parse_request` on arbitrary bytes with several length limits, and
//! `LoginReply::decode` on the first 22 bytes.
//!
//! Invariants checked:
//! - nothing panics;
//! - a `Request` or `Unknown` frame has `4 <= len <= max`, agrees with its header, and a
//!   known command's frame is at least that command's size;
//! - `Incomplete` is returned only while the buffer is shorter than what is needed to
//!   decide, and any other answer does not change when more bytes follow;
//! - a reply that decodes encodes back to the same bytes' meaning.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loadwise_protocol::{
    HEADER_LEN, Header, Heartbeat, LoginReply, LoginRequest, Parsed, Request, cmd, parse_request,
};

fn check(buf: &[u8], max: u16) {
    let result = parse_request(buf, max);
    match result {
        Ok(Parsed::Incomplete) => {
            if let Some(header) = Header::parse(buf) {
                let needed = match header.cmd {
                    cmd::HEARTBEAT => Heartbeat::LEN,
                    cmd::LOGIN => LoginRequest::LEN,
                    other => panic!("incomplete with a full header of command {other}"),
                };
                assert!(buf.len() < needed, "incomplete with {} of {needed} bytes", buf.len());
            }
        }
        Ok(Parsed::Request { request, len }) => {
            assert!(len >= HEADER_LEN && len <= usize::from(max), "request len {len}, max {max}");
            let header = Header::parse(buf).expect("a request has a header");
            assert_eq!(usize::from(header.len), len);
            let (command, size) = match request {
                Request::Heartbeat(_) => (cmd::HEARTBEAT, Heartbeat::LEN),
                Request::Login(_) => (cmd::LOGIN, LoginRequest::LEN),
            };
            assert_eq!(header.cmd, command);
            assert!(len >= size, "command {command} frame of {len} bytes, below {size}");
        }
        Ok(Parsed::Unknown { cmd: command, len }) => {
            assert!(len >= HEADER_LEN && len <= usize::from(max), "unknown len {len}, max {max}");
            let header = Header::parse(buf).expect("an unknown frame has a header");
            assert_eq!((header.cmd, usize::from(header.len)), (command, len));
            assert!(command != cmd::HEARTBEAT && command != cmd::LOGIN, "known command {command} skipped");
        }
        Err(_) => {
            assert!(buf.len() >= HEADER_LEN, "an error before the header arrived");
        }
    }

    // Every prefix of `buf` either is still incomplete or gives the same answer.
    for cut in [0, 1, 3, HEADER_LEN, 11, 12, 22, 23] {
        if cut < buf.len() {
            let partial = parse_request(&buf[..cut], max);
            assert!(
                partial == Ok(Parsed::Incomplete) || partial == result,
                "{cut} bytes gave {partial:?}, {} bytes gave {result:?}",
                buf.len()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let from_input = data.get(..2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    for max in [0, 4, 12, 23, 100, from_input, u16::MAX] {
        check(data, max);
        // The same bytes again, with the first two read as the limit and skipped.
        if let Some(rest) = data.get(2..) {
            check(rest, max);
        }
    }

    if let Some(frame) = data.first_chunk::<{ LoginReply::LEN }>()
        && let Ok(reply) = LoginReply::decode(frame)
    {
        assert_eq!(LoginReply::decode(&reply.encode()), Ok(reply), "reply does not round-trip");
    }
});

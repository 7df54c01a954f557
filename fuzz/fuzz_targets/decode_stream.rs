//! Feeds a byte stream to `DispatcherCodec` in chunks and checks that the split points
//! change nothing.
//!
//! The codec speaks both protocols on one stream: a frame whose `cmd` has version byte 2
//! (`v2::is_v2`) is buffered whole, up to the v2 frame limit, and decoded by `v2::decode`;
//! every other frame is a legacy one, read by `parse_request` and skipped as it arrives.
//!
//! Input layout:
//! - bytes 0..2: the codec's maximum (legacy) frame length (u16 little-endian, raised to
//!   at least 23, the size of a heartbeat);
//! - byte 2: the low 3 bits plus one give `k`, the number of chunk-size bytes that
//!   follow; bits 3 and 4 choose the v2 frame limit: the dispatcher's default (4096,
//!   through `DispatcherCodec::new`), the legacy maximum, the largest v2 message
//!   (2703), or 65535;
//! - the next `k` bytes: chunk sizes (0 allowed), used in rotation;
//! - the rest: the stream fed to the codec.
//!
//! Invariants checked:
//! - nothing panics;
//! - a decode never adds bytes to the buffer, and what stays buffered is exactly the
//!   not-yet-consumed tail of what was fed (`fed - consumed`, where `consumed` sums the
//!   lengths of the frames decoded so far, and never below zero);
//! - each item matches the header of the frame it came from: its protocol (by the
//!   version byte), its command or v2 type, its length within that protocol's limit,
//!   and a v2 item only once its whole frame was fed;
//! - when the codec wants more bytes, it holds less than a legacy heartbeat, or the
//!   start of one v2 frame within the v2 limit;
//! - the items and the final outcome (clean end, legacy frame error, v2 length error,
//!   truncation) are the same as when the whole stream is fed at once, and the same as
//!   a plain loop over `parse_request` and `v2::decode`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use loadwise_protocol::codec::{CodecError, DispatcherCodec, Inbound};
use loadwise_protocol::v2::{self, DEFAULT_MAX_V2_FRAME_LEN, DecodeError, Decoded, is_v2};
use loadwise_protocol::{
    FrameError, HEADER_LEN, Header, Heartbeat, LoginRequest, Parsed, Request, cmd, parse_request,
};
use tokio_util::codec::Decoder;

/// The smallest maximum frame length tried: a heartbeat's size.
const MIN_MAX_LEN: u16 = 23;

/// How a run over the whole stream ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// `decode_eof` returned `Ok(None)`.
    Clean,
    /// A legacy frame could never be valid.
    Frame(FrameError),
    /// A v2 frame's `len` is below the header's size or above the v2 limit.
    V2(DecodeError),
    /// The stream stopped in the middle of a frame.
    Truncated { buffered: usize },
}

fn end_of(err: CodecError) -> End {
    match err {
        CodecError::Frame(e) => End::Frame(e),
        CodecError::V2(e) => {
            assert!(e.is_fatal(), "a v2 error that is not fatal ended the stream: {e}");
            End::V2(e)
        }
        CodecError::Truncated { buffered } => End::Truncated { buffered },
        CodecError::Io(e) => panic!("decoding a buffer returned an I/O error: {e}"),
    }
}

/// The limits a codec is built with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max: u16,
    max_v2: u16,
    /// Whether the codec is built with `DispatcherCodec::new`, whose v2 limit is the
    /// default one.
    default_v2: bool,
}

impl Limits {
    fn codec(self) -> DispatcherCodec {
        if self.default_v2 {
            DispatcherCodec::new(self.max)
        } else {
            DispatcherCodec::with_v2_limit(self.max, self.max_v2)
        }
    }

    /// The limit of a frame with this command.
    fn max_for(self, cmd: u16) -> u16 {
        if is_v2(cmd) { self.max_v2 } else { self.max }
    }
}

/// Tracks what has been fed and consumed, and checks the buffer against it.
struct Feed<'a> {
    stream: &'a [u8],
    codec: DispatcherCodec,
    limits: Limits,
    buf: BytesMut,
    fed: usize,
    /// Sum of the lengths of the frames decoded so far (may exceed `fed` while the
    /// rest of a legacy frame is being skipped).
    consumed: usize,
    items: Vec<Inbound>,
}

impl<'a> Feed<'a> {
    fn new(stream: &'a [u8], limits: Limits) -> Self {
        Feed {
            stream,
            codec: limits.codec(),
            limits,
            buf: BytesMut::new(),
            fed: 0,
            consumed: 0,
            items: Vec::new(),
        }
    }

    /// Appends the next `n` bytes of the stream and decodes until the codec wants more.
    fn push(&mut self, n: usize) -> Result<(), End> {
        let chunk = &self.stream[self.fed..self.fed + n];
        self.buf.extend_from_slice(chunk);
        self.fed += n;
        loop {
            let before = self.buf.len();
            let result = self.codec.decode(&mut self.buf);
            assert!(self.buf.len() <= before, "decode grew the buffer from {before} to {}", self.buf.len());
            match result {
                Ok(Some(item)) => {
                    self.record(item);
                    self.check_buffer();
                }
                Ok(None) => {
                    self.check_buffer();
                    self.check_held();
                    return Ok(());
                }
                Err(e) => {
                    self.check_buffer();
                    return Err(end_of(e));
                }
            }
        }
    }

    /// Calls `decode_eof` until it has nothing more to give.
    fn finish(&mut self) -> End {
        loop {
            let before = self.buf.len();
            let result = self.codec.decode_eof(&mut self.buf);
            assert!(self.buf.len() <= before, "decode_eof grew the buffer");
            self.check_buffer();
            match result {
                Ok(Some(item)) => {
                    self.record(item);
                    self.check_buffer();
                }
                Ok(None) => return End::Clean,
                Err(e) => return end_of(e),
            }
        }
    }

    /// Checks an item against the header of the frame it was decoded from, then counts
    /// that frame as consumed.
    fn record(&mut self, item: Inbound) {
        let start = self.consumed;
        assert!(start + HEADER_LEN <= self.fed, "an item was decoded before its header arrived");
        let header = Header::parse(&self.stream[start..]).expect("a full header was fed");
        let len = usize::from(header.len);
        let max = self.limits.max_for(header.cmd);
        assert!(
            len >= HEADER_LEN && header.len <= max,
            "item from a frame of bad length {len} (limit {max})"
        );
        let v2 = is_v2(header.cmd);
        match &item {
            Inbound::Request(request) => {
                assert!(!v2, "a v2 frame decoded as a legacy request");
                let (cmd, fixed) = match request {
                    Request::Heartbeat(_) => (cmd::HEARTBEAT, Heartbeat::LEN),
                    Request::Login(_) => (cmd::LOGIN, LoginRequest::LEN),
                };
                assert_eq!(header.cmd, cmd, "request does not match its header");
                assert!(start + fixed <= self.fed, "a request was decoded before its fields arrived");
            }
            Inbound::Skipped { cmd, len: skipped } => {
                assert!(!v2, "a v2 frame skipped as a legacy one");
                assert_eq!((*cmd, *skipped), (header.cmd, len), "skipped item does not match its header");
            }
            Inbound::V2(decoded) => {
                assert!(v2, "a legacy frame decoded as v2");
                match decoded {
                    Decoded::Message(message) => {
                        assert_eq!(
                            message.message_type().cmd(),
                            header.cmd,
                            "message does not match its header"
                        );
                    }
                    Decoded::UnknownType { msg_type, len: frame_len } => {
                        let expected = (header.cmd.to_le_bytes()[0], len);
                        assert_eq!(
                            (*msg_type, *frame_len),
                            expected,
                            "unknown type does not match its header"
                        );
                    }
                    Decoded::OtherVersion { cmd, .. } => {
                        panic!("a v2 frame decoded as version of cmd {cmd:#06x}")
                    }
                }
            }
            Inbound::V2Malformed(error) => {
                assert!(v2, "a legacy frame reported as a malformed v2 one");
                match error {
                    DecodeError::Malformed { kind, len: frame_len, .. } => {
                        assert_eq!(
                            (kind.cmd(), *frame_len),
                            (header.cmd, len),
                            "malformed frame does not match its header"
                        );
                    }
                    other => panic!("a fatal error came as an item: {other}"),
                }
            }
        }
        if v2 {
            assert!(start + len <= self.fed, "a v2 item was decoded before its whole frame arrived");
        }
        self.consumed += len;
        self.items.push(item);
    }

    /// What stays buffered is exactly the tail of the stream fed and not yet consumed.
    fn check_buffer(&self) {
        let expected = self.fed.saturating_sub(self.consumed);
        assert_eq!(
            self.buf.len(),
            expected,
            "buffered {} bytes, fed {} and consumed {}",
            self.buf.len(),
            self.fed,
            self.consumed
        );
        assert!(
            self.buf[..] == self.stream[self.fed - expected..self.fed],
            "the buffer is not the unconsumed tail of the stream"
        );
    }

    /// While the codec waits for more, it holds less than a legacy heartbeat (legacy
    /// frames are skipped as they arrive), or part of one v2 frame within the v2 limit.
    fn check_held(&self) {
        let held = self.buf.len();
        match Header::parse(&self.buf) {
            Some(header) if is_v2(header.cmd) => {
                assert!(header.len <= self.limits.max_v2, "waiting for a v2 frame above the limit");
                assert!(
                    held < usize::from(header.len),
                    "a whole v2 frame of {} bytes left undecoded",
                    header.len
                );
            }
            _ => assert!(held < Heartbeat::LEN, "{held} bytes held between legacy frames"),
        }
    }
}

/// Feeds `stream` in chunks of the given sizes (in rotation, the last chunk cut short).
fn run_chunked(stream: &[u8], limits: Limits, sizes: &[usize]) -> (Vec<Inbound>, End) {
    let mut feed = Feed::new(stream, limits);
    for &size in sizes.iter().cycle() {
        if feed.fed == stream.len() {
            break;
        }
        let n = size.min(stream.len() - feed.fed);
        if let Err(end) = feed.push(n) {
            return (feed.items, end);
        }
    }
    let end = feed.finish();
    (feed.items, end)
}

/// The same stream described by `parse_request` and `v2::decode` alone, without the
/// codec: a frame whose header says v2 goes to `v2::decode`, any other to
/// `parse_request`.
fn model(stream: &[u8], limits: Limits) -> (Vec<Inbound>, End) {
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let rest = &stream[pos..];
        if Header::parse(rest).is_some_and(|header| is_v2(header.cmd)) {
            match v2::decode(rest, limits.max_v2) {
                Ok(None) => break,
                Ok(Some((decoded, len))) => {
                    items.push(Inbound::V2(decoded));
                    pos += len;
                }
                Err(e) if e.is_fatal() => return (items, End::V2(e)),
                Err(e) => {
                    let DecodeError::Malformed { len, .. } = e else {
                        unreachable!("only Malformed is not fatal")
                    };
                    items.push(Inbound::V2Malformed(e));
                    pos += len;
                }
            }
            continue;
        }
        match parse_request(rest, limits.max) {
            Ok(Parsed::Incomplete) => break,
            Ok(Parsed::Request { request, len }) => {
                items.push(Inbound::Request(request));
                pos += len;
            }
            Ok(Parsed::Unknown { cmd, len }) => {
                items.push(Inbound::Skipped { cmd, len });
                pos += len;
            }
            Err(e) => return (items, End::Frame(e)),
        }
    }
    let end = if pos == stream.len() {
        End::Clean
    } else {
        End::Truncated { buffered: stream.len().saturating_sub(pos) }
    };
    (items, end)
}

fuzz_target!(|data: &[u8]| {
    let [m0, m1, k, rest @ ..] = data else {
        return;
    };
    let max = u16::from_le_bytes([*m0, *m1]).max(MIN_MAX_LEN);
    let default_limit = DEFAULT_MAX_V2_FRAME_LEN;
    let (max_v2, default) = match (k >> 3) & 3 {
        0 => (default_limit, true),
        1 => (max, false),
        2 => (v2::MAX_MESSAGE_LEN as u16, false),
        _ => (u16::MAX, false),
    };
    let limits = Limits { max, max_v2, default_v2: default };
    let k = usize::from(k & 7) + 1;
    if rest.len() < k {
        return;
    }
    let (pattern, stream) = rest.split_at(k);
    let mut sizes: Vec<usize> = pattern.iter().map(|&b| usize::from(b)).collect();
    if sizes.iter().all(|&s| s == 0) {
        // Only empty chunks would never get anywhere: feed everything at once instead.
        sizes = vec![stream.len().max(1)];
    }

    let chunked = run_chunked(stream, limits, &sizes);
    let whole = run_chunked(stream, limits, &[stream.len().max(1)]);
    assert_eq!(chunked, whole, "split points changed the result");
    assert_eq!(whole, model(stream, limits), "the codec disagrees with parse_request and v2::decode");
});

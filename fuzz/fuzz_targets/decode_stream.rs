//! Feeds a byte stream to `DispatcherCodec` in chunks and checks that the split points
//! change nothing.
//!
//! Input layout:
//! - bytes 0..2: the codec's maximum frame length (u16 little-endian, raised to at least 23,
//!   the size of a heartbeat);
//! - byte 2: the low 3 bits plus one give `k`, the number of chunk-size bytes that follow;
//! - the next `k` bytes: chunk sizes (0 allowed), used in rotation;
//! - the rest: the stream fed to the codec.
//!
//! Invariants checked:
//! - nothing panics;
//! - a decode never adds bytes to the buffer, and what stays buffered is exactly the
//!   not-yet-consumed tail of what was fed (`fed - consumed`, where `consumed` sums the
//!   lengths of the frames decoded so far, and never below zero);
//! - each item matches the header of the frame it came from;
//! - the items and the final outcome (clean end, frame error, truncation) are the same as
//!   when the whole stream is fed at once, and the same as a plain loop over
//!   `parse_request`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use loadwise::codec::{CodecError, DispatcherCodec, Inbound};
use loadwise::protocol::{FrameError, HEADER_LEN, Header, Parsed, parse_request};
use tokio_util::codec::Decoder;

/// The smallest maximum frame length tried: a heartbeat's size.
const MIN_MAX_LEN: u16 = 23;

/// How a run over the whole stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `decode_eof` returned `Ok(None)`.
    Clean,
    /// A frame could never be valid.
    Frame(FrameError),
    /// The stream stopped in the middle of a frame.
    Truncated { buffered: usize },
}

fn end_of(err: CodecError) -> End {
    match err {
        CodecError::Frame(e) => End::Frame(e),
        CodecError::Truncated { buffered } => End::Truncated { buffered },
        CodecError::Io(e) => panic!("decoding a buffer returned an I/O error: {e}"),
    }
}

/// Tracks what has been fed and consumed, and checks the buffer against it.
struct Feed<'a> {
    stream: &'a [u8],
    codec: DispatcherCodec,
    max: u16,
    buf: BytesMut,
    fed: usize,
    /// Sum of the lengths of the frames decoded so far (may exceed `fed` while the
    /// rest of a frame is being skipped).
    consumed: usize,
    items: Vec<Inbound>,
}

impl<'a> Feed<'a> {
    fn new(stream: &'a [u8], max: u16) -> Self {
        Feed {
            stream,
            codec: DispatcherCodec::new(max),
            max,
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
        assert!(len >= HEADER_LEN && header.len <= self.max, "item from a frame of bad length {len}");
        if let Inbound::Skipped { cmd, len: skipped } = item {
            assert_eq!((cmd, skipped), (header.cmd, len), "skipped item does not match its header");
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
}

/// Feeds `stream` in chunks of the given sizes (in rotation, the last chunk cut short).
fn run_chunked(stream: &[u8], max: u16, sizes: &[usize]) -> (Vec<Inbound>, End) {
    let mut feed = Feed::new(stream, max);
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

/// The same stream described by `parse_request` alone, without the codec.
fn model(stream: &[u8], max: u16) -> (Vec<Inbound>, End) {
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        match parse_request(&stream[pos..], max) {
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

    let chunked = run_chunked(stream, max, &sizes);
    let whole = run_chunked(stream, max, &[stream.len().max(1)]);
    assert_eq!(chunked, whole, "split points changed the result");
    assert_eq!(whole, model(stream, max), "the codec disagrees with parse_request");
});

use super::*;

use proptest::prelude::*;

use crate::{Header, Heartbeat, IP_FIELD_LEN, IpField, LoginRequest, cmd};

/// A frame on the wire and the item the codec must yield for it.
#[derive(Debug, Clone)]
struct Frame {
    bytes: Vec<u8>,
    item: Inbound,
}

fn sample_heartbeat(mem: u8) -> Heartbeat {
    Heartbeat { mem, ip: IpField::from_text("10.0.0.2").unwrap(), port: 1002 }
}

/// A heartbeat frame, with `trailing` bytes after its 23 counted in its `len`.
fn heartbeat(hb: Heartbeat, trailing: &[u8]) -> Frame {
    let mut bytes = hb.encode().to_vec();
    bytes.extend_from_slice(trailing);
    let len = u16::try_from(bytes.len()).unwrap();
    bytes[..2].copy_from_slice(&len.to_le_bytes());
    Frame { bytes, item: Inbound::Request(Request::Heartbeat(hb)) }
}

fn login(timestamp: u64) -> Frame {
    let login = LoginRequest { timestamp };
    Frame { bytes: login.encode().to_vec(), item: Inbound::Request(Request::Login(login)) }
}

/// A frame of `len` bytes with an unhandled command and a counting body.
fn unknown(cmd: u16, len: usize) -> Frame {
    let mut bytes = header(len, cmd);
    bytes.extend((HEADER_LEN..len).map(|i| i as u8));
    Frame { bytes, item: Inbound::Skipped { cmd, len } }
}

/// A protocol v2 message's frame.
fn v2_frame(message: wire::Message) -> Frame {
    let bytes = message.encode().unwrap();
    Frame { bytes, item: Inbound::V2(wire::Decoded::Message(message)) }
}

fn pick_request(request_id: u32) -> Frame {
    let service = wire::ServiceName::new("search").unwrap();
    v2_frame(wire::Message::PickRequest(wire::PickRequest {
        request_id,
        timestamp: 1_700_000_000,
        service,
        key: wire::PickKey::NONE,
    }))
}

/// A v2 PickRequest whose service name holds a space: skipped whole, reported.
fn malformed_pick_request() -> Frame {
    let mut bytes = pick_request(9).bytes;
    let last = bytes.len() - 1;
    bytes[last] = b' ';
    let item = match wire::decode(&bytes, u16::MAX) {
        Err(error) => Inbound::V2Malformed(error),
        other => panic!("expected a malformed frame, got {other:?}"),
    };
    Frame { bytes, item }
}

fn header(len: usize, cmd: u16) -> Vec<u8> {
    let len = u16::try_from(len).unwrap();
    Header { len, cmd }.to_bytes().to_vec()
}

/// The frames back to back, and the items they must decode to.
fn concat(frames: &[Frame]) -> (Vec<u8>, Vec<Inbound>) {
    let bytes = frames.iter().flat_map(|f| f.bytes.iter().copied()).collect();
    let items = frames.iter().map(|f| f.item.clone()).collect();
    (bytes, items)
}

/// Every kind of frame, ending with a 60000-byte unknown one and a login after it.
fn mixed_stream() -> (Vec<u8>, Vec<Inbound>) {
    concat(&[
        heartbeat(sample_heartbeat(20), &[]),
        login(1_700_000_000),
        unknown(cmd::REGISTER, 8),
        heartbeat(sample_heartbeat(182), &[0xaa, 0xbb]),
        unknown(cmd::DESTROY, 60_000),
        login(1_700_000_001),
        v2_frame(wire::Message::Hello(wire::Hello)),
        pick_request(7),
        malformed_pick_request(),
        unknown(0x0300, 40),
        login(1_700_000_002),
    ])
}

/// Feeds `chunks` one after another as reads would, decoding all it can after each,
/// then decodes at end of stream. After every read, what is left buffered must be
/// less than one heartbeat: only a known frame's start is ever held.
fn decode_chunks<'a>(
    codec: &mut DispatcherCodec,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Inbound>, CodecError> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf)? {
            items.push(item);
        }
        // A v2 frame is held whole before it is decoded, as its limit allows.
        let v2_started = buf.len() >= HEADER_LEN && wire::is_v2(u16::from_le_bytes([buf[2], buf[3]]));
        let most = if v2_started { usize::from(DEFAULT_MAX_V2_FRAME_LEN) } else { Heartbeat::LEN - 1 };
        assert!(buf.len() <= most, "{} bytes held", buf.len());
    }
    while let Some(item) = codec.decode_eof(&mut buf)? {
        items.push(item);
    }
    Ok(items)
}

fn decode_whole(bytes: &[u8]) -> Vec<Inbound> {
    decode_chunks(&mut DispatcherCodec::default(), [bytes]).unwrap()
}

/// The frame error that decoding `bytes` with a limit of `max_frame_len` stops at.
fn frame_error(max_frame_len: u16, bytes: &[u8]) -> FrameError {
    match decode_chunks(&mut DispatcherCodec::new(max_frame_len), [bytes]) {
        Err(CodecError::Frame(error)) => error,
        other => panic!("expected a frame error, got {other:?}"),
    }
}

#[test]
fn whole_stream_decodes_every_frame() {
    let (bytes, items) = mixed_stream();
    assert_eq!(decode_whole(&bytes), items);
}

#[test]
fn split_at_every_byte_decodes_the_same() {
    let (bytes, items) = mixed_stream();
    for at in 0..=bytes.len() {
        let (first, second) = bytes.split_at(at);
        let decoded = decode_chunks(&mut DispatcherCodec::default(), [first, second]);
        assert_eq!(decoded.unwrap(), items, "split at {at}");
    }
}

#[test]
fn one_byte_at_a_time_decodes_the_same() {
    let (bytes, items) = mixed_stream();
    let decoded = decode_chunks(&mut DispatcherCodec::default(), bytes.chunks(1));
    assert_eq!(decoded.unwrap(), items);
}

#[test]
fn coalesced_frames_all_decode_without_more_reads() {
    let (bytes, items) =
        concat(&[login(1), heartbeat(sample_heartbeat(5), &[]), unknown(cmd::ERROR, 4), login(2)]);
    let mut codec = DispatcherCodec::default();
    let mut buf = BytesMut::from(&bytes[..]);
    for item in items {
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(item));
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn large_unknown_frame_is_skipped_as_it_arrives() {
    let big = unknown(cmd::DESTROY, 60_000);
    let next = login(7);
    let mut codec = DispatcherCodec::default();
    let (head, body) = big.bytes.split_at(HEADER_LEN);
    let mut buf = BytesMut::from(head);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(big.item));
    for chunk in body.chunks(1000) {
        assert!(codec.is_mid_frame(&buf));
        buf.extend_from_slice(chunk);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "{} bytes held", buf.len());
    }
    assert!(!codec.is_mid_frame(&buf));
    buf.extend_from_slice(&next.bytes);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(next.item));
}

#[test]
fn is_mid_frame_tracks_partial_frames() {
    let mut codec = DispatcherCodec::default();
    let mut buf = BytesMut::new();
    assert!(!codec.is_mid_frame(&buf));

    let hb = heartbeat(sample_heartbeat(20), &[]);
    buf.extend_from_slice(&hb.bytes[..2]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(codec.is_mid_frame(&buf));
    buf.extend_from_slice(&hb.bytes[2..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(hb.item));
    assert!(!codec.is_mid_frame(&buf));

    let skipped = unknown(cmd::REGISTER, 10);
    buf.extend_from_slice(&skipped.bytes[..HEADER_LEN]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(skipped.item));
    assert!(buf.is_empty());
    assert!(codec.is_mid_frame(&buf), "six bytes still to skip");
    buf.extend_from_slice(&skipped.bytes[HEADER_LEN..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(!codec.is_mid_frame(&buf));
}

#[test]
fn eof_between_frames_is_clean() {
    let mut codec = DispatcherCodec::default();
    assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
    let (bytes, items) = concat(&[login(3), login(4)]);
    let mut buf = BytesMut::from(&bytes[..]);
    for item in items {
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(item));
    }
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

/// The `buffered` count of the truncation error for a stream ending after `bytes`.
fn truncated_at_eof(bytes: &[u8]) -> usize {
    match decode_chunks(&mut DispatcherCodec::default(), [bytes]) {
        Err(CodecError::Truncated { buffered }) => buffered,
        other => panic!("expected a truncation, got {other:?}"),
    }
}

#[test]
fn eof_inside_a_frame_is_truncated() {
    let hb = heartbeat(sample_heartbeat(20), &[0xaa]);
    assert_eq!(truncated_at_eof(&hb.bytes[..2]), 2);
    assert_eq!(truncated_at_eof(&hb.bytes[..10]), 10);
    // The heartbeat itself was complete; only its trailing byte is missing.
    assert_eq!(truncated_at_eof(&hb.bytes[..Heartbeat::LEN]), 0);
    assert_eq!(truncated_at_eof(&unknown(cmd::REGISTER, 100).bytes[..50]), 0);
}

#[test]
fn protocol_errors_are_reported_from_the_header_alone() {
    assert_eq!(
        frame_error(MAX_FRAME_LEN, &header(0, cmd::HEARTBEAT)),
        FrameError::ShorterThanHeader { len: 0 }
    );
    assert_eq!(frame_error(MAX_FRAME_LEN, &header(3, cmd::LOGIN)), FrameError::ShorterThanHeader { len: 3 });
    assert_eq!(
        frame_error(MAX_FRAME_LEN, &header(4, cmd::HEARTBEAT)),
        FrameError::ShorterThanCommand { cmd: cmd::HEARTBEAT, len: 4, min: 23 }
    );
    assert_eq!(
        frame_error(MAX_FRAME_LEN, &header(11, cmd::LOGIN)),
        FrameError::ShorterThanCommand { cmd: cmd::LOGIN, len: 11, min: 12 }
    );
}

#[test]
fn frames_before_a_bad_one_are_still_decoded() {
    let good = login(5);
    let mut buf = BytesMut::from(&good.bytes[..]);
    buf.extend_from_slice(&header(0, cmd::HEARTBEAT));
    let mut codec = DispatcherCodec::default();
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(good.item));
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::Frame(FrameError::ShorterThanHeader { len: 0 }))
    ));
}

#[test]
fn max_frame_len_is_enforced() {
    let at_limit = unknown(cmd::REGISTER, 100);
    let over_limit = unknown(cmd::REGISTER, 101);
    assert_eq!(
        decode_chunks(&mut DispatcherCodec::new(100), [&at_limit.bytes[..]]).unwrap(),
        [at_limit.item]
    );
    assert_eq!(frame_error(100, &over_limit.bytes[..HEADER_LEN]), FrameError::TooLong { len: 101, max: 100 });
    let hb = heartbeat(sample_heartbeat(20), &[0]);
    assert_eq!(frame_error(23, &hb.bytes), FrameError::TooLong { len: 24, max: 23 });
    assert_eq!(frame_error(11, &login(1).bytes), FrameError::TooLong { len: 12, max: 11 });
}

#[test]
fn replies_are_encoded_back_to_back() {
    let backend = LoginReply::Backend { ip: sample_heartbeat(0).ip, port: 1002 };
    let mut dst = BytesMut::new();
    let mut codec = DispatcherCodec::default();
    codec.encode(backend, &mut dst).unwrap();
    codec.encode(LoginReply::Error, &mut dst).unwrap();
    assert_eq!(&dst[..LoginReply::LEN], backend.encode());
    assert_eq!(&dst[LoginReply::LEN..], LoginReply::Error.encode());
}

fn any_frame() -> impl Strategy<Value = Frame> {
    let any_heartbeat = (any::<u8>(), any::<[u8; IP_FIELD_LEN]>(), any::<u16>())
        .prop_map(|(mem, ip, port)| Heartbeat { mem, ip: IpField::from_bytes(ip), port });
    let trailing = proptest::collection::vec(any::<u8>(), 0..8);
    let unknown_cmd = any::<u16>()
        .prop_filter("handled command", |&c| c != cmd::HEARTBEAT && c != cmd::LOGIN && !wire::is_v2(c));
    prop_oneof![
        (any_heartbeat, trailing).prop_map(|(hb, trailing)| heartbeat(hb, &trailing)),
        any::<u64>().prop_map(login),
        (unknown_cmd, HEADER_LEN..300).prop_map(|(c, len)| unknown(c, len)),
        any::<u32>().prop_map(pick_request),
        Just(malformed_pick_request()),
    ]
}

/// `bytes` cut at the given points (indexes into its length, in any order).
fn split(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

fn any_cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    proptest::collection::vec(any::<prop::sample::Index>(), 0..8)
}

proptest! {
    #[test]
    fn valid_frames_decode_the_same_however_split(
        frames in proptest::collection::vec(any_frame(), 0..8),
        cuts in any_cuts(),
    ) {
        let (bytes, items) = concat(&frames);
        let chunks = split(&bytes, &cuts);
        let decoded = decode_chunks(&mut DispatcherCodec::default(), chunks.iter().map(Vec::as_slice));
        prop_assert_eq!(decoded.unwrap(), items);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in any_cuts(),
        max_frame_len: u16,
    ) {
        let chunks = split(&bytes, &cuts);
        let _ = decode_chunks(&mut DispatcherCodec::new(max_frame_len), chunks.iter().map(Vec::as_slice));
    }
}

#[test]
fn a_v2_frame_longer_than_the_v2_limit_is_refused_from_its_header() {
    let mut codec = DispatcherCodec::with_v2_limit(u16::MAX, 3000);
    let mut buf = BytesMut::from(&header(3001, 0x0205)[..]);
    match codec.decode(&mut buf) {
        Err(CodecError::V2(wire::DecodeError::TooLong { len: 3001, max: 3000 })) => {}
        other => panic!("expected a v2 length error, got {other:?}"),
    }
    // At the limit the frame is awaited, not refused.
    let mut buf = BytesMut::from(&header(3000, 0x0205)[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(codec.is_mid_frame(&buf));
}

#[test]
fn a_v2_frame_is_not_limited_by_the_legacy_limit() {
    // Legacy frames are skipped as they arrive; v2 ones have their own limit.
    let frame = pick_request(3);
    let mut codec = DispatcherCodec::with_v2_limit(Heartbeat::LEN as u16, 4096);
    assert_eq!(decode_chunks(&mut codec, [frame.bytes.as_slice()]).unwrap(), vec![frame.item]);
}

use super::auth::{AuthError, Nonce, new_nonce, register_mac, register_mac_input, verify_register};
use super::*;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;

use proptest::prelude::*;

use crate::ticket;

/// The frame limit every vector is decoded with (the documented recommendation).
const MAX: u16 = 4096;

/// The example secret of the document's vectors.
const SECRET: &[u8] = b"loadwise-example-secret";

/// The example challenge nonce: `00 01 .. 0f`.
const NONCE: Nonce = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The example ticket nonce: `10 11 .. 1f`.
const TICKET_NONCE: [u8; 16] = [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31];

// ---------------------------------------------------------------------------------------
// The document's vectors

/// The rows of the document's "v2 test vectors" table, as `(name, bytes)`.
fn doc_vectors() -> Vec<(&'static str, Vec<u8>)> {
    crate::doc_vectors::table("### v2 test vectors")
}

/// What a vector must mean to the code.
#[derive(Debug)]
enum Expect {
    /// A whole frame that decodes to this message and is its encoding.
    Frame(Message),
    /// A frame that decodes to this message; its last `n` bytes are ignored trailing bytes.
    Trailing(Message, usize),
    /// A whole frame that is not a message this version knows.
    Skipped(Decoded),
    /// A whole frame of a known type whose body breaks a rule.
    Malformed(MessageType, FieldError),
    /// A header that ends the connection.
    Fatal(DecodeError),
    /// Not a frame: a byte string (MAC input, MAC, ticket).
    Bytes(Vec<u8>),
}

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn port(p: u16) -> NonZeroU16 {
    NonZeroU16::new(p).unwrap()
}

fn v4(a: [u8; 4], p: u16) -> Endpoint {
    Endpoint { host: Host::V4(Ipv4Addr::from(a)), port: port(p) }
}

fn pct(hundredths: u16) -> Option<Percent> {
    Some(Percent::from_hundredths(hundredths).unwrap())
}

fn metric(name: &str, value: f64) -> Metric {
    Metric { name: MetricName::new(name).unwrap(), value }
}

/// Backend 42 of `search` at 10.0.0.2:1002: memory 20 %, CPU 12.5 %, 17 connections.
fn heartbeat_ipv4() -> Heartbeat {
    Heartbeat {
        backend_id: 42,
        service: service("search"),
        endpoint: v4([10, 0, 0, 2], 1002),
        memory: pct(2000),
        cpu: pct(1250),
        connections: Some(17),
        weight: DEFAULT_WEIGHT,
        state: State::Ready,
        metrics: vec![],
        health: Health::Healthy,
        slots: None,
    }
}

/// `heartbeat_ipv4` with slots: capacity 50, 37 in use, grant 3 of 120.
fn heartbeat_slots() -> Heartbeat {
    let slots = Slots { capacity: 50, in_use: 37, grant_seq: 3, grant_total: 120 };
    Heartbeat { slots: Some(slots), ..heartbeat_ipv4() }
}

fn heartbeat_ipv6_metrics() -> Heartbeat {
    Heartbeat {
        backend_id: 43,
        service: service("search"),
        endpoint: Endpoint { host: Host::V6(Ipv6Addr::LOCALHOST), port: port(8080) },
        memory: None,
        cpu: None,
        connections: None,
        weight: NonZeroU16::new(50).unwrap(),
        state: State::Draining,
        metrics: vec![metric("queue", 3.5), metric("gpu.util", 0.25)],
        health: Health::Healthy,
        slots: None,
    }
}

fn heartbeat_hostname() -> Heartbeat {
    Heartbeat {
        backend_id: 44,
        service: service("img-resize"),
        endpoint: Endpoint { host: Host::Name(HostName::new("backend-1.example").unwrap()), port: port(443) },
        memory: pct(10_000),
        cpu: pct(0),
        connections: Some(0),
        weight: NonZeroU16::new(200).unwrap(),
        state: State::Maintenance,
        metrics: vec![],
        health: Health::Healthy,
        slots: None,
    }
}

fn pick_request() -> PickRequest {
    PickRequest { request_id: 7, timestamp: 1_700_000_000, service: service("search"), key: PickKey::NONE }
}

/// The document's example ticket: backend 42, `search`, issued at 1700000000 for 30 s.
fn example_claims() -> ticket::Claims {
    ticket::Claims::new(42, &service("search"), 1_700_000_000, 30, TICKET_NONCE)
}

fn example_ticket() -> ticket::Ticket {
    ticket::issue(SECRET, &example_claims())
}

fn picked(ticket: Vec<u8>) -> PickReply {
    PickReply {
        request_id: 7,
        outcome: PickOutcome::Picked(Picked { backend_id: 42, endpoint: v4([10, 0, 0, 2], 1002), ticket }),
    }
}

/// A report on backend 42 of `search`.
fn failure_report(reason: FailureReason, ticket: Vec<u8>) -> FailureReport {
    FailureReport { backend_id: 42, reason, service: service("search"), ticket }
}

fn name_error(field: &'static str, source: NameError) -> FieldError {
    FieldError::Name { field, source }
}

/// The ticket MAC input of the example ticket: domain tag, then the first 49 bytes.
fn ticket_mac_input() -> Vec<u8> {
    let mut input = ticket::DOMAIN.to_vec();
    input.extend_from_slice(&example_ticket().as_bytes()[..49]);
    input
}

/// Every vector the document must contain, with its meaning.
fn expected() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    let search = service("search");
    let register = Register::signed(SECRET, &NONCE, search.clone(), 42);
    vec![
        ("hello", Frame(Message::Hello(Hello))),
        ("challenge", Frame(Message::Challenge(Challenge { nonce: NONCE, server_time: 1_700_000_000 }))),
        ("register-mac-input", Bytes(register_mac_input(&NONCE, &search, 42))),
        ("register-mac", Bytes(register_mac(SECRET, &NONCE, &search, 42).to_vec())),
        ("register", Frame(Message::Register(register))),
        ("registered", Frame(Message::Registered(Registered { backend_id: 42 }))),
        ("heartbeat-ipv4", Frame(Message::Heartbeat(heartbeat_ipv4()))),
        ("heartbeat-ipv6-metrics", Frame(Message::Heartbeat(heartbeat_ipv6_metrics()))),
        ("heartbeat-hostname", Frame(Message::Heartbeat(heartbeat_hostname()))),
        ("heartbeat-trailing", Trailing(Message::Heartbeat(heartbeat_slots()), 2)),
        ("heartbeat-slots", Frame(Message::Heartbeat(heartbeat_slots()))),
        (
            "malformed-slots-truncated",
            Malformed(MessageType::Heartbeat, FieldError::Truncated { field: "grant total" }),
        ),
        ("lease-report", Frame(Message::LeaseReport(LeaseReport { grant_seq: 3, sent_total: 117 }))),
        (
            "pick-reply-no-free-place",
            Frame(Message::PickReply(PickReply {
                request_id: 7,
                outcome: PickOutcome::Refused(ErrorCode::NO_FREE_PLACE),
            })),
        ),
        (
            "heartbeat-unhealthy",
            Frame(Message::Heartbeat(Heartbeat { health: Health::Unhealthy, ..heartbeat_ipv4() })),
        ),
        ("heartbeat-health-0", Trailing(Message::Heartbeat(heartbeat_ipv4()), 1)),
        ("failure-report", Frame(Message::FailureReport(failure_report(FailureReason::Refused, vec![])))),
        (
            "failure-report-ticket",
            Frame(Message::FailureReport(failure_report(
                FailureReason::Timeout,
                example_ticket().as_bytes().to_vec(),
            ))),
        ),
        ("malformed-health-2", Malformed(MessageType::Heartbeat, FieldError::Health(2))),
        ("malformed-failure-reason-5", Malformed(MessageType::FailureReport, FieldError::FailureReason(5))),
        ("pick-request", Frame(Message::PickRequest(pick_request()))),
        (
            "pick-request-key",
            Frame(Message::PickRequest(PickRequest {
                key: PickKey::new("player-42").unwrap(),
                ..pick_request()
            })),
        ),
        ("pick-request-key-empty", Trailing(Message::PickRequest(pick_request()), 1)),
        ("ticket-mac-input", Bytes(ticket_mac_input())),
        ("ticket", Bytes(example_ticket().as_bytes().to_vec())),
        ("pick-reply-ticket", Frame(Message::PickReply(picked(example_ticket().as_bytes().to_vec())))),
        ("pick-reply-no-ticket", Frame(Message::PickReply(picked(vec![])))),
        (
            "pick-reply-no-backend",
            Frame(Message::PickReply(PickReply {
                request_id: 7,
                outcome: PickOutcome::Refused(ErrorCode::NO_BACKEND),
            })),
        ),
        (
            "pick-reply-busy",
            Frame(Message::PickReply(PickReply {
                request_id: 7,
                outcome: PickOutcome::Refused(ErrorCode::BUSY),
            })),
        ),
        (
            "error-unknown-type",
            Frame(Message::Error(ErrorMessage::new(ErrorCode::UNKNOWN_TYPE, "unknown type 0x7e"))),
        ),
        ("unknown-type-0x7e", Skipped(Decoded::UnknownType { msg_type: 0x7e, len: 4 })),
        ("version-3", Skipped(Decoded::OtherVersion { cmd: 0x0301, len: 6 })),
        (
            "malformed-service-space",
            Malformed(
                MessageType::PickRequest,
                name_error("service", NameError::BadByte { index: 2, byte: b' ' }),
            ),
        ),
        (
            "malformed-service-empty",
            Malformed(MessageType::PickRequest, name_error("service", NameError::Empty)),
        ),
        (
            "malformed-string-past-end",
            Malformed(MessageType::PickRequest, FieldError::Truncated { field: "service" }),
        ),
        (
            "malformed-key-too-long",
            Malformed(
                MessageType::PickRequest,
                FieldError::TooLong { field: "key", len: 65, max: MAX_KEY_LEN },
            ),
        ),
        ("malformed-address-tag", Malformed(MessageType::Heartbeat, FieldError::AddressTag(9))),
        (
            "malformed-metric-count-past-end",
            Malformed(MessageType::Heartbeat, FieldError::Truncated { field: "metric name" }),
        ),
        ("malformed-weight-0", Malformed(MessageType::Heartbeat, FieldError::ZeroWeight)),
        (
            "malformed-memory-10001",
            Malformed(MessageType::Heartbeat, FieldError::Percent { field: "memory", value: 10_001 }),
        ),
        ("malformed-state-3", Malformed(MessageType::Heartbeat, FieldError::State(3))),
        (
            "malformed-register-short",
            Malformed(MessageType::Register, FieldError::Truncated { field: "mac" }),
        ),
        ("fatal-len3", Fatal(DecodeError::ShorterThanHeader { len: 3 })),
        ("fatal-len-over-limit", Fatal(DecodeError::TooLong { len: 4097, max: MAX })),
    ]
}

/// Checks one vector against the code, including every prefix of it.
fn check_vector(name: &str, bytes: &[u8], expect: &Expect) {
    match expect {
        Expect::Frame(message) => {
            assert_eq!(message.encode().as_deref(), Ok(bytes), "{name}: encoding");
            check_decodes(bytes, Ok(Some((Decoded::Message(message.clone()), bytes.len()))));
        }
        Expect::Trailing(message, n) => {
            let encoded = message.encode().unwrap();
            assert_eq!(encoded[2..], bytes[2..bytes.len() - n], "{name}: fields before the trailing bytes");
            check_decodes(bytes, Ok(Some((Decoded::Message(message.clone()), bytes.len()))));
        }
        Expect::Skipped(decoded) => check_decodes(bytes, Ok(Some((decoded.clone(), bytes.len())))),
        Expect::Malformed(kind, reason) => {
            let error = DecodeError::Malformed { kind: *kind, len: bytes.len(), reason: reason.clone() };
            check_decodes(bytes, Err(error));
        }
        Expect::Fatal(error) => {
            assert_eq!(decode(bytes, MAX), Err(error.clone()), "{name}");
            assert_eq!(decode(&bytes[..HEADER_LEN], MAX), Err(error.clone()), "{name}: header alone");
        }
        Expect::Bytes(wanted) => assert_eq!(bytes, wanted.as_slice(), "{name}"),
    }
}

/// The whole frame decodes as `whole`; every shorter prefix is incomplete.
fn check_decodes(bytes: &[u8], whole: Result<Option<(Decoded, usize)>, DecodeError>) {
    assert_eq!(decode(bytes, MAX), whole);
    for end in 0..bytes.len() {
        assert_eq!(decode(&bytes[..end], MAX), Ok(None), "prefix of {end} bytes");
    }
}

#[test]
fn the_doc_vectors_are_exactly_the_expected_ones_and_mean_what_they_say() {
    crate::doc_vectors::check_table("### v2 test vectors", &expected(), |name, bytes, expect| {
        check_vector(name, bytes, expect);
    });
}

#[test]
fn doc_quotes_the_example_ticket_text() {
    let text = example_ticket().to_text();
    assert!(
        crate::doc_vectors::DOC.contains(&format!("`{text}`")),
        "docs/protocol.md should quote the ticket text {text}"
    );
    assert_eq!(ticket::verify(SECRET, &text, &service("search"), 42, 1_700_000_000), Ok(example_claims()));
}

/// Prints the vectors' hex, to paste into the document when a vector is added:
/// `cargo test --lib print_vectors -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_vectors() {
    for (name, expect) in expected() {
        let bytes = match expect {
            Expect::Frame(m) | Expect::Trailing(m, _) => m.encode().unwrap(),
            Expect::Bytes(b) => b,
            _ => continue,
        };
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        println!("| {name} | `{}` |", hex.join(" "));
    }
    println!("ticket text: {}", example_ticket());
}

// ---------------------------------------------------------------------------------------
// Framing

#[test]
fn version_and_type_live_in_cmd() {
    assert_eq!(MessageType::Hello.cmd(), 0x0201);
    assert_eq!(MessageType::Error.cmd(), 0x027f);
    assert_eq!(version_of(0x0205), 2);
    assert_eq!(version_of(crate::cmd::LOGIN), 0);
    assert!(is_v2(0x02ff) && is_v2(0x0200));
    assert!(!is_v2(0x0004) && !is_v2(0x0105) && !is_v2(0x0305));
    for kind in MessageType::ALL {
        assert_eq!(MessageType::from_u8(kind as u8), Some(kind));
    }
    assert_eq!(MessageType::from_u8(0), None);
    assert_eq!(MessageType::from_u8(0x07), None);
}

#[test]
fn legacy_frames_are_another_version() {
    let login = crate::LoginRequest { timestamp: 1_700_000_000 }.encode();
    assert_eq!(decode(&login, MAX), Ok(Some((Decoded::OtherVersion { cmd: 2, len: 12 }, 12))));
    let refusal = Decoded::OtherVersion { cmd: 0x0301, len: 4 }.refusal();
    assert_eq!(refusal, Some(ErrorCode::UNSUPPORTED_VERSION));
    assert_eq!(Decoded::UnknownType { msg_type: 9, len: 4 }.refusal(), Some(ErrorCode::UNKNOWN_TYPE));
    assert_eq!(Decoded::Message(Message::Hello(Hello)).refusal(), None);
}

#[test]
fn length_is_checked_on_the_header_alone() {
    // A header claiming 65535 bytes is refused before any body byte arrives.
    assert_eq!(decode(&[0xff, 0xff, 0x05, 0x02], 4096), Err(DecodeError::TooLong { len: 0xffff, max: 4096 }));
    // Within the limit, the header alone is just incomplete.
    assert_eq!(decode(&[0xff, 0xff, 0x05, 0x02], u16::MAX), Ok(None));
    for len in 0..4u16 {
        let header = crate::Header { len, cmd: 0x0205 }.to_bytes();
        assert_eq!(decode(&header, MAX), Err(DecodeError::ShorterThanHeader { len }));
    }
    // A limit below the header refuses everything.
    assert_eq!(decode(&[4, 0, 1, 2], 3), Err(DecodeError::TooLong { len: 4, max: 3 }));
    assert_eq!(decode(&[4, 0, 1, 2], 4), Ok(Some((Decoded::Message(Message::Hello(Hello)), 4))));
}

#[test]
fn decode_error_says_whether_the_stream_survives() {
    let fatal = DecodeError::TooLong { len: 9, max: 8 };
    assert!(fatal.is_fatal());
    assert_eq!(fatal.code(), ErrorCode::FRAME_LENGTH);
    assert!(DecodeError::ShorterThanHeader { len: 0 }.is_fatal());
    let malformed =
        DecodeError::Malformed { kind: MessageType::Hello, len: 4, reason: FieldError::ZeroWeight };
    assert!(!malformed.is_fatal());
    assert_eq!(malformed.code(), ErrorCode::MALFORMED);
}

#[test]
fn the_largest_heartbeat_is_exactly_the_limit() {
    let hb = largest_heartbeat();
    let frame = Message::Heartbeat(hb.clone()).encode().unwrap();
    assert_eq!(frame.len(), MAX_MESSAGE_LEN);
    assert_eq!(MAX_MESSAGE_LEN, 2703);
    let limit = u16::try_from(MAX_MESSAGE_LEN).unwrap();
    assert_eq!(decode(&frame, limit), Ok(Some((Decoded::Message(Message::Heartbeat(hb)), frame.len()))));
    assert_eq!(decode(&frame, limit - 1), Err(DecodeError::TooLong { len: limit, max: limit - 1 }));
    for max_len in [Register::MAX_LEN, PickRequest::MAX_LEN, PickReply::MAX_LEN, ErrorMessage::MAX_LEN] {
        assert!(max_len <= MAX_MESSAGE_LEN);
    }
}

fn largest_heartbeat() -> Heartbeat {
    let long = |c: char, n: usize| c.to_string().repeat(n);
    let metrics = (0..MAX_METRICS).map(|i| metric(&format!("{i:02}{}", long('m', 62)), i as f64)).collect();
    Heartbeat {
        service: service(&long('s', 64)),
        endpoint: Endpoint { host: Host::Name(HostName::new(&long('h', 253)).unwrap()), port: port(1) },
        metrics,
        health: Health::Unhealthy,
        slots: Some(Slots {
            capacity: u32::MAX,
            in_use: u32::MAX,
            grant_seq: u32::MAX,
            grant_total: u64::MAX,
        }),
        ..heartbeat_ipv4()
    }
}

// ---------------------------------------------------------------------------------------
// Split reads

/// Decodes a stream fed in `chunks`, the way a connection would: buffer, decode until
/// incomplete, drop consumed bytes; a malformed frame is recorded and skipped.
fn decode_chunked(chunks: &[&[u8]]) -> (Vec<Result<Decoded, DecodeError>>, Option<DecodeError>) {
    let mut buf = Vec::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&buf, MAX) {
                Ok(None) => break,
                Ok(Some((decoded, n))) => {
                    assert!(n <= buf.len());
                    buf.drain(..n);
                    items.push(Ok(decoded));
                }
                Err(e) if e.is_fatal() => return (items, Some(e)),
                Err(e) => {
                    let DecodeError::Malformed { len, .. } = e else { unreachable!() };
                    buf.drain(..len);
                    items.push(Err(e));
                }
            }
        }
    }
    (items, None)
}

/// Every frame vector of the document, back to back, ending with the fatal ones.
fn doc_stream() -> Vec<u8> {
    let expected = expected();
    let vectors = doc_vectors();
    let mut frames: Vec<&Vec<u8>> = vectors
        .iter()
        .filter(|(name, _)| {
            let (_, e) = expected.iter().find(|(n, _)| n == name).unwrap();
            !matches!(e, Expect::Bytes(_) | Expect::Fatal(_))
        })
        .map(|(_, bytes)| bytes)
        .collect();
    let fatal = vectors.iter().find(|(name, _)| *name == "fatal-len-over-limit").unwrap();
    frames.push(&fatal.1);
    frames.into_iter().flatten().copied().collect()
}

#[test]
fn one_byte_at_a_time_gives_the_same_frames() {
    let stream = doc_stream();
    let whole = decode_chunked(&[&stream]);
    assert_eq!(whole.1, Some(DecodeError::TooLong { len: 4097, max: MAX }));
    assert_eq!(whole.0.len(), 38, "{:#?}", whole.0);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(decode_chunked(&bytes), whole);
}

proptest! {
    #[test]
    fn random_splits_give_the_same_frames(cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40)) {
        let stream = doc_stream();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([stream.len()]) {
            chunks.push(&stream[start..p]);
            start = p;
        }
        prop_assert_eq!(decode_chunked(&chunks), decode_chunked(&[&stream]));
    }
}

// ---------------------------------------------------------------------------------------
// Boundaries

/// Patches the frame's `len` to its length.
fn fix_len(mut frame: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(frame.len()).unwrap();
    frame[..2].copy_from_slice(&len.to_le_bytes());
    frame
}

fn malformed_reason(frame: &[u8]) -> FieldError {
    match decode(frame, u16::MAX) {
        Err(DecodeError::Malformed { reason, len, .. }) => {
            assert_eq!(len, frame.len());
            reason
        }
        other => panic!("expected a malformed frame, got {other:?}"),
    }
}

/// A PickRequest frame whose service field is `name` as given, unchecked.
fn pick_with_raw_service(name: &[u8]) -> Vec<u8> {
    let mut frame = vec![0, 0, 0x10, 0x02];
    frame.extend_from_slice(&7u32.to_le_bytes());
    frame.extend_from_slice(&1_700_000_000u64.to_le_bytes());
    frame.push(u8::try_from(name.len()).unwrap());
    frame.extend_from_slice(name);
    fix_len(frame)
}

#[test]
fn service_names_are_1_to_64_safe_bytes() {
    assert!(ServiceName::new(&"a".repeat(64)).is_ok());
    assert_eq!(ServiceName::new(&"a".repeat(65)), Err(NameError::TooLong { len: 65, max: 64 }));
    assert_eq!(ServiceName::new(""), Err(NameError::Empty));
    assert!(ServiceName::new("Az09._-").is_ok());
    for (bad, index) in [("a/b", 1), ("é", 0), ("a b", 1), ("x\0", 1), ("a:1", 1)] {
        let byte = bad.as_bytes()[index];
        assert_eq!(ServiceName::new(bad), Err(NameError::BadByte { index, byte }), "{bad:?}");
    }
    let reason = malformed_reason(&pick_with_raw_service(&[b'a'; 65]));
    assert_eq!(reason, name_error("service", NameError::TooLong { len: 65, max: 64 }));
    let reason = malformed_reason(&pick_with_raw_service(b"a\xffb"));
    assert_eq!(reason, name_error("service", NameError::BadByte { index: 1, byte: 0xff }));
    let ok = pick_with_raw_service(&[b'a'; 64]);
    assert!(matches!(decode(&ok, MAX), Ok(Some((Decoded::Message(_), _)))));
}

#[test]
fn host_names_are_at_most_253_bytes() {
    assert!(HostName::new(&"h".repeat(253)).is_ok());
    assert_eq!(HostName::new(&"h".repeat(254)), Err(NameError::TooLong { len: 254, max: 253 }));
    let mut frame = Message::Heartbeat(heartbeat_hostname()).encode().unwrap();
    // The host name's length byte sits after the fixed fields, the service and the tag.
    let at = 23 + 1 + "img-resize".len() + 1;
    assert_eq!(frame[at], 17);
    frame[at] = 254;
    assert_eq!(malformed_reason(&frame), FieldError::Truncated { field: "host name" });
}

#[test]
fn address_tags_other_than_1_2_3_are_malformed() {
    let frame = Message::Heartbeat(heartbeat_ipv4()).encode().unwrap();
    let at = 23 + 1 + "search".len();
    assert_eq!(frame[at], tag::IPV4);
    for bad in [0u8, 4, 0xff] {
        let mut bad_frame = frame.clone();
        bad_frame[at] = bad;
        assert_eq!(malformed_reason(&bad_frame), FieldError::AddressTag(bad));
    }
}

#[test]
fn port_zero_is_malformed() {
    let mut frame = Message::Heartbeat(heartbeat_ipv4()).encode().unwrap();
    let at = 23 + 1 + "search".len() + 1 + 4;
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    assert_eq!(malformed_reason(&frame), FieldError::ZeroPort);
    assert_eq!(Endpoint::from_socket_addr("10.0.0.2:0".parse().unwrap()), None);
}

#[test]
fn metric_limits() {
    let mut hb = heartbeat_ipv4();
    hb.metrics = (0..MAX_METRICS).map(|i| metric(&format!("m{i}"), 1.0)).collect();
    let frame = Message::Heartbeat(hb.clone()).encode().unwrap();
    assert_eq!(
        decode(&frame, MAX),
        Ok(Some((Decoded::Message(Message::Heartbeat(hb.clone())), frame.len())))
    );

    hb.metrics.push(metric("one-too-many", 1.0));
    assert_eq!(Message::Heartbeat(hb.clone()).encode(), Err(FieldError::TooManyMetrics { count: 33 }));

    // A count of 33 on the wire is refused before any metric is read.
    let mut wire = Message::Heartbeat(heartbeat_ipv4()).encode().unwrap();
    *wire.last_mut().unwrap() = 33;
    assert_eq!(malformed_reason(&wire), FieldError::TooManyMetrics { count: 33 });
    // A count of 32 with nothing behind it runs past the frame's end.
    *wire.last_mut().unwrap() = 32;
    assert_eq!(malformed_reason(&wire), FieldError::Truncated { field: "metric name" });
}

#[test]
fn metrics_are_finite_and_distinct() {
    let mut hb = heartbeat_ipv4();
    hb.metrics = vec![metric("q", 1.0), metric("q", 2.0)];
    assert_eq!(Message::Heartbeat(hb.clone()).encode(), Err(FieldError::DuplicateMetric("q".into())));
    hb.metrics = vec![metric("q", f64::NAN)];
    assert_eq!(Message::Heartbeat(hb.clone()).encode(), Err(FieldError::NotFinite("q".into())));

    // The same two faults, written on the wire by hand.
    let base = Message::Heartbeat(heartbeat_ipv4()).encode().unwrap();
    let with_metrics = |metrics: &[(&str, f64)]| {
        let mut frame = base.clone();
        *frame.last_mut().unwrap() = u8::try_from(metrics.len()).unwrap();
        for (name, value) in metrics {
            frame.push(u8::try_from(name.len()).unwrap());
            frame.extend_from_slice(name.as_bytes());
            frame.extend_from_slice(&value.to_le_bytes());
        }
        fix_len(frame)
    };
    let dup = with_metrics(&[("q", 1.0), ("q", 2.0)]);
    assert_eq!(malformed_reason(&dup), FieldError::DuplicateMetric("q".into()));
    let inf = with_metrics(&[("q", f64::INFINITY)]);
    assert_eq!(malformed_reason(&inf), FieldError::NotFinite("q".into()));
}

#[test]
fn percentages_and_counts_have_a_not_reported_value() {
    assert_eq!(Percent::from_hundredths(10_000), Some(Percent::FULL));
    assert_eq!(Percent::from_hundredths(10_001), None);
    let mut hb = heartbeat_ipv4();
    hb.connections = Some(NOT_REPORTED_U32);
    let reserved = FieldError::Reserved { field: "connections" };
    assert_eq!(Message::Heartbeat(hb.clone()).encode(), Err(reserved));
    hb.connections = Some(NOT_REPORTED_U32 - 1);
    assert!(Message::Heartbeat(hb).encode().is_ok());

    // cpu 0xfffe on the wire: neither a percentage nor "not reported".
    let mut frame = Message::Heartbeat(heartbeat_ipv4()).encode().unwrap();
    frame[14..16].copy_from_slice(&0xfffe_u16.to_le_bytes());
    assert_eq!(malformed_reason(&frame), FieldError::Percent { field: "cpu", value: 0xfffe });
}

#[test]
fn ticket_length_is_bounded() {
    let frame = Message::PickReply(picked(vec![0xab; MAX_TICKET_LEN])).encode().unwrap();
    assert!(matches!(decode(&frame, u16::MAX), Ok(Some((Decoded::Message(_), _)))));
    let too_long = Message::PickReply(picked(vec![0xab; MAX_TICKET_LEN + 1])).encode();
    assert_eq!(too_long, Err(FieldError::TooLong { field: "ticket", len: 1025, max: 1024 }));

    // A length of 1025 on the wire is refused before the bytes are looked at.
    let mut wire = Message::PickReply(picked(vec![])).encode().unwrap();
    let at = wire.len() - 2;
    wire[at..].copy_from_slice(&1025u16.to_le_bytes());
    assert_eq!(malformed_reason(&wire), FieldError::TooLong { field: "ticket", len: 1025, max: 1024 });
    wire[at..].copy_from_slice(&5u16.to_le_bytes());
    assert_eq!(malformed_reason(&wire), FieldError::Truncated { field: "ticket" });
}

#[test]
fn error_text_is_at_most_255_bytes_of_utf8() {
    let long = "é".repeat(200);
    let cut = ErrorMessage::new(ErrorCode::MALFORMED, &long);
    assert_eq!(cut.text.len(), 254, "cut on a character boundary");
    assert!(Message::Error(cut).encode().is_ok());
    let raw = ErrorMessage { code: ErrorCode::MALFORMED, text: "x".repeat(256) };
    assert_eq!(Message::Error(raw).encode(), Err(FieldError::TooLong { field: "text", len: 256, max: 255 }));

    let frame = fix_len(vec![0, 0, 0x7f, 0x02, 8, 0, 2, 0xc3, 0x28]);
    assert_eq!(malformed_reason(&frame), FieldError::NotUtf8 { field: "text" });
    let zero = fix_len(vec![0, 0, 0x7f, 0x02, 0, 0, 0]);
    assert_eq!(malformed_reason(&zero), FieldError::ZeroErrorCode);
}

#[test]
fn unknown_error_codes_still_decode() {
    let frame = Message::Error(ErrorMessage::new(ErrorCode::new(999).unwrap(), "later")).encode().unwrap();
    let Ok(Some((Decoded::Message(Message::Error(e)), _))) = decode(&frame, MAX) else { panic!() };
    assert_eq!(e.code.get(), 999);
    assert_eq!(e.code.to_string(), "error code 999");
    assert_eq!(ErrorCode::NO_BACKEND.to_string(), "no backend (1)");
    assert_eq!(ErrorCode::new(0), None);
    for (i, (code, _)) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(usize::from(code.get()), i + 1, "codes are numbered from 1 without gaps");
    }
}

#[test]
fn pick_reply_status_zero_needs_a_backend() {
    let frame = fix_len(vec![0, 0, 0x11, 0x02, 7, 0, 0, 0, 0, 0]);
    assert_eq!(malformed_reason(&frame), FieldError::Truncated { field: "backend id" });
}

#[test]
fn endpoints_display_as_host_and_port() {
    assert_eq!(v4([10, 0, 0, 2], 1002).to_string(), "10.0.0.2:1002");
    assert_eq!(heartbeat_ipv6_metrics().endpoint.to_string(), "[::1]:8080");
    assert_eq!(heartbeat_hostname().endpoint.to_string(), "backend-1.example:443");
    let from = Endpoint::from_socket_addr("[::1]:8080".parse().unwrap());
    assert_eq!(from, Some(heartbeat_ipv6_metrics().endpoint));
}

// ---------------------------------------------------------------------------------------
// Authentication

fn signed_register() -> Register {
    Register::signed(SECRET, &NONCE, service("search"), 42)
}

#[test]
fn a_correct_mac_verifies() {
    assert_eq!(verify_register(SECRET, &NONCE, &signed_register()), Ok(()));
}

#[test]
fn a_wrong_secret_fails() {
    assert_eq!(verify_register(b"another-secret", &NONCE, &signed_register()), Err(AuthError::BadMac));
    assert_eq!(verify_register(b"", &NONCE, &signed_register()), Err(AuthError::BadMac));
}

#[test]
fn a_register_replayed_on_another_connection_fails() {
    let mut other_nonce = NONCE;
    other_nonce[15] ^= 1;
    assert_eq!(verify_register(SECRET, &other_nonce, &signed_register()), Err(AuthError::BadMac));
}

#[test]
fn an_altered_service_or_id_fails() {
    let mut register = signed_register();
    register.service = service("searcH");
    assert_eq!(verify_register(SECRET, &NONCE, &register), Err(AuthError::BadMac));
    let mut register = signed_register();
    register.backend_id = 43;
    assert_eq!(verify_register(SECRET, &NONCE, &register), Err(AuthError::BadMac));
}

#[test]
fn every_flipped_mac_bit_fails() {
    for bit in 0..8 * auth::MAC_LEN {
        let mut register = signed_register();
        register.mac[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(verify_register(SECRET, &NONCE, &register), Err(AuthError::BadMac), "bit {bit}");
    }
}

#[test]
fn mac_input_cannot_be_shifted_between_service_and_id() {
    // The service's length is part of the input, so "ab" + id and "a" + other bytes differ.
    let a = register_mac_input(&NONCE, &service("ab"), 1);
    let b = register_mac_input(&NONCE, &service("a"), 1);
    assert_ne!(a[..b.len()], b[..]);
    assert!(a.starts_with(auth::REGISTER_DOMAIN));
}

#[test]
fn nonces_come_from_the_given_rng() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (a, b) = (new_nonce(&mut rng), new_nonce(&mut rng));
    assert_ne!(a, b);
    let mut again = rand::rngs::StdRng::seed_from_u64(7);
    assert_eq!(new_nonce(&mut again), a);
}

// ---------------------------------------------------------------------------------------
// Properties

fn any_name(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9._-]{{1,{max}}}")).unwrap()
}

fn any_service() -> impl Strategy<Value = ServiceName> {
    any_name(ServiceName::MAX_LEN).prop_map(|s| ServiceName::new(&s).unwrap())
}

fn any_endpoint() -> impl Strategy<Value = Endpoint> {
    let host = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| Host::V4(a.into())),
        any::<[u8; 16]>().prop_map(|a| Host::V6(a.into())),
        any_name(HostName::MAX_LEN).prop_map(|s| Host::Name(HostName::new(&s).unwrap())),
    ];
    (host, 1..=u16::MAX).prop_map(|(host, p)| Endpoint { host, port: port(p) })
}

fn any_percent() -> impl Strategy<Value = Option<Percent>> {
    proptest::option::of((0..=10_000u16).prop_map(|h| Percent::from_hundredths(h).unwrap()))
}

fn any_state() -> impl Strategy<Value = State> {
    prop_oneof![Just(State::Ready), Just(State::Draining), Just(State::Maintenance)]
}

fn any_metrics() -> impl Strategy<Value = Vec<Metric>> {
    let value = any::<f64>().prop_filter("finite", |v| v.is_finite());
    prop::collection::btree_map(any_name(MetricName::MAX_LEN), value, 0..=MAX_METRICS)
        .prop_map(|m| m.into_iter().map(|(name, value)| metric(&name, value)).collect())
}

fn any_slots() -> impl Strategy<Value = Option<Slots>> {
    proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(capacity, in_use, grant_seq, grant_total)| Slots { capacity, in_use, grant_seq, grant_total },
    ))
}

fn any_heartbeat() -> impl Strategy<Value = Heartbeat> {
    let load = (any_percent(), any_percent(), proptest::option::of(0..NOT_REPORTED_U32));
    let capacity = (1..=u16::MAX, any_state(), prop_oneof![Just(Health::Healthy), Just(Health::Unhealthy)]);
    (any::<u64>(), any_service(), any_endpoint(), load, capacity, any_metrics(), any_slots()).prop_map(
        |(
            backend_id,
            service,
            endpoint,
            (memory, cpu, connections),
            (weight, state, health),
            metrics,
            slots,
        )| {
            Heartbeat {
                backend_id,
                service,
                endpoint,
                memory,
                cpu,
                connections,
                weight: NonZeroU16::new(weight).unwrap(),
                state,
                metrics,
                health,
                slots,
            }
        },
    )
}

fn any_failure_report() -> impl Strategy<Value = FailureReport> {
    let reason = prop::sample::select(FailureReason::ALL.to_vec());
    let ticket = prop::collection::vec(any::<u8>(), 0..=MAX_TICKET_LEN);
    (any::<u64>(), reason, any_service(), ticket).prop_map(|(backend_id, reason, service, ticket)| {
        FailureReport { backend_id, reason, service, ticket }
    })
}

fn any_pick_reply() -> impl Strategy<Value = PickReply> {
    let picked = (any::<u64>(), any_endpoint(), prop::collection::vec(any::<u8>(), 0..=MAX_TICKET_LEN))
        .prop_map(|(backend_id, endpoint, ticket)| {
            PickOutcome::Picked(Picked { backend_id, endpoint, ticket })
        });
    let refused = (1..=u16::MAX).prop_map(|c| PickOutcome::Refused(ErrorCode::new(c).unwrap()));
    (any::<u32>(), prop_oneof![picked, refused])
        .prop_map(|(request_id, outcome)| PickReply { request_id, outcome })
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::Hello(Hello)),
        (any::<Nonce>(), any::<u64>())
            .prop_map(|(nonce, server_time)| Message::Challenge(Challenge { nonce, server_time })),
        (any::<u64>(), any::<[u8; 32]>(), any_service())
            .prop_map(|(backend_id, mac, service)| Message::Register(Register { backend_id, mac, service })),
        any::<u64>().prop_map(|backend_id| Message::Registered(Registered { backend_id })),
        any_heartbeat().prop_map(Message::Heartbeat),
        (any::<u32>(), any::<u64>(), any_service(), prop::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN))
            .prop_map(|(request_id, timestamp, service, key)| {
                let key = PickKey::new(key).expect("within the limit");
                Message::PickRequest(PickRequest { request_id, timestamp, service, key })
            }),
        any_pick_reply().prop_map(Message::PickReply),
        any_failure_report().prop_map(Message::FailureReport),
        (any::<u32>(), any::<u64>())
            .prop_map(|(grant_seq, sent_total)| Message::LeaseReport(LeaseReport { grant_seq, sent_total })),
        ((1..=u16::MAX), "\\PC{0,80}")
            .prop_map(|(c, text)| { Message::Error(ErrorMessage::new(ErrorCode::new(c).unwrap(), &text)) }),
    ]
}

/// Arbitrary bytes, mostly behind a v2 header (sometimes with a matching `len`).
fn any_frame_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let body = prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        body.clone(),
        (0u16..400, any::<u8>(), body.clone()).prop_map(|(len, t, body)| {
            let mut buf = crate::Header { len, cmd: u16::from_be_bytes([2, t]) }.to_bytes().to_vec();
            buf.extend(body);
            buf
        }),
        (prop::sample::select(MessageType::ALL.to_vec()), body).prop_map(|(kind, body)| {
            let mut buf = crate::Header { len: 0, cmd: kind.cmd() }.to_bytes().to_vec();
            buf.extend(body);
            fix_len(buf)
        }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(message in any_message()) {
        let frame = message.encode().unwrap();
        prop_assert!(frame.len() <= MAX_MESSAGE_LEN);
        prop_assert_eq!(decode(&frame, u16::MAX), Ok(Some((Decoded::Message(message), frame.len()))));
    }

    #[test]
    fn trailing_bytes_are_ignored(message in any_message(), trailing in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut message = message;
        let mut frame = message.encode().unwrap();
        // An unkeyed PickRequest ends before its optional key: the bytes after it are
        // the key field, so a later version's trailing bytes come after an empty key.
        if matches!(&message, Message::PickRequest(request) if request.key.is_empty()) {
            frame.push(0);
        }
        // Likewise a heartbeat without slots ends before its optional fields: the
        // bytes after its metrics are its health, and after that its slots.
        if let Message::Heartbeat(heartbeat) = &message && heartbeat.slots.is_none() {
            let with_slots = Heartbeat { slots: Some(Slots { capacity: 0, in_use: 0, grant_seq: 0, grant_total: 0 }), ..heartbeat.clone() };
            message = Message::Heartbeat(with_slots);
            frame = message.encode().unwrap();
        }
        frame.extend(trailing);
        let frame = fix_len(frame);
        prop_assert_eq!(decode(&frame, u16::MAX), Ok(Some((Decoded::Message(message), frame.len()))));
    }

    #[test]
    fn every_message_decodes_across_any_split(message in any_message(), cut in any::<prop::sample::Index>()) {
        let frame = message.encode().unwrap();
        let cut = cut.index(frame.len());
        let (items, end) = decode_chunked(&[&frame[..cut], &frame[cut..]]);
        prop_assert_eq!(items, vec![Ok(Decoded::Message(message))]);
        prop_assert_eq!(end, None);
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in any_frame_like_bytes(), max_len: u16) {
        match decode(&buf, max_len) {
            Ok(None) => {}
            Ok(Some((decoded, n))) => {
                prop_assert!(n >= HEADER_LEN && n <= usize::from(max_len) && n <= buf.len());
                if let Decoded::Message(message) = decoded {
                    // What decodes re-encodes, and that decodes to the same message.
                    let again = message.encode().unwrap();
                    prop_assert_eq!(decode(&again, u16::MAX), Ok(Some((Decoded::Message(message), again.len()))));
                }
            }
            Err(e) => prop_assert!(buf.len() >= HEADER_LEN, "{e} before a whole header"),
        }
    }

    #[test]
    fn register_macs_verify_only_with_their_nonce(secret: Vec<u8>, nonce: Nonce, other: Nonce, id: u64, service in any_service()) {
        let register = Register::signed(&secret, &nonce, service, id);
        prop_assert_eq!(verify_register(&secret, &nonce, &register), Ok(()));
        if other != nonce {
            prop_assert_eq!(verify_register(&secret, &other, &register), Err(AuthError::BadMac));
        }
    }
}

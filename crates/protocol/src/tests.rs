use super::*;

use proptest::prelude::*;

/// What a vector must mean to the code.
#[derive(Debug)]
enum Expect {
    /// A heartbeat frame, and what validating its address gives.
    Heartbeat(Heartbeat, Result<&'static str, AddressError>),
    /// A login request with this timestamp.
    Login(u64),
    /// A frame with this unhandled command, skipped whole.
    Unknown(u16),
    /// A login reply (dispatcher → client).
    Reply(LoginReply),
    /// A frame that closes the connection.
    Error(FrameError),
}

fn ip(text: &str) -> IpField {
    IpField::from_text(text).unwrap()
}

fn heartbeat(mem: u8, ip: IpField, port: u16) -> Heartbeat {
    Heartbeat { mem, ip, port }
}

/// Every vector the document must contain, with its meaning.
fn expected() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    let hb_10_0_0_2 = |mem, port| heartbeat(mem, ip("10.0.0.2"), port);
    let mut newline = *ip("10.0.0.2").as_bytes();
    newline[8] = b'\n';
    vec![
        ("heartbeat-mem20", Heartbeat(hb_10_0_0_2(20, 1002), Ok("10.0.0.2"))),
        ("heartbeat-mem182", Heartbeat(heartbeat(182, ip("10.0.0.3"), 1003), Ok("10.0.0.3"))),
        (
            "heartbeat-ip-15-chars",
            Heartbeat(heartbeat(0, ip("255.255.255.255"), 8080), Ok("255.255.255.255")),
        ),
        ("heartbeat-len25", Heartbeat(hb_10_0_0_2(20, 1002), Ok("10.0.0.2"))),
        ("heartbeat-port0", Heartbeat(hb_10_0_0_2(20, 0), Err(AddressError::ZeroPort))),
        ("heartbeat-empty-ip", Heartbeat(heartbeat(20, IpField::default(), 1002), Err(AddressError::Empty))),
        (
            "heartbeat-unterminated-ip",
            Heartbeat(
                heartbeat(20, IpField::from_bytes(*b"1234567890123456"), 1002),
                Err(AddressError::Unterminated),
            ),
        ),
        (
            "heartbeat-nonprintable-ip",
            Heartbeat(heartbeat(20, IpField::from_bytes(newline), 1002), Err(AddressError::NotPrintable)),
        ),
        ("login-1700000000", Login(1_700_000_000)),
        ("reply-success-10.0.0.2:1002", Reply(LoginReply::Backend { ip: ip("10.0.0.2"), port: 1002 })),
        ("reply-error", Reply(LoginReply::Error)),
        ("unknown-cmd-3", Unknown(cmd::REGISTER)),
        ("unknown-cmd-1", Unknown(cmd::ERROR)),
        ("error-len0", Error(FrameError::ShorterThanHeader { len: 0 })),
        ("error-len3", Error(FrameError::ShorterThanHeader { len: 3 })),
        (
            "error-heartbeat-len4",
            Error(FrameError::ShorterThanCommand { cmd: cmd::HEARTBEAT, len: 4, min: 23 }),
        ),
        ("error-login-len11", Error(FrameError::ShorterThanCommand { cmd: cmd::LOGIN, len: 11, min: 12 })),
    ]
}

fn parse(buf: &[u8]) -> Result<Parsed, FrameError> {
    parse_request(buf, MAX_FRAME_LEN)
}

/// Checks a request vector: it parses to `request` over its whole length, and is the
/// canonical encoding with its `len` field (and any trailing bytes) aside.
fn check_request(bytes: &[u8], request: Request, encoded: &[u8]) {
    let len = bytes.len();
    assert_eq!(parse(bytes), Ok(Parsed::Request { request, len }));
    assert_eq!(bytes[..2], (len as u16).to_le_bytes(), "len field");
    assert_eq!(bytes[2..encoded.len()], encoded[2..], "fields");
    check_prefixes(bytes, encoded.len());
}

/// Every prefix shorter than `decisive` bytes is incomplete; every longer one parses
/// as the whole vector does (trailing bytes and bodies are not needed to decide).
fn check_prefixes(bytes: &[u8], decisive: usize) {
    let whole = parse(bytes);
    for end in 0..bytes.len() {
        let expected = if end < decisive { Ok(Parsed::Incomplete) } else { whole };
        assert_eq!(parse(&bytes[..end]), expected, "prefix of {end} bytes");
    }
}

fn check_vector(bytes: &[u8], expect: &Expect) {
    match *expect {
        Expect::Heartbeat(hb, ref address) => {
            check_request(bytes, Request::Heartbeat(hb), &hb.encode());
            assert_eq!(&hb.validate_address(), address);
        }
        Expect::Login(timestamp) => {
            let login = LoginRequest { timestamp };
            check_request(bytes, Request::Login(login), &login.encode());
        }
        Expect::Unknown(cmd) => {
            let len = bytes.len();
            assert_eq!(parse(bytes), Ok(Parsed::Unknown { cmd, len }));
            check_prefixes(bytes, HEADER_LEN);
        }
        Expect::Reply(reply) => {
            assert_eq!(reply.encode(), bytes);
            let frame = bytes.try_into().expect("a reply is 22 bytes");
            assert_eq!(LoginReply::decode(frame), Ok(reply));
        }
        Expect::Error(error) => {
            assert_eq!(parse(bytes), Err(error));
            check_prefixes(bytes, HEADER_LEN);
        }
    }
}

#[test]
fn the_doc_vectors_are_exactly_the_expected_ones_and_mean_what_they_say() {
    crate::doc_vectors::check_table("## Test vectors", &expected(), |name, bytes, expect| {
        eprintln!("checking vector {name}");
        check_vector(bytes, expect);
    });
}

#[test]
fn header_parses_little_endian() {
    assert_eq!(Header::parse(&[0x17, 0x00, 0x02, 0x01, 0xff]), Some(Header { len: 23, cmd: 0x0102 }));
    assert_eq!(Header::parse(&[0x17, 0x00, 0x02]), None);
    assert_eq!(Header::parse(&[]), None);
    let header = Header { len: 0xabcd, cmd: 0x1234 };
    assert_eq!(header.to_bytes(), [0xcd, 0xab, 0x34, 0x12]);
}

#[test]
fn frame_longer_than_the_limit_is_an_error() {
    let frame = heartbeat(20, ip("10.0.0.2"), 1002).encode();
    let too_long = FrameError::TooLong { len: 23, max: 22 };
    assert_eq!(parse_request(&frame, 22), Err(too_long));
    assert_eq!(parse_request(&frame[..HEADER_LEN], 22), Err(too_long));
    assert!(matches!(parse_request(&frame, 23), Ok(Parsed::Request { len: 23, .. })));
    let unknown = Header { len: 101, cmd: 9 }.to_bytes();
    assert_eq!(parse_request(&unknown, 100), Err(FrameError::TooLong { len: 101, max: 100 }));
}

#[test]
fn ip_from_text_pads_with_nul() {
    let field = ip("10.0.0.2");
    assert_eq!(&field.as_bytes()[..9], b"10.0.0.2\0");
    assert_eq!(field.as_bytes()[8..], [0; 8]);
    assert_eq!(field.text(), Ok("10.0.0.2"));
    assert_eq!(ip("255.255.255.255").text(), Ok("255.255.255.255"));
}

#[test]
fn ip_from_text_refuses_what_the_field_cannot_carry() {
    assert_eq!(IpField::from_text(""), Err(AddressError::Empty));
    assert_eq!(
        IpField::from_text("1234567890123456"),
        Err(AddressError::TooLong { ip: "1234567890123456".into(), len: 16 })
    );
    for text in ["10.0.0.2 ", "a\tb", "10.0.0.\u{e9}", "a\0b"] {
        assert_eq!(IpField::from_text(text), Err(AddressError::NotPrintable), "{text:?}");
    }
    // 8 characters, 16 bytes of UTF-8: does not fit the field.
    assert!(IpField::from_text("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}").is_err());
}

#[test]
fn ip_text_reads_up_to_the_first_nul() {
    let field = |bytes: &[u8]| {
        let mut raw = [0u8; IP_FIELD_LEN];
        raw[..bytes.len()].copy_from_slice(bytes);
        IpField::from_bytes(raw)
    };
    assert_eq!(field(b"1.2.3.4\0garbage\x01").text(), Ok("1.2.3.4"));
    assert_eq!(field(b"").text(), Err(AddressError::Empty));
    assert_eq!(field(b"\0abc").text(), Err(AddressError::Empty));
    assert_eq!(field(b"0123456789abcdef").text(), Err(AddressError::Unterminated));
    assert_eq!(field(b"1.2\x7f").text(), Err(AddressError::NotPrintable));
    assert_eq!(field(b"1.2 3").text(), Err(AddressError::NotPrintable));
    assert_eq!(field(b"\xff").text(), Err(AddressError::NotPrintable));
}

fn any_ip_field() -> impl Strategy<Value = IpField> {
    any::<[u8; IP_FIELD_LEN]>().prop_map(IpField::from_bytes)
}

fn any_reply() -> impl Strategy<Value = LoginReply> {
    prop_oneof![
        Just(LoginReply::Error),
        (any_ip_field(), any::<u16>()).prop_map(|(ip, port)| LoginReply::Backend { ip, port }),
    ]
}

/// Arbitrary bytes, half of them behind a plausible header so that every branch is hit.
fn any_frame_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let body = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        body.clone(),
        (0u16..40, 0u16..5, body).prop_map(|(len, cmd, body)| {
            let mut buf = Header { len, cmd }.to_bytes().to_vec();
            buf.extend(body);
            buf
        }),
    ]
}

proptest! {
    #[test]
    fn heartbeat_round_trips(mem: u8, ip in any_ip_field(), port: u16) {
        let hb = heartbeat(mem, ip, port);
        prop_assert_eq!(Heartbeat::decode(&hb.encode()), hb);
        prop_assert_eq!(
            parse(&hb.encode()),
            Ok(Parsed::Request { request: Request::Heartbeat(hb), len: Heartbeat::LEN })
        );
    }

    #[test]
    fn login_round_trips(timestamp: u64) {
        let login = LoginRequest { timestamp };
        prop_assert_eq!(LoginRequest::decode(&login.encode()), login);
        prop_assert_eq!(
            parse(&login.encode()),
            Ok(Parsed::Request { request: Request::Login(login), len: LoginRequest::LEN })
        );
    }

    #[test]
    fn reply_round_trips(reply in any_reply()) {
        prop_assert_eq!(LoginReply::decode(&reply.encode()), Ok(reply));
    }

    #[test]
    fn header_round_trips(len: u16, cmd: u16) {
        let header = Header { len, cmd };
        prop_assert_eq!(Header::parse(&header.to_bytes()), Some(header));
    }

    #[test]
    fn ip_text_round_trips(text in "[!-~]{1,15}") {
        let field = ip(&text);
        prop_assert_eq!(field.text(), Ok(text.as_str()));
    }

    #[test]
    fn parse_request_never_panics(buf in any_frame_like_bytes(), max_len: u16) {
        match parse_request(&buf, max_len) {
            Ok(Parsed::Request { len, .. } | Parsed::Unknown { len, .. }) => {
                prop_assert!((HEADER_LEN..=usize::from(max_len)).contains(&len));
            }
            Ok(Parsed::Incomplete) | Err(_) => {}
        }
    }
}

#[test]
fn an_address_is_written_as_operators_write_it() {
    assert_eq!(ip("10.0.0.2").with_port(1002).to_string(), "10.0.0.2:1002");
    assert_eq!(ip("::1").with_port(7000).to_string(), "[::1]:7000");
    assert_eq!(ip("backend-1").with_port(80).to_string(), "backend-1:80");
    let unusable = IpField::from_bytes([0xff; IP_FIELD_LEN]);
    assert_eq!(unusable.with_port(1).to_string(), format!("{}:1", "ff".repeat(IP_FIELD_LEN)));
}

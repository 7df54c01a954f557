//! Short-lived signed admission tickets: the dispatcher issues one with a pick, the backend verifies it.
//!
//! A ticket is 65 bytes: a version byte (1), the backend id, the first 8 bytes of the
//! SHA-256 of the service name, the issue and expiry times (unix seconds), a 16-byte
//! random nonce, and the first 16 bytes of HMAC-SHA256 over the domain tag
//! `loadwise-ticket-v1` and the 49 bytes before the MAC. Its text form is the 130
//! lowercase hex digits of those bytes. The byte table is in `docs/protocol.md`.
//!
//! A ticket proves that a dispatcher holding the secret sent this client to this backend
//! a moment ago. It is bound to a backend id, not to a client: a backend that wants each
//! ticket used once keeps the nonces it has seen until they expire. Clocks are passed
//! in; nothing here reads one.

use std::fmt;
use std::str::FromStr;

use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::v2::ServiceName;
use crate::v2::auth::{MIN_SECRET_LEN, hmac_sha256};

/// The ticket format this module issues and accepts.
pub const VERSION: u8 = 1;

/// Size of a ticket in bytes.
pub const LEN: usize = 65;

/// Size of the text form: two hex digits per byte.
pub const TEXT_LEN: usize = 2 * LEN;

/// Size of the nonce.
pub const NONCE_LEN: usize = 16;

/// Size of the truncated MAC.
pub const MAC_LEN: usize = 16;

/// The bytes the MAC covers: everything before it.
const SIGNED_LEN: usize = LEN - MAC_LEN;

/// The domain tag that starts the MAC input.
pub const DOMAIN: &[u8] = b"loadwise-ticket-v1";

/// How far a ticket's issue time may be ahead of the verifier's clock: tolerates a
/// dispatcher whose clock runs slightly ahead of the backend's.
pub const NOT_BEFORE_LEEWAY_SECS: u64 = 5;

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// A secret too short to sign with (empty included): any ticket signed with a
    /// guessable secret could be forged.
    #[error("the secret is {len} bytes: a ticket secret is at least {MIN_SECRET_LEN} bytes")]
    WeakSecret { len: usize },
    /// Text with something after the ticket other than whitespace.
    #[error("the ticket text has {0:?} after its {TEXT_LEN} hex digits")]
    TrailingText(String),
    /// Not the 65 bytes of a version 1 ticket (cut short, or padded).
    #[error("a ticket is {LEN} bytes, this one is {len}")]
    WrongLength { len: usize },
    /// A format this module does not know.
    #[error("ticket version {0} is not supported (expected {VERSION})")]
    UnsupportedVersion(u8),
    /// Text that is not an even number of hex digits.
    #[error("the ticket text is not hex")]
    BadText,
    /// The MAC does not match: altered bytes, or another secret.
    #[error("the ticket's signature does not verify")]
    BadSignature,
    /// A genuine ticket for another backend.
    #[error("the ticket is for backend {found}, not {expected}")]
    WrongBackend { expected: u64, found: u64 },
    /// A genuine ticket for a backend of the same id in another service.
    #[error("the ticket is for another service than {expected}")]
    WrongService { expected: ServiceName },
    /// A genuine ticket whose time is up (`now >= expires`).
    #[error("the ticket expired at {expires}, it is now {now}")]
    Expired { expires: u64, now: u64 },
    /// A genuine ticket issued further in the future than the leeway allows.
    #[error("the ticket is issued at {issued}, it is only {now}")]
    NotYetValid { issued: u64, now: u64 },
}

/// The first 8 bytes of the SHA-256 of a service name: binds a ticket to a service
/// without carrying the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceHash(pub [u8; 8]);

impl ServiceHash {
    /// The hash of `service`'s bytes.
    pub fn of(service: &ServiceName) -> ServiceHash {
        let digest = Sha256::digest(service.as_str().as_bytes());
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&digest[..8]);
        ServiceHash(hash)
    }
}

/// What a ticket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claims {
    /// The backend the client was sent to.
    pub backend_id: u64,
    /// The service the backend was picked for.
    pub service: ServiceHash,
    /// When the dispatcher issued it, unix seconds.
    pub issued: u64,
    /// The first second it is no longer valid, unix seconds.
    pub expires: u64,
    /// Random bytes (from the caller's RNG) that make every ticket unique.
    pub nonce: [u8; NONCE_LEN],
}

impl Claims {
    /// Claims valid from `issued` for `lifetime_secs` seconds.
    pub fn new(
        backend_id: u64,
        service: &ServiceName,
        issued: u64,
        lifetime_secs: u64,
        nonce: [u8; NONCE_LEN],
    ) -> Claims {
        let expires = issued.saturating_add(lifetime_secs);
        Claims { backend_id, service: ServiceHash::of(service), issued, expires, nonce }
    }

    /// True when the ticket was issued for `service`.
    pub fn is_for(&self, service: &ServiceName) -> bool {
        self.service == ServiceHash::of(service)
    }

    fn to_signed_bytes(self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[0] = VERSION;
        out[1..9].copy_from_slice(&self.backend_id.to_le_bytes());
        out[9..17].copy_from_slice(&self.service.0);
        out[17..25].copy_from_slice(&self.issued.to_le_bytes());
        out[25..33].copy_from_slice(&self.expires.to_le_bytes());
        out[33..49].copy_from_slice(&self.nonce);
        out
    }

    fn from_bytes(bytes: &[u8; LEN]) -> Claims {
        let u64_at = |at: usize| u64::from_le_bytes(array(&bytes[at..at + 8]));
        Claims {
            backend_id: u64_at(1),
            service: ServiceHash(array(&bytes[9..17])),
            issued: u64_at(17),
            expires: u64_at(25),
            nonce: array(&bytes[33..49]),
        }
    }
}

/// Copies a slice whose length the caller has fixed into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// A signed ticket, as bytes. Parsing checks the length and version only; use
/// [`verify`] to trust what it says.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket([u8; LEN]);

impl Ticket {
    /// The ticket's bytes, as carried in a PickReply.
    pub fn as_bytes(&self) -> &[u8; LEN] {
        &self.0
    }

    /// Reads a ticket's bytes; the version is checked before the length, so a later
    /// format of another size is reported as such.
    pub fn from_bytes(bytes: &[u8]) -> Result<Ticket, TicketError> {
        match bytes.first() {
            None => Err(TicketError::WrongLength { len: 0 }),
            Some(&version) if version != VERSION => Err(TicketError::UnsupportedVersion(version)),
            Some(_) => {
                bytes.try_into().map(Ticket).map_err(|_| TicketError::WrongLength { len: bytes.len() })
            }
        }
    }

    /// Reads the text form: hex digits (either case). Surrounding whitespace, such as
    /// the newline a file or a header line ends with, is not part of it.
    pub fn from_text(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim_ascii();
        let (bytes, hex) = (text.as_bytes(), u8::is_ascii_hexdigit);
        if text.len() > TEXT_LEN && bytes[..TEXT_LEN].iter().all(hex) && !bytes[TEXT_LEN..].iter().all(hex) {
            return Err(TicketError::TrailingText(text[TEXT_LEN..].chars().take(16).collect()));
        }
        Ticket::from_bytes(&from_hex(text.as_bytes()).ok_or(TicketError::BadText)?)
    }

    /// The text form: 130 lowercase hex digits.
    pub fn to_text(&self) -> String {
        to_hex(&self.0)
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket({})", self.to_text())
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(text: &str) -> Result<Ticket, TicketError> {
        Ticket::from_text(text)
    }
}

fn mac(secret: &[u8], signed: &[u8]) -> hmac::Hmac<Sha256> {
    hmac_sha256(secret, &[DOMAIN, signed])
}

/// Signs `claims` with `secret`.
pub fn issue(secret: &[u8], claims: &Claims) -> Ticket {
    let signed = claims.to_signed_bytes();
    let tag = mac(secret, &signed).finalize().into_bytes();
    let mut bytes = [0u8; LEN];
    bytes[..SIGNED_LEN].copy_from_slice(&signed);
    bytes[SIGNED_LEN..].copy_from_slice(&tag[..MAC_LEN]);
    Ticket(bytes)
}

/// Checks a ticket, given as its bytes or its text form (input made only of ASCII hex
/// digits is read as text), and returns what it says.
///
/// A text ticket may end with whitespace (a newline, most often), which is ignored.
///
/// Refused, in this order: a secret shorter than [`MIN_SECRET_LEN`], a malformed ticket (length, version, text), a bad
/// signature (constant-time comparison), a ticket for another backend than
/// `expected_backend_id` or another service than `expected_service` (backend ids are
/// chosen per service, and one secret may serve several), and one outside
/// `issued - 5 s <= now_unix < expires`.
pub fn verify(
    secret: &[u8],
    ticket: impl AsRef<[u8]>,
    expected_service: &ServiceName,
    expected_backend_id: u64,
    now_unix: u64,
) -> Result<Claims, TicketError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(TicketError::WeakSecret { len: secret.len() });
    }
    let ticket = parse_input(ticket.as_ref())?;
    let (signed, tag) = ticket.0.split_at(SIGNED_LEN);
    mac(secret, signed).verify_truncated_left(tag).map_err(|_| TicketError::BadSignature)?;
    let claims = Claims::from_bytes(&ticket.0);
    if claims.backend_id != expected_backend_id {
        return Err(TicketError::WrongBackend { expected: expected_backend_id, found: claims.backend_id });
    }
    if !claims.is_for(expected_service) {
        return Err(TicketError::WrongService { expected: expected_service.clone() });
    }
    check_time(&claims, now_unix)?;
    Ok(claims)
}

/// Text when, whitespace aside, it is all hex digits, or starts with a whole ticket's
/// worth of them; bytes otherwise (a ticket's bytes start with its version, 1, never
/// a digit, so no ticket is mistaken for text).
fn parse_input(input: &[u8]) -> Result<Ticket, TicketError> {
    let text = input.trim_ascii();
    let hex_prefix = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if !text.is_empty() && (hex_prefix == text.len() || hex_prefix >= TEXT_LEN) {
        match std::str::from_utf8(text) {
            Ok(text) => Ticket::from_text(text),
            Err(_) => Err(TicketError::TrailingText(String::from_utf8_lossy(&text[TEXT_LEN..]).into())),
        }
    } else {
        Ticket::from_bytes(input)
    }
}

fn check_time(claims: &Claims, now: u64) -> Result<(), TicketError> {
    if now >= claims.expires {
        return Err(TicketError::Expired { expires: claims.expires, now });
    }
    if now.saturating_add(NOT_BEFORE_LEEWAY_SECS) < claims.issued {
        return Err(TicketError::NotYetValid { issued: claims.issued, now });
    }
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex digits (either case); `None` for an odd count or a non-digit.
fn from_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2).map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)).collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const SECRET: &[u8] = b"loadwise-example-secret";
    const ISSUED: u64 = 1_700_000_000;
    const LIFETIME: u64 = 30;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    fn claims() -> Claims {
        Claims::new(42, &service("search"), ISSUED, LIFETIME, [7; NONCE_LEN])
    }

    fn ticket() -> Ticket {
        issue(SECRET, &claims())
    }

    #[test]
    fn a_fresh_ticket_verifies_as_bytes_and_as_text() {
        let t = ticket();
        assert_eq!(verify(SECRET, t.as_bytes(), &service("search"), 42, ISSUED), Ok(claims()));
        assert_eq!(verify(SECRET, t.to_text(), &service("search"), 42, ISSUED + LIFETIME - 1), Ok(claims()));
        assert_eq!(verify(SECRET, t.to_text().to_uppercase(), &service("search"), 42, ISSUED), Ok(claims()));
        assert!(claims().is_for(&service("search")));
        assert!(!claims().is_for(&service("Search")));
        assert_eq!(claims().expires, ISSUED + LIFETIME);
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        for at in 0..LEN {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = *ticket().as_bytes();
                bytes[at] ^= flip;
                let wanted = if at == 0 {
                    TicketError::UnsupportedVersion(VERSION ^ flip)
                } else {
                    TicketError::BadSignature
                };
                assert_eq!(
                    verify(SECRET, bytes, &service("search"), 42, ISSUED),
                    Err(wanted),
                    "byte {at} ^ {flip:#04x}"
                );
            }
        }
    }

    #[test]
    fn every_tampered_hex_digit_is_refused() {
        let text = ticket().to_text();
        for at in 0..text.len() {
            let mut altered = text.clone().into_bytes();
            altered[at] = if altered[at] == b'f' { b'e' } else { b'f' };
            assert!(verify(SECRET, &altered, &service("search"), 42, ISSUED).is_err(), "digit {at}");
        }
    }

    #[test]
    fn another_secret_is_refused() {
        assert_eq!(
            verify(b"another-secret-of-16+", ticket().as_bytes(), &service("search"), 42, ISSUED),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn another_backend_is_refused() {
        let refused = verify(SECRET, ticket().as_bytes(), &service("search"), 43, ISSUED);
        assert_eq!(refused, Err(TicketError::WrongBackend { expected: 43, found: 42 }));
    }

    #[test]
    fn a_ticket_for_the_same_id_in_another_service_is_refused() {
        let refused = verify(SECRET, ticket().as_bytes(), &service("chat"), 42, ISSUED);
        assert_eq!(refused, Err(TicketError::WrongService { expected: service("chat") }));
    }

    #[test]
    fn validity_is_issued_minus_leeway_up_to_expiry() {
        let t = ticket();
        let expires = ISSUED + LIFETIME;
        assert_eq!(
            verify(SECRET, t.as_bytes(), &service("search"), 42, expires),
            Err(TicketError::Expired { expires, now: expires })
        );
        assert!(verify(SECRET, t.as_bytes(), &service("search"), 42, expires - 1).is_ok());
        let early = ISSUED - NOT_BEFORE_LEEWAY_SECS - 1;
        assert_eq!(
            verify(SECRET, t.as_bytes(), &service("search"), 42, early),
            Err(TicketError::NotYetValid { issued: ISSUED, now: early })
        );
        assert!(verify(SECRET, t.as_bytes(), &service("search"), 42, early + 1).is_ok());
        assert!(verify(SECRET, t.as_bytes(), &service("search"), 42, 0).is_err());
        assert!(verify(SECRET, t.as_bytes(), &service("search"), 42, u64::MAX).is_err());
    }

    #[test]
    fn truncated_and_padded_tickets_are_refused() {
        let bytes = ticket().as_bytes().to_vec();
        assert_eq!(
            verify(SECRET, [], &service("search"), 42, ISSUED),
            Err(TicketError::WrongLength { len: 0 })
        );
        for len in 1..LEN {
            let refused = verify(SECRET, &bytes[..len], &service("search"), 42, ISSUED);
            assert_eq!(refused, Err(TicketError::WrongLength { len }), "{len} bytes");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(
            verify(SECRET, &padded, &service("search"), 42, ISSUED),
            Err(TicketError::WrongLength { len: LEN + 1 })
        );
        let text = ticket().to_text();
        assert_eq!(
            verify(SECRET, &text[..TEXT_LEN - 2], &service("search"), 42, ISSUED),
            Err(TicketError::WrongLength { len: LEN - 1 })
        );
        assert_eq!(
            verify(SECRET, &text[..TEXT_LEN - 1], &service("search"), 42, ISSUED),
            Err(TicketError::BadText)
        );
    }

    #[test]
    fn other_versions_are_refused_even_when_signed() {
        let mut bytes = *ticket().as_bytes();
        bytes[0] = 2;
        let tag = mac(SECRET, &bytes[..SIGNED_LEN]).finalize().into_bytes();
        bytes[SIGNED_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        assert_eq!(
            verify(SECRET, bytes, &service("search"), 42, ISSUED),
            Err(TicketError::UnsupportedVersion(2))
        );
        assert_eq!(Ticket::from_bytes(&[2, 0, 0]), Err(TicketError::UnsupportedVersion(2)));
    }

    #[test]
    fn text_form_round_trips() {
        let t = ticket();
        let text = t.to_string();
        assert_eq!(text.len(), TEXT_LEN);
        assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(text.parse::<Ticket>(), Ok(t));
        assert_eq!(Ticket::from_text(&text.to_uppercase()), Ok(t));
        assert_eq!(Ticket::from_text("0"), Err(TicketError::BadText));
        assert_eq!(Ticket::from_text(&format!("{}zz", &text[..TEXT_LEN - 2])), Err(TicketError::BadText));
        assert_eq!(
            Ticket::from_text(&format!(" {text}\n")),
            Ok(t),
            "surrounding whitespace is no part of it"
        );
        assert_eq!(Ticket::from_text(&format!("{} {}", &text[..4], &text[4..])), Err(TicketError::BadText));
        assert_eq!(format!("{t:?}"), format!("Ticket({text})"));
    }

    #[test]
    fn service_hash_is_the_start_of_sha256() {
        // SHA-256("search") starts 24 19 32 90 67 82 3c ab.
        let wanted = ServiceHash([0x24, 0x19, 0x32, 0x90, 0x67, 0x82, 0x3c, 0xab]);
        assert_eq!(ServiceHash::of(&service("search")), wanted);
    }

    #[test]
    fn lifetime_saturates() {
        let c = Claims::new(1, &service("s"), u64::MAX - 1, 30, [0; NONCE_LEN]);
        assert_eq!(c.expires, u64::MAX);
    }

    fn any_claims() -> impl Strategy<Value = Claims> {
        (any::<u64>(), any::<[u8; 8]>(), any::<u64>(), any::<u64>(), any::<[u8; NONCE_LEN]>()).prop_map(
            |(backend_id, hash, issued, expires, nonce)| Claims {
                backend_id,
                service: ServiceHash(hash),
                issued,
                expires,
                nonce,
            },
        )
    }

    #[test]
    fn short_and_empty_secrets_are_refused_by_name() {
        for secret in [&b""[..], b"fifteen-bytes..", b"x"] {
            let result = verify(secret, ticket().as_bytes(), &service("search"), 42, ISSUED);
            assert_eq!(result, Err(TicketError::WeakSecret { len: secret.len() }));
        }
        assert!(
            TicketError::WeakSecret { len: 0 }.to_string().contains("at least 16 bytes"),
            "names the bound"
        );
    }

    #[test]
    fn a_text_ticket_with_a_trailing_newline_or_spaces_verifies() {
        for text in [format!("{}\n", ticket()), format!("  {}\r\n", ticket()), format!("{}\t ", ticket())] {
            assert_eq!(Ticket::from_text(&text), Ok(ticket()));
            assert!(verify(SECRET, &text, &service("search"), 42, ISSUED).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn text_after_a_ticket_is_named_not_taken_for_a_version() {
        let text = format!("{}; x", ticket());
        let expected = TicketError::TrailingText("; x".into());
        assert_eq!(Ticket::from_text(&text), Err(expected.clone()));
        assert_eq!(verify(SECRET, &text, &service("search"), 42, ISSUED), Err(expected));
    }

    proptest! {
        #[test]
        fn issued_tickets_verify_within_their_window(
            claims in any_claims(),
            secret in proptest::collection::vec(any::<u8>(), MIN_SECRET_LEN..64),
            at: u64,
        ) {
            let claims = Claims { service: ServiceHash::of(&service("search")), ..claims };
            let t = issue(&secret, &claims);
            prop_assert_eq!(Ticket::from_bytes(t.as_bytes()), Ok(t));
            prop_assert_eq!(Ticket::from_text(&t.to_text()), Ok(t));
            let in_window = at < claims.expires && at.saturating_add(NOT_BEFORE_LEEWAY_SECS) >= claims.issued;
            let result = verify(&secret, t.to_text(), &service("search"), claims.backend_id, at);
            prop_assert_eq!(result.is_ok(), in_window);
            if in_window {
                prop_assert_eq!(result, Ok(claims));
            }
        }

        #[test]
        fn arbitrary_input_never_verifies(input: Vec<u8>, id: u64, now: u64) {
            prop_assert!(verify(SECRET, &input, &service("search"), id, now).is_err());
        }
    }
}

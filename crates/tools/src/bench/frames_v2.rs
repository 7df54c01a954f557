//! The protocol v2 bytes the bench sends, encoded once and patched per request, and how
//! each frame the dispatcher sends back is judged (no I/O).
//!
//! A PickRequest differs from the one before it only in its request id and timestamp,
//! and a fake backend's heartbeat only in its memory and cpu (and, with capacity slots,
//! its grant sequence): each is encoded once with
//! [`Message::encode`] and those fields are written over in place (offsets from
//! docs/protocol.md, "PickRequest" and "Heartbeat"), so the bench's CPU per request
//! stays that of a copy.

use std::ops::Range;

use super::frames::{backend_ipv4, backend_load};
use super::outcome::ErrorKind;
use loadwise_protocol::v2::{
    DEFAULT_WEIGHT, DecodeError, Decoded, Endpoint, Health, Heartbeat, Host, Message, Percent, PickKey,
    PickOutcome, PickRequest, ServiceName, Slots, State,
};

/// `request_id` in a PickRequest frame (u32).
const PICK_REQUEST_ID: Range<usize> = 4..8;
/// `timestamp` in a PickRequest frame (u64).
const PICK_TIMESTAMP: Range<usize> = 8..16;
/// `memory` in a Heartbeat frame (u16, hundredths of a percent).
const HEARTBEAT_MEMORY: Range<usize> = 12..14;
/// `cpu` in a Heartbeat frame (u16, hundredths of a percent).
const HEARTBEAT_CPU: Range<usize> = 14..16;
/// `grant_seq` in a Heartbeat with slots, counted from the frame's end: it is followed
/// only by `grant_total` (u64), the last field.
const HEARTBEAT_GRANT_SEQ_FROM_END: usize = 8 + 4;

/// The grant a fake slot backend gives: more clients than any run can pick, so that
/// picks are limited by the capacity alone, never by the grant.
pub const BENCH_GRANT_TOTAL: u64 = u64::MAX / 2;

/// The longest frame the bench accepts from a dispatcher: the recommended v2 limit,
/// above the longest PickReply and Error.
pub const MAX_REPLY_LEN: u16 = loadwise_protocol::v2::DEFAULT_MAX_V2_FRAME_LEN;

/// A PickRequest for one service, encoded once.
#[derive(Debug, Clone)]
pub struct PickTemplate {
    frame: Vec<u8>,
}

impl PickTemplate {
    /// The PickRequest for `service`, with request id and timestamp 0 until set.
    pub fn new(service: &ServiceName) -> Self {
        let request =
            PickRequest { request_id: 0, timestamp: 0, service: service.clone(), key: PickKey::NONE };
        let frame = Message::PickRequest(request).encode().expect("a checked service name encodes");
        PickTemplate { frame }
    }

    /// Stamps the requests that follow with `timestamp` (unix seconds).
    pub fn set_timestamp(&mut self, timestamp: u64) {
        self.frame[PICK_TIMESTAMP].copy_from_slice(&timestamp.to_le_bytes());
    }

    /// Appends the request numbered `request_id` to `out`.
    pub fn push(&self, request_id: u32, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.frame);
        let id = at + PICK_REQUEST_ID.start..at + PICK_REQUEST_ID.end;
        out[id].copy_from_slice(&request_id.to_le_bytes());
    }
}

/// The v2 heartbeat of fake backend `index`, encoded once: backend id `index`, the
/// legacy fakes' address as an IPv4 endpoint, weight 100, state ready, no metrics;
/// with `capacity`, capacity slots (see [`HeartbeatTemplate::with_slots`]).
#[derive(Debug, Clone)]
pub struct HeartbeatTemplate {
    index: usize,
    frame: Vec<u8>,
    /// Whether the frame carries slots, whose grant sequence each beat advances.
    slots: bool,
}

impl HeartbeatTemplate {
    pub fn new(service: &ServiceName, index: usize) -> Self {
        Self::with_slots(service, index, None)
    }

    /// The heartbeat of a fake backend with `capacity` places, none in use, that
    /// grants [`BENCH_GRANT_TOTAL`] clients: the dispatcher may send it up to
    /// `capacity` clients between two heartbeats (places are never taken, since no
    /// client arrives), and the grant never runs out. Each beat is a new grant.
    pub fn with_slots(service: &ServiceName, index: usize, capacity: Option<u32>) -> Self {
        let (ip, port) = backend_ipv4(index);
        let heartbeat = Heartbeat {
            backend_id: index as u64,
            service: service.clone(),
            endpoint: Endpoint { host: Host::V4(ip), port: port.try_into().expect("ports start at 1024") },
            memory: Some(Percent::FULL),
            cpu: Some(Percent::FULL),
            connections: None,
            weight: DEFAULT_WEIGHT,
            state: State::Ready,
            metrics: Vec::new(),
            health: Health::Healthy,
            slots: capacity.map(|capacity| Slots {
                capacity,
                in_use: 0,
                grant_seq: 0,
                grant_total: BENCH_GRANT_TOTAL,
            }),
        };
        let frame = Message::Heartbeat(heartbeat).encode().expect("a checked heartbeat encodes");
        HeartbeatTemplate { index, frame, slots: capacity.is_some() }
    }

    /// The heartbeat for `tick`: memory as the legacy fakes' load on that tick, cpu
    /// another changing percentage; with slots, grant sequence `tick`.
    pub fn at(&mut self, tick: u64) -> &[u8] {
        let memory = percent(backend_load(self.index, tick));
        let cpu = percent(backend_load(self.index.wrapping_add(50), tick.wrapping_mul(3)));
        self.frame[HEARTBEAT_MEMORY].copy_from_slice(&memory.to_le_bytes());
        self.frame[HEARTBEAT_CPU].copy_from_slice(&cpu.to_le_bytes());
        if self.slots {
            let at = self.frame.len() - HEARTBEAT_GRANT_SEQ_FROM_END;
            self.frame[at..at + 4].copy_from_slice(&(tick as u32).to_le_bytes());
        }
        &self.frame
    }
}

/// Counts the LeaseReports a fake slot backend is sent, from the bytes read off its
/// connection, which may cut a frame anywhere.
#[derive(Debug, Default)]
pub struct LeaseReader {
    buf: Vec<u8>,
}

impl LeaseReader {
    /// Adds `bytes` and returns the LeaseReports completed by them; other frames are
    /// skipped. `None` if the stream cannot be cut into frames any more.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<u64> {
        self.buf.extend_from_slice(bytes);
        let (mut at, mut reports) = (0, 0);
        loop {
            match loadwise_protocol::v2::decode(&self.buf[at..], MAX_REPLY_LEN) {
                Ok(None) => break,
                Ok(Some((decoded, len))) => {
                    at += len;
                    reports += u64::from(matches!(decoded, Decoded::Message(Message::LeaseReport(_))));
                }
                Err(DecodeError::Malformed { len, .. }) => at += len,
                Err(_) => return None,
            }
        }
        self.buf.drain(..at);
        Some(reports)
    }
}

/// A whole percentage in hundredths.
fn percent(load: u8) -> u16 {
    u16::from(load.min(100)) * 100
}

/// What one frame from the dispatcher is, for a client owed a PickReply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// The answer to the pick owed: a success, or an error of this kind. Any answer
    /// proves that the dispatcher read what was sent before the pick.
    Answer(Result<(), ErrorKind>),
    /// A frame that answers no pick (another message type, a later version's): skipped.
    Skip,
    /// A PickReply for another request id: the replies are out of step with the
    /// requests, and the connection cannot be trusted any more.
    OutOfStep,
}

/// Judges one decoded frame, the owed pick being request `expected`. A PickReply
/// answers it by its status; an Error frame answers it too (the dispatcher sends one
/// for a malformed PickRequest, and a client reads until either arrives).
pub fn judge(decoded: &Decoded, expected: u32) -> Judged {
    match decoded {
        Decoded::Message(Message::PickReply(reply)) if reply.request_id != expected => Judged::OutOfStep,
        Decoded::Message(Message::PickReply(reply)) => match &reply.outcome {
            PickOutcome::Picked(_) => Judged::Answer(Ok(())),
            PickOutcome::Refused(code) => Judged::Answer(Err(ErrorKind::Refused(*code))),
        },
        Decoded::Message(Message::Error(error)) => Judged::Answer(Err(ErrorKind::ErrorFrame(error.code))),
        _ => Judged::Skip,
    }
}

/// Judges the frames at the start of `buf`, for at most `owed` picks, the first of
/// which is request `first_id`. Each answer goes to `answer`. Returns the bytes
/// consumed, the picks answered, and the kind that cut the stream if it cannot go on
/// (a fatal frame length, a reply out of step); a frame left incomplete stays in `buf`.
pub fn scan(
    buf: &[u8],
    owed: usize,
    first_id: u32,
    mut answer: impl FnMut(Result<(), ErrorKind>),
) -> (usize, usize, Option<ErrorKind>) {
    let (mut at, mut answered) = (0, 0);
    while answered < owed {
        let expected = first_id.wrapping_add(answered as u32);
        let judged = match loadwise_protocol::v2::decode(&buf[at..], MAX_REPLY_LEN) {
            Ok(None) => break,
            Ok(Some((decoded, len))) => {
                at += len;
                judge(&decoded, expected)
            }
            // A body that breaks a rule is skipped by its `len`; it stood for a reply.
            Err(DecodeError::Malformed { len, .. }) => {
                at += len;
                Judged::Answer(Err(ErrorKind::Malformed))
            }
            Err(_) => return (at, answered, Some(ErrorKind::Malformed)),
        };
        match judged {
            Judged::Answer(result) => {
                answer(result);
                answered += 1;
            }
            Judged::Skip => {}
            Judged::OutOfStep => return (at, answered, Some(ErrorKind::Malformed)),
        }
    }
    (at, answered, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadwise_protocol::v2::{self, ErrorCode, ErrorMessage, PickReply, Picked, Registered};

    fn service() -> ServiceName {
        ServiceName::new("bench").unwrap()
    }

    fn decode(frame: &[u8]) -> Message {
        match v2::decode(frame, MAX_REPLY_LEN) {
            Ok(Some((Decoded::Message(message), len))) if len == frame.len() => message,
            other => panic!("not one whole message: {other:?}"),
        }
    }

    fn reply(request_id: u32, outcome: PickOutcome) -> Vec<u8> {
        Message::PickReply(PickReply { request_id, outcome }).encode().unwrap()
    }

    fn picked() -> PickOutcome {
        let endpoint = Endpoint { host: Host::V4([10, 0, 0, 2].into()), port: 1002.try_into().unwrap() };
        PickOutcome::Picked(Picked { backend_id: 7, endpoint, ticket: Vec::new() })
    }

    #[test]
    fn patched_pick_requests_decode_as_encoded() {
        let mut template = PickTemplate::new(&service());
        template.set_timestamp(1_700_000_000);
        let mut out = Vec::new();
        template.push(41, &mut out);
        template.push(u32::MAX, &mut out);
        let half = out.len() / 2;
        for (bytes, request_id) in [(&out[..half], 41), (&out[half..], u32::MAX)] {
            let expected =
                PickRequest { request_id, timestamp: 1_700_000_000, service: service(), key: PickKey::NONE };
            assert_eq!(decode(bytes), Message::PickRequest(expected));
        }
    }

    #[test]
    fn patched_heartbeats_carry_the_changing_load() {
        let mut template = HeartbeatTemplate::new(&service(), 70_000);
        for tick in [0, 1, 2] {
            let Message::Heartbeat(heartbeat) = decode(template.at(tick)) else { panic!("a heartbeat") };
            let memory = u16::from(backend_load(70_000, tick)) * 100;
            assert_eq!(heartbeat.memory, Percent::from_hundredths(memory));
            assert!(heartbeat.cpu.is_some());
            assert_eq!(
                (heartbeat.backend_id, heartbeat.state, heartbeat.weight),
                (70_000, State::Ready, DEFAULT_WEIGHT)
            );
            assert_eq!(heartbeat.endpoint.to_string(), "10.1.17.112:11024");
        }
    }

    #[test]
    fn slot_heartbeats_carry_a_new_grant_each_beat() {
        let mut template = HeartbeatTemplate::with_slots(&service(), 3, Some(500));
        for tick in [0, 1, 7] {
            let Message::Heartbeat(heartbeat) = decode(template.at(tick)) else { panic!("a heartbeat") };
            let slots =
                Slots { capacity: 500, in_use: 0, grant_seq: tick as u32, grant_total: BENCH_GRANT_TOTAL };
            assert_eq!(heartbeat.slots, Some(slots));
            assert_eq!(heartbeat.memory, Percent::from_hundredths(u16::from(backend_load(3, tick)) * 100));
        }
    }

    #[test]
    fn lease_reports_are_counted_across_cut_reads() {
        use loadwise_protocol::v2::LeaseReport;
        let report =
            |grant_seq| Message::LeaseReport(LeaseReport { grant_seq, sent_total: 9 }).encode().unwrap();
        let other = Message::Registered(Registered { backend_id: 1 }).encode().unwrap();
        let bytes = [report(1), other, report(2), report(3)].concat();
        let mut reader = LeaseReader::default();
        let cut = bytes.len() - 5;
        assert_eq!(reader.feed(&bytes[..cut]), Some(2));
        assert_eq!(reader.feed(&bytes[cut..]), Some(1));
        assert_eq!(reader.feed(&[0, 0, 0, 0]), None);
    }

    #[test]
    fn replies_are_judged_by_status_and_id() {
        let frames = [
            reply(5, picked()),
            reply(6, PickOutcome::Refused(ErrorCode::UNKNOWN_SERVICE)),
            Message::Registered(Registered { backend_id: 1 }).encode().unwrap(),
            Message::Error(ErrorMessage::new(ErrorCode::MALFORMED, "bad")).encode().unwrap(),
        ];
        let bytes = frames.concat();
        let mut answers = Vec::new();
        let (consumed, answered, cut) = scan(&bytes, 3, 5, |a| answers.push(a));
        assert_eq!((consumed, answered, cut), (bytes.len(), 3, None));
        let expected = [
            Ok(()),
            Err(ErrorKind::Refused(ErrorCode::UNKNOWN_SERVICE)),
            Err(ErrorKind::ErrorFrame(ErrorCode::MALFORMED)),
        ];
        assert_eq!(answers, expected);
    }

    #[test]
    fn an_incomplete_frame_waits_and_nothing_past_the_owed_is_read() {
        let bytes = [reply(1, picked()), reply(2, picked())].concat();
        let first = reply(1, picked()).len();
        assert_eq!(scan(&bytes[..first + 3], 2, 1, |_| {}), (first, 1, None));
        assert_eq!(scan(&bytes, 1, 1, |_| {}), (first, 1, None));
    }

    #[test]
    fn a_reply_out_of_step_cuts_the_stream() {
        let bytes = [reply(1, picked()), reply(3, picked())].concat();
        let (_, answered, cut) = scan(&bytes, 2, 1, |_| {});
        assert_eq!((answered, cut), (1, Some(ErrorKind::Malformed)));
        let mut bad_len = reply(1, picked());
        bad_len[..2].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(scan(&bad_len, 1, 1, |_| {}).2, Some(ErrorKind::Malformed));
    }

    #[test]
    fn a_malformed_reply_counts_as_one() {
        let mut bad = reply(1, picked());
        bad[10 + 8] = 9; // address tag 9
        let mut answers = Vec::new();
        assert_eq!(scan(&bad, 1, 1, |a| answers.push(a)), (bad.len(), 1, None));
        assert_eq!(answers, [Err(ErrorKind::Malformed)]);
    }
}

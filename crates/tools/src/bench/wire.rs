//! The protocol a run speaks, as its connections see it: which frames a client
//! connection's batch holds, which a fake backend sends, and how replies are cut out
//! of the stream (no I/O).

use super::config::{BenchConfig, Mode, Protocol};
use super::frames::{self, HEARTBEAT_LEN, REPLY_LEN};
use super::frames_v2::{self, HeartbeatTemplate, PickTemplate};
use super::outcome::ErrorKind;
use loadwise_protocol::IpField;
use loadwise_protocol::v2::ServiceName;
use loadwise_protocol::v2::auth::Secret;

/// The protocol of a run, with what v2 needs to know.
#[derive(Debug, Clone)]
pub enum Wire {
    Legacy,
    V2 {
        /// The service picked from, and served by the fake backends.
        service: ServiceName,
        /// The secret backends register with, if the dispatcher has one.
        secret: Option<Secret>,
        /// The capacity of each fake backend, if they have capacity slots.
        slots: Option<u32>,
    },
}

impl Wire {
    /// The protocol `config` asks for.
    pub fn of(config: &BenchConfig) -> Wire {
        match config.protocol {
            Protocol::Legacy => Wire::Legacy,
            Protocol::V2 => Wire::V2 {
                service: config.service.clone(),
                secret: config.secret.clone(),
                slots: config.slots,
            },
        }
    }

    /// The frames of the client connection that sends heartbeats as backend `index`.
    pub fn client(&self, index: usize) -> ClientFrames {
        match self {
            Wire::Legacy => ClientFrames::Legacy { me: frames::backend_address(index) },
            Wire::V2 { service, .. } => ClientFrames::V2 {
                pick: PickTemplate::new(service),
                heartbeat: HeartbeatTemplate::new(service, index),
                next_id: 0,
            },
        }
    }

    /// The heartbeats of fake backend `index`.
    pub fn backend(&self, index: usize) -> BackendFrames {
        match self {
            Wire::Legacy => {
                BackendFrames::Legacy { index, me: frames::backend_address(index), frame: [0; HEARTBEAT_LEN] }
            }
            Wire::V2 { service, slots, .. } => {
                BackendFrames::V2(HeartbeatTemplate::with_slots(service, index, *slots))
            }
        }
    }

    /// The secret and service a client connection of `mode` registers with before
    /// the load; `None` when it need not (it sends no heartbeats, or they need no
    /// Register: legacy, or no secret).
    pub fn client_registration(&self, mode: Mode) -> Option<(&Secret, &ServiceName)> {
        match self {
            Wire::V2 { service, secret: Some(secret), .. }
                if matches!(mode, Mode::Heartbeat | Mode::Mixed) =>
            {
                Some((secret, service))
            }
            _ => None,
        }
    }

    /// Whether the dispatcher answers fake backends' heartbeats (a LeaseReport to each
    /// with slots), so that they must read what it sends.
    pub fn backends_are_answered(&self) -> bool {
        matches!(self, Wire::V2 { slots: Some(_), .. })
    }

    /// How replies are read.
    pub fn replies(&self) -> Replies {
        match self {
            Wire::Legacy => Replies::Legacy,
            Wire::V2 { .. } => Replies::V2,
        }
    }
}

/// The requests of one client connection, with what they need to be built cheaply.
#[derive(Debug, Clone)]
pub enum ClientFrames {
    /// Heartbeats advertise `me`.
    Legacy { me: (IpField, u16) },
    /// Pre-encoded frames, patched per request; `next_id` numbers the PickRequests.
    V2 { pick: PickTemplate, heartbeat: HeartbeatTemplate, next_id: u32 },
}

/// The heartbeats of one fake backend.
#[derive(Debug, Clone)]
pub enum BackendFrames {
    /// Legacy heartbeats from `me`, the address of backend `index`; `frame` is the
    /// last one built.
    Legacy { index: usize, me: (IpField, u16), frame: [u8; HEARTBEAT_LEN] },
    /// v2 heartbeats with backend id `index`, patched per beat.
    V2(HeartbeatTemplate),
}

impl BackendFrames {
    /// The heartbeat of the backend's `tick`-th beat, its load changing with the tick.
    pub fn heartbeat(&mut self, tick: u64) -> &[u8] {
        match self {
            BackendFrames::Legacy { index, me: (ip, port), frame } => {
                *frame = frames::heartbeat(*ip, *port, frames::backend_load(*index, tick));
                frame
            }
            BackendFrames::V2(template) => template.at(tick),
        }
    }
}

/// One batch of requests written with a single write.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The frames, back to back.
    pub bytes: Vec<u8>,
    /// Logins (v2: PickRequests) in the batch: the replies it is owed.
    pub logins: usize,
    /// Heartbeats in the batch.
    pub heartbeats: usize,
    /// v2: the request id of the batch's first PickRequest; the others follow it.
    pub first_id: u32,
}

impl Batch {
    /// Refills the batch with `ops` ops of `mode`, stamped `timestamp`. `tick`
    /// varies the load the heartbeats report.
    ///
    /// - pick: `ops` logins;
    /// - heartbeat: `ops` heartbeats, then one login that proves they were read;
    /// - mixed: `ops` pairs of a heartbeat then a login.
    pub fn fill(&mut self, frames: &mut ClientFrames, mode: Mode, ops: usize, tick: u64, timestamp: u64) {
        self.bytes.clear();
        let (logins, heartbeats) = match mode {
            Mode::Pick => (ops, 0),
            Mode::Heartbeat => (1, ops),
            Mode::Mixed => (ops, ops),
            Mode::Idle => (0, 0),
        };
        self.logins = logins;
        self.heartbeats = heartbeats;
        match frames {
            ClientFrames::Legacy { me } => self.fill_legacy(mode, *me, tick, timestamp),
            ClientFrames::V2 { pick, heartbeat, next_id } => {
                pick.set_timestamp(timestamp);
                self.first_id = *next_id;
                let mut push_pick = |bytes: &mut Vec<u8>| {
                    pick.push(*next_id, bytes);
                    *next_id = next_id.wrapping_add(1);
                };
                for i in 0..heartbeats {
                    self.bytes.extend_from_slice(heartbeat.at(tick.wrapping_add(i as u64)));
                    if mode == Mode::Mixed {
                        push_pick(&mut self.bytes);
                    }
                }
                if mode != Mode::Mixed {
                    for _ in 0..logins {
                        push_pick(&mut self.bytes);
                    }
                }
            }
        }
    }

    fn fill_legacy(&mut self, mode: Mode, me: (IpField, u16), tick: u64, timestamp: u64) {
        let login = frames::login(timestamp);
        for i in 0..self.heartbeats {
            let mem = frames::backend_load(usize::from(me.1), tick.wrapping_add(i as u64));
            self.bytes.extend_from_slice(&frames::heartbeat(me.0, me.1, mem));
            if mode == Mode::Mixed {
                self.bytes.extend_from_slice(&login);
            }
        }
        if mode != Mode::Mixed {
            for _ in 0..self.logins {
                self.bytes.extend_from_slice(&login);
            }
        }
    }
}

/// How replies are cut out of the stream and judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// Every reply is 22 bytes.
    Legacy,
    /// Frames of any length, PickReplies matched to requests by id.
    V2,
}

/// Bytes one read may add to a v2 reply buffer: room for a batch of small replies
/// without growing, and more than the longest reply.
const V2_READ: usize = 4096;

impl Replies {
    /// Judges the complete replies at the start of `buf`, for at most `owed` picks,
    /// the first being request `first_id` (v2); each answer goes to `answer`. Returns
    /// the bytes consumed, the picks answered and, if the stream cannot go on, why.
    pub fn scan(
        self,
        buf: &[u8],
        owed: usize,
        first_id: u32,
        mut answer: impl FnMut(Result<(), ErrorKind>),
    ) -> (usize, usize, Option<ErrorKind>) {
        match self {
            Replies::Legacy => {
                let complete = (buf.len() / REPLY_LEN).min(owed);
                for reply in buf[..complete * REPLY_LEN].chunks_exact(REPLY_LEN) {
                    answer(frames::classify(reply.try_into().expect("a reply-sized chunk")));
                }
                (complete * REPLY_LEN, complete, None)
            }
            Replies::V2 => frames_v2::scan(buf, owed, first_id, answer),
        }
    }

    /// How many bytes the next read may bring, with `owed` replies still owed and
    /// `buffered` bytes of them already in: legacy reads no further than the owed
    /// replies, so a reply of the next batch stays in the socket.
    pub fn read_size(self, owed: usize, buffered: usize) -> usize {
        match self {
            Replies::Legacy => (owed * REPLY_LEN).saturating_sub(buffered).max(1),
            Replies::V2 => V2_READ,
        }
    }

    /// Whether `result`, the answer to a pick, proves the server read the batch.
    pub fn proves_read(result: Result<(), ErrorKind>) -> bool {
        !matches!(result, Err(ErrorKind::Malformed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::frames::{LOGIN_LEN, login};

    fn pick_len(wire: &Wire) -> usize {
        match wire {
            Wire::Legacy => LOGIN_LEN,
            Wire::V2 { service, .. } => {
                let mut frame = Vec::new();
                PickTemplate::new(service).push(0, &mut frame);
                frame.len()
            }
        }
    }

    #[test]
    fn legacy_batches_hold_the_frames_of_their_mode() {
        let mut frames = Wire::Legacy.client(1);
        let mut batch = Batch::default();
        batch.fill(&mut frames, Mode::Pick, 3, 0, 9);
        assert_eq!((batch.bytes.len(), batch.logins, batch.heartbeats), (3 * LOGIN_LEN, 3, 0));
        batch.fill(&mut frames, Mode::Heartbeat, 4, 0, 9);
        assert_eq!(
            (batch.bytes.len(), batch.logins, batch.heartbeats),
            (4 * HEARTBEAT_LEN + LOGIN_LEN, 1, 4)
        );
        assert_eq!(batch.bytes[batch.bytes.len() - LOGIN_LEN..], login(9));
        batch.fill(&mut frames, Mode::Mixed, 2, 0, 9);
        assert_eq!(batch.bytes.len(), 2 * (HEARTBEAT_LEN + LOGIN_LEN));
        assert_eq!(batch.bytes[HEARTBEAT_LEN..HEARTBEAT_LEN + LOGIN_LEN], login(9));
    }

    #[test]
    fn v2_batches_number_their_picks_in_order() {
        use loadwise_protocol::v2::{self, Decoded, Message};
        let wire = Wire::V2 { service: ServiceName::new("bench").unwrap(), secret: None, slots: None };
        let mut frames = wire.client(3);
        let mut batch = Batch::default();
        batch.fill(&mut frames, Mode::Pick, 2, 0, 9);
        assert_eq!((batch.first_id, batch.logins, batch.bytes.len()), (0, 2, 2 * pick_len(&wire)));
        batch.fill(&mut frames, Mode::Mixed, 3, 0, 9);
        assert_eq!((batch.first_id, batch.logins, batch.heartbeats), (2, 3, 3));
        let mut rest = &batch.bytes[..];
        let mut kinds = Vec::new();
        while let Ok(Some((Decoded::Message(message), len))) = v2::decode(rest, 4096) {
            kinds.push(match message {
                Message::Heartbeat(h) => format!("hb{}", h.backend_id),
                Message::PickRequest(p) => format!("pick{}@{}", p.request_id, p.timestamp),
                other => format!("{other:?}"),
            });
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        assert_eq!(kinds, ["hb3", "pick2@9", "hb3", "pick3@9", "hb3", "pick4@9"]);
        batch.fill(&mut frames, Mode::Heartbeat, 4, 0, 9);
        assert_eq!((batch.first_id, batch.logins, batch.heartbeats), (5, 1, 4));
    }

    #[test]
    fn legacy_reads_stop_at_the_owed_replies() {
        assert_eq!(Replies::Legacy.read_size(3, 10), 3 * REPLY_LEN - 10);
        let replies = [super::super::ceiling::fixed_reply(); 3].concat();
        let mut answers = 0;
        let scanned = Replies::Legacy.scan(&replies[..50], 3, 0, |a| {
            assert_eq!(a, Ok(()));
            answers += 1;
        });
        assert_eq!((scanned, answers), ((44, 2, None), 2));
    }
}

//! The ceiling: a server with no logic that answers every request with one fixed reply.
//!
//! It frames the stream by the header's `len` exactly as the dispatcher must (so a
//! 23-byte heartbeat is read and dropped, a 12-byte login is answered), but keeps
//! no table and makes no choice. Measured under the same load, it shows what the
//! machine and the runtime can do; the dispatcher's figure over its figure is how
//! close the dispatcher comes.
//!
//! It speaks v2 as far as a bench needs: a PickRequest gets a fixed PickReply (27
//! bytes, or 92 with a ticket-sized ticket of fixed bytes) with the request's id
//! copied in, a Hello a fixed Challenge, a Register a Registered with its backend id
//! copied in; v2 heartbeats are dropped. It checks nothing, so a bench with a secret
//! registers with it as with a dispatcher.

use std::num::NonZeroU16;
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use loadwise_protocol::v2::{
    self, Challenge, Endpoint, Host, Message, MessageType, PickOutcome, PickReply, Picked,
};
use loadwise_protocol::{HEADER_LEN, Header, IpField, LoginReply, cmd};

/// Bytes read from the socket at a time; frames up to this size are buffered whole.
const READ_CHUNK: usize = 4096;

/// The request id in a PickRequest and a PickReply; the backend id in a Register and
/// a Registered.
const REQUEST_ID: Range<usize> = 4..8;
const BACKEND_ID: Range<usize> = 4..12;

/// The reply the ceiling gives every login: `127.0.0.1:1`.
pub fn fixed_reply() -> [u8; LoginReply::LEN] {
    let ip = IpField::from_text("127.0.0.1").expect("a valid ip");
    LoginReply::Backend { ip, port: 1 }.encode()
}

/// The fixed replies, encoded once.
#[derive(Debug, Clone)]
pub struct Replies {
    login: [u8; LoginReply::LEN],
    /// A PickReply naming backend 1 at `127.0.0.1:1`; its request id is overwritten.
    pick: Vec<u8>,
    challenge: Vec<u8>,
    /// Its backend id is overwritten.
    registered: Vec<u8>,
}

impl Replies {
    /// The replies; with `ticket`, each PickReply carries as many bytes of ticket as
    /// a dispatcher with a secret signs (so the ceiling writes the same bytes).
    pub fn new(ticket: bool) -> Self {
        let endpoint = Endpoint { host: Host::V4([127, 0, 0, 1].into()), port: NonZeroU16::MIN };
        let ticket = if ticket { vec![0x5a; loadwise_protocol::ticket::LEN] } else { Vec::new() };
        let outcome = PickOutcome::Picked(Picked { backend_id: 1, endpoint, ticket });
        let encode = |message: Message| message.encode().expect("a fixed reply encodes");
        Replies {
            login: fixed_reply(),
            pick: encode(Message::PickReply(PickReply { request_id: 0, outcome })),
            challenge: encode(Message::Challenge(Challenge { nonce: [0x11; 16], server_time: 0 })),
            registered: encode(Message::Registered(v2::Registered { backend_id: 0 })),
        }
    }

    /// Appends the reply `frame` is owed, if any: a fixed reply with the frame's id
    /// (as far as the frame holds one) copied in.
    fn answer(&self, frame: &[u8], cmd: u16, out: &mut Vec<u8>) {
        let (reply, id) = match cmd {
            cmd::LOGIN => (&self.login[..], None),
            c if c == MessageType::PickRequest.cmd() => (&self.pick[..], Some(REQUEST_ID)),
            c if c == MessageType::Hello.cmd() => (&self.challenge[..], None),
            c if c == MessageType::Register.cmd() => (&self.registered[..], Some(BACKEND_ID)),
            _ => return,
        };
        let at = out.len();
        out.extend_from_slice(reply);
        if let Some(id) = id
            && let Some(value) = frame.get(id.clone())
        {
            out[at + id.start..at + id.end].copy_from_slice(value);
        }
    }
}

/// Frames a byte stream by header length and answers the requests in it (no I/O).
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of a large frame still to be discarded as they arrive.
    skip: usize,
}

/// A frame whose `len` is shorter than its own header: the stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame;

impl Framer {
    /// Consumes every complete frame at the start of `buf`, appending the replies
    /// they are owed to `out`; returns the bytes consumed. An incomplete frame is left
    /// in place unless it is longer than `READ_CHUNK`, whose bytes are skipped (and
    /// not answered) as they come.
    pub fn scan(&mut self, buf: &[u8], replies: &Replies, out: &mut Vec<u8>) -> Result<usize, BadFrame> {
        let mut at = self.skip.min(buf.len());
        self.skip -= at;
        while let Some(header) = Header::parse(&buf[at..]) {
            let len = usize::from(header.len);
            if len < HEADER_LEN {
                return Err(BadFrame);
            }
            let available = buf.len() - at;
            if len > available && len <= READ_CHUNK {
                break;
            }
            let taken = len.min(available);
            if taken == len {
                replies.answer(&buf[at..at + len], header.cmd, out);
            }
            self.skip = len - taken;
            at += taken;
        }
        Ok(at)
    }
}

/// Serves the ceiling on `listener`, answering with `replies`, until `shutdown` is
/// cancelled; every connection task is tracked and stopped before it returns.
pub async fn serve(listener: TcpListener, replies: Replies, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(connection(stream, replies.clone(), shutdown.clone()));
                }
                // Out of descriptors, typically: let some close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn connection(mut stream: TcpStream, replies: Replies, shutdown: CancellationToken) {
    tokio::select! {
        _ = answer(&mut stream, &replies) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Reads frames and writes one fixed reply per request, one write per read.
async fn answer(stream: &mut TcpStream, replies: &Replies) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut framer = Framer::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    let mut out = Vec::with_capacity(READ_CHUNK);
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        out.clear();
        let consumed = framer.scan(&buf[..filled], replies, &mut out).map_err(|BadFrame| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "frame shorter than its header")
        })?;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::frames;
    use crate::bench::frames_v2::{self, HeartbeatTemplate, PickTemplate};
    use crate::bench::outcome::ErrorKind;
    use loadwise_protocol::v2::{Decoded, ServiceName};

    fn scan(framer: &mut Framer, bytes: &[u8]) -> (Result<usize, BadFrame>, Vec<u8>) {
        let mut out = Vec::new();
        (framer.scan(bytes, &Replies::new(false), &mut out), out)
    }

    #[test]
    fn logins_are_answered_and_heartbeats_dropped() {
        let (ip, port) = frames::backend_address(1);
        let mut bytes = frames::heartbeat(ip, port, 5).to_vec();
        bytes.extend_from_slice(&frames::login(1));
        bytes.extend_from_slice(&frames::login(1)[..5]);
        let mut framer = Framer::default();
        assert_eq!(scan(&mut framer, &bytes), (Ok(23 + 12), fixed_reply().to_vec()));
        assert_eq!(scan(&mut framer, &frames::login(1)), (Ok(12), fixed_reply().to_vec()));
    }

    #[test]
    fn large_frames_are_skipped_as_they_arrive() {
        let mut framer = Framer::default();
        let mut big = vec![0u8; 100];
        big[..4].copy_from_slice(&Header { len: 5000, cmd: 3 }.to_bytes());
        assert_eq!(scan(&mut framer, &big), (Ok(100), vec![]));
        let mut rest = vec![0u8; 4900];
        rest.extend_from_slice(&frames::login(1));
        assert_eq!(scan(&mut framer, &rest), (Ok(4912), fixed_reply().to_vec()));
    }

    #[test]
    fn a_frame_shorter_than_its_header_stops_the_stream() {
        assert_eq!(scan(&mut Framer::default(), &[2, 0, 2, 0]).0, Err(BadFrame));
    }

    #[test]
    fn the_fixed_reply_is_a_success() {
        assert_eq!(frames::classify(&fixed_reply()), Ok(()));
    }

    #[test]
    fn v2_picks_get_their_request_id_back() {
        let service = ServiceName::new("bench").unwrap();
        let mut bytes = HeartbeatTemplate::new(&service, 3).at(0).to_vec();
        let pick = PickTemplate::new(&service);
        for id in 7..10 {
            pick.push(id, &mut bytes);
        }
        for ticket in [false, true] {
            let mut out = Vec::new();
            assert_eq!(Framer::default().scan(&bytes, &Replies::new(ticket), &mut out), Ok(bytes.len()));
            assert_eq!(out.len(), 3 * if ticket { 27 + 65 } else { 27 });
            let mut answers = Vec::new();
            assert_eq!(frames_v2::scan(&out, 3, 7, |a| answers.push(a)), (out.len(), 3, None));
            assert_eq!(answers, [Ok::<(), ErrorKind>(()); 3]);
        }
    }

    #[test]
    fn v2_registration_is_answered_without_checks() {
        let register = v2::Register { backend_id: 42, mac: [0; 32], service: ServiceName::new("s").unwrap() };
        let bytes =
            [Message::Hello(v2::Hello).encode().unwrap(), Message::Register(register).encode().unwrap()]
                .concat();
        let mut framer = Framer::default();
        let (consumed, out) = scan(&mut framer, &bytes);
        assert_eq!(consumed, Ok(bytes.len()));
        let Ok(Some((Decoded::Message(Message::Challenge(_)), len))) = v2::decode(&out, 4096) else {
            panic!("a Challenge first")
        };
        let registered = v2::decode(&out[len..], 4096).unwrap().unwrap().0;
        assert_eq!(registered, Decoded::Message(Message::Registered(v2::Registered { backend_id: 42 })));
    }
}

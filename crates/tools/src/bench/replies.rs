//! Reading the replies a batch is owed: judging each, timing each, and cutting on failure.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::deadline::LazyDeadline;
use super::latency::LatencyRecorder;
use super::outcome::{ErrorKind, Tally};
use super::wire::Replies;

/// How a batch's wait for replies ended when it did not get them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub kind: ErrorKind,
    /// Logins of the batch left without a reply.
    pub missing: usize,
}

/// The replies a batch is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// Logins (v2: PickRequests), each owed one reply.
    pub logins: usize,
    /// v2: the request id of the first; the others follow it.
    pub first_id: u32,
}

/// The bytes read from one connection and not judged yet, and how to judge them. A
/// v2 read may bring the start of a later batch's replies, which wait here for it; a
/// connection that is dropped must [`clear`](Self::clear) them.
#[derive(Debug)]
pub struct ReplyBuf {
    replies: Replies,
    bytes: Vec<u8>,
    filled: usize,
}

impl ReplyBuf {
    pub fn new(replies: Replies) -> Self {
        ReplyBuf { replies, bytes: Vec::new(), filled: 0 }
    }

    /// Forgets what was read (the connection is gone).
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// Drops the first `n` bytes read.
    fn consume(&mut self, n: usize) {
        self.bytes.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Room for `n` more bytes after those read.
    fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.filled + n;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[self.filled..end]
    }
}

/// Reads the replies `owed`, counting each in `tally` and recording its latency from
/// `since` (the send time, or the intended send time in an open loop). Gives up when
/// `deadline` passes, at EOF, on an error, or when the stream cannot be read on (v2: a
/// reply out of step), counting the replies still missing by kind. Returns whether any
/// reply was well-formed (proof the server read the batch).
pub async fn read_replies(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut ReplyBuf,
    owed: Owed,
    since: Instant,
    deadline: &mut LazyDeadline,
    tally: &mut Tally,
    latency: &mut LatencyRecorder,
) -> (bool, Option<Cut>) {
    let (mut judged, mut answered) = (0, false);
    let replies = buf.replies;
    loop {
        let first_id = owed.first_id.wrapping_add(judged as u32);
        let (consumed, n, stop) =
            replies.scan(&buf.bytes[..buf.filled], owed.logins - judged, first_id, |a| {
                answered |= Replies::proves_read(a);
                tally.reply(a);
            });
        buf.consume(consumed);
        if n > 0 {
            latency.record(since.elapsed(), n);
            judged += n;
        }
        let kind = match stop {
            Some(kind) => kind,
            None if judged == owed.logins => return (answered, None),
            None => {
                let room = buf.room(replies.read_size(owed.logins - judged, buf.filled));
                let read = tokio::select! {
                    biased;
                    read = stream.read(room) => Ok(read),
                    () = deadline.passed() => Err(()),
                };
                match read {
                    Ok(Ok(0)) => ErrorKind::ClosedEarly,
                    Ok(Ok(n)) => {
                        buf.filled += n;
                        continue;
                    }
                    Ok(Err(error)) => ErrorKind::of_io(&error),
                    Err(_) => ErrorKind::Timeout,
                }
            }
        };
        buf.clear();
        let missing = owed.logins - judged;
        tally.errors.add(kind, missing as u64);
        return (answered, Some(Cut { kind, missing }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ceiling::fixed_reply;
    use crate::bench::frames::REPLY_LEN;
    use crate::bench::latency::LatencySink;
    use loadwise_protocol::LoginReply;
    use std::time::Duration;

    async fn judge_as(replies: Replies, bytes: &[u8], owed: Owed) -> (Tally, bool, Option<Cut>) {
        let sink = LatencySink::default();
        let mut recorder = sink.recorder();
        let (mut tally, mut buf) = (Tally::default(), ReplyBuf::new(replies));
        let now = Instant::now();
        let mut far = LazyDeadline::default();
        far.set(now + Duration::from_secs(5));
        let mut reader = bytes;
        let (answered, cut) =
            read_replies(&mut reader, &mut buf, owed, now, &mut far, &mut tally, &mut recorder).await;
        (tally, answered, cut)
    }

    async fn judge(bytes: &[u8], logins: usize) -> (Tally, bool, Option<Cut>) {
        judge_as(Replies::Legacy, bytes, Owed { logins, first_id: 0 }).await
    }

    #[tokio::test]
    async fn every_reply_is_judged() {
        let mut bytes = fixed_reply().to_vec();
        bytes.extend_from_slice(&LoginReply::Error.encode());
        bytes.extend_from_slice(&[0xee; REPLY_LEN]);
        let (tally, answered, cut) = judge(&bytes, 3).await;
        assert_eq!((tally.logins_ok, tally.errors.error_reply, tally.errors.malformed), (1, 1, 1));
        assert!(answered);
        assert_eq!(cut, None);
    }

    #[tokio::test]
    async fn replies_missing_at_eof_are_closed_early() {
        let mut bytes = fixed_reply().to_vec();
        bytes.extend_from_slice(&fixed_reply()[..10]);
        let (tally, _, cut) = judge(&bytes, 4).await;
        assert_eq!(tally.logins_ok, 1);
        assert_eq!(cut, Some(Cut { kind: ErrorKind::ClosedEarly, missing: 3 }));
        assert_eq!(tally.errors.closed_early, 3);
    }

    #[tokio::test]
    async fn v2_replies_carry_over_to_the_next_batch() {
        use loadwise_protocol::v2::{Endpoint, Host, Message, PickOutcome, PickReply, Picked};
        let endpoint = Endpoint { host: Host::V4([10, 0, 0, 1].into()), port: 80.try_into().unwrap() };
        let reply = |request_id| {
            let outcome =
                PickOutcome::Picked(Picked { backend_id: 1, endpoint: endpoint.clone(), ticket: vec![] });
            Message::PickReply(PickReply { request_id, outcome }).encode().unwrap()
        };
        let bytes = [reply(7), reply(8), reply(9)].concat();
        let sink = LatencySink::default();
        let mut recorder = sink.recorder();
        let (mut tally, mut buf) = (Tally::default(), ReplyBuf::new(Replies::V2));
        let mut far = LazyDeadline::default();
        far.set(Instant::now() + Duration::from_secs(5));
        let mut reader = &bytes[..];
        for (logins, first_id) in [(2, 7), (1, 9)] {
            let owed = Owed { logins, first_id };
            let now = Instant::now();
            let (answered, cut) =
                read_replies(&mut reader, &mut buf, owed, now, &mut far, &mut tally, &mut recorder).await;
            assert!(answered);
            assert_eq!(cut, None);
        }
        assert_eq!((tally.logins_ok, tally.errors.total()), (3, 0));
    }

    #[tokio::test]
    async fn v2_replies_out_of_step_cut_the_batch() {
        use loadwise_protocol::v2::{ErrorCode, Message, PickOutcome, PickReply};
        let refused = |request_id| {
            let outcome = PickOutcome::Refused(ErrorCode::NO_BACKEND);
            Message::PickReply(PickReply { request_id, outcome }).encode().unwrap()
        };
        let bytes = [refused(1), refused(5)].concat();
        let (tally, answered, cut) = judge_as(Replies::V2, &bytes, Owed { logins: 3, first_id: 1 }).await;
        assert!(answered, "a refusal proves the batch was read");
        assert_eq!(tally.errors.no_backend, 1);
        assert_eq!(cut, Some(Cut { kind: ErrorKind::Malformed, missing: 2 }));
    }
}

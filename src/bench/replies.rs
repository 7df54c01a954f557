//! Reading the replies a batch is owed: judging each, timing each, and cutting on failure.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::deadline::LazyDeadline;
use super::frames::{REPLY_LEN, classify};
use super::latency::LatencyRecorder;
use super::outcome::{ErrorKind, Tally};

/// How a batch's wait for replies ended when it did not get them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub kind: ErrorKind,
    /// Logins of the batch left without a reply.
    pub missing: usize,
}

/// Reads `logins` replies, counting each in `tally` and recording its latency from
/// `since` (the send time, or the intended send time in an open loop). Gives up when
/// `deadline` passes, at EOF or on an error, counting the replies still missing by
/// kind. Returns whether any reply was well-formed (proof the server read the batch).
pub async fn read_replies(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    logins: usize,
    since: Instant,
    deadline: &mut LazyDeadline,
    tally: &mut Tally,
    latency: &mut LatencyRecorder,
) -> (bool, Option<Cut>) {
    buf.resize(logins * REPLY_LEN, 0);
    let (mut filled, mut judged, mut answered) = (0, 0, false);
    while judged < logins {
        let read = tokio::select! {
            biased;
            read = stream.read(&mut buf[filled..]) => Ok(read),
            () = deadline.passed() => Err(()),
        };
        let kind = match read {
            Ok(Ok(0)) => ErrorKind::ClosedEarly,
            Ok(Ok(n)) => {
                filled += n;
                let complete = filled / REPLY_LEN;
                latency.record(since.elapsed(), complete - judged);
                for reply in buf[judged * REPLY_LEN..complete * REPLY_LEN].chunks_exact(REPLY_LEN) {
                    let judged = classify(reply.try_into().expect("a reply-sized chunk"));
                    answered |= matches!(judged, Ok(()) | Err(ErrorKind::ErrorReply));
                    tally.reply(judged);
                }
                judged = complete;
                continue;
            }
            Ok(Err(error)) => ErrorKind::of_io(&error),
            Err(_) => ErrorKind::Timeout,
        };
        let missing = logins - judged;
        tally.errors.add(kind, missing as u64);
        return (answered, Some(Cut { kind, missing }));
    }
    (answered, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ceiling::fixed_reply;
    use crate::bench::latency::LatencySink;
    use crate::protocol::LoginReply;
    use std::time::Duration;

    async fn judge(bytes: &[u8], logins: usize) -> (Tally, bool, Option<Cut>) {
        let sink = LatencySink::default();
        let mut recorder = sink.recorder();
        let (mut tally, mut buf) = (Tally::default(), Vec::new());
        let now = Instant::now();
        let mut far = LazyDeadline::default();
        far.set(now + Duration::from_secs(5));
        let mut reader = bytes;
        let (answered, cut) =
            read_replies(&mut reader, &mut buf, logins, now, &mut far, &mut tally, &mut recorder).await;
        (tally, answered, cut)
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
}

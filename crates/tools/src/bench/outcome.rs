//! What happened to each request: successes and errors by kind, counted per worker and summed.

use serde::Serialize;

use loadwise_protocol::v2::ErrorCode;

/// Why a request (or a connection attempt) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The target refused the connection (nothing listening).
    ConnectRefused,
    /// Connecting failed otherwise (unreachable, out of ports, ...).
    ConnectError,
    /// No reply, or no connection, within the timeout.
    Timeout,
    /// The dispatcher sent the legacy error reply (no backend, or clock skew).
    ErrorReply,
    /// v2: a PickReply whose status is this error code.
    Refused(ErrorCode),
    /// v2: an Error frame with this code where a PickReply was owed.
    ErrorFrame(ErrorCode),
    /// A reply that is neither a valid success nor an error the protocol defines (v2:
    /// also a PickReply whose request id is not the one owed).
    Malformed,
    /// The server closed the connection before sending every reply owed.
    ClosedEarly,
    /// Reading or writing failed (a reset, for instance).
    Io,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::ConnectRefused => "connection refused",
            ErrorKind::ConnectError => "connection failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::ErrorReply => "error reply",
            ErrorKind::Refused(code) => return write!(f, "pick refused: {code}"),
            ErrorKind::ErrorFrame(code) => return write!(f, "v2 Error frame: {code}"),
            ErrorKind::Malformed => "malformed reply",
            ErrorKind::ClosedEarly => "connection closed early",
            ErrorKind::Io => "I/O error",
        })
    }
}

impl ErrorKind {
    /// The kind of a failed connection attempt.
    pub fn of_connect(error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::ConnectError,
        }
    }

    /// The kind of a failed read or write on an open connection.
    pub fn of_io(error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::UnexpectedEof => ErrorKind::ClosedEarly,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

/// Errors by kind. Request errors count requests (each request sent ends either
/// well or in exactly one kind); connection errors count attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Connection attempts refused.
    pub connect_refused: u64,
    /// Connection attempts that failed otherwise.
    pub connect_error: u64,
    /// Requests (or connection attempts) that timed out.
    pub timeout: u64,
    /// Logins answered with the legacy error reply.
    pub error_reply: u64,
    /// v2 picks refused with status 1: the service has no ready backend.
    pub no_backend: u64,
    /// v2 picks refused with status 2: the timestamp is too far from the dispatcher's clock.
    pub clock_skew: u64,
    /// v2 picks refused with status 3: no live backend serves the service.
    pub unknown_service: u64,
    /// v2 picks refused with status 15: a slot service's backends have no free place
    /// for this dispatcher.
    pub no_free_place: u64,
    /// v2 picks refused with another status.
    pub refused_other: u64,
    /// v2 picks answered with an Error frame (any code).
    pub error_frame: u64,
    /// Requests answered with a malformed reply.
    pub malformed: u64,
    /// Requests left unanswered when the server closed the connection.
    pub closed_early: u64,
    /// Requests lost to another I/O error.
    pub io: u64,
}

impl ErrorCounts {
    /// Counts `n` errors of `kind`.
    pub fn add(&mut self, kind: ErrorKind, n: u64) {
        let slot = match kind {
            ErrorKind::ConnectRefused => &mut self.connect_refused,
            ErrorKind::ConnectError => &mut self.connect_error,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::ErrorReply => &mut self.error_reply,
            ErrorKind::Refused(ErrorCode::NO_BACKEND) => &mut self.no_backend,
            ErrorKind::Refused(ErrorCode::CLOCK_SKEW) => &mut self.clock_skew,
            ErrorKind::Refused(ErrorCode::UNKNOWN_SERVICE) => &mut self.unknown_service,
            ErrorKind::Refused(ErrorCode::NO_FREE_PLACE) => &mut self.no_free_place,
            ErrorKind::Refused(_) => &mut self.refused_other,
            ErrorKind::ErrorFrame(_) => &mut self.error_frame,
            ErrorKind::Malformed => &mut self.malformed,
            ErrorKind::ClosedEarly => &mut self.closed_early,
            ErrorKind::Io => &mut self.io,
        };
        *slot += n;
    }

    /// Every error of every kind.
    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, n)| n).sum()
    }

    /// `(name, count)` for each kind, in a fixed order.
    pub fn kinds(&self) -> [(&'static str, u64); 13] {
        [
            ("connect_refused", self.connect_refused),
            ("connect_error", self.connect_error),
            ("timeout", self.timeout),
            ("error_reply", self.error_reply),
            ("no_backend", self.no_backend),
            ("clock_skew", self.clock_skew),
            ("unknown_service", self.unknown_service),
            ("no_free_place", self.no_free_place),
            ("refused_other", self.refused_other),
            ("error_frame", self.error_frame),
            ("malformed", self.malformed),
            ("closed_early", self.closed_early),
            ("io", self.io),
        ]
    }

    fn merge(&mut self, other: &ErrorCounts) {
        self.connect_refused += other.connect_refused;
        self.connect_error += other.connect_error;
        self.timeout += other.timeout;
        self.error_reply += other.error_reply;
        self.no_backend += other.no_backend;
        self.clock_skew += other.clock_skew;
        self.unknown_service += other.unknown_service;
        self.no_free_place += other.no_free_place;
        self.refused_other += other.refused_other;
        self.error_frame += other.error_frame;
        self.malformed += other.malformed;
        self.closed_early += other.closed_early;
        self.io += other.io;
    }
}

/// Requests sent and their outcomes, for one worker or a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Login frames (v2: PickRequests) written.
    pub logins_sent: u64,
    /// Logins answered with a valid success reply (v2: a PickReply of status 0).
    pub logins_ok: u64,
    /// Heartbeat frames written.
    pub heartbeats_sent: u64,
    /// Heartbeats followed by a login that got a well-formed reply (success or an
    /// error the protocol defines): proof that the server read them.
    pub heartbeats_confirmed: u64,
    pub errors: ErrorCounts,
}

impl Tally {
    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.logins_sent += other.logins_sent;
        self.logins_ok += other.logins_ok;
        self.heartbeats_sent += other.heartbeats_sent;
        self.heartbeats_confirmed += other.heartbeats_confirmed;
        self.errors.merge(&other.errors);
    }

    /// Counts one judged reply to a login.
    pub fn reply(&mut self, judged: Result<(), ErrorKind>) {
        match judged {
            Ok(()) => self.logins_ok += 1,
            Err(kind) => self.errors.add(kind, 1),
        }
    }

    /// Counts the fate of a batch's heartbeats. They are confirmed when the batch
    /// was not cut short and a login after them got a well-formed reply (`answered`);
    /// a batch cut by `cut` loses them to that kind; otherwise only malformed replies
    /// came back, which prove nothing about what the server read.
    pub fn settle_heartbeats(&mut self, heartbeats: usize, answered: bool, cut: Option<ErrorKind>) {
        let n = heartbeats as u64;
        match cut {
            None if answered => self.heartbeats_confirmed += n,
            None => self.errors.add(ErrorKind::Malformed, n),
            Some(kind) => self.errors.add(kind, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_ends_once() {
        let mut tally = Tally { logins_sent: 3, heartbeats_sent: 2, ..Tally::default() };
        tally.reply(Ok(()));
        tally.reply(Err(ErrorKind::ErrorReply));
        tally.settle_heartbeats(2, true, None);
        tally.errors.add(ErrorKind::ClosedEarly, 1);
        assert_eq!(tally.logins_ok, 1);
        assert_eq!(tally.heartbeats_confirmed, 2);
        assert_eq!(tally.logins_ok + tally.heartbeats_confirmed + tally.errors.total(), 5);
    }

    #[test]
    fn heartbeats_share_the_fate_of_a_cut_batch() {
        let mut tally = Tally::default();
        tally.settle_heartbeats(4, false, Some(ErrorKind::Timeout));
        assert_eq!(tally.errors.timeout, 4);
        tally.reply(Err(ErrorKind::Malformed));
        tally.settle_heartbeats(2, false, None);
        assert_eq!(tally.errors.malformed, 3);
    }

    #[test]
    fn io_errors_map_to_kinds() {
        use std::io::{Error, ErrorKind as Io};
        assert_eq!(ErrorKind::of_connect(&Error::from(Io::ConnectionRefused)), ErrorKind::ConnectRefused);
        assert_eq!(ErrorKind::of_io(&Error::from(Io::UnexpectedEof)), ErrorKind::ClosedEarly);
        assert_eq!(ErrorKind::of_io(&Error::from(Io::ConnectionReset)), ErrorKind::Io);
    }

    #[test]
    fn v2_refusals_are_counted_by_status() {
        let mut errors = ErrorCounts::default();
        errors.add(ErrorKind::Refused(ErrorCode::UNKNOWN_SERVICE), 2);
        errors.add(ErrorKind::Refused(ErrorCode::NO_BACKEND), 1);
        errors.add(ErrorKind::Refused(ErrorCode::new(99).unwrap()), 1);
        errors.add(ErrorKind::Refused(ErrorCode::NO_FREE_PLACE), 3);
        errors.add(ErrorKind::ErrorFrame(ErrorCode::MALFORMED), 1);
        assert_eq!((errors.unknown_service, errors.no_backend, errors.refused_other), (2, 1, 1));
        assert_eq!((errors.no_free_place, errors.error_frame, errors.total()), (3, 1, 8));
        let text = ErrorKind::Refused(ErrorCode::UNKNOWN_SERVICE).to_string();
        assert_eq!(text, "pick refused: unknown service (3)");
    }
}

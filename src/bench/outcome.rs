//! What happened to each request: successes and errors by kind, counted per worker and summed.

use serde::Serialize;

/// Why a request (or a connection attempt) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The target refused the connection (nothing listening).
    ConnectRefused,
    /// Connecting failed otherwise (unreachable, out of ports, ...).
    ConnectError,
    /// No reply, or no connection, within the timeout.
    Timeout,
    /// The dispatcher sent the error reply (no backend, or clock skew).
    ErrorReply,
    /// A 22-byte reply that is neither a valid success nor the error reply.
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
    /// Logins answered with the error reply.
    pub error_reply: u64,
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
    pub fn kinds(&self) -> [(&'static str, u64); 7] {
        [
            ("connect_refused", self.connect_refused),
            ("connect_error", self.connect_error),
            ("timeout", self.timeout),
            ("error_reply", self.error_reply),
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
        self.malformed += other.malformed;
        self.closed_early += other.closed_early;
        self.io += other.io;
    }
}

/// Requests sent and their outcomes, for one worker or a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Login frames written.
    pub logins_sent: u64,
    /// Logins answered with a valid success reply.
    pub logins_ok: u64,
    /// Heartbeat frames written.
    pub heartbeats_sent: u64,
    /// Heartbeats followed by a login that got a well-formed reply (success or the
    /// error reply): proof that the server read them.
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
}

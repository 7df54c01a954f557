//! Picking and connecting in one call: ask a dispatcher for a backend, connect to it
//! within a deadline, and when that fails, say so (a v2 FailureReport) on the same
//! dispatcher connection and ask again, a bounded number of times.
//!
//! One dispatcher connection serves the whole sequence, so the dispatcher sees the
//! reports from the source address it sent the client from: it counts a report only
//! from a client it sent to that backend. A backend that failed may be named again
//! (the dispatcher ejects it only once enough distinct clients reported it): a pick
//! naming a backend that failed earlier in the sequence is passed over, without
//! connecting or reporting it again, unless the pick before was passed over too; then
//! it is tried again (the dispatcher has nothing else to offer). Every pick, passed
//! over or not, counts toward the attempts.
//!
//! With several dispatchers, the sequence starts at one of them (a different one
//! from call to call) and moves to the next only when the current one cannot be
//! reached or stops answering; a report not yet sent is then dropped, since only the
//! dispatcher that sent the client there would count it.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::dial::Stream;
use crate::failover::Attempt;
use crate::single::{PickError, pick_request, read_pick_reply_skipping};
use crate::tls::ClientTls;
use loadwise_protocol::codec::v2::PeerCodec;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::v2::{
    Endpoint, ErrorCode, ErrorMessage, FailureReason, FailureReport, Host, Message, PickKey, Picked,
    ServiceName,
};

/// The longest accepted per-backend connect deadline and per-pick timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The most picks one [`connect`] may make.
pub const MAX_ATTEMPTS: u32 = 16;

/// How [`connect`] spends its attempts and time, and how it reaches the dispatchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Longest wait for one backend's TCP connection (its name resolved, if it is a
    /// name, and the handshake); then it counts as failed with reason `timeout`.
    pub connect_timeout: Duration,
    /// The most picks, each followed by a connection attempt (or passed over, see the
    /// module docs): at most this many backends are tried.
    pub attempts: u32,
    /// Longest wait for one dispatcher exchange: connecting to it (TLS included), or
    /// sending a pick and reading its reply.
    pub pick_timeout: Duration,
    /// The pick's affinity key; empty for a pick by load alone.
    pub key: PickKey,
    /// Speak TLS to the dispatchers, trusting this CA; `None` for plain TCP. The
    /// backend connection is always plain TCP: what runs over it is the caller's.
    pub tls: Option<ClientTls>,
    /// The local address of the dispatcher connection; `None` lets the system
    /// choose. The dispatcher knows clients by their source address.
    pub bind: Option<IpAddr>,
}

impl Default for ConnectOptions {
    /// 1 s per backend, 3 attempts, 1 s per dispatcher exchange, no key, plain TCP,
    /// any local address.
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            attempts: 3,
            pick_timeout: Duration::from_secs(1),
            key: PickKey::NONE,
            tls: None,
            bind: None,
        }
    }
}

impl ConnectOptions {
    /// Rejects settings that could never connect or would retry without bound,
    /// naming the setting (as the command line spells it).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let timeout_ok = |t: Duration| !t.is_zero() && t <= MAX_TIMEOUT;
        ensure(timeout_ok(self.connect_timeout), "connect-timeout", "must be above zero and at most 60s")?;
        ensure(timeout_ok(self.pick_timeout), "attempt-timeout", "must be above zero and at most 60s")?;
        ensure((1..=MAX_ATTEMPTS).contains(&self.attempts), "attempts", "must be from 1 to 16")
    }
}

/// A connection to a backend, and how it was obtained.
#[derive(Debug)]
pub struct Connected {
    /// The connection, as connected: no bytes sent or read, no socket option set.
    pub stream: TcpStream,
    /// The pick that named the backend: its id, endpoint and ticket (empty when the
    /// dispatcher signs none), the ticket to show the backend.
    pub backend: Picked,
    /// The dispatcher that named it.
    pub dispatcher: String,
    /// The backends named before, in order, and why each was not used.
    pub failed: Vec<BackendAttempt>,
    /// The dispatchers that could not be reached or stopped answering first.
    pub unanswered: Vec<Attempt>,
}

impl Connected {
    /// The backend attempts made, this one included.
    pub fn attempts(&self) -> usize {
        self.failed.len() + 1
    }
}

/// One backend that was named and not used.
#[derive(Debug)]
pub struct BackendAttempt {
    pub backend_id: u64,
    pub endpoint: Endpoint,
    pub error: BackendError,
    /// Whether a FailureReport about it was written to the dispatcher connection
    /// (not when the connection failed first, or the dispatcher was replaced).
    pub reported: bool,
    pub elapsed: Duration,
}

impl std::fmt::Display for BackendAttempt {
    /// `backend 7 at 127.0.0.1:9000: refused (Connection refused (os error 111))`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend {} at {}: {}", self.backend_id, self.endpoint, self.error)
    }
}

/// Why a backend that was named was not used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The connection failed; the reason is what the report says.
    #[error("{reason} ({source})")]
    Connect { reason: FailureReason, source: io::Error },
    /// No connection within the deadline.
    #[error("timeout (no connection within {0:?})")]
    Timeout(Duration),
    /// Named again after failing earlier in this sequence: passed over without
    /// connecting (it was reported when it failed).
    #[error("passed over: it failed earlier in this sequence")]
    PassedOver,
}

impl BackendError {
    /// The reason a FailureReport gives; `None` for a backend passed over, which
    /// was reported when it failed.
    pub fn reason(&self) -> Option<FailureReason> {
        match self {
            BackendError::Connect { reason, .. } => Some(*reason),
            BackendError::Timeout(_) => Some(FailureReason::Timeout),
            BackendError::PassedOver => None,
        }
    }
}

/// Why [`connect`] returned no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A setting cannot work; it is named.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No dispatcher could be reached or kept answering.
    #[error("no dispatcher answered ({})", unanswered.iter().map(|a| format!("{}: {}", a.dispatcher, a.error)).collect::<Vec<_>>().join("; "))]
    Unanswered { unanswered: Vec<Attempt>, failed: Vec<BackendAttempt> },
    /// The dispatcher answered and named no backend (no live backend, an unknown
    /// service, clocks too far apart).
    #[error("{dispatcher}: {error}")]
    Declined { dispatcher: String, error: PickError, failed: Vec<BackendAttempt> },
    /// Every backend named, in every attempt, failed.
    #[error("could not connect to any backend in {} attempt(s) ({})", failed.len(), list(failed))]
    Exhausted { dispatcher: String, failed: Vec<BackendAttempt> },
}

impl ConnectError {
    /// The backends named and not used, in order.
    pub fn failed(&self) -> &[BackendAttempt] {
        match self {
            ConnectError::Config(_) => &[],
            ConnectError::Unanswered { failed, .. }
            | ConnectError::Declined { failed, .. }
            | ConnectError::Exhausted { failed, .. } => failed,
        }
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The reason a FailureReport gives for a connection that failed with `error`.
pub fn failure_reason(error: &io::Error) -> FailureReason {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => FailureReason::Refused,
        TimedOut => FailureReason::Timeout,
        HostUnreachable | NetworkUnreachable | AddrNotAvailable | NetworkDown => FailureReason::Unreachable,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            FailureReason::Closed
        }
        _ => FailureReason::Other,
    }
}

/// The FailureReport about the backend `picked` named, for `service`.
pub fn failure_report(service: &ServiceName, picked: &Picked, reason: FailureReason) -> FailureReport {
    FailureReport {
        backend_id: picked.backend_id,
        reason,
        service: service.clone(),
        ticket: picked.ticket.clone(),
    }
}

/// Asks a dispatcher of `dispatchers` (each `HOST:PORT`) for a backend of `service`
/// and connects to it; on failure reports the backend and asks again, up to
/// `options.attempts` picks, all on one dispatcher connection (see the module docs).
///
/// Time is bounded: each dispatcher exchange by `pick_timeout`, each backend
/// connection by `connect_timeout`; in all, at most one `pick_timeout` per
/// dispatcher plus `attempts × (pick_timeout + connect_timeout)`.
pub async fn connect(
    dispatchers: &[String],
    service: &ServiceName,
    options: &ConnectOptions,
) -> Result<Connected, ConnectError> {
    options.validate()?;
    ensure(!dispatchers.is_empty(), "server", "name at least one dispatcher")?;
    let mut order = dispatchers.iter().cycle().skip(start_index(dispatchers.len())).take(dispatchers.len());
    let mut unanswered = Vec::new();
    let mut failed: Vec<BackendAttempt> = Vec::new();
    let mut tried: HashSet<u64> = HashSet::new();
    let mut session: Option<Session> = None;
    let mut pending: Option<FailureReport> = None;
    while failed.len() < options.attempts as usize {
        let current = match session.as_mut() {
            Some(current) => current,
            None => {
                let Some(dispatcher) = order.next() else {
                    return Err(ConnectError::Unanswered { unanswered, failed });
                };
                // A report belongs to the dispatcher that sent the client there.
                pending = None;
                match Session::open(dispatcher, options).await {
                    Ok(opened) => session.insert(opened),
                    Err(error) => {
                        unanswered.push(error);
                        continue;
                    }
                }
            }
        };
        if let Some(report) = pending.take() {
            match current.report(&report, options.pick_timeout).await {
                Ok(()) => mark_reported(&mut failed),
                Err(error) => {
                    unanswered.push(current.failed(error));
                    session = None;
                    continue;
                }
            }
        }
        let picked = match current.pick(service, &options.key, options.pick_timeout).await {
            Ok(picked) => picked,
            Err(error) if error.is_refusal() => {
                let dispatcher = current.dispatcher.clone();
                return Err(ConnectError::Declined { dispatcher, error, failed });
            }
            Err(error) => {
                unanswered.push(current.failed(error));
                session = None;
                continue;
            }
        };
        let passed_over_last =
            failed.last().is_some_and(|last| matches!(last.error, BackendError::PassedOver));
        let started = Instant::now();
        if tried.contains(&picked.backend_id) && !passed_over_last {
            tracing::debug!(
                backend = picked.backend_id,
                "named again after failing in this sequence: passed over"
            );
            failed.push(attempt(&picked, BackendError::PassedOver, started));
            continue;
        }
        match connect_backend(&picked.endpoint, options.connect_timeout).await {
            Ok(stream) => {
                let dispatcher = current.dispatcher.clone();
                return Ok(Connected { stream, backend: picked, dispatcher, failed, unanswered });
            }
            Err(error) => {
                tracing::debug!(backend = picked.backend_id, endpoint = %picked.endpoint, %error, "backend not reached; reporting it");
                let reason = error.reason().unwrap_or(FailureReason::Other);
                tried.insert(picked.backend_id);
                failed.push(attempt(&picked, error, started));
                pending = Some(failure_report(service, &picked, reason));
            }
        }
    }
    let Some(mut last) = session else {
        return Err(ConnectError::Unanswered { unanswered, failed });
    };
    // The last failure is reported too, before the connection closes.
    if let Some(report) = pending {
        match last.report(&report, options.pick_timeout).await {
            Ok(()) => mark_reported(&mut failed),
            Err(error) => tracing::debug!(%error, "the last failure could not be reported"),
        }
    }
    let dispatcher = last.dispatcher.clone();
    last.close(options.pick_timeout).await;
    Err(ConnectError::Exhausted { dispatcher, failed })
}

/// Reports on a connection of its own that the backend `picked` named could not be
/// used, for clients that connect themselves. Send it from the source address the
/// pick came from (`options.bind`, or the same route): the dispatcher counts it only
/// from a client it sent to that backend. Bounded by `options.pick_timeout`.
pub async fn report_failure(
    dispatcher: &str,
    service: &ServiceName,
    picked: &Picked,
    reason: FailureReason,
    options: &ConnectOptions,
) -> Result<(), PickError> {
    let mut session = Session::open(dispatcher, options).await.map_err(|attempt| attempt.error)?;
    session.report(&failure_report(service, picked, reason), options.pick_timeout).await?;
    session.close(options.pick_timeout).await;
    Ok(())
}

/// A backend not used, not reported yet.
fn attempt(picked: &Picked, error: BackendError, started: Instant) -> BackendAttempt {
    BackendAttempt {
        backend_id: picked.backend_id,
        endpoint: picked.endpoint.clone(),
        error,
        reported: false,
        elapsed: started.elapsed(),
    }
}

/// The report sent is always about the last backend that failed: it is sent before
/// the next pick.
fn mark_reported(failed: &mut [BackendAttempt]) {
    if let Some(last) = failed.last_mut() {
        last.reported = true;
    }
}

/// Where in the list of dispatchers to start: varies from call to call, so that
/// clients spread over the replicas. Not secret, so the clock may stand in.
fn start_index(len: usize) -> usize {
    (loadwise_protocol::entropy::u64_or_clock() % len as u64) as usize
}

/// Connects to `endpoint` (resolving it if it is a name) within `timeout`, trying
/// each of its addresses in turn.
async fn connect_backend(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, BackendError> {
    let dial = async {
        let addrs: Vec<SocketAddr> = match &endpoint.host {
            Host::V4(ip) => vec![SocketAddr::new((*ip).into(), endpoint.port.get())],
            Host::V6(ip) => vec![SocketAddr::new((*ip).into(), endpoint.port.get())],
            Host::Name(_) => {
                tokio::net::lookup_host(endpoint.to_string()).await.map_err(unreachable)?.collect()
            }
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
        for addr in addrs {
            match TcpStream::connect(addr).await.and_then(not_to_itself) {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(unreachable_or(last))
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Timeout(timeout)),
    }
}

/// A name that cannot be resolved is an unreachable backend.
fn unreachable(source: io::Error) -> BackendError {
    BackendError::Connect { reason: FailureReason::Unreachable, source }
}

fn unreachable_or(source: io::Error) -> BackendError {
    match source.kind() {
        io::ErrorKind::NotFound => unreachable(source),
        _ => BackendError::Connect { reason: failure_reason(&source), source },
    }
}

/// Connecting to a free port of the ephemeral range can, rarely, pick that same
/// port as the source and "connect" to itself: that is a refusal.
fn not_to_itself(stream: TcpStream) -> io::Result<TcpStream> {
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connected to itself"));
    }
    Ok(stream)
}

/// One dispatcher connection, kept for a whole sequence.
struct Session {
    dispatcher: String,
    conn: Framed<Stream, PeerCodec>,
    /// A report was sent: an Error that answers it (from a dispatcher older than
    /// reports) may come before the next PickReply.
    reported: bool,
}

impl Session {
    async fn open(dispatcher: &str, options: &ConnectOptions) -> Result<Session, Attempt> {
        let started = Instant::now();
        let open = crate::dial::open_from(dispatcher, options.tls.as_ref(), options.bind);
        let result = match tokio::time::timeout(options.pick_timeout, open).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(PickError::from(error)),
            Err(_) => Err(PickError::Timeout { server: dispatcher.to_owned(), after: options.pick_timeout }),
        };
        match result {
            Ok(stream) => Ok(Session {
                dispatcher: dispatcher.to_owned(),
                conn: Framed::new(stream, PeerCodec),
                reported: false,
            }),
            Err(error) => {
                tracing::debug!(%dispatcher, %error, "dispatcher not reached");
                Err(Attempt { dispatcher: dispatcher.to_owned(), error, elapsed: started.elapsed() })
            }
        }
    }

    /// The attempt record of an exchange on this connection that failed.
    fn failed(&self, error: PickError) -> Attempt {
        tracing::debug!(dispatcher = %self.dispatcher, %error, "dispatcher stopped answering");
        Attempt { dispatcher: self.dispatcher.clone(), error, elapsed: Duration::ZERO }
    }

    async fn pick(
        &mut self,
        service: &ServiceName,
        key: &PickKey,
        timeout: Duration,
    ) -> Result<Picked, PickError> {
        let request = pick_request(service, key);
        let request_id = request.request_id;
        let Session { dispatcher, conn, reported } = self;
        let reported = *reported;
        let exchange = async {
            conn.send(&Message::PickRequest(request)).await?;
            read_pick_reply_skipping(conn, request_id, |error| reported && answers_report(error)).await
        };
        bounded(dispatcher, timeout, exchange).await
    }

    async fn report(&mut self, report: &FailureReport, timeout: Duration) -> Result<(), PickError> {
        let Session { dispatcher, conn, reported } = self;
        *reported = true;
        let send = async { Ok(conn.send(&Message::FailureReport(report.clone())).await?) };
        bounded(dispatcher, timeout, send).await
    }

    /// Ends the connection so that what was sent is read: half-close, then wait
    /// (within `timeout`) for the dispatcher to close its side, discarding what it
    /// sends. Closing at once with unread bytes could reset the connection.
    async fn close(self, timeout: Duration) {
        let mut stream = self.conn.into_inner();
        let drain = async {
            stream.shutdown().await?;
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        if let Ok(Err(error)) = tokio::time::timeout(timeout, drain).await {
            tracing::debug!(dispatcher = %self.dispatcher, %error, "closing the dispatcher connection");
        }
    }
}

/// Runs one exchange with `dispatcher`, failing with [`PickError::Timeout`] after `timeout`.
async fn bounded<T>(
    dispatcher: &str,
    timeout: Duration,
    exchange: impl Future<Output = Result<T, PickError>>,
) -> Result<T, PickError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(PickError::Timeout { server: dispatcher.to_owned(), after: timeout }),
    }
}

/// The Errors a dispatcher older than v2.2 answers a FailureReport with: the type
/// is unknown to it, or (loadwise before v2.2) not one a client sends.
fn answers_report(error: &ErrorMessage) -> bool {
    matches!(error.code, ErrorCode::UNKNOWN_TYPE | ErrorCode::UNEXPECTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_report_reasons() {
        let reason = |kind| failure_reason(&io::Error::from(kind));
        assert_eq!(reason(io::ErrorKind::ConnectionRefused), FailureReason::Refused);
        assert_eq!(reason(io::ErrorKind::TimedOut), FailureReason::Timeout);
        assert_eq!(reason(io::ErrorKind::HostUnreachable), FailureReason::Unreachable);
        assert_eq!(reason(io::ErrorKind::NetworkUnreachable), FailureReason::Unreachable);
        assert_eq!(reason(io::ErrorKind::ConnectionReset), FailureReason::Closed);
        assert_eq!(reason(io::ErrorKind::PermissionDenied), FailureReason::Other);
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(failure_reason(&refused), FailureReason::Refused, "ECONNREFUSED on Linux");
    }

    #[test]
    fn unworkable_options_are_refused_naming_the_setting() {
        let ok = ConnectOptions::default();
        assert_eq!(ok.validate(), Ok(()));
        let setting = |options: ConnectOptions| options.validate().unwrap_err().setting;
        assert_eq!(setting(ConnectOptions { attempts: 0, ..ok.clone() }), "attempts");
        assert_eq!(setting(ConnectOptions { attempts: MAX_ATTEMPTS + 1, ..ok.clone() }), "attempts");
        assert_eq!(
            setting(ConnectOptions { connect_timeout: Duration::ZERO, ..ok.clone() }),
            "connect-timeout"
        );
        assert_eq!(
            setting(ConnectOptions { connect_timeout: MAX_TIMEOUT * 2, ..ok.clone() }),
            "connect-timeout"
        );
        assert_eq!(setting(ConnectOptions { pick_timeout: Duration::ZERO, ..ok }), "attempt-timeout");
    }

    #[test]
    fn only_the_errors_an_older_dispatcher_answers_a_report_with_are_skipped() {
        let error = |code| ErrorMessage { code, text: String::new() };
        assert!(answers_report(&error(ErrorCode::UNKNOWN_TYPE)));
        assert!(answers_report(&error(ErrorCode::UNEXPECTED)));
        assert!(!answers_report(&error(ErrorCode::MALFORMED)));
    }

    #[test]
    fn connect_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let service = ServiceName::new("game").unwrap();
        let options = ConnectOptions::default();
        assert_send(&connect(&[], &service, &options));
    }
}

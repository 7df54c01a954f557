//! One client or backend connection: reads frames, applies them, writes replies.
//!
//! This is the only module that reads and writes the dispatcher's sockets. Each read
//! is decoded completely (several frames in one segment are several frames) and
//! applied as one dispatcher [`Batch`], under one hold of its lock; the replies for
//! that batch are written with one `write_all` in request order, after the lock is
//! released, and a protocol error closes this connection only, after the replies
//! already owed.
//!
//! What a frame means is decided elsewhere: the legacy rules (who may send
//! heartbeats, the 22-byte login reply) in `connection/legacy.rs`, the v2 handshake
//! and messages in `connection/session.rs`, the budgets in `connection/budget.rs`.
//!
//! A connection's first heartbeat, login or pick classifies it (see [`budget`]); one
//! over its kind's budget gets the refusal its protocol has, if any, and is closed,
//! and one that says nothing of the kind within the first-frame timeout is closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::stats::{CloseReason, ConnectionKind, ConnectionRefusal, WireStats, bump};
use loadwise_core::dispatcher::{Batch, Dispatcher};
use loadwise_protocol::codec::{CodecError, DispatcherCodec, Inbound};
use loadwise_protocol::v2;

pub(crate) mod budget;
pub(crate) mod failure;
pub(crate) mod legacy;
mod session;
use crate::limits::{ConnectionLimits, LiveLimits};
use crate::shared::{Shared, log_refusal};
use budget::Slot;
use loadwise_core::model::ConnectionId;
use loadwise_core::model::PickOutcome;
use loadwise_protocol::{LoginReply, LoginRequest, Request, unix_time_now};

/// Bytes requested from the socket per read at first: ten frames or so. Frames are
/// at most 23 bytes unless skipped, and skipped bytes are discarded as they arrive,
/// so the buffer stays small, and an idle connection holds only this much.
const FIRST_READ_CHUNK: usize = 256;

/// The most bytes requested per read. A read that fills its chunk doubles the next
/// one up to this, so a peer that pipelines is read in few system calls.
const READ_CHUNK: usize = 4096;

/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The peer closed it between frames.
    PeerClosed,
    /// Shutdown began between frames.
    Shutdown,
}

/// Why a connection ended other than by a clean close.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("protocol error: {0}")]
    Protocol(CodecError),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("incomplete frame held for longer than {0:?}")]
    FrameTimeout(Duration),
    #[error("idle for longer than {0:?}")]
    IdleTimeout(Duration),
    #[error("no heartbeat, login or pick within {0:?} of connecting")]
    FirstFrameTimeout(Duration),
    #[error("refused: {}", .0.describe())]
    OverBudget(ConnectionRefusal),
    #[error("peer did not read its replies for {0:?}")]
    WriteTimeout(Duration),
    #[error("stopped by shutdown before replies could be written")]
    Aborted,
    #[error("v2 refusal: {reason}")]
    Refused { reason: String },
}

impl From<CodecError> for Closed {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Io(error) => Closed::Io(error),
            other => Closed::Protocol(other),
        }
    }
}

/// A byte stream a connection can be served over: TCP, or TLS over TCP.
pub(crate) trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes what the stream takes at once, without waiting; `WouldBlock` when it
    /// takes nothing. Replies almost always fit the socket's buffer, so this saves
    /// arming a timer per read. A stream that cannot tell says `WouldBlock`.
    fn try_write_now(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl PeerStream for TcpStream {
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.try_write(buf)
    }
}

/// A connection as it was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    pub peer: SocketAddr,
    pub id: ConnectionId,
    /// When it was accepted: the first-frame timeout runs from here.
    pub at: Instant,
}

/// Serves one connection until the peer closes it, it fails, or shutdown begins.
/// The frames that say what it is classify it in `slot`.
pub(crate) async fn serve<S: PeerStream>(stream: S, accepted: Accepted, shared: &Shared, slot: &mut Slot) {
    let peer = accepted.peer;
    let mut conn = Connection::new(stream, accepted, shared, slot);
    let outcome = conn.run().await;
    shared.wire.count_close(close_reason(&outcome));
    match outcome {
        Ok(_) => tracing::debug!("connection closed"),
        Err(Closed::Io(error)) => tracing::debug!(%error, "connection failed"),
        Err(error @ Closed::Protocol(_)) => {
            bump(&shared.wire.protocol_errors);
            if let Some(suppressed) = shared.protocol_error_log.should_log(std::time::Instant::now()) {
                tracing::warn!(%peer, %error, suppressed, "closing connection");
            }
        }
        // Logged, rate-limited, where it was decided.
        Err(error @ (Closed::Refused { .. } | Closed::OverBudget(_))) => {
            tracing::debug!(%error, "connection closed")
        }
        Err(Closed::FirstFrameTimeout(_)) => {
            let reason = ConnectionRefusal::FirstFrameTimeout;
            shared.wire.count_connection_refusal(reason);
            log_refusal(shared, peer, reason);
        }
        // Routine: peers that went quiet or stopped reading. Many at once (a network
        // cut, a flood) must not flood the log.
        Err(error @ (Closed::IdleTimeout(_) | Closed::FrameTimeout(_) | Closed::WriteTimeout(_))) => {
            tracing::debug!(%peer, %error, "closing connection")
        }
        Err(error) => tracing::info!(%peer, %error, "closing connection"),
    }
}

struct Connection<'a, S> {
    stream: S,
    peer: SocketAddr,
    /// Whether the peer's address is in the limits' legacy heartbeat networks; kept
    /// with the limits, so a heartbeat costs no lookup.
    legacy_heartbeats_allowed: bool,
    /// The protocol v2 session, from the first v2 frame on: most connections are
    /// legacy, and an idle one should stay small.
    v2: Option<Box<session::Session>>,
    id: ConnectionId,
    shared: &'a Shared,
    /// The connection's place in the budgets: what it is so far.
    slot: &'a mut Slot,
    /// When it was accepted, for the first-frame timeout.
    accepted_at: Instant,
    /// The limits this connection applies, refreshed between frames after a reload.
    limits: ConnectionLimits,
    limits_rx: watch::Receiver<LiveLimits>,
    codec: DispatcherCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Bytes to request on the next read (from `FIRST_READ_CHUNK` to `READ_CHUNK`).
    read_chunk: usize,
    /// When the connection last received bytes. Frames are applied at this time:
    /// one clock read per read, however many frames it brought.
    last_activity: Instant,
    /// When the connection last did work: a read that brought a heartbeat, a login
    /// or a well-formed v2 message. The idle timeout runs from here, so that a peer
    /// sending skipped or malformed frames now and then does not hold its slot.
    last_work: Instant,
    /// The unix time of the latest read, taken when a login in it first needs it.
    read_unix: Option<u64>,
    /// When the frame now being received began to arrive, if one is incomplete.
    partial_since: Option<Instant>,
    /// Fires no later than the read deadline. It is re-armed lazily, when it fires
    /// early or the deadline moves closer, so that a read costs no timer operation.
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` has been polled since it was last armed: it holds the task's
    /// waker from then on, and is polled again only once it has fired.
    timer_polled: bool,
    /// Says when shutdown begins.
    shutdown: ShutdownWatch,
}

/// What ended a wait for bytes.
enum Woken {
    Shutdown,
    Read(std::io::Result<usize>),
    Timer,
}

/// Completes when shutdown begins. It waits on a child token of the connection's
/// own, so that registering does not contend for the lock of the token all
/// connections share; and it polls that token only until it holds the task's waker,
/// then reads the flag shutdown sets before cancelling it: every read wakes the
/// connection, and a token's state is behind a mutex.
struct ShutdownWatch {
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl ShutdownWatch {
    fn poll_begun(&mut self, stopping: &AtomicBool, cx: &mut Context<'_>) -> Poll<()> {
        if stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !self.registered {
            if self.cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.registered = true;
        }
        Poll::Pending
    }
}

impl<'a, S: PeerStream> Connection<'a, S> {
    fn new(stream: S, accepted: Accepted, shared: &'a Shared, slot: &'a mut Slot) -> Self {
        let mut limits_rx = shared.limits.clone();
        let limits = limits_rx.borrow_and_update().connection.clone();
        let Accepted { peer, id, at } = accepted;
        Connection {
            peer,
            legacy_heartbeats_allowed: limits.legacy_heartbeats.contains(peer.ip()),
            v2: None,
            stream,
            id,
            shared,
            slot,
            accepted_at: at,
            codec: codec_for(&limits),
            limits,
            limits_rx,
            read_buf: BytesMut::new(),
            read_chunk: FIRST_READ_CHUNK,
            write_buf: BytesMut::new(),
            last_activity: Instant::now(),
            last_work: Instant::now(),
            read_unix: None,
            partial_since: None,
            timer: Box::pin(tokio::time::sleep_until(far_future())),
            timer_polled: false,
            shutdown: ShutdownWatch {
                cancelled: Box::pin(shared.shutdown.child_token().cancelled_owned()),
                registered: false,
            },
        }
    }

    async fn run(&mut self) -> Result<Ended, Closed> {
        loop {
            let decoded = self.process_buffered();
            self.flush().await?;
            decoded?;
            let between_frames = !self.codec.is_mid_frame(&self.read_buf);
            let Some(read) = self.read_more().await? else {
                return Ok(Ended::Shutdown);
            };
            if read == 0 {
                let drained = self.drain_at_eof();
                self.flush().await?;
                return drained.map(|()| Ended::PeerClosed);
            }
            if between_frames {
                self.follow_reload();
            }
            self.last_activity = Instant::now();
            self.read_unix = None;
        }
    }

    /// Takes up limits changed by a reload. Called only when the bytes just read
    /// begin a new frame, so that each frame is judged by one set of limits.
    fn follow_reload(&mut self) {
        if !self.limits_rx.has_changed().unwrap_or(false) {
            return;
        }
        self.limits = self.limits_rx.borrow_and_update().connection.clone();
        self.codec = codec_for(&self.limits);
        self.legacy_heartbeats_allowed = self.limits.legacy_heartbeats.contains(self.peer.ip());
    }

    /// Decodes and applies every complete frame in the read buffer, then notes
    /// whether a frame is left incomplete and since when.
    fn process_buffered(&mut self) -> Result<(), Closed> {
        // The buffer holds at most one read, so the batch, and its hold of the
        // dispatcher's lock, is bounded; it ends before anything is written.
        let mut batch = self.dispatcher().batch(self.last_activity.into_std());
        if let Some(session) = &mut self.v2 {
            session.new_read();
        }
        while let Some(item) = self.decode()? {
            // A frame completed: whatever is left began in the latest read.
            self.partial_since = None;
            self.apply(item, &mut batch)?;
        }
        drop(batch);
        if !self.codec.is_mid_frame(&self.read_buf) {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(self.last_activity);
        }
        Ok(())
    }

    /// The next item of the read buffer. A v2 frame with an impossible length is
    /// answered with Error 11 before the connection closes.
    fn decode(&mut self) -> Result<Option<Inbound>, Closed> {
        match self.codec.decode(&mut self.read_buf) {
            Err(CodecError::V2(error)) => {
                let message = v2::Message::Error(v2::ErrorMessage::new(error.code(), &error.to_string()));
                self.wire().count_v2_refusal(error.code());
                if let Ok(frame) = message.encode() {
                    self.write_buf.extend_from_slice(&frame);
                }
                Err(CodecError::V2(error).into())
            }
            decoded => Ok(decoded?),
        }
    }

    fn apply(&mut self, item: Inbound, batch: &mut Batch<'_>) -> Result<(), Closed> {
        if is_work(&item) {
            self.last_work = self.last_activity;
        }
        // A backend connection stays one: its heartbeats cost one comparison here.
        if self.slot.kind() != ConnectionKind::Backend
            && let Some(kind) = self.kind_of(&item)
            && let Err(refusal) = self.slot.classify(kind)
        {
            return Err(self.refuse_over_budget(refusal, &item, batch));
        }
        match item {
            Inbound::Request(Request::Heartbeat(heartbeat)) => {
                self.legacy_heartbeats().apply(&heartbeat, batch)
            }
            Inbound::Request(Request::Login(login)) => self.on_login(login, batch)?,
            Inbound::Skipped { cmd, len } => {
                bump(&self.wire().skipped_frames);
                if tracing::enabled!(tracing::Level::DEBUG) {
                    // A log write may block: not under the lock every connection needs.
                    batch.unlock();
                    tracing::debug!(cmd, len, "skipped frame with unhandled command");
                }
                // Skipped silently, as the original skipped unknown commands: a legacy
                // peer reads nothing but 22-byte login replies. Only a peer that has
                // spoken v2 is told, in v2, which versions are spoken here.
                if v2::version_of(cmd) != 0 && self.v2.as_ref().is_some_and(|session| session.spoke_v2()) {
                    self.on_v2(Inbound::Skipped { cmd, len }, batch)?;
                }
            }
            item @ (Inbound::V2(_) | Inbound::V2Malformed(_)) => self.on_v2(item, batch)?,
        }
        Ok(())
    }

    /// What `item` makes this connection, if it says: a heartbeat (one that may
    /// register: from the allowed networks, for a legacy one) or a Register makes it a
    /// backend's; a login or a pick a client's.
    fn kind_of(&self, item: &Inbound) -> Option<ConnectionKind> {
        use v2::{Decoded, Message};
        match item {
            Inbound::Request(Request::Heartbeat(_)) => {
                // One refused for its network registers nothing, so a stranger cannot
                // fill the backend budget with them; it classifies nothing.
                self.legacy_heartbeats_allowed.then_some(ConnectionKind::Backend)
            }
            Inbound::V2(Decoded::Message(Message::Register(_) | Message::Heartbeat(_))) => {
                Some(ConnectionKind::Backend)
            }
            Inbound::Request(Request::Login(_))
            | Inbound::V2(Decoded::Message(Message::PickRequest(_) | Message::FailureReport(_))) => {
                Some(ConnectionKind::Client)
            }
            _ => None,
        }
    }

    /// Answers `item`, which its budget has no room for, with the refusal its
    /// protocol has (a legacy heartbeat has none), logs it (rate-limited) and closes
    /// the connection: its peer is better off trying again later or elsewhere.
    fn refuse_over_budget(
        &mut self,
        refusal: ConnectionRefusal,
        item: &Inbound,
        batch: &mut Batch<'_>,
    ) -> Closed {
        use v2::{Decoded, Message};
        let stats = self.wire();
        let reply = match item {
            Inbound::Request(Request::Login(_)) => Some(LoginReply::Error.encode().to_vec()),
            Inbound::V2(Decoded::Message(Message::PickRequest(request))) => {
                stats.count_v2_refusal(v2::ErrorCode::BUSY);
                let outcome = v2::PickOutcome::Refused(v2::ErrorCode::BUSY);
                v2::Message::PickReply(v2::PickReply { request_id: request.request_id, outcome })
                    .encode()
                    .ok()
            }
            Inbound::V2(_) => {
                stats.count_v2_refusal(v2::ErrorCode::BACKEND_LIMIT);
                let text = "backend limit reached: max_backends backend connections are open";
                v2::Message::Error(v2::ErrorMessage::new(v2::ErrorCode::BACKEND_LIMIT, text)).encode().ok()
            }
            _ => None,
        };
        if let Some(reply) = reply {
            self.write_buf.extend_from_slice(&reply);
        }
        // A log write may block: not under the lock every connection needs.
        batch.unlock();
        log_refusal(self.shared, self.peer, refusal);
        Closed::OverBudget(refusal)
    }

    /// Hands a v2 item to the connection's v2 session.
    fn on_v2(&mut self, item: Inbound, batch: &mut Batch<'_>) -> Result<(), Closed> {
        let limits = &self.limits;
        let session = self.v2.get_or_insert_with(Box::default);
        let mut cx = session::Context {
            connection: self.id,
            peer: self.peer,
            secret: limits.secret.as_ref(),
            unauthenticated_allowed: self.legacy_heartbeats_allowed,
            ticket_lifetime: limits.ticket_lifetime,
            unix_now: &mut self.read_unix,
            dispatcher: self.shared.dispatcher.as_ref(),
            wire: &self.shared.wire,
            batch,
            refusal_log: &self.shared.refusal_log,
            wake_sweeper: &self.shared.wake_sweeper,
            out: &mut self.write_buf,
        };
        match session.handle(item, &mut cx) {
            session::Verdict::Continue => Ok(()),
            session::Verdict::Close { reason, .. } => Err(Closed::Refused { reason }),
        }
    }

    /// The dispatcher, borrowed for as long as the server's shared state rather than
    /// this connection, so that a batch can be held while the connection decodes.
    fn dispatcher(&self) -> &'a Dispatcher {
        &self.shared.dispatcher
    }

    /// The server's wire counters, borrowed like [`Self::dispatcher`].
    fn wire(&self) -> &'a WireStats {
        &self.shared.wire
    }

    /// The legacy heartbeat rules, as they apply to this connection's peer.
    fn legacy_heartbeats(&self) -> legacy::Heartbeats<'a> {
        legacy::Heartbeats {
            connection: self.id,
            peer: self.peer,
            allowed: self.legacy_heartbeats_allowed,
            dispatcher: self.dispatcher(),
            wire: self.wire(),
            door_log: &self.shared.door_log,
            refusal_log: &self.shared.refusal_log,
        }
    }

    fn on_login(&mut self, login: LoginRequest, batch: &mut Batch<'_>) -> Result<(), CodecError> {
        let unix_now = *self.read_unix.get_or_insert_with(unix_time_now);
        let outcome = batch.pick(&legacy::pick_request(login, unix_now));
        if tracing::enabled!(tracing::Level::DEBUG) {
            batch.unlock();
            match &outcome {
                PickOutcome::Picked(picked) => tracing::debug!(backend = %picked.to, "login answered"),
                refused => tracing::debug!(%refused, "login refused"),
            }
        }
        self.codec.encode(legacy::login_reply(&outcome), &mut self.write_buf)
    }

    /// Writes the replies owed so far. A peer that does not take them within the
    /// write timeout is dropped, so it cannot hold its slot forever; the end of a
    /// shutdown's grace period stops the write too.
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        // Replies are small and the socket almost always has room for them: try
        // once before arming the write timeout and waiting on the abort token.
        match self.stream.try_write_now(&self.write_buf) {
            Ok(written) => self.write_buf.advance(written),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error.into()),
        }
        if self.write_buf.is_empty() {
            self.write_buf.clear();
            return Ok(());
        }
        let write_timeout = self.limits.write_timeout;
        tokio::select! {
            written = tokio::time::timeout(write_timeout, write_and_flush(&mut self.stream, &self.write_buf)) => {
                written.map_err(|_| Closed::WriteTimeout(write_timeout))??;
            }
            () = self.shared.abort.cancelled() => return Err(Closed::Aborted),
        }
        self.write_buf.clear();
        Ok(())
    }

    /// Reads more bytes, or returns `None` when shutdown begins between frames.
    async fn read_more(&mut self) -> Result<Option<usize>, Closed> {
        self.read_buf.reserve(self.read_chunk);
        loop {
            if let Some((deadline, _)) = self.read_deadline()
                && deadline < self.timer.deadline()
            {
                self.rearm(deadline);
            }
            match self.wake().await {
                Woken::Shutdown => return Ok(None),
                Woken::Read(read) => {
                    let read = read?;
                    if read >= self.read_chunk {
                        self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK);
                    }
                    return Ok(Some(read));
                }
                Woken::Timer => {}
            }
            // The timer fired: a timeout if the deadline has really passed; otherwise
            // it was armed for a deadline that activity has since pushed back.
            match self.read_deadline() {
                Some((deadline, reason)) if Instant::now() >= deadline => return Err(reason),
                Some((deadline, _)) => self.rearm(deadline),
                None => self.rearm(far_future()),
            }
        }
    }

    /// Waits for shutdown, bytes or the timer, checked in that order at each
    /// wake-up, so that a peer that never stops sending cannot delay shutdown. The
    /// timer, once polled, holds the task's waker, and is polled again only once it
    /// has fired.
    fn wake(&mut self) -> impl Future<Output = Woken> + '_ {
        std::future::poll_fn(move |cx| {
            if self.shutdown.poll_begun(&self.shared.stopping, cx).is_ready() {
                return Poll::Ready(Woken::Shutdown);
            }
            if let Poll::Ready(read) = pin!(self.stream.read_buf(&mut self.read_buf)).poll(cx) {
                return Poll::Ready(Woken::Read(read));
            }
            if !self.timer_polled || self.timer.is_elapsed() {
                // Out of its cooperative budget, the timer would return without
                // registering: poll again with a fresh budget rather than wait on it.
                if !tokio::task::coop::has_budget_remaining() {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woken::Timer);
                }
                self.timer_polled = true;
            }
            Poll::Pending
        })
    }

    /// Arms the timer for `deadline`; it is polled at the next wait, to hold the
    /// task's waker again.
    fn rearm(&mut self, deadline: Instant) {
        self.timer.as_mut().reset(deadline);
        self.timer_polled = false;
    }

    /// When the connection times out and why: the frame deadline while a frame is
    /// incomplete, otherwise the idle deadline if one is configured; and while it is
    /// pending, the first-frame deadline if that comes sooner. A timeout too large to
    /// represent as an instant never fires.
    fn read_deadline(&self) -> Option<(Instant, Closed)> {
        let deadline = self.frame_or_idle_deadline();
        if self.slot.kind() != ConnectionKind::Pending {
            return deadline;
        }
        let timeout = self.limits.first_frame_timeout;
        let Some(first) = self.accepted_at.checked_add(timeout) else { return deadline };
        match deadline {
            Some((other, reason)) if other < first => Some((other, reason)),
            _ => Some((first, Closed::FirstFrameTimeout(timeout))),
        }
    }

    fn frame_or_idle_deadline(&self) -> Option<(Instant, Closed)> {
        let limits = &self.limits;
        match self.partial_since {
            Some(since) => {
                let deadline = since.checked_add(limits.frame_timeout)?;
                Some((deadline, Closed::FrameTimeout(limits.frame_timeout)))
            }
            None => {
                let idle = limits.idle_timeout?;
                Some((self.last_work.checked_add(idle)?, Closed::IdleTimeout(idle)))
            }
        }
    }

    /// Applies whatever the peer completed before closing; a frame it left
    /// incomplete is an error.
    fn drain_at_eof(&mut self) -> Result<(), Closed> {
        let mut batch = self.dispatcher().batch(self.last_activity.into_std());
        while let Some(item) = self.codec.decode_eof(&mut self.read_buf)? {
            self.apply(item, &mut batch)?;
        }
        Ok(())
    }
}

/// The reason a connection that ended with `outcome` is counted under.
fn close_reason(outcome: &Result<Ended, Closed>) -> CloseReason {
    match outcome {
        Ok(Ended::PeerClosed) => CloseReason::PeerClosed,
        Ok(Ended::Shutdown) | Err(Closed::Aborted) => CloseReason::Shutdown,
        Err(Closed::Protocol(_)) => CloseReason::ProtocolError,
        Err(Closed::Io(_)) => CloseReason::PeerReset,
        Err(Closed::FrameTimeout(_)) => CloseReason::FrameTimeout,
        Err(Closed::IdleTimeout(_)) => CloseReason::IdleTimeout,
        Err(Closed::FirstFrameTimeout(_)) => CloseReason::FirstFrameTimeout,
        Err(Closed::OverBudget(_)) => CloseReason::Budget,
        Err(Closed::WriteTimeout(_)) => CloseReason::WriteTimeout,
        Err(Closed::Refused { .. }) => CloseReason::Refused,
    }
}

/// Whether `item` is work that keeps a connection from being idle: a heartbeat, a
/// login or a well-formed v2 message. Skipped and malformed frames are not.
fn is_work(item: &Inbound) -> bool {
    match item {
        Inbound::Request(_) => true,
        Inbound::V2(decoded) => matches!(decoded, v2::Decoded::Message(_)),
        Inbound::Skipped { .. } | Inbound::V2Malformed(_) => false,
    }
}

/// Writes `buf` whole and flushes it: a TLS stream may hold written bytes until then.
async fn write_and_flush<S: PeerStream>(stream: &mut S, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

/// The codec for a connection's limits.
fn codec_for(limits: &ConnectionLimits) -> DispatcherCodec {
    DispatcherCodec::with_v2_limit(limits.max_frame_len, limits.max_v2_frame_len)
}

/// A deadline that never comes: about thirty years away, as tokio itself uses.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_of_a_connection_is_counted_under_its_reason() {
        let second = Duration::from_secs(1);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let cases = [
            (Ok(Ended::PeerClosed), CloseReason::PeerClosed),
            (Ok(Ended::Shutdown), CloseReason::Shutdown),
            (Err(Closed::Aborted), CloseReason::Shutdown),
            (Err(Closed::Io(reset)), CloseReason::PeerReset),
            (Err(Closed::Protocol(CodecError::Truncated { buffered: 3 })), CloseReason::ProtocolError),
            (Err(Closed::FrameTimeout(second)), CloseReason::FrameTimeout),
            (Err(Closed::IdleTimeout(second)), CloseReason::IdleTimeout),
            (Err(Closed::FirstFrameTimeout(second)), CloseReason::FirstFrameTimeout),
            (Err(Closed::OverBudget(ConnectionRefusal::ClientLimit)), CloseReason::Budget),
            (Err(Closed::WriteTimeout(second)), CloseReason::WriteTimeout),
            (Err(Closed::Refused { reason: "auth".into() }), CloseReason::Refused),
        ];
        for (outcome, reason) in cases {
            assert_eq!(close_reason(&outcome), reason, "{outcome:?}");
        }
    }
}

//! One client or backend connection: reads frames, applies them, writes replies.
//!
//! This is the only module that reads and writes the dispatcher's sockets. Each read
//! is decoded completely (several frames in one segment are several frames), the
//! replies for that batch are written with one `write_all` in request order, and a
//! protocol error closes this connection only, after the replies already owed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{CodecError, DispatcherCodec, Inbound};
use crate::dispatcher::{Dispatcher, HeartbeatRefused, bump};
use crate::protocol::{Heartbeat, LoginRequest, MAX_FRAME_LEN, Request, unix_time_now};
use crate::registry::BackendId;
use crate::server::Shared;

/// Per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection holding an incomplete frame for this long is closed.
    pub frame_timeout: Duration,
    /// A connection that sends nothing for this long is closed; `None` keeps idle
    /// connections open.
    pub idle_timeout: Option<Duration>,
    /// A connection whose peer does not take its replies for this long is closed.
    pub write_timeout: Duration,
    /// The longest frame accepted; longer ones are protocol errors.
    pub max_frame_len: u16,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            frame_timeout: Duration::from_secs(30),
            // Backends send every second and clients log in as soon as they
            // connect, so a minute of silence means a peer that holds a slot for
            // nothing.
            idle_timeout: Some(Duration::from_secs(60)),
            write_timeout: Duration::from_secs(10),
            max_frame_len: MAX_FRAME_LEN,
        }
    }
}

/// Bytes requested from the socket per read. Frames are at most 23 bytes unless
/// skipped, and skipped bytes are discarded as they arrive, so the buffer stays small.
const READ_CHUNK: usize = 4096;

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
    #[error("peer did not read its replies for {0:?}")]
    WriteTimeout(Duration),
    #[error("stopped by shutdown before replies could be written")]
    Aborted,
}

impl From<CodecError> for Closed {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Io(error) => Closed::Io(error),
            other => Closed::Protocol(other),
        }
    }
}

/// Serves one connection until the peer closes it, it fails, or shutdown begins.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, id: BackendId, shared: &Shared) {
    let mut conn = Connection::new(stream, id, shared);
    match conn.run().await {
        Ok(()) => tracing::debug!("connection closed"),
        Err(Closed::Io(error)) => tracing::debug!(%error, "connection failed"),
        Err(error @ Closed::Protocol(_)) => {
            bump(&shared.dispatcher.stats().protocol_errors);
            if let Some(suppressed) = shared.protocol_error_log.should_log(std::time::Instant::now()) {
                tracing::warn!(%peer, %error, suppressed, "closing connection");
            }
        }
        Err(error) => tracing::info!(%peer, %error, "closing connection"),
    }
}

struct Connection<'a> {
    stream: TcpStream,
    id: BackendId,
    shared: &'a Shared,
    codec: DispatcherCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// When the connection last received bytes.
    last_activity: Instant,
    /// When the frame now being received began to arrive, if one is incomplete.
    partial_since: Option<Instant>,
}

impl<'a> Connection<'a> {
    fn new(stream: TcpStream, id: BackendId, shared: &'a Shared) -> Self {
        Connection {
            stream,
            id,
            shared,
            codec: DispatcherCodec::new(shared.limits.max_frame_len),
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::new(),
            last_activity: Instant::now(),
            partial_since: None,
        }
    }

    async fn run(&mut self) -> Result<(), Closed> {
        loop {
            let decoded = self.process_buffered();
            self.flush().await?;
            decoded?;
            let Some(read) = self.read_more().await? else {
                return Ok(());
            };
            if read == 0 {
                let drained = self.drain_at_eof();
                self.flush().await?;
                return Ok(drained?);
            }
            self.last_activity = Instant::now();
        }
    }

    /// Decodes and applies every complete frame in the read buffer, then notes
    /// whether a frame is left incomplete and since when.
    fn process_buffered(&mut self) -> Result<(), CodecError> {
        while let Some(item) = self.codec.decode(&mut self.read_buf)? {
            // A frame completed: whatever is left began in the latest read.
            self.partial_since = None;
            self.apply(item)?;
        }
        if !self.codec.is_mid_frame(&self.read_buf) {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(self.last_activity);
        }
        Ok(())
    }

    fn apply(&mut self, item: Inbound) -> Result<(), CodecError> {
        match item {
            Inbound::Request(Request::Heartbeat(heartbeat)) => self.on_heartbeat(&heartbeat),
            Inbound::Request(Request::Login(login)) => self.on_login(login)?,
            Inbound::Skipped { cmd, len } => {
                bump(&self.dispatcher().stats().skipped_frames);
                tracing::debug!(cmd, len, "skipped frame with unhandled command");
            }
        }
        Ok(())
    }

    fn dispatcher(&self) -> &Dispatcher {
        &self.shared.dispatcher
    }

    fn on_heartbeat(&mut self, heartbeat: &Heartbeat) {
        tracing::trace!(?heartbeat, "heartbeat");
        let now = Instant::now().into_std();
        match self.dispatcher().heartbeat(self.id, heartbeat, now) {
            Ok(accepted) => {
                if accepted.registered {
                    tracing::info!(backend = %self.id, ip = ?heartbeat.ip, port = heartbeat.port, mem = heartbeat.mem, "backend registered");
                }
                if accepted.first_invalid_report {
                    tracing::warn!(backend = %self.id, ip = ?heartbeat.ip, port = heartbeat.port, mem = heartbeat.mem,
                        "backend reports memory above 100%; ranking it after every valid report (an old sender?)");
                }
            }
            Err(refused) => self.log_refusal(&refused, now),
        }
    }

    /// Refused heartbeats are all counted but logged at most once a second across
    /// all connections, so misconfigured backends cannot flood the log.
    fn log_refusal(&self, refused: &HeartbeatRefused, now: std::time::Instant) {
        if let Some(suppressed) = self.shared.refusal_log.should_log(now) {
            tracing::warn!(backend = %self.id, error = %refused, suppressed, "heartbeat refused");
        }
    }

    fn on_login(&mut self, login: LoginRequest) -> Result<(), CodecError> {
        let now = Instant::now().into_std();
        let outcome = self.dispatcher().login(login, now, unix_time_now());
        match &outcome {
            Ok(picked) => {
                tracing::debug!(backend = %picked.id, ip = ?picked.ip, port = picked.port, "login answered")
            }
            Err(refused) => tracing::debug!(%refused, "login refused"),
        }
        self.codec.encode(Dispatcher::reply(&outcome), &mut self.write_buf)
    }

    /// Writes the replies owed so far. A peer that does not take them within the
    /// write timeout is dropped, so it cannot hold its slot forever; the end of a
    /// shutdown's grace period stops the write too.
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let write_timeout = self.shared.limits.write_timeout;
        tokio::select! {
            written = tokio::time::timeout(write_timeout, self.stream.write_all(&self.write_buf)) => {
                written.map_err(|_| Closed::WriteTimeout(write_timeout))??;
            }
            () = self.shared.abort.cancelled() => return Err(Closed::Aborted),
        }
        self.write_buf.clear();
        Ok(())
    }

    /// Reads more bytes, or returns `None` when shutdown begins between frames.
    async fn read_more(&mut self) -> Result<Option<usize>, Closed> {
        self.read_buf.reserve(READ_CHUNK);
        let (deadline, on_timeout) = self.read_deadline().unzip();
        tokio::select! {
            read = self.stream.read_buf(&mut self.read_buf) => Ok(Some(read?)),
            () = sleep_until_some(deadline) => Err(on_timeout.expect("a deadline comes with its reason")),
            () = self.shared.shutdown.cancelled() => Ok(None),
        }
    }

    /// When the connection times out and why: the frame deadline while a frame is
    /// incomplete, otherwise the idle deadline if one is configured. A timeout too
    /// large to represent as an instant never fires.
    fn read_deadline(&self) -> Option<(Instant, Closed)> {
        let limits = &self.shared.limits;
        match self.partial_since {
            Some(since) => {
                let deadline = since.checked_add(limits.frame_timeout)?;
                Some((deadline, Closed::FrameTimeout(limits.frame_timeout)))
            }
            None => {
                let idle = limits.idle_timeout?;
                Some((self.last_activity.checked_add(idle)?, Closed::IdleTimeout(idle)))
            }
        }
    }

    /// Applies whatever the peer completed before closing; a frame it left
    /// incomplete is an error.
    fn drain_at_eof(&mut self) -> Result<(), CodecError> {
        while let Some(item) = self.codec.decode_eof(&mut self.read_buf)? {
            self.apply(item)?;
        }
        Ok(())
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

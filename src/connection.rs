//! One client or backend connection: reads frames, applies them, writes replies.
//!
//! This is the only module that reads and writes the dispatcher's sockets. Each read
//! is decoded completely (several frames in one segment are several frames), the
//! replies for that batch are written with one `write_all` in request order, and a
//! protocol error closes this connection only, after the replies already owed.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{CodecError, DispatcherCodec, Inbound};
use crate::dispatcher::{Dispatcher, HeartbeatRefused, bump};
use crate::protocol::{Heartbeat, LoginRequest, MAX_FRAME_LEN, Request};
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
    /// The longest frame accepted; longer ones are protocol errors.
    pub max_frame_len: u16,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            frame_timeout: Duration::from_secs(30),
            idle_timeout: None,
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
    Protocol(#[from] CodecError),
    #[error("incomplete frame held for longer than {0:?}")]
    FrameTimeout(Duration),
    #[error("idle for longer than {0:?}")]
    IdleTimeout(Duration),
    #[error("stopped by shutdown before replies could be written")]
    Aborted,
}

/// Serves one connection until the peer closes it, it fails, or shutdown begins.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, id: BackendId, shared: &Shared) {
    let mut conn = Connection::new(stream, id, shared);
    match conn.run().await {
        Ok(()) => tracing::debug!("connection closed"),
        Err(Closed::Protocol(CodecError::Io(error))) => {
            tracing::debug!(%error, "connection failed")
        }
        Err(error @ Closed::Protocol(_)) => {
            bump(&shared.dispatcher.stats().protocol_errors);
            tracing::warn!(%peer, %error, "closing connection");
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
    /// Whether a refused heartbeat has been logged already on this connection.
    refusal_logged: bool,
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
            refusal_logged: false,
        }
    }

    async fn run(&mut self) -> Result<(), Closed> {
        loop {
            let decoded = self.process_buffered();
            self.flush().await?;
            decoded?;
            self.track_partial_frame();
            let Some(read) = self.read_more().await? else {
                return Ok(());
            };
            if read == 0 {
                let drained = self.drain_at_eof();
                self.flush().await?;
                return drained.map_err(Closed::from);
            }
            self.last_activity = Instant::now();
        }
    }

    /// Decodes and applies every complete frame in the read buffer.
    fn process_buffered(&mut self) -> Result<(), CodecError> {
        while let Some(item) = self.codec.decode(&mut self.read_buf)? {
            self.apply(item)?;
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
        match self
            .dispatcher()
            .heartbeat(self.id, heartbeat, Instant::now())
        {
            Ok(accepted) => {
                if accepted.registered {
                    tracing::info!(backend = %self.id, ip = ?heartbeat.ip, port = heartbeat.port, mem = heartbeat.mem, "backend registered");
                }
                if accepted.first_invalid_report {
                    tracing::warn!(backend = %self.id, ip = ?heartbeat.ip, port = heartbeat.port, mem = heartbeat.mem,
                        "backend reports memory above 100%; ranking it after every valid report (an old sender?)");
                }
            }
            Err(refused) => self.log_refusal(&refused),
        }
    }

    /// Logs the first refused heartbeat of this connection; later ones only count,
    /// so a misconfigured backend cannot flood the log once a second.
    fn log_refusal(&mut self, refused: &HeartbeatRefused) {
        if !std::mem::replace(&mut self.refusal_logged, true) {
            tracing::warn!(backend = %self.id, error = %refused, "heartbeat refused");
        }
    }

    fn on_login(&mut self, login: LoginRequest) -> Result<(), CodecError> {
        let outcome = self.dispatcher().login(login, Instant::now(), unix_now());
        match &outcome {
            Ok(picked) => {
                tracing::debug!(backend = %picked.id, ip = ?picked.ip, port = picked.port, "login answered")
            }
            Err(refused) => tracing::debug!(%refused, "login refused"),
        }
        self.codec
            .encode(Dispatcher::reply(&outcome), &mut self.write_buf)
    }

    /// Writes the replies owed so far. Waits for the peer to read them (bounded
    /// backpressure) unless the grace period of a shutdown runs out.
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        tokio::select! {
            written = self.stream.write_all(&self.write_buf) => written.map_err(CodecError::from)?,
            () = self.shared.abort.cancelled() => return Err(Closed::Aborted),
        }
        self.write_buf.clear();
        Ok(())
    }

    fn track_partial_frame(&mut self) {
        if !self.codec.is_mid_frame(&self.read_buf) {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(self.last_activity);
        }
    }

    /// Reads more bytes, or returns `None` when shutdown begins between frames.
    async fn read_more(&mut self) -> Result<Option<usize>, Closed> {
        self.read_buf.reserve(READ_CHUNK);
        let (deadline, on_timeout) = self.read_deadline();
        let deadline = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            read = self.stream.read_buf(&mut self.read_buf) => Ok(Some(read.map_err(CodecError::from)?)),
            () = sleep_until_some(deadline) => Err(on_timeout),
            () = self.shared.shutdown.cancelled() => Ok(None),
        }
    }

    /// The instant the connection times out, and why: a frame deadline while a frame
    /// is incomplete, otherwise the idle deadline if one is configured.
    fn read_deadline(&self) -> (Option<Instant>, Closed) {
        let limits = &self.shared.limits;
        match self.partial_since {
            Some(since) => (
                Some(since + limits.frame_timeout),
                Closed::FrameTimeout(limits.frame_timeout),
            ),
            None => {
                let idle = limits.idle_timeout;
                (
                    idle.map(|t| self.last_activity + t),
                    Closed::IdleTimeout(idle.unwrap_or_default()),
                )
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

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The dispatcher's wall clock in unix seconds, for login timestamps.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

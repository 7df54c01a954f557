//! One dispatcher link: connects, sends every published sample, reconnects forever.
//!
//! The link also watches its socket: a dispatcher never writes to a backend, so
//! end-of-file or an error means the connection is gone and the link reconnects
//! (with exponential backoff and jitter) without waiting for a failed write.

use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AgentConfig;
use crate::backoff::Backoff;
use crate::dial::{self, DialError};
use crate::log_limit::FailureStreak;
use crate::protocol::Heartbeat;

/// Why one connection to the dispatcher ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("the dispatcher closed the connection")]
    ClosedByPeer,
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent is stopping")]
    Stopped,
}

/// Keeps a connection to `server` until `stop` is cancelled, sending each sample
/// published on `samples`.
pub(super) async fn run(
    server: String,
    config: AgentConfig,
    mut samples: watch::Receiver<Option<Heartbeat>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    // A Send RNG (unlike the thread-local one), so the link can be spawned.
    let mut rng = StdRng::from_os_rng();
    let mut failures = FailureStreak::default();
    loop {
        let end = match session(&server, &config, &mut samples, &stop).await {
            Ok((SessionEnd::Stopped, _)) | Err(SessionEnd::Stopped) => return,
            // Only a connection that lasted starts the backoff afresh, so a
            // dispatcher that accepts and at once closes (at its connection cap,
            // say) is not hammered.
            Ok((end, lasted)) if lasted >= config.interval => {
                backoff.reset();
                failures.succeed();
                end
            }
            Ok((end, _)) | Err(end) => end,
        };
        let delay = backoff.next_delay(&mut rng);
        let attempts = failures.count() + 1;
        // Warn on the 1st, 2nd, 4th, 8th... failure in a row, so a dispatcher that
        // stays down for a day does not fill the log.
        if failures.fail() {
            tracing::warn!(%server, error = %end, attempts, retry_in = ?delay, "not connected to the dispatcher");
        } else {
            tracing::debug!(%server, error = %end, attempts, retry_in = ?delay, "not connected to the dispatcher");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One connection: connects, then sends samples until it fails. Returns why it
/// ended and how long it was up, or why it could not connect.
async fn session(
    server: &str,
    config: &AgentConfig,
    samples: &mut watch::Receiver<Option<Heartbeat>>,
    stop: &CancellationToken,
) -> Result<(SessionEnd, Duration), SessionEnd> {
    let stream = tokio::select! {
        stream = connect(server, config.connect_timeout) => stream?,
        () = stop.cancelled() => return Err(SessionEnd::Stopped),
    };
    detect_silent_loss(&stream, config.interval);
    tracing::info!(%server, advertise = %config.advertise, "connected to dispatcher");
    let connected_at = tokio::time::Instant::now();
    let end = send_samples(stream, samples, stop).await;
    Ok((end, connected_at.elapsed()))
}

/// Makes the kernel give up on the connection when heartbeats stay unacknowledged
/// for three intervals. Without this, a dispatcher host that vanishes (power
/// loss, partition) keeps accepting writes into the send buffer for many minutes
/// of retransmissions, and the link would not notice it is gone.
fn detect_silent_loss(stream: &TcpStream, interval: Duration) {
    let limit = interval.saturating_mul(3).max(Duration::from_secs(1));
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(limit)) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT; relying on the kernel's retransmission limit");
    }
}

/// Connects to the dispatcher within the connect timeout.
async fn connect(server: &str, timeout: Duration) -> Result<TcpStream, SessionEnd> {
    match tokio::time::timeout(timeout, dial::connect(server)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionEnd::ConnectTimeout(timeout)),
    }
}

/// Sends the latest sample at once (the first heartbeat registers the backend),
/// then each new one, until the connection fails or the agent stops.
async fn send_samples(
    mut stream: TcpStream,
    samples: &mut watch::Receiver<Option<Heartbeat>>,
    stop: &CancellationToken,
) -> SessionEnd {
    let latest = *samples.borrow_and_update();
    if let Err(end) = send(&mut stream, latest, stop).await {
        return end;
    }
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            changed = samples.changed() => {
                if changed.is_err() {
                    return SessionEnd::Stopped;
                }
                let latest = *samples.borrow_and_update();
                if let Err(end) = send(&mut stream, latest, stop).await {
                    return end;
                }
            }
            read = stream.read(&mut sink) => match read {
                Ok(0) => return SessionEnd::ClosedByPeer,
                // A dispatcher sends nothing to backends; ignore whatever arrives.
                Ok(_) => {}
                Err(error) => return error.into(),
            },
            () = stop.cancelled() => return SessionEnd::Stopped,
        }
    }
}

/// Writes one heartbeat, if there is one. A dispatcher that stopped reading can
/// block the write until `TCP_USER_TIMEOUT`; stopping the agent does not wait for it.
async fn send(
    stream: &mut TcpStream,
    heartbeat: Option<Heartbeat>,
    stop: &CancellationToken,
) -> Result<(), SessionEnd> {
    let Some(heartbeat) = heartbeat else { return Ok(()) };
    let frame = heartbeat.encode();
    tokio::select! {
        written = stream.write_all(&frame) => Ok(written?),
        () = stop.cancelled() => Err(SessionEnd::Stopped),
    }
}

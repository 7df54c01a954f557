//! One dispatcher link: connects, sends every published report, reconnects forever.
//!
//! The link also watches its socket: a legacy dispatcher never writes to a backend
//! (and a v2 one only to refuse), so end-of-file or an error means the connection is
//! gone and the link reconnects (with exponential backoff and jitter) without waiting
//! for a failed write. A legacy link disconnects while the backend drains or is
//! unhealthy: leaving the table is the only way the legacy protocol can say "no new
//! clients".

use std::time::Duration;

use loadwise_protocol::entropy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{AgentConfig, Protocol};
use crate::sample::{Absence, Report};
use crate::session_end::SessionEnd;
use crate::streak::FailureStreak;
use loadwise_client::dial::{self, Stream};
use loadwise_protocol::{Heartbeat, IpField};

/// Keeps a connection to `server` until `stop` is cancelled, sending each sample
/// published on `samples`. When the connection fails (on the 1st, 2nd, 4th...
/// failure in a row) it says so on `lost`, if given: a replica found in DNS that
/// stops answering may have left the set, so its name is looked up again soon.
pub(super) async fn run(
    server: String,
    config: AgentConfig,
    mut reports: watch::Receiver<Report>,
    stop: CancellationToken,
    lost: Option<watch::Sender<()>>,
) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    // A Send RNG (unlike the thread-local one), so the link can be spawned. Jitter
    // only spreads reconnects: the clock seeds it when the system gives no randomness.
    let mut rng = entropy::os_seeded().unwrap_or_else(|error| {
        tracing::warn!(%error, "reconnect jitter seeded from the clock instead");
        entropy::clock_seeded()
    });
    let mut failures = FailureStreak::default();
    loop {
        if config.protocol == Protocol::Legacy && !wait_until_ready(&mut reports, &stop).await {
            return;
        }
        let end = match session(&server, &config, &mut reports, &stop).await {
            Ok((SessionEnd::Stopped, _)) | Err(SessionEnd::Stopped) => return,
            Ok((SessionEnd::Draining, _)) => {
                tracing::info!(%server, "draining: disconnected from the legacy dispatcher");
                backoff.reset();
                continue;
            }
            Ok((SessionEnd::Unhealthy, _)) => {
                tracing::info!(%server, "unhealthy: disconnected from the legacy dispatcher");
                backoff.reset();
                continue;
            }
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
            if let Some(lost) = &lost {
                lost.send_replace(());
            }
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

/// Waits while the backend is draining or unhealthy; false when the agent stops meanwhile.
async fn wait_until_ready(reports: &mut watch::Receiver<Report>, stop: &CancellationToken) -> bool {
    tokio::select! {
        ready = reports.wait_for(|report| report.legacy_absence().is_none()) => ready.is_ok(),
        () = stop.cancelled() => false,
    }
}

/// One connection: connects, then sends reports until it fails. Returns why it
/// ended and how long it was up, or why it could not connect.
async fn session(
    server: &str,
    config: &AgentConfig,
    reports: &mut watch::Receiver<Report>,
    stop: &CancellationToken,
) -> Result<(SessionEnd, Duration), SessionEnd> {
    let stream = tokio::select! {
        stream = connect(server, config) => stream?,
        () = stop.cancelled() => return Err(SessionEnd::Stopped),
    };
    detect_silent_loss(stream.tcp(), config.interval);
    tracing::info!(%server, advertise = %config.advertise, tls = stream.is_tls(), "connected to dispatcher");
    let connected_at = tokio::time::Instant::now();
    let end = match config.protocol {
        Protocol::Legacy => {
            // Checked by AgentConfig::validate.
            let ip = config.advertise.legacy_ip().expect("a legacy advertise address");
            send_legacy(stream, ip, config.advertise.port(), reports, stop).await
        }
        Protocol::V2 => crate::v2::session(stream, config, reports, stop).await,
    };
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

/// Connects to the dispatcher, and completes the TLS handshake if the agent speaks
/// TLS, within the connect timeout.
async fn connect(server: &str, config: &AgentConfig) -> Result<Stream, SessionEnd> {
    let timeout = config.connect_timeout;
    match tokio::time::timeout(timeout, dial::open(server, config.tls.as_ref())).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionEnd::ConnectTimeout(timeout)),
    }
}

/// Sends the latest report at once (the first heartbeat registers the backend),
/// then each new one, until the connection fails, the backend drains, or the agent
/// stops.
async fn send_legacy(
    mut stream: Stream,
    ip: IpField,
    port: u16,
    reports: &mut watch::Receiver<Report>,
    stop: &CancellationToken,
) -> SessionEnd {
    let mut sink = [0u8; 64];
    if let Err(end) = send_report(&mut stream, ip, port, reports, stop).await {
        return end;
    }
    loop {
        tokio::select! {
            changed = reports.changed() => {
                if changed.is_err() {
                    return SessionEnd::Stopped;
                }
                if let Err(end) = send_report(&mut stream, ip, port, reports, stop).await {
                    return end;
                }
            }
            read = stream.read(&mut sink) => match read {
                Ok(0) => return SessionEnd::ClosedByPeer,
                // A legacy dispatcher sends nothing to backends; ignore whatever arrives.
                Ok(_) => {}
                Err(error) => return error.into(),
            },
            () = stop.cancelled() => return SessionEnd::Stopped,
        }
    }
}

/// Sends the latest report as a legacy heartbeat, or ends the session if the
/// backend no longer takes clients.
async fn send_report(
    stream: &mut Stream,
    ip: IpField,
    port: u16,
    reports: &mut watch::Receiver<Report>,
    stop: &CancellationToken,
) -> Result<(), SessionEnd> {
    let report = reports.borrow_and_update().clone();
    match report.legacy_absence() {
        Some(Absence::Draining) => return Err(SessionEnd::Draining),
        Some(Absence::Unhealthy) => return Err(SessionEnd::Unhealthy),
        None => {}
    }
    let heartbeat = report.sample.map(|sample| Heartbeat { mem: sample.memory, ip, port });
    send(stream, heartbeat, stop).await
}

/// Writes one heartbeat, if there is one. A dispatcher that stopped reading can
/// block the write until `TCP_USER_TIMEOUT`; stopping the agent does not wait for it.
async fn send(
    stream: &mut Stream,
    heartbeat: Option<Heartbeat>,
    stop: &CancellationToken,
) -> Result<(), SessionEnd> {
    let Some(heartbeat) = heartbeat else { return Ok(()) };
    let frame = heartbeat.encode();
    // TLS holds written bytes until a flush; for TCP the flush does nothing.
    let written = async {
        stream.write_all(&frame).await?;
        stream.flush().await
    };
    tokio::select! {
        written = written => Ok(written?),
        () = stop.cancelled() => Err(SessionEnd::Stopped),
    }
}

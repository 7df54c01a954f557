//! The backend side: keeps one connection to a dispatcher and sends a heartbeat with
//! this backend's address and load every interval, reconnecting forever.
//!
//! The first heartbeat goes out as soon as the connection is up, so a restarted
//! dispatcher learns about the backend at once. The agent also watches its socket:
//! a dispatcher never writes to a backend, so end-of-file or an error means the
//! connection is gone and the agent reconnects (with exponential backoff and jitter)
//! without waiting for a failed write.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use crate::backoff::Backoff;
use crate::config::{ConfigError, ensure};
use crate::dial::{self, DialError};
use crate::log_limit::FailureStreak;
use crate::meminfo::{self, MeminfoError};
use crate::protocol::{AddressError, Heartbeat, IpField};

/// The address clients should be sent to, as it will appear in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertise {
    pub ip: IpField,
    pub port: u16,
}

/// Why an `--advertise` value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    #[error("expected IP:PORT, for example 10.0.0.2:7000")]
    MissingPort,
    #[error("the port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error(transparent)]
    Address(#[from] AddressError),
}

impl FromStr for Advertise {
    type Err = AdvertiseError;

    /// Parses `IP:PORT`; an IPv6 literal may be bracketed (`[::1]:7000`). The ip must
    /// fit the legacy 16-byte field with its NUL: at most 15 characters.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ip, port) = text.rsplit_once(':').ok_or(AdvertiseError::MissingPort)?;
        let ip = ip.strip_prefix('[').and_then(|ip| ip.strip_suffix(']')).unwrap_or(ip);
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(AdvertiseError::BadPort(port.to_owned())),
        };
        Ok(Advertise { ip: IpField::from_text(ip)?, port })
    }
}

impl std::fmt::Display for Advertise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self.ip.text().unwrap_or("?");
        write!(f, "{ip}:{}", self.port)
    }
}

/// Where the agent reports to and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The dispatcher, as `HOST:PORT`; resolved again on every reconnect.
    pub server: String,
    pub advertise: Advertise,
    /// Time between heartbeats.
    pub interval: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// First delay between reconnect attempts.
    pub initial_backoff: Duration,
    /// Longest delay between reconnect attempts.
    pub max_backoff: Duration,
}

impl AgentConfig {
    /// Rejects settings that would make the agent spin or never connect.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be greater than zero";
        ensure(!self.interval.is_zero(), "interval", positive)?;
        ensure(!self.connect_timeout.is_zero(), "connect-timeout", positive)?;
        ensure(!self.initial_backoff.is_zero(), "initial-backoff", positive)?;
        let ordered = self.max_backoff >= self.initial_backoff;
        ensure(ordered, "max-backoff", "must be at least the initial backoff (100ms by default)")
    }

    /// A configuration with the documented defaults: 1 s interval, 3 s connect
    /// timeout, reconnect backoff from 100 ms up to 2 s.
    pub fn new(server: impl Into<String>, advertise: Advertise) -> Self {
        AgentConfig {
            server: server.into(),
            advertise,
            interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Something that can report this backend's load, in percent, on demand.
pub trait LoadProbe: Send {
    /// The current load, 0..=100. An error skips this heartbeat.
    fn sample(&mut self) -> Result<u8, ProbeError>;
}

/// Why a load sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Meminfo(#[from] MeminfoError),
    #[error("{0}")]
    Other(String),
}

impl<F> LoadProbe for F
where
    F: FnMut() -> Result<u8, ProbeError> + Send,
{
    fn sample(&mut self) -> Result<u8, ProbeError> {
        self()
    }
}

/// Memory use in percent from a meminfo file, read afresh for every sample.
#[derive(Debug, Clone)]
pub struct MemoryProbe {
    path: PathBuf,
}

impl MemoryProbe {
    /// Reads `/proc/meminfo`.
    pub fn new() -> Self {
        Self::with_path(meminfo::PROC_MEMINFO)
    }

    /// Reads another file in the same format (for tests and unusual hosts).
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        MemoryProbe { path: path.into() }
    }
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadProbe for MemoryProbe {
    fn sample(&mut self) -> Result<u8, ProbeError> {
        Ok(meminfo::read_memory_percent(&self.path)?)
    }
}

/// Why one connection to the dispatcher ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("connecting to {server} timed out after {after:?}")]
    ConnectTimeout { server: String, after: Duration },
    #[error("the dispatcher closed the connection")]
    ClosedByPeer,
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the agent until `shutdown` completes: connects, heartbeats, reconnects.
/// Fails at once, before connecting, if the configuration cannot work.
pub async fn run(
    config: AgentConfig,
    mut probe: impl LoadProbe,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    config.validate()?;
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    // A Send RNG (unlike the thread-local one), so the agent can be spawned.
    let mut rng = StdRng::from_os_rng();
    let mut failures = FailureStreak::default();
    tokio::pin!(shutdown);
    loop {
        let end = tokio::select! {
            outcome = session(&config, &mut probe) => match outcome {
                // Only a connection that lasted starts the backoff afresh, so a
                // dispatcher that accepts and at once closes (at its connection
                // cap, say) is not hammered.
                Ok((end, lasted)) if lasted >= config.interval => {
                    backoff.reset();
                    failures.succeed();
                    end
                }
                Ok((end, _)) | Err(end) => end,
            },
            () = &mut shutdown => break,
        };
        let delay = backoff.next_delay(&mut rng);
        let attempts = failures.count() + 1;
        // Warn on the 1st, 2nd, 4th, 8th... failure in a row, so a dispatcher
        // that stays down for a day does not fill the log.
        if failures.fail() {
            tracing::warn!(error = %end, attempts, retry_in = ?delay, "not connected to the dispatcher");
        } else {
            tracing::debug!(error = %end, attempts, retry_in = ?delay, "not connected to the dispatcher");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => break,
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// One connection: connects, then heartbeats until it fails. Returns why it ended
/// and how long it was up, or why it could not connect.
async fn session(
    config: &AgentConfig,
    probe: &mut impl LoadProbe,
) -> Result<(SessionEnd, Duration), SessionEnd> {
    let stream = connect(config).await?;
    detect_silent_loss(&stream, config.interval);
    tracing::info!(server = %config.server, advertise = %config.advertise, "connected to dispatcher");
    let connected_at = tokio::time::Instant::now();
    let end = heartbeat_loop(stream, config, probe).await;
    Ok((end, connected_at.elapsed()))
}

/// Makes the kernel give up on the connection when heartbeats stay unacknowledged
/// for three intervals. Without this, a dispatcher host that vanishes (power
/// loss, partition) keeps accepting writes into the send buffer for many minutes
/// of retransmissions, and the agent would not move to a reachable dispatcher.
fn detect_silent_loss(stream: &TcpStream, interval: Duration) {
    let limit = interval.saturating_mul(3).max(Duration::from_secs(1));
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(limit)) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT; relying on the kernel's retransmission limit");
    }
}

/// Connects to the dispatcher within the connect timeout.
async fn connect(config: &AgentConfig) -> Result<TcpStream, SessionEnd> {
    match tokio::time::timeout(config.connect_timeout, dial::connect(&config.server)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            Err(SessionEnd::ConnectTimeout { server: config.server.clone(), after: config.connect_timeout })
        }
    }
}

/// Sends a heartbeat now and then every interval until the connection fails.
async fn heartbeat_loop(
    mut stream: TcpStream,
    config: &AgentConfig,
    probe: &mut impl LoadProbe,
) -> SessionEnd {
    let mut ticks = tokio::time::interval(config.interval);
    // After a stall, send one heartbeat and keep the rhythm rather than a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sink = [0u8; 64];
    let mut probe_failures = FailureStreak::default();
    loop {
        tokio::select! {
            // The first tick completes at once: the first heartbeat is immediate.
            _ = ticks.tick() => {
                if let Err(error) = send_heartbeat(&mut stream, config.advertise, probe, &mut probe_failures).await {
                    return error.into();
                }
            }
            read = stream.read(&mut sink) => match read {
                Ok(0) => return SessionEnd::ClosedByPeer,
                // A dispatcher sends nothing to backends; ignore whatever arrives.
                Ok(_) => {}
                Err(error) => return error.into(),
            },
        }
    }
}

async fn send_heartbeat(
    stream: &mut TcpStream,
    advertise: Advertise,
    probe: &mut impl LoadProbe,
    failures: &mut FailureStreak,
) -> std::io::Result<()> {
    let mem = match probe.sample() {
        Ok(mem) => {
            failures.succeed();
            mem
        }
        Err(error) => {
            if failures.fail() {
                let times = failures.count();
                tracing::warn!(%error, times, "cannot measure load; skipping this heartbeat");
            }
            return Ok(());
        }
    };
    let heartbeat = Heartbeat { mem, ip: advertise.ip, port: advertise.port };
    tracing::debug!(mem, "heartbeat");
    stream.write_all(&heartbeat.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_spin_or_never_connect_are_refused() {
        let ok = AgentConfig::new("h:1", "10.0.0.1:1".parse().unwrap());
        assert_eq!(ok.validate(), Ok(()));
        let zero_interval = AgentConfig { interval: Duration::ZERO, ..ok.clone() };
        assert_eq!(zero_interval.validate().unwrap_err().setting, "interval");
        let zero_connect = AgentConfig { connect_timeout: Duration::ZERO, ..ok.clone() };
        assert_eq!(zero_connect.validate().unwrap_err().setting, "connect-timeout");
        let backoff_below_start = AgentConfig { max_backoff: Duration::from_millis(10), ..ok };
        assert_eq!(backoff_below_start.validate().unwrap_err().setting, "max-backoff");
    }

    #[test]
    fn parses_advertise() {
        let a: Advertise = "10.0.0.2:1002".parse().unwrap();
        assert_eq!(a.ip.text().unwrap(), "10.0.0.2");
        assert_eq!(a.port, 1002);
        assert_eq!(a.to_string(), "10.0.0.2:1002");
        let v6: Advertise = "[::1]:80".parse().unwrap();
        assert_eq!(v6.ip.text().unwrap(), "::1");
    }

    #[test]
    fn refuses_long_ip_with_a_clear_error() {
        let error = "255.255.255.2555:80".parse::<Advertise>().unwrap_err();
        assert!(matches!(error, AdvertiseError::Address(AddressError::TooLong { len: 16, .. })), "{error:?}");
        assert!(error.to_string().contains("at most 15"), "{error}");
        // Exactly 15 characters fit.
        assert!("255.255.255.255:80".parse::<Advertise>().is_ok());
    }

    #[test]
    fn refuses_bad_ports_and_shapes() {
        assert_eq!("10.0.0.1".parse::<Advertise>(), Err(AdvertiseError::MissingPort));
        assert!(matches!("10.0.0.1:0".parse::<Advertise>(), Err(AdvertiseError::BadPort(_))));
        assert!(matches!("10.0.0.1:70000".parse::<Advertise>(), Err(AdvertiseError::BadPort(_))));
        assert!(matches!(":80".parse::<Advertise>(), Err(AdvertiseError::Address(AddressError::Empty))));
        assert!(matches!(
            "a b:80".parse::<Advertise>(),
            Err(AdvertiseError::Address(AddressError::NotPrintable))
        ));
    }
}

//! The backend side: reports this backend's address and load to every configured
//! dispatcher, one connection each, and keeps each connection up on its own.
//!
//! One sampler measures the load every interval and hands the sample to every
//! dispatcher link (the `link` module); a link that is down or stalled never delays the
//! others. The first heartbeat on each connection goes out as soon as it is up, so a
//! restarted dispatcher learns about the backend at once.

mod link;
mod probe;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ensure};
use crate::log_limit::FailureStreak;
use crate::protocol::{AddressError, Heartbeat, IpField};

pub use probe::{LoadProbe, MemoryProbe, ProbeError};

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
    /// The dispatchers, each as `HOST:PORT`. The agent keeps one connection to each;
    /// a name is resolved again on every reconnect, and its addresses are tried in
    /// turn (one dispatcher reachable several ways, such as IPv4 and IPv6).
    pub servers: Vec<String>,
    pub advertise: Advertise,
    /// Time between heartbeats.
    pub interval: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// First delay between reconnect attempts.
    pub initial_backoff: Duration,
    /// Longest delay between reconnect attempts. At most one interval (the
    /// default) re-registers the backend within two intervals of a dispatcher's
    /// restart.
    pub max_backoff: Duration,
}

/// The most dispatchers one agent reports to.
pub const MAX_SERVERS: usize = 64;

impl AgentConfig {
    /// Rejects settings that would make the agent spin or never connect.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be greater than zero";
        ensure(!self.servers.is_empty(), "server", "name at least one dispatcher")?;
        ensure(self.servers.len() <= MAX_SERVERS, "server", &format!("at most {MAX_SERVERS} dispatchers"))?;
        ensure(
            !has_duplicates(&self.servers),
            "server",
            "names a dispatcher twice (it would count the backend twice)",
        )?;
        ensure(!self.interval.is_zero(), "interval", positive)?;
        ensure(!self.connect_timeout.is_zero(), "connect-timeout", positive)?;
        ensure(!self.initial_backoff.is_zero(), "initial-backoff", positive)?;
        let ordered = self.max_backoff >= self.initial_backoff;
        ensure(ordered, "max-backoff", "must be at least the initial backoff (100ms by default)")
    }

    /// A configuration for one dispatcher with the documented defaults: 1 s
    /// interval, 3 s connect timeout, reconnect backoff from 100 ms up to 1 s.
    pub fn new(server: impl Into<String>, advertise: Advertise) -> Self {
        Self::with_servers([server], advertise)
    }

    /// The defaults of [`new`](Self::new), reporting to every one of `servers`.
    pub fn with_servers(servers: impl IntoIterator<Item = impl Into<String>>, advertise: Advertise) -> Self {
        AgentConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            advertise,
            interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

fn has_duplicates(servers: &[String]) -> bool {
    let unique: std::collections::HashSet<&str> = servers.iter().map(String::as_str).collect();
    unique.len() != servers.len()
}

/// Runs the agent until `shutdown` completes: samples the load every interval and
/// keeps a link to each dispatcher. Fails at once, before connecting, if the
/// configuration cannot work.
pub async fn run(
    config: AgentConfig,
    probe: impl LoadProbe,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    config.validate()?;
    if config.max_backoff > config.interval {
        tracing::warn!(max_backoff = ?config.max_backoff, interval = ?config.interval,
            "max-backoff is above the interval: after a dispatcher restarts, re-registering may take longer than two intervals");
    }
    let (samples, latest) = watch::channel(None);
    let stop = CancellationToken::new();
    let mut links = JoinSet::new();
    for server in &config.servers {
        links.spawn(link::run(server.clone(), config.clone(), latest.clone(), stop.clone()));
    }
    tokio::select! {
        () = sample_every_interval(&config, probe, samples) => {}
        () = shutdown => {}
    }
    stop.cancel();
    while links.join_next().await.is_some() {}
    tracing::info!("agent stopped");
    Ok(())
}

/// Measures the load now and then every interval, and publishes each heartbeat to
/// the links. A failed sample publishes `None`, so that interval sends nothing.
async fn sample_every_interval(
    config: &AgentConfig,
    mut probe: impl LoadProbe,
    samples: watch::Sender<Option<Heartbeat>>,
) {
    let mut ticks = tokio::time::interval(config.interval);
    // After a stall, sample once and keep the rhythm rather than a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = FailureStreak::default();
    loop {
        ticks.tick().await;
        match probe.sample() {
            Ok(mem) => {
                failures.succeed();
                tracing::debug!(mem, "sampled");
                let (ip, port) = (config.advertise.ip, config.advertise.port);
                samples.send_replace(Some(Heartbeat { mem, ip, port }));
            }
            Err(error) => {
                if failures.fail() {
                    let times = failures.count();
                    tracing::warn!(%error, times, "cannot measure load; skipping this heartbeat");
                }
                // A link that connects now waits for a real sample rather than
                // registering the backend with an old one.
                samples.send_replace(None);
            }
        }
    }
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
        let backoff_below_start = AgentConfig { max_backoff: Duration::from_millis(10), ..ok.clone() };
        assert_eq!(backoff_below_start.validate().unwrap_err().setting, "max-backoff");
    }

    #[test]
    fn the_dispatcher_list_must_be_non_empty_bounded_and_without_repeats() {
        let advertise: Advertise = "10.0.0.1:1".parse().unwrap();
        let two = AgentConfig::with_servers(["a:1", "b:1"], advertise);
        assert_eq!(two.validate(), Ok(()));
        let none = AgentConfig::with_servers(Vec::<String>::new(), advertise);
        assert_eq!(none.validate().unwrap_err().setting, "server");
        let twice = AgentConfig::with_servers(["a:1", "b:1", "a:1"], advertise);
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
        let many = AgentConfig::with_servers((0..=MAX_SERVERS).map(|i| format!("h{i}:1")), advertise);
        assert_eq!(many.validate().unwrap_err().setting, "server");
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

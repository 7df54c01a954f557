//! What the agent's health check probes and how often ([`HealthCheck`]), parsed from
//! `tcp`, `tcp:HOST:PORT` or `http://HOST:PORT/PATH` ([`CheckTarget`]), and the range
//! checks of its settings.

use std::str::FromStr;
use std::time::Duration;

use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::v2::HostName;

/// What one check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// Passes when a TCP connection to this address opens; `None` means the
    /// advertised address (where clients connect).
    Tcp(Option<CheckAddr>),
    /// Passes when `GET path` on this address answers with a 2xx status. Needs the
    /// `http-check` feature.
    Http { addr: CheckAddr, path: String },
}

/// A host (IP address or name) and a port to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAddr {
    host: String,
    port: u16,
}

impl CheckAddr {
    /// The host as given, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An address already checked elsewhere (the advertised one).
    pub(crate) fn new(host: &str, port: u16) -> CheckAddr {
        CheckAddr { host: host.to_owned(), port }
    }

    /// `HOST:PORT`, or `HOST` alone with `default_port`; IPv6 literals bracketed.
    fn parse(text: &str, default_port: Option<u16>) -> Result<CheckAddr, CheckTargetError> {
        let (host, port) = match split_port(text) {
            Some((host, port)) => {
                let port = port.parse::<u16>().ok().filter(|&port| port != 0);
                (host, port.ok_or_else(|| CheckTargetError::BadPort(text.to_owned()))?)
            }
            None => (text, default_port.ok_or_else(|| CheckTargetError::MissingPort(text.to_owned()))?),
        };
        let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
        if host.parse::<std::net::IpAddr>().is_err() {
            HostName::new(host)
                .map_err(|error| CheckTargetError::BadHost(host.to_owned(), error.to_string()))?;
        }
        Ok(CheckAddr { host: host.to_owned(), port })
    }
}

/// The text after the last `:` that is outside IPv6 brackets, if any.
fn split_port(text: &str) -> Option<(&str, &str)> {
    let (host, port) = text.rsplit_once(':')?;
    let bare_ipv6 = host.contains(':') && !host.starts_with('[');
    let inside_brackets = text.starts_with('[') && !host.ends_with(']');
    (!bare_ipv6 && !inside_brackets).then_some((host, port))
}

impl std::fmt::Display for CheckAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl std::fmt::Display for CheckTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckTarget::Tcp(None) => f.write_str("tcp"),
            CheckTarget::Tcp(Some(addr)) => write!(f, "tcp:{addr}"),
            CheckTarget::Http { addr, path } => write!(f, "http://{addr}{path}"),
        }
    }
}

/// Why a `--check` value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckTargetError {
    #[error(
        "unknown check {0:?}; expected tcp (the advertised address), tcp:HOST:PORT or http://HOST:PORT/PATH"
    )]
    Unknown(String),
    #[error("{0:?} has no port; expected HOST:PORT, for example 127.0.0.1:7000")]
    MissingPort(String),
    #[error("{0:?}: the port is not a number from 1 to 65535")]
    BadPort(String),
    #[error("the host {0:?} is neither an IP address nor a host name: {1}")]
    BadHost(String, String),
    #[error("https checks are not supported; check the backend's plain HTTP port (http://HOST:PORT/PATH)")]
    Https,
}

impl FromStr for CheckTarget {
    type Err = CheckTargetError;

    /// `tcp`, `tcp:HOST:PORT`, or `http://HOST[:PORT][/PATH]` (port 80, path `/` when left out).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "tcp" {
            return Ok(CheckTarget::Tcp(None));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            return Ok(CheckTarget::Tcp(Some(CheckAddr::parse(addr, None)?)));
        }
        if text.starts_with("https://") {
            return Err(CheckTargetError::Https);
        }
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(CheckTargetError::Unknown(text.to_owned()));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if path.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(CheckTargetError::Unknown(text.to_owned()));
        }
        let addr = CheckAddr::parse(authority, Some(80))?;
        Ok(CheckTarget::Http { addr, path: path.to_owned() })
    }
}

/// The agent's health check: what it probes, how often, and how many results in a
/// row flip the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub target: CheckTarget,
    /// Time from the start of one check to the start of the next.
    pub interval: Duration,
    /// How long one check may take before it counts as failed; at most the interval,
    /// so checks never queue up.
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy backend healthy (and the first verdict).
    pub rise: u32,
    /// Failures in a row that make a healthy backend unhealthy.
    pub fall: u32,
}

/// The shortest check interval: more often would load the backend for little gain.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// The longest check interval.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// The most results in a row `rise` or `fall` may ask for.
pub const MAX_RISE_FALL: u32 = 100;
/// The longest default timeout of one check.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl HealthCheck {
    /// Every second, rise 2, fall 2 (HAProxy's defaults, with its 2 s interval
    /// shortened to the agent's heartbeat interval), and a timeout of 1 s: a healthy
    /// backend accepts on the local network in well under a millisecond, so 1 s only
    /// fails one that is stuck, and it never outlasts the interval.
    pub fn new(target: CheckTarget) -> HealthCheck {
        HealthCheck {
            target,
            interval: Duration::from_secs(1),
            timeout: DEFAULT_CHECK_TIMEOUT,
            rise: 2,
            fall: 2,
        }
    }

    /// With checks every `interval`, and the default timeout cut to the interval if it
    /// is shorter.
    pub fn every(mut self, interval: Duration) -> HealthCheck {
        self.interval = interval;
        self.timeout = DEFAULT_CHECK_TIMEOUT.min(interval);
        self
    }

    /// Refuses settings that would spin, never decide, or overlap checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let interval_ok = (MIN_CHECK_INTERVAL..=MAX_CHECK_INTERVAL).contains(&self.interval);
        ensure(interval_ok, "check-interval", "must be from 10ms to 1h")?;
        ensure(!self.timeout.is_zero(), "check-timeout", "must be greater than zero")?;
        ensure(
            self.timeout <= self.interval,
            "check-timeout",
            "must be at most --check-interval (checks would queue up)",
        )?;
        let in_range = |count: u32| (1..=MAX_RISE_FALL).contains(&count);
        ensure(in_range(self.rise), "check-rise", "must be from 1 to 100")?;
        ensure(in_range(self.fall), "check-fall", "must be from 1 to 100")?;
        if matches!(self.target, CheckTarget::Http { .. }) && !cfg!(feature = "http-check") {
            return Err(ConfigError::new(
                "check",
                "this build has no HTTP check (loadwise-agent's http-check feature); use tcp",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> CheckAddr {
        CheckAddr { host: host.to_owned(), port }
    }

    #[test]
    fn parses_tcp_and_http_targets() {
        assert_eq!("tcp".parse(), Ok(CheckTarget::Tcp(None)));
        assert_eq!("tcp:127.0.0.1:7000".parse(), Ok(CheckTarget::Tcp(Some(addr("127.0.0.1", 7000)))));
        assert_eq!("tcp:[::1]:7000".parse(), Ok(CheckTarget::Tcp(Some(addr("::1", 7000)))));
        assert_eq!("tcp:game-7.local:7000".parse(), Ok(CheckTarget::Tcp(Some(addr("game-7.local", 7000)))));
        assert_eq!(
            "http://127.0.0.1:8080/healthz".parse(),
            Ok(CheckTarget::Http { addr: addr("127.0.0.1", 8080), path: "/healthz".to_owned() })
        );
        assert_eq!(
            "http://localhost".parse(),
            Ok(CheckTarget::Http { addr: addr("localhost", 80), path: "/".to_owned() })
        );
        assert_eq!(
            "http://[::1]:81/ready?deep=1".parse(),
            Ok(CheckTarget::Http { addr: addr("::1", 81), path: "/ready?deep=1".to_owned() })
        );
    }

    #[test]
    fn a_target_prints_as_it_parses() {
        for text in ["tcp", "tcp:10.0.0.2:7000", "tcp:[2001:db8::2]:7000", "http://[::1]:81/ready"] {
            assert_eq!(text.parse::<CheckTarget>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn refuses_bad_targets_with_a_reason() {
        let error = |text: &str| text.parse::<CheckTarget>().unwrap_err();
        assert!(matches!(error("udp:1.2.3.4:5"), CheckTargetError::Unknown(_)));
        assert!(matches!(error(""), CheckTargetError::Unknown(_)));
        assert!(matches!(error("tcp:127.0.0.1"), CheckTargetError::MissingPort(_)));
        assert!(matches!(error("tcp:[::1]"), CheckTargetError::MissingPort(_)));
        assert!(matches!(error("tcp:::1"), CheckTargetError::MissingPort(_)), "IPv6 needs brackets");
        assert!(matches!(error("tcp:127.0.0.1:0"), CheckTargetError::BadPort(_)));
        assert!(matches!(error("tcp:127.0.0.1:99999"), CheckTargetError::BadPort(_)));
        assert!(matches!(error("tcp:a b:1"), CheckTargetError::BadHost(..)));
        assert!(matches!(error("http://127.0.0.1:x/"), CheckTargetError::BadPort(_)));
        assert!(matches!(error("http://127.0.0.1/a b"), CheckTargetError::Unknown(_)));
        assert_eq!(error("https://127.0.0.1/"), CheckTargetError::Https);
        assert!(error("udp:1.2.3.4:5").to_string().contains("tcp:HOST:PORT"));
    }

    #[test]
    fn settings_are_range_checked() {
        let ok = HealthCheck::new(CheckTarget::Tcp(None));
        assert_eq!(ok.validate(), Ok(()));
        let setting = |check: HealthCheck| check.validate().unwrap_err().setting;
        assert_eq!(setting(ok.clone().every(Duration::from_millis(5))), "check-interval");
        assert_eq!(setting(ok.clone().every(Duration::from_secs(7200))), "check-interval");
        assert_eq!(setting(HealthCheck { timeout: Duration::ZERO, ..ok.clone() }), "check-timeout");
        assert_eq!(setting(HealthCheck { timeout: Duration::from_secs(2), ..ok.clone() }), "check-timeout");
        assert_eq!(setting(HealthCheck { rise: 0, ..ok.clone() }), "check-rise");
        assert_eq!(setting(HealthCheck { fall: 101, ..ok.clone() }), "check-fall");
    }

    #[test]
    fn a_short_interval_shortens_the_default_timeout() {
        let check = HealthCheck::new(CheckTarget::Tcp(None)).every(Duration::from_millis(100));
        assert_eq!(check.timeout, Duration::from_millis(100));
        assert_eq!(check.validate(), Ok(()));
        let slow = HealthCheck::new(CheckTarget::Tcp(None)).every(Duration::from_secs(5));
        assert_eq!(slow.timeout, DEFAULT_CHECK_TIMEOUT);
    }

    #[test]
    fn http_needs_the_feature() {
        let http = HealthCheck::new("http://127.0.0.1:8080/".parse().unwrap());
        assert_eq!(http.validate().is_ok(), cfg!(feature = "http-check"));
    }
}

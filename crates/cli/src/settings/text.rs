//! Settings written as text: durations (`500ms`, `3s`), listen addresses that may be
//! `off`, and a service's scoring on the command line (`search=max(memory, cpu)`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use loadwise_core::scoring::{Scoring, ScoringError};
use loadwise_protocol::v2::{NameError, ServiceName};

/// The admin API's default address: loopback only, beside the dispatcher's port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8524";

/// Where the admin API listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    On(SocketAddr),
}

impl Default for AdminListen {
    fn default() -> Self {
        AdminListen::On(DEFAULT_ADMIN_LISTEN.parse().expect("the default admin address parses"))
    }
}

impl AdminListen {
    /// The address, unless off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            AdminListen::Off => None,
            AdminListen::On(addr) => Some(addr),
        }
    }
}

/// A listen address that is neither `off` nor `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected IP:PORT (for example 127.0.0.1:8524) or off, not {0:?}")]
pub struct BadListen(String);

/// `off` as `None`, or an `IP:PORT`.
fn parse_listen(text: &str) -> Result<Option<SocketAddr>, BadListen> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| BadListen(text.to_owned()))
}

fn write_listen(addr: Option<SocketAddr>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match addr {
        None => f.write_str("off"),
        Some(addr) => fmt::Display::fmt(&addr, f),
    }
}

impl FromStr for AdminListen {
    type Err = BadListen;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(parse_listen(text)?.map_or(AdminListen::Off, AdminListen::On))
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_listen(self.addr(), f)
    }
}

/// Where the TLS listener listens: an address, or `off` (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsListenAddr {
    #[default]
    Off,
    On(SocketAddr),
}

impl TlsListenAddr {
    /// The address, unless off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            TlsListenAddr::Off => None,
            TlsListenAddr::On(addr) => Some(addr),
        }
    }
}

impl FromStr for TlsListenAddr {
    type Err = BadListen;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(parse_listen(text)?.map_or(TlsListenAddr::Off, TlsListenAddr::On))
    }
}

impl fmt::Display for TlsListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_listen(self.addr(), f)
    }
}

/// One service's scoring as `--service-scoring` takes it: `NAME=SCORING`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceScoring {
    pub service: ServiceName,
    pub scoring: Scoring,
}

/// A `--service-scoring` entry that is not `NAME=SCORING`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadServiceScoring {
    #[error("expected NAME=SCORING, for example search=max(memory, cpu), not {0:?}")]
    NoEquals(String),
    #[error("{0:?} is not a service name: {1}")]
    Service(String, NameError),
    #[error("bad scoring for service {0}: {1}")]
    Scoring(ServiceName, ScoringError),
}

impl FromStr for ServiceScoring {
    type Err = BadServiceScoring;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, scoring) =
            text.split_once('=').ok_or_else(|| BadServiceScoring::NoEquals(text.to_owned()))?;
        let name = name.trim();
        let service =
            ServiceName::new(name).map_err(|error| BadServiceScoring::Service(name.to_owned(), error))?;
        let scoring = scoring.parse().map_err(|error| BadServiceScoring::Scoring(service.clone(), error))?;
        Ok(ServiceScoring { service, scoring })
    }
}

impl fmt::Display for ServiceScoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.service, self.scoring)
    }
}

/// A duration as the flags and the file write it: whole seconds as `3s`, whole
/// milliseconds as `500ms`, anything finer in humantime's notation.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        humantime::format_duration(duration).to_string()
    }
}

/// Serde for `Option<T>` written as a string, through `FromStr` and `Display`.
pub(super) mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<T: Display, S: Serializer>(value: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Some).map_err(D::Error::custom)
    }
}

/// Serde for the `[services.NAME]` tables: a map by service name, each name checked as
/// it is read.
pub(super) mod service_tables {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    use loadwise_protocol::v2::ServiceName;

    pub fn serialize<V, S>(map: &BTreeMap<ServiceName, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_map(map.iter().map(|(name, value)| (name.as_str(), value)))
    }

    pub fn deserialize<'de, V, D>(deserializer: D) -> Result<BTreeMap<ServiceName, V>, D::Error>
    where
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let raw = BTreeMap::<String, V>::deserialize(deserializer)?;
        raw.into_iter()
            .map(|(name, value)| match ServiceName::new(&name) {
                Ok(service) => Ok((service, value)),
                Err(error) => Err(D::Error::custom(format!("{name:?} is not a service name: {error}"))),
            })
            .collect()
    }
}

/// Serde for `Option<Duration>` written like `3s` or `500ms`.
pub(super) mod as_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&super::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Some).map_err(|error| {
            D::Error::custom(format!("{error} in {text:?} (write durations like 500ms, 3s, 2m)"))
        })
    }
}

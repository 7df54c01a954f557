//! Settings written as text: durations (`500ms`, `3s`), listen addresses that may be
//! `off`, and the `[services.NAME]` tables by name.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Host names the admin API answers for beyond its own address and the loopback
/// names: comma-separated, each a name or an IP literal (`[v6]` in brackets), no port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostList(pub Vec<String>);

/// A host list entry that is empty or carries a port, a scheme or a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected host names separated by commas (admin.example,10.0.0.5,[fd00::5]), without port or scheme, not {0:?}"
)]
pub struct BadHostList(String);

impl FromStr for HostList {
    type Err = BadHostList;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hosts: Vec<String> = text.split(',').map(|host| host.trim().to_ascii_lowercase()).collect();
        let bad = |host: &String| {
            let bracketed = host.starts_with('[') && host.ends_with(']');
            host.is_empty()
                || host.len() > 255
                || host.contains(['/', '@', ' '])
                || (host.contains(':') && !bracketed)
        };
        if hosts.iter().any(bad) {
            return Err(BadHostList(text.to_owned()));
        }
        Ok(HostList(hosts))
    }
}

impl fmt::Display for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

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

/// Serde for the `[services.NAME]` tables: a map by service name, each name checked as
/// it is read.
pub(crate) mod service_tables {
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

//! Settings written as text: durations (`500ms`, `3s`), and addresses that may be `off`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

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

/// An admin address that is neither `off` nor `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected IP:PORT (for example 127.0.0.1:8524) or off, not {0:?}")]
pub struct BadAdminListen(String);

impl FromStr for AdminListen {
    type Err = BadAdminListen;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(AdminListen::Off);
        }
        text.parse().map(AdminListen::On).map_err(|_| BadAdminListen(text.to_owned()))
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Off => f.write_str("off"),
            AdminListen::On(addr) => addr.fmt(f),
        }
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

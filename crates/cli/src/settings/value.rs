//! How each type of setting is written: parsed from a flag or a variable, read from and
//! written to the file, shown in logs and help, and held within its bounds.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

use super::text::{AdminListen, HostList, TlsListenAddr, format_duration};
use loadwise_core::scoring::Scoring;
use loadwise_core::selection::Policy;
use loadwise_core::slots::SlotPolicy;
use loadwise_protocol::v2::{NameError, ServiceName};
use loadwise_server::netlist::NetList;

/// A type a setting can have. Every way of writing a value goes through it, so a
/// flag, a variable and the file accept the same texts.
pub trait SettingValue: Clone + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Parses the text of a flag or a variable.
    fn parse(text: &str) -> Result<Self, String>;

    /// The value as a flag takes it and the logs show it: `3s`, `127.0.0.1:8523`.
    fn show(&self) -> String;

    /// The value as the file writes it; a string unless the type is a number.
    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.show())
    }

    /// Writes the value for the layering (as text unless the type is a number).
    fn serialize_value<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.show())
    }

    /// Reads the file's value: text through [`parse`](SettingValue::parse) unless
    /// the type is a number.
    fn deserialize_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }

    /// The value as a bound is written in help, docs and errors.
    fn show_bound(&self) -> String {
        self.show()
    }
}

/// Types written as text, through `FromStr` and `Display`.
macro_rules! text_values {
    ($($ty:ty),* $(,)?) => {$(
        impl SettingValue for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|error: <$ty as FromStr>::Err| error.to_string())
            }

            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

text_values!(
    SocketAddr,
    Policy,
    SlotPolicy,
    NetList,
    ServiceName,
    Scoring,
    AdminListen,
    TlsListenAddr,
    HostList
);

impl SettingValue for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map_err(|error| format!("{error} in {text:?} (write durations like 500ms, 3s, 2m)"))
    }

    fn show(&self) -> String {
        format_duration(*self)
    }

    fn show_bound(&self) -> String {
        humantime::format_duration(*self).to_string()
    }
}

/// Whole numbers, written as TOML integers.
macro_rules! integer_values {
    ($($ty:ty),* $(,)?) => {$(
        impl SettingValue for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|error: std::num::ParseIntError| format!("{error}: {text:?}"))
            }

            fn show(&self) -> String {
                self.to_string()
            }

            /// An integer TOML cannot hold is written as text, which reads back as an
            /// error rather than a wrong number.
            fn to_toml(&self) -> toml::Value {
                i64::try_from(*self).map_or_else(|_| toml::Value::String(self.show()), toml::Value::Integer)
            }

            fn serialize_value<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(self, serializer)
            }

            fn deserialize_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <$ty as Deserialize>::deserialize(deserializer)
            }
        }
    )*};
}

integer_values!(u8, u16, u32, usize);

impl SettingValue for f64 {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse().map_err(|error| format!("{error}: {text:?}"))
    }

    fn show(&self) -> String {
        format!("{self:?}")
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Float(*self)
    }

    fn serialize_value<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(*self)
    }

    fn deserialize_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <f64 as Deserialize>::deserialize(deserializer)
    }
}

impl SettingValue for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl SettingValue for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn show(&self) -> String {
        self.clone()
    }
}

/// Fails with the bounds unless `min <= value <= max` (NaN is never within).
pub fn check_range<T: SettingValue + PartialOrd>(value: &T, min: &T, max: &T) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{} is out of bounds: must be from {} to {}",
            value.show(),
            min.show_bound(),
            max.show_bound()
        ))
    }
}

/// Serde for an optional setting in a layer: absent, or written as its type says.
pub(super) mod optional {
    use serde::{Deserializer, Serializer};

    use super::SettingValue;

    pub fn serialize<T: SettingValue, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => value.serialize_value(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: SettingValue, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        T::deserialize_value(deserializer).map(Some)
    }
}

/// One service's value of a per-service setting, as its flag takes it: `NAME=VALUE`
/// (`search=max(memory, cpu)`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceValue<T> {
    pub service: ServiceName,
    pub value: T,
}

/// A per-service entry that is not `NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadServiceValue {
    #[error("expected NAME=VALUE, a service's name and its value (search=max(memory, cpu)), not {0:?}")]
    NoEquals(String),
    #[error("{0:?} is not a service name: {1}")]
    Service(String, NameError),
    #[error("bad value for service {0}: {1}")]
    Value(ServiceName, String),
}

impl<T: SettingValue> FromStr for ServiceValue<T> {
    type Err = BadServiceValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, value) = text.split_once('=').ok_or_else(|| BadServiceValue::NoEquals(text.to_owned()))?;
        let name = name.trim();
        let service =
            ServiceName::new(name).map_err(|error| BadServiceValue::Service(name.to_owned(), error))?;
        let value = T::parse(value.trim()).map_err(|error| BadServiceValue::Value(service.clone(), error))?;
        Ok(ServiceValue { service, value })
    }
}

impl<T: SettingValue> fmt::Display for ServiceValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.service, self.value.show())
    }
}

/// One service's scoring as `--service-scoring` takes it: `NAME=SCORING`.
pub type ServiceScoring = ServiceValue<Scoring>;

/// A `--service-scoring` entry that is not `NAME=SCORING`.
pub type BadServiceScoring = BadServiceValue;

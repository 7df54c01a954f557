//! The validated names v2 carries: services, custom metrics and hosts, all `[A-Za-z0-9._-]`.

use std::fmt;

use super::frame::{FieldError, Reader, Writer};
use super::name_error::NameError;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks `bytes` against the naming rule: 1 to `max` bytes of `[A-Za-z0-9._-]`.
fn check(bytes: &[u8], max: usize) -> Result<(), NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > max {
        return Err(NameError::TooLong { len: bytes.len(), max });
    }
    match bytes.iter().position(|&b| !is_name_byte(b)) {
        Some(index) => Err(NameError::BadByte { index, byte: bytes[index] }),
        None => Ok(()),
    }
}

/// Builds the text of a checked name. Every byte is ASCII, so each is one `char`.
fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest name allowed, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Checks `name` against the rule: 1 to `MAX_LEN` bytes of `[A-Za-z0-9._-]`.
            pub fn new(name: &str) -> Result<Self, NameError> {
                check(name.as_bytes(), Self::MAX_LEN)?;
                Ok($name(name.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, FieldError> {
                let bytes = r.str8($field)?;
                check(bytes, Self::MAX_LEN).map_err(|source| FieldError::Name { field: $field, source })?;
                Ok($name(ascii_string(bytes)))
            }

            pub(crate) fn write(&self, w: &mut Writer) -> Result<(), FieldError> {
                w.str8(self.0.as_bytes(), $field)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, NameError> {
                $name::new(s)
            }
        }
    };
}

name_type!(
    /// A service name: 1 to 64 bytes of `[A-Za-z0-9._-]`, compared byte for byte
    /// (case-sensitive).
    ServiceName,
    64,
    "service"
);

name_type!(
    /// The name of a custom load metric: 1 to 64 bytes of `[A-Za-z0-9._-]`.
    MetricName,
    64,
    "metric name"
);

name_type!(
    /// A DNS host name: 1 to 253 bytes of `[A-Za-z0-9._-]`. It is carried as text and
    /// never resolved by the dispatcher.
    HostName,
    253,
    "host name"
);

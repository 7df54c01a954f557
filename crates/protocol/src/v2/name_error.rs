//! Why a name (of a service, a custom metric or a host) was refused.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {len} bytes long, above the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("byte {index} of the name is {byte:#04x}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed")]
    BadByte { index: usize, byte: u8 },
}

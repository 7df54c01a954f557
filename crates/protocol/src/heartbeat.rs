//! The heartbeat frame (cmd 0, 23 bytes): a backend's load and the address clients should use.

use crate::cmd;
use crate::header::{HEADER_LEN, Header};

/// Size of the fixed, NUL-padded ip field.
pub const IP_FIELD_LEN: usize = 16;

/// The longest ip text that fits the field together with its terminating NUL.
pub const MAX_IP_CHARS: usize = IP_FIELD_LEN - 1;

/// Why an address cannot be carried in (or was not validly carried by) the ip field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the ip is empty")]
    Empty,
    #[error("the ip {ip:?} is {len} characters long; the legacy heartbeat carries at most {MAX_IP_CHARS}")]
    TooLong { ip: String, len: usize },
    #[error("the ip field has no terminating NUL within its {IP_FIELD_LEN} bytes")]
    Unterminated,
    #[error("the ip contains a character that is not printable ASCII (0x21 to 0x7e)")]
    NotPrintable,
    #[error("the port is 0")]
    ZeroPort,
}

/// The 16 raw bytes of a heartbeat's ip field, kept exactly as the backend sent them
/// so that a login reply can return them byte for byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpField([u8; IP_FIELD_LEN]);

impl IpField {
    /// Wraps raw field bytes without checking them.
    pub const fn from_bytes(bytes: [u8; IP_FIELD_LEN]) -> Self {
        IpField(bytes)
    }

    /// Builds the field from text: at most 15 printable ASCII characters, NUL-padded.
    pub fn from_text(ip: &str) -> Result<Self, AddressError> {
        if ip.is_empty() {
            return Err(AddressError::Empty);
        }
        // Printable ASCII first: then characters and bytes are the same count.
        if !ip.bytes().all(is_printable) {
            return Err(AddressError::NotPrintable);
        }
        if ip.len() > MAX_IP_CHARS {
            return Err(AddressError::TooLong { ip: ip.to_owned(), len: ip.len() });
        }
        let mut bytes = [0u8; IP_FIELD_LEN];
        bytes[..ip.len()].copy_from_slice(ip.as_bytes());
        Ok(IpField(bytes))
    }

    /// The raw bytes as sent.
    pub const fn as_bytes(&self) -> &[u8; IP_FIELD_LEN] {
        &self.0
    }

    /// The text up to the first NUL, if the field holds a usable address: non-empty,
    /// NUL-terminated within the field, printable ASCII.
    pub fn text(&self) -> Result<&str, AddressError> {
        let end = self.0.iter().position(|&b| b == 0).ok_or(AddressError::Unterminated)?;
        let text = &self.0[..end];
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if !text.iter().copied().all(is_printable) {
            return Err(AddressError::NotPrintable);
        }
        // All bytes are printable ASCII, hence valid UTF-8.
        std::str::from_utf8(text).map_err(|_| AddressError::NotPrintable)
    }
}

fn is_printable(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// A legacy backend's address as operators write it, for log lines: `10.0.0.2:1002`,
/// `[::1]:7000` for an IPv6 literal, and the field's bytes in hex when they are not
/// a usable address.
#[derive(Clone, Copy)]
pub struct AddressDisplay<'a> {
    pub ip: &'a IpField,
    pub port: u16,
}

impl std::fmt::Display for AddressDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip.text() {
            Ok(text) if text.contains(':') => write!(f, "[{text}]:{}", self.port),
            Ok(text) => write!(f, "{text}:{}", self.port),
            Err(_) => {
                for byte in self.ip.as_bytes() {
                    write!(f, "{byte:02x}")?;
                }
                write!(f, ":{}", self.port)
            }
        }
    }
}

impl IpField {
    /// This field and `port` as `ip:port`, for log lines.
    pub fn with_port(&self, port: u16) -> AddressDisplay<'_> {
        AddressDisplay { ip: self, port }
    }
}

impl std::fmt::Debug for IpField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.text() {
            Ok(text) => write!(f, "IpField({text:?})"),
            Err(_) => write!(f, "IpField({:02x?})", self.0),
        }
    }
}

/// A backend heartbeat: memory use in percent, ip field and client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Memory used, in percent. Old senders report values above 100, which are not
    /// valid percentages; the dispatcher ranks them last.
    pub mem: u8,
    /// The address clients should connect to, as sent.
    pub ip: IpField,
    /// The port clients should connect to.
    pub port: u16,
}

impl Heartbeat {
    /// Size of a heartbeat frame.
    pub const LEN: usize = HEADER_LEN + 1 + IP_FIELD_LEN + 2;

    /// Reads the fields of a heartbeat frame (header included; it is not checked here).
    pub fn decode(frame: &[u8; Self::LEN]) -> Self {
        let mut ip = [0u8; IP_FIELD_LEN];
        ip.copy_from_slice(&frame[5..21]);
        Heartbeat { mem: frame[4], ip: IpField(ip), port: u16::from_le_bytes([frame[21], frame[22]]) }
    }

    /// Encodes the full frame, header included.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut frame = [0u8; Self::LEN];
        let header = Header { len: Self::LEN as u16, cmd: cmd::HEARTBEAT };
        frame[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        frame[4] = self.mem;
        frame[5..21].copy_from_slice(&self.ip.0);
        frame[21..].copy_from_slice(&self.port.to_le_bytes());
        frame
    }

    /// Checks that the heartbeat names an address a client can use.
    pub fn validate_address(&self) -> Result<&str, AddressError> {
        let text = self.ip.text()?;
        if self.port == 0 {
            return Err(AddressError::ZeroPort);
        }
        Ok(text)
    }
}

//! Who a backend is, apart from the connection that carries it.
//!
//! A backend is named by its service and a [`BackendName`] it brings with it: a v2
//! backend the id it chose, a legacy backend its 16 address bytes and port. The same
//! backend reconnecting is therefore the same backend, and two dispatcher replicas name
//! it alike. [`BackendId`] is the short number this dispatcher gives each backend for
//! its logs and the admin API; [`ConnectionId`] numbers connections, a distinct type so
//! that the two cannot be mixed up.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use loadwise_protocol::v2::ServiceName;

/// This dispatcher's number for one backend, for log lines and the admin API. Numbers
/// are handed out in sequence and never reused while the dispatcher runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u64);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// This dispatcher's number for one connection. A connection carries a backend (or
/// several, for a v2 peer) but is not one: closing it removes the backends it was the
/// last to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// The length of a legacy backend's address bytes.
pub const LEGACY_NAME_LEN: usize = 16;

/// A legacy backend's name: the 16 address bytes and the port of its heartbeats,
/// opaque to the core. The legacy session echoes the bytes verbatim in its replies;
/// the core only compares them, never reads them as an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegacyName {
    pub bytes: [u8; LEGACY_NAME_LEN],
    pub port: u16,
}

impl LegacyName {
    /// The name a legacy reply gives `text:port`: the text NUL-padded to 16 bytes, if
    /// it is an address the legacy field can hold (non-empty printable ASCII, at most
    /// 15 bytes, so that a NUL ends it).
    pub fn from_text(text: &str, port: u16) -> Option<LegacyName> {
        let fits = !text.is_empty() && text.len() < LEGACY_NAME_LEN;
        if !fits || !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return None;
        }
        let mut bytes = [0; LEGACY_NAME_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(LegacyName { bytes, port })
    }

    /// The text up to the first NUL, if the bytes hold one that can be an address:
    /// NUL-terminated within the 16 bytes, non-empty, printable ASCII.
    pub fn text(&self) -> Option<&str> {
        let end = self.bytes.iter().position(|&b| b == 0)?;
        let text = &self.bytes[..end];
        if text.is_empty() || !text.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        std::str::from_utf8(text).ok()
    }
}

impl fmt::Display for LegacyName {
    /// As operators write it: `10.0.0.2:1002`, `[::1]:7000` for an IPv6 literal, and
    /// the bytes in hex when they are not a usable address (they come from the peer).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) if text.contains(':') => write!(f, "[{text}]:{}", self.port),
            Some(text) => write!(f, "{text}:{}", self.port),
            None => {
                for byte in self.bytes {
                    write!(f, "{byte:02x}")?;
                }
                write!(f, ":{}", self.port)
            }
        }
    }
}

/// How a backend names itself, within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendName {
    /// A v2 backend: the 64-bit id it chose.
    Chosen(u64),
    /// A legacy backend: its address bytes and port.
    Legacy(LegacyName),
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendName::Chosen(id) => write!(f, "id {id}"),
            BackendName::Legacy(name) => name.fmt(f),
        }
    }
}

/// The stable identity of a backend: what survives its reconnects, and what an
/// operator's hold is remembered by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub service: ServiceName,
    pub name: BackendName,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.name)
    }
}

/// Hashes a [`BackendId`] or [`ConnectionId`] with one multiply. Ids are numbers the
/// dispatcher hands out in sequence, never chosen by a peer, so the flooding-resistant
/// default hash (SipHash, a sizeable share of a pick's cost) buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the multiply spreads sequential ids over the high bits
        // that the table's probe tags are taken from.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by backend id, with the cheap [`IdHasher`].
pub type IdMap<V> = HashMap<BackendId, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(text: &str, port: u16) -> LegacyName {
        let mut bytes = [0; LEGACY_NAME_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        LegacyName { bytes, port }
    }

    #[test]
    fn a_legacy_backend_reconnecting_has_the_same_key() {
        let service = ServiceName::new("default").unwrap();
        let first =
            BackendKey { service: service.clone(), name: BackendName::Legacy(legacy("10.0.0.2", 7002)) };
        let again = BackendKey { service, name: BackendName::Legacy(legacy("10.0.0.2", 7002)) };
        assert_eq!(first, again);
        assert_ne!(first.name, BackendName::Legacy(legacy("10.0.0.2", 7003)));
    }

    #[test]
    fn a_name_made_from_text_reads_back_as_that_text() {
        let name = LegacyName::from_text("10.0.0.2", 7002).unwrap();
        assert_eq!((name, name.text()), (legacy("10.0.0.2", 7002), Some("10.0.0.2")));
        assert!(LegacyName::from_text("255.255.255.255", 1).is_some(), "15 bytes fit");
        for unfit in ["", "1234567890abcdef", "a b", "caf\u{e9}"] {
            assert_eq!(LegacyName::from_text(unfit, 1), None, "{unfit:?}");
        }
    }

    #[test]
    fn names_print_as_operators_write_them() {
        assert_eq!(BackendName::Legacy(legacy("10.0.0.2", 7002)).to_string(), "10.0.0.2:7002");
        assert_eq!(BackendName::Legacy(legacy("::1", 7000)).to_string(), "[::1]:7000");
        assert_eq!(
            BackendName::Legacy(legacy("a\u{7f}", 1)).to_string(),
            "617f0000000000000000000000000000:1"
        );
        assert_eq!(BackendName::Chosen(42).to_string(), "id 42");
        let key = BackendKey { service: ServiceName::new("game").unwrap(), name: BackendName::Chosen(7) };
        assert_eq!(key.to_string(), "game/id 7");
        assert_eq!(BackendId(3).to_string(), "#3");
        assert_eq!(ConnectionId(3).to_string(), "conn#3");
    }
}

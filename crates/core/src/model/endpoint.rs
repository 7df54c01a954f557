//! Where a backend's clients are sent: the dialable address the core hands out.
//!
//! Not the legacy 16-byte address field: a legacy backend's bytes are its name
//! ([`super::LegacyName`]), echoed by the legacy session; its endpoint is those bytes
//! read as an address, made once by whoever needs to dial it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU16;

use loadwise_protocol::v2::HostName;

use super::key::LegacyName;

/// An IP address or a host name the client resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Name(HostName),
}

/// A host and a non-zero port: somewhere a client can connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: Host,
    pub port: NonZeroU16,
}

impl Endpoint {
    /// The endpoint of a socket address, unless its port is 0.
    pub fn from_socket_addr(addr: SocketAddr) -> Option<Endpoint> {
        let host = match addr.ip() {
            IpAddr::V4(ip) => Host::V4(ip),
            IpAddr::V6(ip) => Host::V6(ip),
        };
        Some(Endpoint { host, port: NonZeroU16::new(addr.port())? })
    }

    /// A legacy backend's name read as an address: its text is an IP address or,
    /// failing that, a host name. `None` when it is neither, or its port is 0.
    pub fn from_legacy(name: &LegacyName) -> Option<Endpoint> {
        let text = name.text()?;
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Endpoint::from_socket_addr((ip, name.port).into());
        }
        let host = Host::Name(HostName::new(text).ok()?);
        Some(Endpoint { host, port: NonZeroU16::new(name.port)? })
    }

    /// The host as text, without the port: `10.0.0.2`, `::1`, `backend-1.example`.
    pub fn host_text(&self) -> String {
        match &self.host {
            Host::V4(ip) => ip.to_string(),
            Host::V6(ip) => ip.to_string(),
            Host::Name(name) => name.as_str().to_owned(),
        }
    }
}

/// `10.0.0.2:1002`, `[::1]:8080`, `backend-1.example:80`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::V4(ip) => write!(f, "{ip}:{}", self.port),
            Host::V6(ip) => write!(f, "[{ip}]:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(text: &str, port: u16) -> LegacyName {
        let mut bytes = [0; 16];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        LegacyName { bytes, port }
    }

    #[test]
    fn a_legacy_name_reads_as_an_ip_or_a_host_name() {
        assert_eq!(Endpoint::from_legacy(&legacy("10.0.0.2", 7002)).unwrap().to_string(), "10.0.0.2:7002");
        assert_eq!(Endpoint::from_legacy(&legacy("::1", 80)).unwrap().to_string(), "[::1]:80");
        assert_eq!(Endpoint::from_legacy(&legacy("db-1", 80)).unwrap().to_string(), "db-1:80");
        assert_eq!(Endpoint::from_legacy(&legacy("10.0.0.2", 0)), None);
        assert_eq!(Endpoint::from_legacy(&legacy("no spaces", 1)), None);
    }
}

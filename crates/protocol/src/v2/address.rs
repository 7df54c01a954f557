//! The endpoint encoding shared by Heartbeat and PickReply: a tagged host, then a port.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU16;

use super::frame::{FieldError, Reader, Writer};
use super::names::HostName;

/// Address tags: the first byte of an endpoint.
pub mod tag {
    /// 4 address bytes follow, in the usual order (`10.0.0.2` is `0a 00 00 02`).
    pub const IPV4: u8 = 1;
    /// 16 address bytes follow, in the usual (network) order.
    pub const IPV6: u8 = 2;
    /// A `str8` host name follows.
    pub const NAME: u8 = 3;
}

/// Where clients connect: an IP address or a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Tag 1.
    V4(Ipv4Addr),
    /// Tag 2.
    V6(Ipv6Addr),
    /// Tag 3: a name the client resolves.
    Name(HostName),
}

/// A host and a non-zero port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address.
    pub host: Host,
    /// The port; 0 cannot be sent.
    pub port: NonZeroU16,
}

impl Endpoint {
    /// The size of the longest endpoint: tag, a 253-byte host name with its length, port.
    pub const MAX_LEN: usize = 1 + 1 + HostName::MAX_LEN + 2;

    /// The endpoint of a socket address, unless its port is 0.
    pub fn from_socket_addr(addr: SocketAddr) -> Option<Endpoint> {
        let host = match addr.ip() {
            std::net::IpAddr::V4(ip) => Host::V4(ip),
            std::net::IpAddr::V6(ip) => Host::V6(ip),
        };
        Some(Endpoint { host, port: NonZeroU16::new(addr.port())? })
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Endpoint, FieldError> {
        let host = match r.u8("address tag")? {
            tag::IPV4 => Host::V4(Ipv4Addr::from(r.array::<4>("ipv4")?)),
            tag::IPV6 => Host::V6(Ipv6Addr::from(r.array::<16>("ipv6")?)),
            tag::NAME => Host::Name(HostName::read(r)?),
            other => return Err(FieldError::AddressTag(other)),
        };
        let port = NonZeroU16::new(r.u16("port")?).ok_or(FieldError::ZeroPort)?;
        Ok(Endpoint { host, port })
    }

    pub(crate) fn write(&self, w: &mut Writer) -> Result<(), FieldError> {
        match &self.host {
            Host::V4(ip) => {
                w.u8(tag::IPV4);
                w.bytes(&ip.octets());
            }
            Host::V6(ip) => {
                w.u8(tag::IPV6);
                w.bytes(&ip.octets());
            }
            Host::Name(name) => {
                w.u8(tag::NAME);
                name.write(w)?;
            }
        }
        w.u16(self.port.get());
        Ok(())
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

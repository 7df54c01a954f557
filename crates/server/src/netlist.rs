//! Lists of IP networks, for deciding which peers may send legacy heartbeats.
//!
//! A legacy heartbeat carries no proof of who sent it, so anyone who can reach the
//! dispatcher could register a backend reporting 0 % and receive every client. The
//! dispatcher therefore accepts legacy heartbeats only from the networks of a
//! [`NetList`]: by default loopback and the private ranges, where the existing C++
//! backends live. Pure: an address in, yes or no out.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Networks, each written `ADDRESS/PREFIX` (a bare address is one host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetList(Vec<IpNet>);

/// The networks legacy heartbeats are accepted from by default: loopback, the IPv4
/// private ranges (RFC 1918), IPv4 link-local, IPv6 unique local and link-local.
pub const PRIVATE_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// A network that is not `ADDRESS/PREFIX` or an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network (write ADDRESS/PREFIX, such as 10.0.0.0/8, or an address)")]
pub struct BadNetwork(pub String);

impl NetList {
    /// No network at all: nothing is allowed.
    pub fn none() -> NetList {
        NetList(Vec::new())
    }

    /// [`PRIVATE_NETWORKS`].
    pub fn private() -> NetList {
        NetList(PRIVATE_NETWORKS.iter().map(|net| net.parse().expect("a valid built-in network")).collect())
    }

    /// Parses each of `networks`.
    pub fn parse<'a>(networks: impl IntoIterator<Item = &'a str>) -> Result<NetList, BadNetwork> {
        networks.into_iter().map(parse_network).collect::<Result<_, _>>().map(NetList)
    }

    /// True when `ip` is in one of the networks. An IPv4 peer seen on an IPv6 socket
    /// (`::ffff:10.0.0.2`) is judged as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as written by [`Display`](fmt::Display) one by one.
    pub fn networks(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(ToString::to_string)
    }
}

fn parse_network(text: &str) -> Result<IpNet, BadNetwork> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| BadNetwork(text.to_owned()))
}

impl FromStr for NetList {
    type Err = BadNetwork;

    /// Comma-separated networks; `none` (or nothing) is the empty list.
    fn from_str(text: &str) -> Result<NetList, BadNetwork> {
        match text.trim() {
            "" | "none" => Ok(NetList::none()),
            list => NetList::parse(list.split(',')),
        }
    }
}

impl fmt::Display for NetList {
    /// Comma-separated, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.networks().collect::<Vec<_>>().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_allows_loopback_and_private_ranges_only() {
        let private = NetList::private();
        for allowed in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.1.2.3",
            "172.31.255.1",
            "192.168.0.9",
            "fd00::7",
            "::ffff:10.0.0.2",
        ] {
            assert!(private.contains(ip(allowed)), "{allowed} refused");
        }
        for refused in ["8.8.8.8", "172.32.0.1", "192.169.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!private.contains(ip(refused)), "{refused} allowed");
        }
    }

    #[test]
    fn parses_networks_and_single_addresses() {
        let list: NetList = "10.0.0.0/8, 192.0.2.7, 2001:db8::/32".parse().unwrap();
        assert!(
            list.contains(ip("10.200.0.1"))
                && list.contains(ip("192.0.2.7"))
                && list.contains(ip("2001:db8::5"))
        );
        assert!(!list.contains(ip("192.0.2.8")) && !list.contains(ip("127.0.0.1")));
        assert_eq!(list.to_string(), "10.0.0.0/8,192.0.2.7/32,2001:db8::/32");
        assert_eq!(list.to_string().parse::<NetList>().unwrap(), list);
        // Host bits are dropped, as the network means.
        assert_eq!("10.1.2.3/8".parse::<NetList>().unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn none_allows_nothing_and_bad_networks_are_named() {
        let none: NetList = "none".parse().unwrap();
        assert!(none.is_empty() && !none.contains(ip("127.0.0.1")));
        assert_eq!(none.to_string(), "none");
        assert_eq!("10.0.0.0/33".parse::<NetList>(), Err(BadNetwork("10.0.0.0/33".into())));
        assert_eq!("10.0.0.0/8,lan".parse::<NetList>(), Err(BadNetwork("lan".into())));
    }
}

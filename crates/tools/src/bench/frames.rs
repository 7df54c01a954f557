//! The bytes the bench sends and how it judges each reply (legacy protocol, no I/O).

use std::net::Ipv4Addr;

use loadwise_protocol::{Heartbeat, IpField, LoginReply, LoginRequest, unix_time_now};

use super::outcome::ErrorKind;

/// Size of a login request frame.
pub const LOGIN_LEN: usize = LoginRequest::LEN;
/// Size of a heartbeat frame.
pub const HEARTBEAT_LEN: usize = Heartbeat::LEN;
/// Size of a reply frame.
pub const REPLY_LEN: usize = LoginReply::LEN;

/// A login stamped with `timestamp` (unix seconds).
pub fn login(timestamp: u64) -> [u8; LOGIN_LEN] {
    LoginRequest { timestamp }.encode()
}

/// A login stamped now.
pub fn login_now() -> [u8; LOGIN_LEN] {
    login(unix_time_now())
}

/// The address fake backend `index` advertises: `10.B.C.D` and a port that both
/// follow from the index, so every backend is distinct.
pub fn backend_address(index: usize) -> (IpField, u16) {
    let (ip, port) = backend_ipv4(index);
    let ip = IpField::from_text(&ip.to_string()).expect("a dotted quad fits the ip field");
    (ip, port)
}

/// [`backend_address`] as an IPv4 address, for v2 endpoints.
pub fn backend_ipv4(index: usize) -> (Ipv4Addr, u16) {
    let [_, b, c, d] = (index as u32).to_be_bytes();
    let port = 1024 + (index % 60_000) as u16;
    (Ipv4Addr::new(10, b, c, d), port)
}

/// The load fake backend `index` reports on its `tick`-th heartbeat: 0 to 100,
/// different from one tick to the next so the selector keeps reordering.
pub fn backend_load(index: usize, tick: u64) -> u8 {
    ((index as u64).wrapping_mul(37).wrapping_add(tick.wrapping_mul(11)) % 101) as u8
}

/// A heartbeat from `ip:port` reporting `mem` percent.
pub fn heartbeat(ip: IpField, port: u16, mem: u8) -> [u8; HEARTBEAT_LEN] {
    Heartbeat { mem, ip, port }.encode()
}

/// How one reply is counted.
pub fn classify(reply: &[u8; REPLY_LEN]) -> Result<(), ErrorKind> {
    match LoginReply::decode(reply) {
        Ok(LoginReply::Backend { ip, port }) if port != 0 && ip.text().is_ok() => Ok(()),
        Ok(LoginReply::Backend { .. }) | Err(_) => Err(ErrorKind::Malformed),
        Ok(LoginReply::Error) => Err(ErrorKind::ErrorReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_by_kind() {
        let ip = IpField::from_text("10.0.0.2").unwrap();
        assert_eq!(classify(&LoginReply::Backend { ip, port: 7 }.encode()), Ok(()));
        assert_eq!(classify(&LoginReply::Error.encode()), Err(ErrorKind::ErrorReply));
        assert_eq!(classify(&[0xab; REPLY_LEN]), Err(ErrorKind::Malformed));
        assert_eq!(classify(&LoginReply::Backend { ip, port: 0 }.encode()), Err(ErrorKind::Malformed));
        let empty = IpField::from_bytes([0; 16]);
        assert_eq!(classify(&LoginReply::Backend { ip: empty, port: 7 }.encode()), Err(ErrorKind::Malformed));
    }

    #[test]
    fn backend_addresses_are_distinct_and_valid() {
        let a = backend_address(0);
        let b = backend_address(70_000);
        assert_ne!(a, b);
        assert_eq!(b.0.text(), Ok("10.1.17.112"));
        assert!(heartbeat(a.0, a.1, 5)[..4] == [23, 0, 0, 0]);
    }

    #[test]
    fn loads_are_percentages_that_change() {
        assert!((0..1000).all(|t| backend_load(3, t) <= 100));
        assert_ne!(backend_load(3, 0), backend_load(3, 1));
    }
}

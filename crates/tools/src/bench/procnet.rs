//! Finds the local process listening on a TCP port: `/proc/net/tcp{,6}` inode, then `/proc/*/fd`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// The TCP state number of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// Inodes of the listening sockets that accept connections to `target`, in the
/// text of `/proc/net/tcp` or `/proc/net/tcp6`: same port, and bound to the
/// target's address, to a wildcard address, or to loopback when the target is.
pub fn listening_inodes(table: &str, target: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (ip, port) = parse_local(cols.get(1)?)?;
            let accepts = port == target.port() && *cols.get(3)? == LISTEN && accepts_for(ip, target.ip());
            accepts.then(|| cols.get(9)?.parse().ok()).flatten()
        })
        .collect()
}

fn accepts_for(bound: IpAddr, target: IpAddr) -> bool {
    bound.is_unspecified() || bound == target || (bound.is_loopback() && target.is_loopback())
}

/// Parses `0100007F:1F90`: the address as the kernel's 32-bit words in host
/// (little-endian) byte order, then the port in hex.
fn parse_local(text: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|i| Some(u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?.to_le_bytes()))
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?).to_canonical(),
        _ => return None,
    };
    Some((ip, port))
}

/// The inode of a `socket:[N]` descriptor link.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The local process that accepts connections to `target`, if this user can see
/// it (other users' descriptors are unreadable without privileges).
pub fn find_listener(target: SocketAddr) -> Option<u32> {
    let inodes: HashSet<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, target))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        owns_any(pid, &inodes).then_some(pid)
    })
}

fn owns_any(pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| socket_inode(&link.to_string_lossy()))
        .any(|inode| inodes.contains(&inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2153 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 55501 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2153 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 55502 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_are_found() {
        let at = |text: &str| listening_inodes(TABLE, text.parse().unwrap());
        assert_eq!(at("127.0.0.1:8531"), vec![55501]);
        assert!(at("10.0.0.9:8531").is_empty(), "bound to loopback only");
        assert_eq!(at("10.0.0.9:22"), vec![1234]);
        assert!(at("127.0.0.1:80").is_empty());
    }

    #[test]
    fn ipv6_rows_are_parsed() {
        let (ip, port) = parse_local("00000000000000000000000001000000:1F90").unwrap();
        assert_eq!((ip, port), ("::1".parse().unwrap(), 8080));
        let (ip, _) = parse_local("0000000000000000FFFF00000100007F:0016").unwrap();
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[55501]"), Some(55501));
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn finds_this_process_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(find_listener(listener.local_addr().unwrap()), Some(std::process::id()));
    }
}

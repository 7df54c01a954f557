//! Opening the bench's client connections: timeouts, error kinds, retry with a pause,
//! and on loopback a source address per client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::control::Control;
use super::outcome::{ErrorKind, Tally};

/// Pause after a failed connection attempt, so a dead target does not spin a core.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How many loopback source addresses client connections take turns on:
/// 127.0.0.2 and the 4095 after it.
pub const CLIENT_SOURCES: u32 = 4096;

/// The turn of the next client connection, process-wide.
static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// Where the next client connection to `target` comes from: for a target in
/// 127.0.0.0/8, the next of [`CLIENT_SOURCES`] loopback addresses from 127.0.0.2 on,
/// in turn. Real clients come from many hosts, and the dispatcher caps connections
/// per peer address; from 127.0.0.1 alone a run of many clients would hit that cap.
/// `None` for any other target: the system chooses.
pub fn client_source(target: SocketAddr) -> Option<IpAddr> {
    let IpAddr::V4(ip) = target.ip() else { return None };
    if !ip.is_loopback() {
        return None;
    }
    let turn = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % CLIENT_SOURCES;
    Some(IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + turn)))
}

/// One connection attempt bounded by `timeout`, with `TCP_NODELAY` set (every
/// batch is one write and latency matters). For a backend, or anything that should
/// come from the system's choice of address.
pub async fn connect_once(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    connect_from(None, addr, timeout).await
}

/// [`connect_once`] for a client connection: from the [`client_source`] of `addr`.
pub async fn connect_client(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    connect_from(client_source(addr), addr, timeout).await
}

async fn connect_from(
    source: Option<IpAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ErrorKind> {
    let connect = async {
        let Some(source) = source else { return TcpStream::connect(addr).await };
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(addr).await
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => {
            stream.set_nodelay(true).map_err(|e| ErrorKind::of_io(&e))?;
            Ok(stream)
        }
        Ok(Err(error)) => Err(ErrorKind::of_connect(&error)),
        Err(_) => Err(ErrorKind::Timeout),
    }
}

/// Connects a client, retrying after a pause while sending goes on; each failed
/// attempt is counted in `tally`. Gives up (`None`) when sending stops or when attempts have
/// failed for longer than `timeout` in a row.
pub async fn reconnect(
    addr: SocketAddr,
    timeout: Duration,
    control: &Control,
    tally: &mut Tally,
) -> Option<TcpStream> {
    let started = Instant::now();
    loop {
        if control.is_stopped() {
            return None;
        }
        match connect_client(addr, timeout).await {
            Ok(stream) => return Some(stream),
            Err(kind) => tally.errors.add(kind, 1),
        }
        if started.elapsed() >= timeout {
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_PAUSE) => {}
            () = control.stopped() => return None,
        }
    }
}

/// Opens `n` client connections, at most `parallel` attempts at a time.
pub async fn connect_many(
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
    parallel: usize,
) -> Vec<Result<TcpStream, ErrorKind>> {
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < parallel {
            set.spawn(connect_client(addr, timeout));
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(result)) => out.push(result),
            Some(Err(_)) => out.push(Err(ErrorKind::ConnectError)),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_clients_take_turns_on_source_addresses_and_others_do_not() {
        let target: SocketAddr = "127.0.0.1:8523".parse().unwrap();
        let sources: Vec<IpAddr> = (0..CLIENT_SOURCES + 1).filter_map(|_| client_source(target)).collect();
        // Other tests may take turns meanwhile: check the range, and that turns differ.
        let low = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        for source in &sources {
            let IpAddr::V4(ip) = source else { panic!("{source}") };
            assert!((low..low + CLIENT_SOURCES).contains(&u32::from(*ip)), "{ip}");
        }
        assert!(sources.windows(2).any(|pair| pair[0] != pair[1]));
        assert_eq!(client_source("10.0.0.1:8523".parse().unwrap()), None);
        assert_eq!(client_source("[::1]:8523".parse().unwrap()), None);
    }
}

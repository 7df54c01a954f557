//! Opening the bench's client connections: timeouts, error kinds, retry with a pause.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::control::Control;
use super::outcome::{ErrorKind, Tally};

/// Pause after a failed connection attempt, so a dead target does not spin a core.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// One connection attempt bounded by `timeout`, with `TCP_NODELAY` set (every
/// batch is one write and latency matters).
pub async fn connect_once(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            stream.set_nodelay(true).map_err(|e| ErrorKind::of_io(&e))?;
            Ok(stream)
        }
        Ok(Err(error)) => Err(ErrorKind::of_connect(&error)),
        Err(_) => Err(ErrorKind::Timeout),
    }
}

/// Connects, retrying after a pause while sending goes on; each failed attempt is
/// counted in `tally`. Gives up (`None`) when sending stops or when attempts have
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
        match connect_once(addr, timeout).await {
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

/// Opens `n` connections, at most `parallel` attempts at a time.
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
            set.spawn(connect_once(addr, timeout));
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

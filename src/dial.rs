//! Outgoing connections for the agent and the client: resolve a name, try each address.

use tokio::net::TcpStream;

/// Why no connection to a `HOST:PORT` could be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {server}: {source}")]
    Resolve { server: String, source: std::io::Error },
    #[error("{server} resolves to no address")]
    NoAddress { server: String },
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: std::io::Error },
}

/// Sets `TCP_NODELAY` and refuses a connection to itself: connecting to a free
/// port in the ephemeral range can, rarely, pick that same port as the source and
/// "connect" by simultaneous open, leaving an agent heart-beating into itself.
fn checked(stream: TcpStream) -> std::io::Result<TcpStream> {
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connected to itself"));
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resolves `server` afresh and connects to the first of its addresses that
/// accepts, with `TCP_NODELAY` set (every frame is small and latency-bound).
pub async fn connect(server: &str) -> Result<TcpStream, DialError> {
    let addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|source| DialError::Resolve { server: server.to_owned(), source })?;
    let mut last_error = DialError::NoAddress { server: server.to_owned() };
    for addr in addrs {
        match TcpStream::connect(addr).await.and_then(checked) {
            Ok(stream) => return Ok(stream),
            Err(source) => last_error = DialError::Connect { server: server.to_owned(), source },
        }
    }
    Err(last_error)
}

//! Outgoing connections for the agent and the client: resolve a name, try each address.

use tokio::net::TcpStream;

/// Why no connection to a `HOST:PORT` could be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {server}: {source}")]
    Resolve {
        server: String,
        source: std::io::Error,
    },
    #[error("{server} resolves to no address")]
    NoAddress { server: String },
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
}

/// Resolves `server` afresh and connects to the first of its addresses that
/// accepts, with `TCP_NODELAY` set (every frame is small and latency-bound).
pub async fn connect(server: &str) -> Result<TcpStream, DialError> {
    let addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|source| DialError::Resolve {
            server: server.to_owned(),
            source,
        })?;
    let mut last_error = DialError::NoAddress {
        server: server.to_owned(),
    };
    for addr in addrs {
        match TcpStream::connect(addr)
            .await
            .and_then(|s| s.set_nodelay(true).map(|()| s))
        {
            Ok(stream) => return Ok(stream),
            Err(source) => {
                last_error = DialError::Connect {
                    server: server.to_owned(),
                    source,
                }
            }
        }
    }
    Err(last_error)
}

//! One health check against the backend: a TCP connect, or (with the `http-check`
//! feature) an HTTP GET whose status must be 2xx, within a timeout.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::check_spec::{CheckAddr, CheckTarget};

/// Why one check failed; logged as the reason when the backend turns unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[cfg(feature = "http-check")]
    #[error("HTTP request to {addr} failed: {error}")]
    Http { addr: String, error: hyper::Error },
    #[cfg(feature = "http-check")]
    #[error("HTTP status {status} from {url} (2xx expected)")]
    Status { url: String, status: u16 },
}

/// Runs one check of `target`, where `advertised` stands for the plain `tcp` check's
/// address; passes or says why not, within `timeout`.
pub async fn run_once(
    target: &CheckTarget,
    advertised: &CheckAddr,
    timeout: Duration,
) -> Result<(), CheckFailure> {
    let check = async {
        match target {
            CheckTarget::Tcp(addr) => connect(addr.as_ref().unwrap_or(advertised)).await.map(drop),
            CheckTarget::Http { addr, path } => http(addr, path).await,
        }
    };
    tokio::time::timeout(timeout, check).await.unwrap_or(Err(CheckFailure::Timeout(timeout)))
}

/// Opens a TCP connection (a name is resolved on every check, so a moved backend is
/// followed).
async fn connect(addr: &CheckAddr) -> Result<TcpStream, CheckFailure> {
    TcpStream::connect((addr.host(), addr.port()))
        .await
        .map_err(|error| CheckFailure::Connect { addr: addr.to_string(), error })
}

/// `GET path` over HTTP/1.1 on a fresh connection, closed afterwards; only the status
/// is read.
#[cfg(feature = "http-check")]
async fn http(addr: &CheckAddr, path: &str) -> Result<(), CheckFailure> {
    use http_body_util::Empty;
    use hyper::body::Bytes;

    let stream = connect(addr).await?;
    let failed = |error| CheckFailure::Http { addr: addr.to_string(), error };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(failed)?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::USER_AGENT, concat!("loadwise-agent/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .expect("a path checked when parsed, and fixed headers");
    // The connection is driven here rather than by a spawned task, so the check's
    // timeout bounds all of it and nothing outlives the check. With `Connection:
    // close` it may finish in the same poll that reads the answer, which it has
    // then handed to the request: the request's future still says how it went.
    let mut response = std::pin::pin!(sender.send_request(request));
    let mut connection = std::pin::pin!(connection);
    let response = tokio::select! {
        response = &mut response => response,
        closed = &mut connection => {
            closed.map_err(failed)?;
            response.await
        }
    }
    .map_err(failed)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(CheckFailure::Status { url: format!("http://{addr}{path}"), status: status.as_u16() })
    }
}

/// Refused by `HealthCheck::validate` before any check runs.
#[cfg(not(feature = "http-check"))]
async fn http(_addr: &CheckAddr, _path: &str) -> Result<(), CheckFailure> {
    unreachable!("an HTTP check without the http-check feature is refused by validate")
}

//! Why a run could not be made (errors during a run are counted, not returned).

use std::net::SocketAddr;

use loadwise_server::ServerError;

use super::backends::RegistrationFailed;
use super::config::InvalidSetting;
use super::outcome::ErrorKind;

/// Why a run could not be made (errors during a run are counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    #[error("cannot start the in-process dispatcher: {0}")]
    Server(#[from] ServerError),
    #[error("cannot start an in-process server: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to {addr}: {kind}")]
    Unreachable { addr: SocketAddr, kind: ErrorKind },
    #[error("cannot set up the fake backends at {addr}")]
    Backends { addr: SocketAddr, source: RegistrationFailed },
}

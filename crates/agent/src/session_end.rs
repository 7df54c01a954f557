//! Why one connection to a dispatcher ended, whichever protocol it spoke.

use std::time::Duration;

use loadwise_client::dial::DialError;
use loadwise_protocol::codec::v2::PeerCodecError;
use loadwise_protocol::v2::ErrorMessage;

/// Why one connection to the dispatcher ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionEnd {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("the dispatcher closed the connection")]
    ClosedByPeer,
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent is stopping")]
    Stopped,
    #[error("the backend is draining: the legacy protocol leaves the table")]
    Draining,
    #[error("the backend is unhealthy: the legacy protocol leaves the table")]
    Unhealthy,
    #[error("the dispatcher refused: {} {}", .0.code, .0.text)]
    Refused(ErrorMessage),
    #[error("registering took longer than {0:?}")]
    RegisterTimeout(Duration),
    #[error("the dispatcher broke the protocol: {0}")]
    Protocol(#[from] PeerCodecError),
}

//! The limits each connection applies: timeouts, frame lengths, who may send legacy
//! heartbeats, the v2 secret; and those a reload changes while connections stay open.

use std::time::Duration;

use crate::netlist::NetList;
use loadwise_protocol::MAX_FRAME_LEN;
use loadwise_protocol::v2::DEFAULT_MAX_V2_FRAME_LEN;
use loadwise_protocol::v2::auth::Secret;

/// Per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection holding an incomplete frame for this long is closed.
    pub frame_timeout: Duration,
    /// A connection that has not sent a heartbeat, login or pick this long after it
    /// was accepted (its TLS handshake included) is closed: until then it holds a
    /// place in the small pending headroom.
    pub first_frame_timeout: Duration,
    /// A connection that does no work (no heartbeat, login or well-formed v2 message)
    /// for this long is closed, whatever else it sends; `None` keeps idle connections
    /// open.
    pub idle_timeout: Option<Duration>,
    /// A connection whose peer does not take its replies for this long is closed.
    pub write_timeout: Duration,
    /// The longest frame accepted; longer ones are protocol errors.
    pub max_frame_len: u16,
    /// The networks legacy heartbeats are accepted from: they carry no proof of who
    /// sent them, so a stranger's heartbeat reporting 0 % would capture every client.
    pub legacy_heartbeats: NetList,
    /// The longest v2 frame accepted. v2 frames are buffered whole before they are
    /// decoded, so this bounds what one connection can make the dispatcher hold.
    pub max_v2_frame_len: u16,
    /// The shared secret v2 backends must prove they know before they register, and
    /// that tickets are signed with; `None` accepts v2 heartbeats unauthenticated
    /// and issues no tickets.
    pub secret: Option<Secret>,
    /// How long a ticket in a v2 PickReply stays valid.
    pub ticket_lifetime: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            frame_timeout: Duration::from_secs(30),
            // The original backends send their first heartbeat a second after they
            // connect, and clients log in at once: five seconds is ample for both.
            first_frame_timeout: Duration::from_secs(5),
            // Backends send every second and clients log in as soon as they
            // connect, so a minute of silence means a peer that holds a slot for
            // nothing.
            idle_timeout: Some(Duration::from_secs(60)),
            write_timeout: Duration::from_secs(10),
            max_frame_len: MAX_FRAME_LEN,
            legacy_heartbeats: NetList::private(),
            max_v2_frame_len: DEFAULT_MAX_V2_FRAME_LEN,
            secret: None,
            ticket_lifetime: Duration::from_secs(30),
        }
    }
}

/// The settings a reload can change while connections stay open (besides the
/// dispatcher's and the budgets, which have their own).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LiveLimits {
    pub connection: ConnectionLimits,
    pub shutdown_grace: Duration,
}

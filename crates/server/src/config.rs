//! What a server is started with: its settings, their defaults and their checks, and
//! why it could not start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::connection::budget::BudgetSizes;
use crate::limits::ConnectionLimits;
use crate::limits::LiveLimits;
use crate::tls::TlsError;
use loadwise_core::dispatcher::DispatchSettings;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::entropy::NoRandomness;
use loadwise_protocol::v2;
use loadwise_protocol::{Heartbeat, MAX_FRAME_LEN};

/// The dispatcher's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8523";

/// Everything `loadwise serve` can be told. Defaults are the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub dispatch: DispatchSettings,
    pub connection: ConnectionLimits,
    /// The most client connections open at once (those that have sent a login or
    /// a pick and no heartbeat); a further one gets the error reply and is closed.
    /// Backend connections have `dispatch.max_backends` as theirs.
    pub max_client_connections: usize,
    /// The most connections open at once that have not yet said what they are;
    /// further ones are closed as they arrive. They are short-lived (see
    /// `connection.first_frame_timeout`), so little headroom suffices.
    pub max_pending_connections: usize,
    /// The most client and pending connections open at once from one IP address,
    /// so that one host cannot fill the pending headroom or the client budget.
    pub max_connections_per_peer: usize,
    /// How long shutdown waits for connections to finish before stopping them.
    pub shutdown_grace: Duration,
    /// A second listener whose connections speak TLS; `None` for none.
    pub tls: Option<TlsListen>,
}

/// Where TLS connections are accepted, and the certificate they are served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub listen: SocketAddr,
    /// PEM file: the server certificate, then any intermediates.
    pub cert: std::path::PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("the default listen address parses"),
            dispatch: DispatchSettings::default(),
            connection: ConnectionLimits::default(),
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// The default client budget: with the default `max_backends` (10 000) and pending
/// headroom it fits a hard open-file limit of 20 000.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 8_192;

/// The default pending headroom. Legacy backends send their first heartbeat a
/// second after connecting, so this is also about how many may connect within one
/// second.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 1_024;

/// The default cap per peer address: room for many clients behind one NAT, which
/// connect once per login, yet a quarter of the pending headroom.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

impl ServerConfig {
    /// The size of each connection budget.
    pub fn budgets(&self) -> BudgetSizes {
        BudgetSizes {
            backends: self.dispatch.max_backends,
            clients: self.max_client_connections,
            pending: self.max_pending_connections,
            per_peer: self.max_connections_per_peer,
        }
    }

    /// Rejects settings that would make the dispatcher useless or unsafe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be greater than zero";
        ensure(!self.dispatch.ttl.is_zero(), "ttl", positive)?;
        ensure(self.dispatch.max_backends > 0, "max-backends", "must be at least 1")?;
        self.dispatch.load.validate()?;
        self.dispatch.validate_affinity()?;
        ensure(self.max_client_connections > 0, "max-client-connections", "must be at least 1")?;
        ensure(self.max_pending_connections > 0, "max-pending-connections", "must be at least 1")?;
        ensure(self.max_connections_per_peer > 0, "max-connections-per-peer", "must be at least 1")?;
        ensure(!self.connection.frame_timeout.is_zero(), "frame-timeout", positive)?;
        ensure(!self.connection.first_frame_timeout.is_zero(), "first-frame-timeout", positive)?;
        ensure(!self.connection.write_timeout.is_zero(), "write-timeout", positive)?;
        let idle_ok = self.connection.idle_timeout.is_none_or(|t| !t.is_zero());
        ensure(idle_ok, "idle-timeout", "must be greater than zero, or off")?;
        let whole_seconds = self.dispatch.max_clock_skew.subsec_nanos() == 0;
        ensure(whole_seconds, "max-clock-skew", "must be whole seconds (login timestamps are in seconds)")?;
        let frame_ok = usize::from(self.connection.max_frame_len) >= Heartbeat::LEN;
        let reason = format!("must be from {} (a heartbeat) to {MAX_FRAME_LEN}", Heartbeat::LEN);
        ensure(frame_ok, "max-frame-len", &reason)?;
        let v2_frame_ok = usize::from(self.connection.max_v2_frame_len) >= v2::MAX_MESSAGE_LEN;
        let reason =
            format!("must be from {} (the largest v2 message) to {MAX_FRAME_LEN}", v2::MAX_MESSAGE_LEN);
        ensure(v2_frame_ok, "max-v2-frame-len", &reason)?;
        // Port 0 twice is two ephemeral ports; any other port twice cannot be bound.
        let tls_apart =
            self.tls.as_ref().is_none_or(|tls| tls.listen.port() == 0 || tls.listen != self.listen);
        ensure(
            tls_apart,
            "tls-listen",
            "must differ from listen (one port speaks plain TCP, the other TLS)",
        )?;
        let lifetime = self.connection.ticket_lifetime;
        // A ticket is a pass to one backend; one valid for longer than a day outlives
        // any reason to hold it, and a leaked one would stay usable as long.
        let lifetime_ok = (Duration::from_secs(1)..=MAX_TICKET_LIFETIME).contains(&lifetime)
            && lifetime.subsec_nanos() == 0;
        ensure(
            lifetime_ok,
            "ticket-lifetime",
            "must be whole seconds, from 1 to 86400 (a day; tickets carry unix seconds)",
        )
    }
}

/// The longest a ticket may be valid for: a day.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(86_400);

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // The I/O error is part of the message rather than a `source`, so that the
    // hint follows it and error chains do not print it twice.
    #[error("cannot listen on {addr}: {error}{hint}", hint = bind_hint(error))]
    Bind { addr: SocketAddr, error: std::io::Error },
    /// The TLS certificate or key could not be used; the error names the file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Nonces for challenges and tickets cannot be drawn.
    #[error(transparent)]
    NoRandomness(#[from] NoRandomness),
}

fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => " (is another dispatcher already running on this port?)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

/// The settings of `config` a reload can change while connections stay open.
pub(crate) fn live_limits(config: &ServerConfig) -> LiveLimits {
    LiveLimits { connection: config.connection.clone(), shutdown_grace: config.shutdown_grace }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_settings_are_named() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
        let mut config = ServerConfig::default();
        config.connection.max_frame_len = 22;
        assert_eq!(config.validate().unwrap_err().setting, "max-frame-len");
        for (config, setting) in [
            (ServerConfig { max_client_connections: 0, ..ServerConfig::default() }, "max-client-connections"),
            (
                ServerConfig { max_pending_connections: 0, ..ServerConfig::default() },
                "max-pending-connections",
            ),
            (
                ServerConfig { max_connections_per_peer: 0, ..ServerConfig::default() },
                "max-connections-per-peer",
            ),
        ] {
            assert_eq!(config.validate().unwrap_err().setting, setting);
        }
        let mut config = ServerConfig::default();
        config.connection.first_frame_timeout = Duration::ZERO;
        assert_eq!(config.validate().unwrap_err().setting, "first-frame-timeout");
        let tls =
            |listen: &str| TlsListen { listen: listen.parse().unwrap(), cert: "c".into(), key: "k".into() };
        let listen = "127.0.0.1:8523".parse().unwrap();
        let config = ServerConfig { listen, tls: Some(tls("127.0.0.1:8523")), ..ServerConfig::default() };
        assert_eq!(config.validate().unwrap_err().setting, "tls-listen");
        let config = ServerConfig { listen, tls: Some(tls("127.0.0.1:8525")), ..ServerConfig::default() };
        assert_eq!(config.validate(), Ok(()));
        let ephemeral = "127.0.0.1:0".parse().unwrap();
        let config =
            ServerConfig { listen: ephemeral, tls: Some(tls("127.0.0.1:0")), ..ServerConfig::default() };
        assert_eq!(config.validate(), Ok(()));
    }
}

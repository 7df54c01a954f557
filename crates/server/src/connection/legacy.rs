//! The legacy protocol's rules at the core's boundary: who may send heartbeats and
//! what is logged of them; a login becomes a pick request, and a pick outcome becomes
//! the 22-byte reply, with the 16 address bytes echoed verbatim
//! (docs/legacy-protocol.md).

use std::net::SocketAddr;

use crate::log_limit::RateLimitedLog;
use crate::stats::{WireStats, bump};
use loadwise_core::dispatcher::{Batch, Dispatcher, HeartbeatAccepted};
use loadwise_core::model::ConnectionId;
use loadwise_core::model::{Clocks, Destination, LegacyName, LegacyReport, Load, PickOutcome, PickRequest};
use loadwise_protocol::{AddressError, Heartbeat, IpField, LoginReply, LoginRequest};

/// The legacy heartbeat rules, as they apply to one connection's peer.
pub(super) struct Heartbeats<'a> {
    /// The connection the heartbeats arrive on.
    pub connection: ConnectionId,
    pub peer: SocketAddr,
    /// Whether the peer's address is in the legacy heartbeat networks.
    pub allowed: bool,
    pub dispatcher: &'a Dispatcher,
    /// The server's wire counters.
    pub wire: &'a WireStats,
    /// Rate-limits the warnings about peers outside those networks.
    pub door_log: &'a RateLimitedLog,
    /// Rate-limits the warnings about refused heartbeats.
    pub refusal_log: &'a RateLimitedLog,
}

impl Heartbeats<'_> {
    /// Applies a legacy heartbeat: refused from a peer outside the allowed networks,
    /// otherwise registered or updated; what changed is logged with the lock released.
    pub(super) fn apply(&self, heartbeat: &Heartbeat, batch: &mut Batch<'_>) {
        if tracing::enabled!(tracing::Level::TRACE) {
            batch.unlock();
            tracing::trace!(?heartbeat, "heartbeat");
        }
        if !self.allowed {
            self.refuse_unlisted(heartbeat, batch);
            return;
        }
        let report = match legacy_report(heartbeat) {
            Ok(report) => report,
            Err(error) => return self.refuse_address(heartbeat, &error, batch),
        };
        let outcome = batch.heartbeat(self.connection, &report);
        if let Ok(HeartbeatAccepted { registered: false, first_invalid_report: false, .. }) = outcome {
            return;
        }
        // What follows is logged, and a log write may block: not while holding the
        // lock that every other connection needs.
        batch.unlock();
        match outcome {
            Ok(accepted) => {
                if accepted.registered {
                    tracing::info!(service = %self.dispatcher.default_service(), backend = %heartbeat.ip.with_port(heartbeat.port), mem = heartbeat.mem, id = %accepted.id, connection = %self.connection, "backend registered");
                }
                if accepted.first_invalid_report {
                    tracing::warn!(service = %self.dispatcher.default_service(), backend = %heartbeat.ip.with_port(heartbeat.port), mem = heartbeat.mem,
                        "backend reports memory above 100%; ranking it after every valid report (an old sender?)");
                }
            }
            Err(refused) => self.log_refusal(heartbeat, &refused, batch.now()),
        }
    }

    /// Counts and logs a legacy heartbeat whose address no client could use; the
    /// backend is not registered.
    fn refuse_address(&self, heartbeat: &Heartbeat, error: &AddressError, batch: &mut Batch<'_>) {
        let stats = self.dispatcher.stats();
        for counter in [&stats.heartbeats, &stats.refused_heartbeats] {
            bump(counter);
        }
        batch.unlock();
        self.log_refusal(heartbeat, &format_args!("unusable address: {error}"), batch.now());
    }

    /// Refused heartbeats are all counted but logged at most once a second across
    /// all connections, so misconfigured backends cannot flood the log.
    /// Counts and logs a legacy heartbeat from a peer outside the allowed networks;
    /// the backend is not registered. Logins on the connection are still answered.
    fn refuse_unlisted(&self, heartbeat: &Heartbeat, batch: &mut Batch<'_>) {
        let stats = self.dispatcher.stats();
        for counter in [&stats.heartbeats, &stats.refused_heartbeats, &self.wire.heartbeats_not_allowed] {
            bump(counter);
        }
        batch.unlock();
        if let Some(suppressed) = self.door_log.should_log(batch.now()) {
            tracing::warn!(peer = %self.peer, backend = %heartbeat.ip.with_port(heartbeat.port), suppressed,
                "legacy heartbeat refused: the peer is not in legacy_heartbeat_networks (with auth_secret_file set, none unless listed)");
        }
    }

    fn log_refusal(&self, heartbeat: &Heartbeat, refused: &dyn std::fmt::Display, now: std::time::Instant) {
        if let Some(suppressed) = self.refusal_log.should_log(now) {
            let backend = heartbeat.ip.with_port(heartbeat.port);
            tracing::warn!(peer = %self.peer, %backend, error = %refused, suppressed, "heartbeat refused");
        }
    }
}

/// The core's report of a legacy heartbeat, if its address is one a client could
/// use: the 16 address bytes kept verbatim as the backend's name, `mem` as a percent
/// (above 100 it is not one, and the core ranks it last).
pub fn legacy_report(heartbeat: &Heartbeat) -> Result<LegacyReport, AddressError> {
    heartbeat.validate_address()?;
    let name = LegacyName { bytes: *heartbeat.ip.as_bytes(), port: heartbeat.port };
    Ok(LegacyReport { name, load: Load::from_percent(f64::from(heartbeat.mem)) })
}

/// The pick a login asks for, its timestamp checked against `unix_now`.
pub(super) fn pick_request(login: LoginRequest, unix_now: u64) -> PickRequest<'static> {
    PickRequest::login(Clocks { client: login.timestamp, dispatcher: unix_now })
}

/// The reply a login is owed: the backend's address bytes and port, or the error
/// reply for every refusal (the legacy protocol has no other).
pub(super) fn login_reply(outcome: &PickOutcome) -> LoginReply {
    match outcome {
        PickOutcome::Picked(picked) => match picked.to {
            Destination::Legacy(name) => {
                LoginReply::Backend { ip: IpField::from_bytes(name.bytes), port: name.port }
            }
            // A login asks for the legacy form: the core answers in it.
            Destination::Chosen { .. } | Destination::LegacyEndpoint { .. } => LoginReply::Error,
        },
        PickOutcome::NoBackend
        | PickOutcome::NoFreePlace
        | PickOutcome::UnknownService
        | PickOutcome::ClockSkew { .. } => LoginReply::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadwise_core::model::{LegacyName, Picked};
    use loadwise_core::registry::BackendId;

    #[test]
    fn a_heartbeat_becomes_its_bytes_and_load_and_an_unusable_address_is_refused() {
        let heartbeat = Heartbeat { mem: 182, ip: IpField::from_text("10.0.0.2").unwrap(), port: 1002 };
        let report = legacy_report(&heartbeat).unwrap();
        assert_eq!(report.name, LegacyName { bytes: *heartbeat.ip.as_bytes(), port: 1002 });
        assert_eq!(report.load, Load::from_percent(182.0));
        let empty = Heartbeat { mem: 1, ip: IpField::from_bytes([0; 16]), port: 1 };
        let unterminated = Heartbeat { mem: 1, ip: IpField::from_bytes([b'1'; 16]), port: 1 };
        let zero_port = Heartbeat { port: 0, ..heartbeat };
        assert_eq!(legacy_report(&empty), Err(AddressError::Empty));
        assert_eq!(legacy_report(&unterminated), Err(AddressError::Unterminated));
        assert_eq!(legacy_report(&zero_port), Err(AddressError::ZeroPort));
    }

    #[test]
    fn a_picked_backend_gets_its_bytes_back_verbatim_and_a_refusal_the_error_reply() {
        let bytes = *b"10.0.0.2\0\xff\xfe\0\0\0\0\0";
        let picked = Picked { id: BackendId(1), to: Destination::Legacy(LegacyName { bytes, port: 1002 }) };
        let reply = login_reply(&PickOutcome::Picked(picked));
        assert_eq!(reply, LoginReply::Backend { ip: IpField::from_bytes(bytes), port: 1002 });
        assert_eq!(login_reply(&PickOutcome::NoBackend), LoginReply::Error);
        let clocks = Clocks { client: 0, dispatcher: 100 };
        assert_eq!(login_reply(&PickOutcome::ClockSkew { clocks, skew_secs: 100 }), LoginReply::Error);
        assert_eq!(
            pick_request(LoginRequest { timestamp: 7 }, 9).clocks,
            Some(Clocks { client: 7, dispatcher: 9 })
        );
    }
}

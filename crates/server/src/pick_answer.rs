//! A pick outcome in the terms of the answers that carry an endpoint (v2 PickReply,
//! HTTP pick): the backend's id, its endpoint in the v2 encoding, whether it can check
//! a ticket; or the v2 error code of a refusal.

use loadwise_core::model::{self as core, Destination, PickOutcome};
use loadwise_core::registry::BackendId;
use loadwise_protocol::v2::{Endpoint, ErrorCode, Host};

/// The backend a pick chose, as a v2 or HTTP client is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePick {
    /// The dispatcher's id, for logs and the admin API.
    pub id: BackendId,
    /// The id the backend chose (v2), or the dispatcher's id (legacy backends).
    pub backend_id: u64,
    pub endpoint: Endpoint,
    /// A legacy backend: its id is the dispatcher's number, not one it chose, and it
    /// cannot check a ticket, so it gets none.
    pub legacy: bool,
}

impl ServicePick {
    /// The answer to a pick that asked for an endpoint, or the code of its refusal.
    pub fn of(outcome: PickOutcome) -> Result<ServicePick, ErrorCode> {
        let core::Picked { id, to } = match outcome {
            PickOutcome::Picked(picked) => picked,
            PickOutcome::ClockSkew { .. } => return Err(ErrorCode::CLOCK_SKEW),
            PickOutcome::UnknownService => return Err(ErrorCode::UNKNOWN_SERVICE),
            PickOutcome::NoBackend => return Err(ErrorCode::NO_BACKEND),
            PickOutcome::NoFreePlace => return Err(ErrorCode::NO_FREE_PLACE),
        };
        let (backend_id, endpoint, legacy) = match to {
            Destination::Chosen { backend, endpoint } => (backend, endpoint, false),
            Destination::LegacyEndpoint { endpoint } => (id.0, endpoint, true),
            // Not the form these answers ask for: no address their clients can use.
            Destination::Legacy(_) => return Err(ErrorCode::NO_BACKEND),
        };
        Ok(ServicePick { id, backend_id, endpoint: wire_endpoint(endpoint), legacy })
    }
}

/// The core's endpoint in the v2 encoding: the same host and port.
pub fn wire_endpoint(endpoint: core::Endpoint) -> Endpoint {
    let host = match endpoint.host {
        core::Host::V4(ip) => Host::V4(ip),
        core::Host::V6(ip) => Host::V6(ip),
        core::Host::Name(name) => Host::Name(name),
    };
    Endpoint { host, port: endpoint.port }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadwise_core::model::{Clocks, LegacyName};
    use std::num::NonZeroU16;

    fn endpoint() -> core::Endpoint {
        core::Endpoint { host: core::Host::V6("::1".parse().unwrap()), port: NonZeroU16::new(7000).unwrap() }
    }

    #[test]
    fn a_v2_backend_is_named_by_its_own_id_and_a_legacy_one_by_the_dispatchers() {
        let picked = |to| PickOutcome::Picked(core::Picked { id: BackendId(4), to });
        let v2 = ServicePick::of(picked(Destination::Chosen { backend: 99, endpoint: endpoint() })).unwrap();
        assert_eq!((v2.backend_id, v2.legacy, v2.endpoint.to_string()), (99, false, "[::1]:7000".into()));
        let legacy = ServicePick::of(picked(Destination::LegacyEndpoint { endpoint: endpoint() })).unwrap();
        assert_eq!((legacy.backend_id, legacy.legacy), (4, true));
        let name = LegacyName { bytes: [0; 16], port: 1 };
        assert_eq!(ServicePick::of(picked(Destination::Legacy(name))), Err(ErrorCode::NO_BACKEND));
    }

    #[test]
    fn each_refusal_has_its_code() {
        let clocks = Clocks { client: 0, dispatcher: 61 };
        assert_eq!(
            ServicePick::of(PickOutcome::ClockSkew { clocks, skew_secs: 61 }),
            Err(ErrorCode::CLOCK_SKEW)
        );
        assert_eq!(ServicePick::of(PickOutcome::UnknownService), Err(ErrorCode::UNKNOWN_SERVICE));
        assert_eq!(ServicePick::of(PickOutcome::NoBackend), Err(ErrorCode::NO_BACKEND));
    }
}

//! The legacy protocol's rules at the core's boundary: a login becomes a pick request,
//! and a pick outcome becomes the 22-byte reply, with the 16 address bytes echoed
//! verbatim (docs/legacy-protocol.md).

use loadwise_core::model::{Clocks, Destination, PickOutcome, PickRequest};
use loadwise_protocol::{IpField, LoginReply, LoginRequest};

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
        PickOutcome::NoBackend | PickOutcome::UnknownService | PickOutcome::ClockSkew { .. } => {
            LoginReply::Error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadwise_core::model::{LegacyName, Picked};
    use loadwise_core::registry::BackendId;

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

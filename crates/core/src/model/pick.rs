//! What a pick asks and what it answers, whatever protocol asked: each session turns
//! a [`PickOutcome`] into its own wire format.

use std::fmt;
use std::net::IpAddr;

use loadwise_protocol::v2::ServiceName;

use super::endpoint::Endpoint;
use super::key::{BackendId, LegacyName};

/// Which pool a pick draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickTarget<'a> {
    /// The default service: legacy logins, and HTTP picks that name no service.
    Default,
    /// A named service (v2 picks, HTTP picks).
    Service(&'a ServiceName),
}

/// The form of address the asking protocol can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressForm {
    /// 16 bytes and a port, echoed verbatim (legacy replies).
    Legacy,
    /// An endpoint, with the backend's chosen id (v2 and HTTP replies).
    Endpoint,
}

/// A client's clock beside the dispatcher's, both in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// The timestamp the client sent.
    pub client: u64,
    /// The dispatcher's clock when the request was read.
    pub dispatcher: u64,
}

/// One client's request for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickRequest<'a> {
    pub target: PickTarget<'a>,
    /// The client's clock, checked against the dispatcher's; `None` when the
    /// protocol carries none (HTTP).
    pub clocks: Option<Clocks>,
    pub form: AddressForm,
    /// The client's affinity key: a keyed pick goes to the key's backend while it
    /// is ready and within its bound (see [`crate::affinity`]); empty for none.
    pub key: &'a [u8],
    /// The client's address, when its protocol lets it report a backend it could not
    /// use: the pick is remembered, so that its report can count (see
    /// [`crate::ejection`]). `None` for clients that cannot report.
    pub client: Option<IpAddr>,
}

impl PickRequest<'static> {
    /// A legacy login whose clock was already checked, or has none: what tools,
    /// tests and the metrics' probe ask.
    pub const UNCLOCKED_LOGIN: Self = PickRequest {
        target: PickTarget::Default,
        clocks: None,
        form: AddressForm::Legacy,
        key: &[],
        client: None,
    };
}

impl<'a> PickRequest<'a> {
    /// A legacy login: the default service, a legacy address, the clock checked.
    pub fn login(clocks: Clocks) -> Self {
        PickRequest { clocks: Some(clocks), ..PickRequest::UNCLOCKED_LOGIN }
    }

    /// A v2 pick: a named service, an endpoint, the clock checked.
    pub fn service(service: &'a ServiceName, clocks: Clocks) -> Self {
        PickRequest {
            target: PickTarget::Service(service),
            clocks: Some(clocks),
            form: AddressForm::Endpoint,
            key: &[],
            client: None,
        }
    }

    /// The same request for the affinity key `key` (empty: none).
    pub fn with_key(self, key: &'a [u8]) -> Self {
        PickRequest { key, ..self }
    }

    /// The same request from a client at `client`, which may report the backend.
    pub fn from_client(self, client: IpAddr) -> Self {
        PickRequest { client: Some(client), ..self }
    }

    /// An HTTP pick: a named service, an endpoint, no clock to check.
    pub fn http(service: &'a ServiceName) -> Self {
        PickRequest {
            target: PickTarget::Service(service),
            clocks: None,
            form: AddressForm::Endpoint,
            key: &[],
            client: None,
        }
    }
}

/// Where the picked backend's client goes, in the form the request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A legacy reply's address: a legacy backend's own bytes, or a v2 backend's
    /// endpoint written as text.
    Legacy(LegacyName),
    /// A v2 backend: the id it chose and its endpoint.
    Chosen { backend: u64, endpoint: Endpoint },
    /// A legacy backend, for a client that asked for an endpoint: its bytes read as
    /// one. It has no id of its own and cannot check a ticket.
    LegacyEndpoint { endpoint: Endpoint },
}

/// The backend a pick chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// This dispatcher's id of it, for logs.
    pub id: BackendId,
    pub to: Destination,
}

/// What a pick answered. Every outcome is counted once, the same way, whichever
/// protocol asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickOutcome {
    Picked(Picked),
    /// The pool has backends (or is the default one), but none takes new clients.
    NoBackend,
    /// No live backend serves the named service.
    UnknownService,
    /// A slot service, some of whose backends take clients, but none with a place this
    /// dispatcher may fill.
    NoFreePlace,
    /// The client's clock is further from the dispatcher's than allowed.
    ClockSkew {
        clocks: Clocks,
        skew_secs: u64,
    },
}

impl PickOutcome {
    /// The backend picked, if any.
    pub fn picked(&self) -> Option<&Picked> {
        match self {
            PickOutcome::Picked(picked) => Some(picked),
            _ => None,
        }
    }

    /// The id the picked v2 backend chose, if a v2 backend was picked.
    pub fn chosen_backend(&self) -> Option<u64> {
        match self.picked()?.to {
            Destination::Chosen { backend, .. } => Some(backend),
            _ => None,
        }
    }
}

/// Where the client goes, as operators write it: `10.0.0.2:1002`.
impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Legacy(name) => name.fmt(f),
            Destination::Chosen { endpoint, .. } | Destination::LegacyEndpoint { endpoint } => {
                endpoint.fmt(f)
            }
        }
    }
}

/// The outcome as a log line says it.
impl fmt::Display for PickOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickOutcome::Picked(picked) => write!(f, "picked {} at {}", picked.id, picked.to),
            PickOutcome::NoBackend => f.write_str("no live backend takes new clients"),
            PickOutcome::UnknownService => f.write_str("no live backend serves the service"),
            PickOutcome::NoFreePlace => f.write_str("no backend of the slot service has a free place"),
            PickOutcome::ClockSkew { clocks, skew_secs } => write!(
                f,
                "client timestamp {} is {skew_secs} s away from the dispatcher's clock ({})",
                clocks.client, clocks.dispatcher
            ),
        }
    }
}

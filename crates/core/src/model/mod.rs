//! The core's own vocabulary: who a backend is, where its clients go, how loaded it
//! is, whether it takes clients, and what a pick asks and answers. No wire format.
//!
//! The protocol crate decodes frames into its own structs; the server's sessions
//! translate them into these types and back, so that a change of wire format stops at
//! the session that speaks it.

mod endpoint;
mod key;
mod load;
mod pick;
mod report;
mod state;

pub use endpoint::{Endpoint, Host};
pub use key::{
    BackendId, BackendKey, BackendName, ConnectionId, IdHasher, IdMap, LEGACY_NAME_LEN, LegacyName,
};
pub use load::{Load, MAX_VALID_PERCENT, Metrics};
pub use pick::{AddressForm, Clocks, Destination, PickOutcome, PickRequest, PickTarget, Picked};
pub use report::{DEFAULT_WEIGHT, LegacyReport, SlotReport, V2Report};
pub use state::{Cause, Health, Hold, Standing, State};

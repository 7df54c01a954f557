//! What the dispatcher is configured with: the settings selection, expiry and
//! scoring depend on, per service where a service may differ.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::affinity::AffinitySettings;
use crate::ejection::EjectionSettings;
use crate::scoring::Scoring;
use crate::selection::{LoadSettings, Policy};
use crate::slots::SlotPolicy;
use loadwise_protocol::v2::ServiceName;

/// The name of the service legacy traffic belongs to, unless configured otherwise.
pub const DEFAULT_SERVICE: &str = "default";

/// The dispatcher settings that selection and expiry depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchSettings {
    /// A backend with no heartbeat for this long is removed.
    pub ttl: Duration,
    /// A login whose timestamp differs from the dispatcher's clock by more than this
    /// gets the error reply.
    pub max_clock_skew: Duration,
    /// The most backends registered at once.
    pub max_backends: usize,
    /// How backends are chosen.
    pub policy: Policy,
    /// How the cost of a client is learned, and the slow start of new backends.
    pub load: LoadSettings,
    /// The service legacy heartbeats and logins belong to. v2 backends and clients
    /// that name it share its pool with them.
    pub default_service: ServiceName,
    /// How a v2 backend's metrics make its load, in services without their own.
    pub scoring: Scoring,
    /// Services whose load is scored otherwise.
    pub service_scoring: BTreeMap<ServiceName, Scoring>,
    /// How far above the mean a keyed pick may load a backend, in services without
    /// their own.
    pub affinity: AffinitySettings,
    /// Services whose keyed picks have a balance factor of their own.
    pub service_balance_factor: BTreeMap<ServiceName, f64>,
    /// Services whose keyed picks have a slack of their own.
    pub service_slack: BTreeMap<ServiceName, f64>,
    /// When clients' failure reports eject a backend, and for how long.
    pub ejection: EjectionSettings,
    /// How slot services choose among backends with room, unless they have their own.
    pub slot_policy: SlotPolicy,
    /// Slot services that choose otherwise.
    pub service_slot_policy: BTreeMap<ServiceName, SlotPolicy>,
}

impl DispatchSettings {
    /// How the load of a v2 backend of `service` is scored.
    pub fn scoring_of(&self, service: &ServiceName) -> &Scoring {
        self.service_scoring.get(service).unwrap_or(&self.scoring)
    }

    /// How `service` chooses among slot backends with room.
    pub fn slot_policy_of(&self, service: &ServiceName) -> SlotPolicy {
        self.service_slot_policy.get(service).copied().unwrap_or(self.slot_policy)
    }

    /// The bound of `service`'s keyed picks: its own balance factor and slack, each
    /// where it has one.
    pub fn affinity_of(&self, service: &ServiceName) -> AffinitySettings {
        let own = |map: &BTreeMap<ServiceName, f64>, top: f64| map.get(service).copied().unwrap_or(top);
        AffinitySettings {
            balance_factor: own(&self.service_balance_factor, self.affinity.balance_factor),
            slack: own(&self.service_slack, self.affinity.slack),
        }
    }

    /// Checks the affinity bound of every service.
    pub fn validate_affinity(&self) -> Result<(), loadwise_protocol::config::ConfigError> {
        self.affinity.validate()?;
        let mut overridden = self.service_balance_factor.keys().chain(self.service_slack.keys());
        overridden.try_for_each(|service| self.affinity_of(service).validate())
    }
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            ttl: Duration::from_secs(3),
            max_clock_skew: Duration::from_secs(60),
            max_backends: 10_000,
            policy: Policy::default(),
            load: LoadSettings::default(),
            default_service: ServiceName::new(DEFAULT_SERVICE).expect("the default service name is valid"),
            scoring: Scoring::default(),
            service_scoring: BTreeMap::new(),
            affinity: AffinitySettings::default(),
            service_balance_factor: BTreeMap::new(),
            service_slack: BTreeMap::new(),
            ejection: EjectionSettings::default(),
            slot_policy: SlotPolicy::default(),
            service_slot_policy: BTreeMap::new(),
        }
    }
}

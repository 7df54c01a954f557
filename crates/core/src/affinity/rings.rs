//! Each service's ring, rebuilt only when its set of backends changes, and the
//! counts of its keyed picks.

use std::collections::HashMap;
use std::time::Instant;

use rand::Rng;

use super::{AffinitySettings, Choice, PassReason, Ring, choose, key_hash};
use crate::registry::BackendId;
use crate::selection::{Picked, Selector};
use loadwise_protocol::v2::ServiceName;

/// What one service's keyed picks did since its ring was first built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AffinityCounts {
    /// Picks that carried a key.
    pub keyed: u64,
    /// Keyed picks whose key's first backend was passed over, by reason: index
    /// [`PassReason::ALL`].
    pub first_passed: [u64; PassReason::ALL.len()],
    /// Keyed picks that found no backend within the bound in their walk and were
    /// answered by the unkeyed policy.
    pub fallbacks: u64,
}

impl AffinityCounts {
    fn record(&mut self, choice: &Choice) {
        self.keyed += 1;
        if let Some(reason) = choice.first_passed {
            let index = PassReason::ALL.iter().position(|&known| known == reason).expect("listed in ALL");
            self.first_passed[index] += 1;
        }
        if choice.chosen.is_none() {
            self.fallbacks += 1;
        }
    }
}

#[derive(Debug)]
struct ServiceRing {
    ring: Ring,
    counts: AffinityCounts,
}

/// The rings of the services that had keyed picks.
#[derive(Debug, Default)]
pub struct Rings {
    by_service: HashMap<ServiceName, ServiceRing>,
}

impl Rings {
    /// Picks a backend of `service` for `key` and accounts for the client: the
    /// first ready backend on the key's walk within the bound, else the unkeyed
    /// policy's choice. `identity` gives the bytes of a backend's stable identity
    /// (see [`super::Identity`]), read only when the ring is rebuilt.
    pub fn pick(
        &mut self,
        (service, selector): (&ServiceName, &mut Selector),
        settings: &AffinitySettings,
        key: &[u8],
        identity: impl Fn(BackendId) -> Option<Vec<u8>>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<Picked> {
        let entry = self.entry(service, selector, identity);
        let (total, ready) = selector.ready_load();
        let bound = settings.bound(total, ready);
        let choice = choose(&entry.ring, key_hash(key), &bound, |id| selector.affinity_candidate(id));
        entry.counts.record(&choice);
        match choice.chosen {
            Some(id) => selector.pick_backend(id, now),
            None => selector.pick_target(now, rng),
        }
    }

    /// The ring of `service` for the selector's generation, rebuilt if it changed.
    fn entry(
        &mut self,
        service: &ServiceName,
        selector: &Selector,
        identity: impl Fn(BackendId) -> Option<Vec<u8>>,
    ) -> &mut ServiceRing {
        let generation = selector.generation();
        let build = || {
            let members = selector.ids().filter_map(|id| Some((id, identity(id)?)));
            Ring::build(generation, members)
        };
        // Looked up before inserting, so that a keyed pick does not copy the name.
        if !self.by_service.contains_key(service) {
            let entry = ServiceRing { ring: build(), counts: AffinityCounts::default() };
            self.by_service.insert(service.clone(), entry);
        }
        let entry = self.by_service.get_mut(service).expect("inserted above");
        if entry.ring.generation() != generation {
            entry.ring = build();
        }
        entry
    }

    /// Forgets the services `exists` denies (they lost their last backend).
    pub fn retain(&mut self, exists: impl Fn(&ServiceName) -> bool) {
        self.by_service.retain(|service, _| exists(service));
    }

    /// Every service with keyed picks, with its counts.
    pub fn counts(&self) -> impl Iterator<Item = (&ServiceName, AffinityCounts)> {
        self.by_service.iter().map(|(service, entry)| (service, entry.counts))
    }
}

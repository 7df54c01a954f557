//! The pools: one selector per service, and the ids v2 backends chose mapped to the
//! dispatcher's own.
//!
//! Every backend is in the registry once (one TTL, one cap on the whole table) and in
//! the selector of its service. A service exists while it has a backend; the default
//! service, which legacy backends and logins use, always does and is kept apart, so a
//! legacy pick reaches it without a lookup. A v2 backend names itself by service and
//! a 64-bit id of its choosing; the dispatcher gives it an id of its own, so that the
//! registry's cheap hash never sees a number a peer picked.

use std::collections::HashMap;

use crate::registry::{Backend, BackendId};
use crate::selection::{LoadSettings, Policy, Selector};
use loadwise_protocol::v2::ServiceName;

#[derive(Debug)]
pub(super) struct Services {
    default_name: ServiceName,
    default: Selector,
    /// Every other service with at least one backend.
    others: HashMap<ServiceName, Selector>,
    /// The dispatcher's id of every registered v2 backend, by its service and the
    /// id it chose.
    v2_ids: HashMap<ServiceName, HashMap<u64, BackendId>>,
    /// What new selectors start with.
    policy: Policy,
    load: LoadSettings,
}

impl Services {
    pub(super) fn new(default_name: ServiceName, policy: Policy, load: LoadSettings) -> Self {
        Services {
            default: Selector::new(policy, load.clone()),
            default_name,
            others: HashMap::new(),
            v2_ids: HashMap::new(),
            policy,
            load,
        }
    }

    pub(super) fn default_name(&self) -> &ServiceName {
        &self.default_name
    }

    /// The default service's selector.
    pub(super) fn default_mut(&mut self) -> &mut Selector {
        &mut self.default
    }

    /// Whether `service` is the default one, which legacy clients are served from.
    pub(super) fn is_default(&self, service: &ServiceName) -> bool {
        *service == self.default_name
    }

    /// The selector of a backend's service (`None`: a legacy backend's).
    pub(super) fn of(&self, service: Option<&ServiceName>) -> Option<&Selector> {
        match service {
            Some(name) if !self.is_default(name) => self.others.get(name),
            _ => Some(&self.default),
        }
    }

    /// The selector of a backend's service, to change it (`None`: a legacy backend's).
    pub(super) fn of_mut(&mut self, service: Option<&ServiceName>) -> Option<&mut Selector> {
        match service {
            Some(name) => self.get_mut(name),
            None => Some(&mut self.default),
        }
    }

    /// The selector of `service`, if it has backends (the default one always).
    pub(super) fn get_mut(&mut self, service: &ServiceName) -> Option<&mut Selector> {
        if self.is_default(service) { Some(&mut self.default) } else { self.others.get_mut(service) }
    }

    /// The selector of `service`, made empty if it has none yet.
    pub(super) fn entry(&mut self, service: &ServiceName) -> &mut Selector {
        if self.is_default(service) {
            return &mut self.default;
        }
        // Looked up before inserting, so that a heartbeat does not copy the name.
        if !self.others.contains_key(service) {
            let selector = Selector::new(self.policy, self.load.clone());
            self.others.insert(service.clone(), selector);
        }
        self.others.get_mut(service).expect("inserted above")
    }

    /// Every service with its selector, the default first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ServiceName, &Selector)> {
        std::iter::once((&self.default_name, &self.default)).chain(self.others.iter())
    }

    /// Changes every selector's policy and learning settings, keeping their loads.
    pub(super) fn reconfigure(&mut self, policy: Policy, load: &LoadSettings) {
        let (default, others) = (&mut self.default, &mut self.others);
        for selector in std::iter::once(default).chain(others.values_mut()) {
            selector.set_settings(load.clone());
            if selector.policy() != policy {
                selector.set_policy(policy);
            }
        }
        (self.policy, self.load) = (policy, load.clone());
    }

    /// The dispatcher's id of a v2 backend, by the id it chose.
    pub(super) fn v2_id(&self, service: &ServiceName, chosen: u64) -> Option<BackendId> {
        self.v2_ids.get(service)?.get(&chosen).copied()
    }

    /// Records that the v2 backend `id` is the one `chosen` in `service`.
    pub(super) fn bind(&mut self, (service, chosen): (&ServiceName, u64), id: BackendId) {
        self.v2_ids.entry(service.clone()).or_default().insert(chosen, id);
    }

    /// Removes a backend that left the registry from its selector and the id maps.
    /// A service other than the default one goes with its last backend.
    pub(super) fn forget(&mut self, id: BackendId, backend: &Backend) {
        let Some(detail) = &backend.v2 else {
            self.default.remove(id);
            return;
        };
        let service = &detail.service;
        if self.is_default(service) {
            self.default.remove(id);
        } else if let Some(selector) = self.others.get_mut(service) {
            selector.remove(id);
            if selector.is_empty() {
                self.others.remove(service);
            }
        }
        if let Some(ids) = self.v2_ids.get_mut(service) {
            ids.remove(&detail.backend_id);
            if ids.is_empty() {
                self.v2_ids.remove(service);
            }
        }
    }
}

//! The JSON shapes of the admin API, built from dispatcher snapshots at an injected `now`.
//!
//! Services are a list from the start, so that more than the one default service can
//! slot in when the protocol names them.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::dispatcher::{BackendSnapshot, Picked};
use crate::protocol::IpField;
use crate::selection::{BackendState, Policy};

/// `GET /v1/services`.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceList {
    pub services: Vec<ServiceSummary>,
}

/// One service in the list.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceSummary {
    pub name: String,
    pub policy: Policy,
    /// Every registered backend, whatever its state.
    pub backends: usize,
    pub states: StateCounts,
}

/// How many backends are in each state.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(crate) struct StateCounts {
    pub ready: usize,
    pub draining: usize,
    pub maintenance: usize,
}

impl StateCounts {
    pub fn of(backends: &[BackendSnapshot]) -> Self {
        let mut counts = StateCounts::default();
        for backend in backends {
            *counts.slot(backend.state) += 1;
        }
        counts
    }

    fn slot(&mut self, state: BackendState) -> &mut usize {
        match state {
            BackendState::Ready => &mut self.ready,
            BackendState::Draining => &mut self.draining,
            BackendState::Maintenance => &mut self.maintenance,
        }
    }

    /// The count for one state.
    pub fn get(&self, state: BackendState) -> usize {
        match state {
            BackendState::Ready => self.ready,
            BackendState::Draining => self.draining,
            BackendState::Maintenance => self.maintenance,
        }
    }
}

/// `GET /v1/services/{service}/backends`.
#[derive(Debug, Serialize)]
pub(crate) struct BackendList {
    pub service: String,
    pub policy: Policy,
    /// A backend silent for this long is removed.
    pub ttl_seconds: f64,
    pub backends: Vec<BackendView>,
}

/// One backend as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct BackendView {
    pub id: u64,
    /// Where clients are sent: `ip:port` as the backend reported it.
    pub address: String,
    pub state: BackendState,
    /// The last report, as sent.
    pub reported: Reported,
    /// The report plus what the clients sent since are estimated to add, in percent.
    pub effective_load_percent: f64,
    /// The learned cost of one client, in percent.
    pub client_cost_percent: f64,
    pub heartbeat_age_seconds: f64,
    pub heartbeats: u64,
    pub picks_total: u64,
    pub picks_since_heartbeat: u64,
    /// Time since the backend registered on its connection.
    pub connection_age_seconds: f64,
}

/// What a backend's last heartbeat reported.
#[derive(Debug, Serialize)]
pub(crate) struct Reported {
    pub mem_percent: u8,
    /// False for a figure above 100, which is not a percentage (such backends rank last).
    pub valid: bool,
}

impl BackendView {
    pub fn new(snapshot: &BackendSnapshot, now: Instant) -> Self {
        let backend = &snapshot.backend;
        let load = &snapshot.load;
        BackendView {
            id: snapshot.id.0,
            address: address(&backend.report.ip, backend.report.port),
            state: snapshot.state,
            reported: Reported { mem_percent: load.reported, valid: load.report_is_valid() },
            effective_load_percent: load.effective(),
            client_cost_percent: load.cost(),
            heartbeat_age_seconds: seconds_since(backend.last_heartbeat, now),
            heartbeats: backend.heartbeats,
            picks_total: load.picks_total,
            picks_since_heartbeat: load.picks_since_report,
            connection_age_seconds: seconds_since(backend.registered_at, now),
        }
    }
}

/// `GET /v1/services/{service}/pick`.
#[derive(Debug, Serialize)]
pub(crate) struct PickView {
    pub service: String,
    pub id: u64,
    pub address: String,
}

impl PickView {
    pub fn new(service: &str, picked: &Picked) -> Self {
        PickView { service: service.to_owned(), id: picked.id.0, address: address(&picked.ip, picked.port) }
    }
}

/// The answer to an operator action.
#[derive(Debug, Serialize)]
pub(crate) struct StateView {
    pub id: u64,
    pub state: BackendState,
}

/// `ip:port`; an ip field that is not text (the dispatcher refuses those) is shown
/// with its bytes escaped rather than hidden.
pub(crate) fn address(ip: &IpField, port: u16) -> String {
    match ip.text() {
        Ok(text) => format!("{text}:{port}"),
        Err(_) => format!("{}:{port}", ip.as_bytes().escape_ascii()),
    }
}

fn seconds_since(then: Instant, now: Instant) -> f64 {
    round_millis(now.saturating_duration_since(then))
}

/// Seconds to the millisecond: finer digits are noise to a reader.
fn round_millis(duration: Duration) -> f64 {
    duration.as_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Backend, BackendId, Report};
    use crate::selection::{BackendLoad, LoadSettings};

    fn snapshot(id: u64, mem: u8, state: BackendState, registered_at: Instant) -> BackendSnapshot {
        let report = Report { ip: IpField::from_text("10.0.0.2").unwrap(), port: 7000, mem };
        let backend = Backend {
            report,
            registered_at,
            last_heartbeat: registered_at,
            heartbeats: 1,
            invalid_reports: 0,
            v2: None,
        };
        let load = BackendLoad::new(mem, registered_at, &LoadSettings::default());
        let service = crate::protocol::v2::ServiceName::new("default").unwrap();
        BackendSnapshot { id: BackendId(id), backend, load, state, service }
    }

    #[test]
    fn a_backend_view_shows_its_report_ages_and_picks() {
        let start = Instant::now();
        let view = BackendView::new(
            &snapshot(7, 42, BackendState::Draining, start),
            start + Duration::from_millis(1500),
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["id"], 7);
        assert_eq!(json["address"], "10.0.0.2:7000");
        assert_eq!(json["state"], "draining");
        assert_eq!(json["reported"]["mem_percent"], 42);
        assert_eq!(json["reported"]["valid"], true);
        assert_eq!(json["effective_load_percent"], 42.0);
        assert_eq!(json["heartbeat_age_seconds"], 1.5);
        assert_eq!(json["connection_age_seconds"], 1.5);
        assert_eq!(json["picks_total"], 0);
    }

    #[test]
    fn states_are_counted() {
        let now = Instant::now();
        let all = [
            snapshot(1, 1, BackendState::Ready, now),
            snapshot(2, 1, BackendState::Ready, now),
            snapshot(3, 1, BackendState::Maintenance, now),
        ];
        assert_eq!(StateCounts::of(&all), StateCounts { ready: 2, draining: 0, maintenance: 1 });
    }

    #[test]
    fn an_address_that_is_not_text_is_escaped() {
        let ip = IpField::from_bytes([0xff; 16]);
        assert_eq!(address(&ip, 1), format!("{}:1", r"\xff".repeat(16)));
    }
}

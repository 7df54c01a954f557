//! The JSON shapes of the admin API, built from dispatcher snapshots at an injected `now`.
//!
//! Every function here is pure: the handlers take the snapshots, these shape them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::pick_answer::ServicePick;
use loadwise_core::dispatcher::{self, BackendSnapshot};
use loadwise_core::model::{Cause, Health, Load};
use loadwise_core::registry::{BackendId, V2Detail};
use loadwise_core::selection::{BackendLoad, BackendState, Policy};
use loadwise_core::slots::SlotView;
use loadwise_protocol::IpField;
use loadwise_protocol::v2::ServiceName;

/// `GET /v1/services`.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceList {
    pub services: Vec<ServiceView>,
}

/// One service in the list.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceView {
    pub name: String,
    /// Whether legacy heartbeats and logins belong to it (`DispatchSettings::default_service`).
    pub default: bool,
    pub policy: Policy,
    /// How its v2 backends' heartbeats make their load, as configured text.
    pub scoring: String,
    /// Every registered backend, whatever its state.
    pub backends: usize,
    /// Those that take new clients (the same as `states.ready`).
    pub ready: usize,
    pub states: StateCounts,
}

impl ServiceList {
    /// Every service of `services`, its backends counted from the one snapshot
    /// `backends`, so that the counts of a service always add up.
    pub fn new(
        services: &[dispatcher::ServiceSummary],
        backends: &[BackendSnapshot],
        policy: Policy,
    ) -> Self {
        let services = by_service(services, backends)
            .into_iter()
            .map(|(service, states)| ServiceView {
                name: service.name.to_string(),
                default: service.default,
                policy,
                scoring: service.scoring.to_string(),
                backends: states.total(),
                ready: states.ready,
                states,
            })
            .collect();
        ServiceList { services }
    }
}

/// Each service of `services` with its backends of `backends` counted by state; a
/// service with none in the snapshot counts zero.
pub(crate) fn by_service<'s>(
    services: &'s [dispatcher::ServiceSummary],
    backends: &[BackendSnapshot],
) -> Vec<(&'s dispatcher::ServiceSummary, StateCounts)> {
    let mut counts: HashMap<&ServiceName, StateCounts> = HashMap::with_capacity(services.len());
    for backend in backends {
        *counts.entry(&backend.service).or_default().slot(backend.state) += 1;
    }
    services.iter().map(|service| (service, counts.remove(&service.name).unwrap_or_default())).collect()
}

/// How many backends are in each state.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(crate) struct StateCounts {
    pub ready: usize,
    pub draining: usize,
    pub maintenance: usize,
}

impl StateCounts {
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

    /// Every backend counted.
    pub fn total(&self) -> usize {
        self.ready + self.draining + self.maintenance
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
    /// The id to pass as `after` for the next page; `null` on the last one.
    pub next_after: Option<u64>,
}

/// The backends a list shows by default, and at most.
pub(crate) const DEFAULT_PAGE: usize = 500;
pub(crate) const MAX_PAGE: usize = 5_000;

/// The query of a backend list, as sent: `limit`, `after` (a backend id) and `state`.
/// Read as text, so that a bad value gets the API's own JSON error.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BackendPage {
    limit: Option<String>,
    after: Option<String>,
    state: Option<String>,
}

/// A [`BackendPage`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    pub limit: usize,
    pub after: Option<BackendId>,
    pub state: Option<BackendState>,
}

impl BackendPage {
    /// Fails naming the parameter and its bounds.
    pub fn checked(self) -> Result<Page, ApiError> {
        let bad = |what: String| ApiError::BadQuery(what);
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
                _ => return Err(bad(format!("limit must be from 1 to {MAX_PAGE}, not {text:?}"))),
            },
        };
        let after = match self.after.as_deref() {
            None => None,
            Some(text) => Some(BackendId(
                text.parse().map_err(|_| bad(format!("after must be a backend id, not {text:?}")))?,
            )),
        };
        let state = match self.state.as_deref() {
            None => None,
            Some(text) => {
                Some(BackendState::ALL.into_iter().find(|state| state.name() == text).ok_or_else(|| {
                    bad(format!("state must be ready, draining or maintenance, not {text:?}"))
                })?)
            }
        };
        Ok(Page { limit, after, state })
    }
}

impl Page {
    /// The page of `sorted` (in id order) this query asks for, and the cursor of the
    /// next one if more follow.
    pub fn select<'a>(&self, sorted: &'a [BackendSnapshot]) -> (Vec<&'a BackendSnapshot>, Option<BackendId>) {
        let start = self.after.map_or(0, |after| sorted.partition_point(|snapshot| snapshot.id <= after));
        let mut matching =
            sorted[start..].iter().filter(|snapshot| self.state.is_none_or(|state| snapshot.state == state));
        let shown: Vec<_> = matching.by_ref().take(self.limit).collect();
        let more = matching.next().is_some();
        let next_after = shown.last().filter(|_| more).map(|snapshot| snapshot.id);
        (shown, next_after)
    }
}

/// One backend as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct BackendView {
    /// The dispatcher's id, which the actions name.
    pub id: u64,
    /// Where clients are sent: `ip:port` as a legacy backend reported it, or a v2
    /// backend's endpoint (`[ipv6]:port` for IPv6).
    pub address: String,
    /// The protocol its heartbeats arrive in.
    pub protocol: WireProtocol,
    /// The state in force: the furthest of `operator_state` and what a v2 backend
    /// reports (`v2.reported_state`).
    pub state: BackendState,
    /// The state an operator's action holds it in; `ready` when none.
    pub operator_state: BackendState,
    /// Whether it gets new clients now.
    pub takes_clients: bool,
    /// Why it gets none, by precedence: `operator`, `agent` (its drain or
    /// maintenance), `unhealthy` (its own checks), `ejected` (its clients' reports);
    /// `None` (`null`) when it takes clients.
    pub out_because: Option<Cause>,
    /// What its own checks say (v2 heartbeats); legacy backends are `healthy`.
    pub health: Health,
    /// Seconds until its ejection ends; `None` (`null`) when it is not ejected.
    pub ejected_for_seconds: Option<f64>,
    /// Its ejections since their count last restarted (each lasts longer).
    pub ejections: u32,
    /// A slot backend's places and this dispatcher's grant; `None` (`null`) for a
    /// backend without capacity slots.
    pub slots: Option<SlotsView>,
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
    /// Time since the backend registered.
    pub connection_age_seconds: f64,
    /// What a v2 backend says of itself; `None` (`null`) for a legacy backend.
    pub v2: Option<V2View>,
}

/// The protocol a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireProtocol {
    Legacy,
    V2,
}

/// A slot backend's places as its last heartbeat said, and what this dispatcher may
/// still send it.
#[derive(Debug, Serialize)]
pub(crate) struct SlotsView {
    pub capacity: u32,
    pub in_use: u32,
    /// The clients this dispatcher may send on the backend's connection, in all.
    pub grant_total: u64,
    /// The clients it has sent on that connection.
    pub sent_total: u64,
    /// Places it may still fill now.
    pub free: u64,
}

impl SlotsView {
    fn new(view: &SlotView) -> Self {
        SlotsView {
            capacity: view.capacity,
            in_use: view.in_use,
            grant_total: view.grant_total,
            sent_total: view.sent_total,
            free: view.free,
        }
    }
}

/// What a backend's last heartbeat reported.
#[derive(Debug, Serialize)]
pub(crate) struct Reported {
    /// A legacy backend's memory in percent; a v2 backend's score, rounded (255
    /// when it has none).
    pub mem_percent: u8,
    /// False for a figure above 100, which is not a percentage (such backends rank last).
    pub valid: bool,
}

/// What a v2 backend's last heartbeat said, beyond the load selection compares.
#[derive(Debug, Serialize)]
pub(crate) struct V2View {
    /// The id the backend chose, unique in its service and kept across reconnects;
    /// a decimal string, since 64-bit ids lose digits as JSON numbers in JavaScript.
    pub backend_id: String,
    /// Where its clients connect: `10.0.0.2:7000`, `[2001:db8::2]:7000` or
    /// `backend-1.example:7000`.
    pub endpoint: String,
    /// Memory in use, in percent; `None` when not reported.
    pub memory_percent: Option<f64>,
    /// CPU in use, in percent; `None` when not reported.
    pub cpu_percent: Option<f64>,
    /// Connections it serves; `None` when not reported.
    pub connections: Option<u32>,
    /// Its relative capacity, 100 being the norm.
    pub weight: u16,
    /// The state it reports itself in.
    pub reported_state: BackendState,
    /// Its custom metrics, by name.
    pub metrics: BTreeMap<String, f64>,
    /// The load its service's scoring made of the heartbeat, in percent; `None` when
    /// a figure the scoring needs was missing (the backend ranks last).
    pub score: Option<f64>,
}

impl BackendView {
    pub fn new(snapshot: &BackendSnapshot, now: Instant) -> Self {
        let backend = &snapshot.backend;
        let load = &snapshot.load;
        let v2 = backend.v2.as_deref().map(|detail| V2View::new(detail, snapshot.reported));
        let address = match &v2 {
            Some(v2) => v2.endpoint.clone(),
            None => address(&IpField::from_bytes(backend.report.legacy.bytes), backend.report.legacy.port),
        };
        BackendView {
            id: snapshot.id.0,
            address,
            protocol: if v2.is_some() { WireProtocol::V2 } else { WireProtocol::Legacy },
            state: snapshot.state,
            operator_state: snapshot.held,
            takes_clients: snapshot.hold.standing().takes_clients(),
            out_because: snapshot.hold.standing().cause,
            health: snapshot.hold.health,
            ejected_for_seconds: snapshot
                .ejected_until
                .map(|until| round_millis(until.saturating_duration_since(now))),
            ejections: snapshot.ejections,
            slots: snapshot.slots.as_ref().map(SlotsView::new),
            reported: Reported { mem_percent: mem_percent(load.reported), valid: load.report_is_valid() },
            effective_load_percent: effective_percent(load),
            client_cost_percent: load.cost(),
            heartbeat_age_seconds: seconds_since(backend.last_heartbeat, now),
            heartbeats: backend.heartbeats,
            picks_total: load.picks_total,
            picks_since_heartbeat: load.picks_since_report,
            connection_age_seconds: seconds_since(backend.registered_at, now),
            v2,
        }
    }
}

/// What `mem_percent` shows for a backend not yet scored: the old report value
/// for "no score", so that the API reads as it always did.
const UNSCORED_MEM: u8 = u8::MAX;

/// A load as the legacy `mem` field wrote it: a whole percent, a bad figure as sent.
fn mem_percent(load: Load) -> u8 {
    match load {
        // Saturating casts: a valid load stays within 0..=100, a bad one within u8.
        Load::Percent(percent) | Load::Invalid(percent) => percent.round() as u8,
        Load::Unscored => UNSCORED_MEM,
    }
}

/// The effective load shown: selection's figure, unrounded; a backend not yet
/// scored shows its picks on top of [`UNSCORED_MEM`], as it always did.
fn effective_percent(load: &BackendLoad) -> f64 {
    match load.reported {
        Load::Unscored => f64::from(UNSCORED_MEM) + load.pending(),
        _ => load.effective(),
    }
}

impl V2View {
    fn new(detail: &V2Detail, reported_state: BackendState) -> Self {
        let metrics = &detail.metrics;
        V2View {
            backend_id: detail.backend_id.to_string(),
            endpoint: detail.endpoint.to_string(),
            memory_percent: metrics.memory,
            cpu_percent: metrics.cpu,
            // Sent as a u32, kept as an f64 (exactly): shown as sent.
            connections: metrics.connections.map(|connections| connections as u32),
            weight: detail.weight.get(),
            reported_state,
            metrics: metrics.custom.iter().cloned().collect(),
            score: detail.score,
        }
    }
}

/// `GET /v1/services/{service}/pick`.
#[derive(Debug, Serialize)]
pub(crate) struct PickView {
    pub service: String,
    /// The dispatcher's id of the backend picked.
    pub id: u64,
    /// Where the client connects (the same text as `endpoint`).
    pub address: String,
    /// The id a v2 backend chose, or the dispatcher's id for a legacy one, as a
    /// decimal string.
    pub backend_id: String,
    /// Where the client connects, `[ipv6]:port` for IPv6.
    pub endpoint: String,
}

impl PickView {
    pub fn new(service: &str, picked: &ServicePick) -> Self {
        let endpoint = picked.endpoint.to_string();
        PickView {
            service: service.to_owned(),
            id: picked.id.0,
            address: endpoint.clone(),
            backend_id: picked.backend_id.to_string(),
            endpoint,
        }
    }
}

/// The answer to an operator action.
#[derive(Debug, Serialize)]
pub(crate) struct StateView {
    pub id: u64,
    /// The state in force after the action: a v2 backend that reports itself
    /// further out stays there.
    pub state: BackendState,
    /// The state the action holds the backend in.
    pub operator_state: BackendState,
}

impl StateView {
    /// The answer for backend `snapshot` after an action set `target`; `None` when
    /// the backend left meanwhile, where `target` is all there is to say.
    pub fn new(id: u64, target: BackendState, snapshot: Option<&BackendSnapshot>) -> Self {
        let state = snapshot.map_or(target, |snapshot| snapshot.state);
        StateView { id, state, operator_state: target }
    }
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
    use std::num::NonZeroU16;

    use super::*;
    use loadwise_core::model::{Endpoint, Hold, Host, LegacyName, Metrics};
    use loadwise_core::registry::{Backend, BackendId, Report};
    use loadwise_core::scoring::Scoring;
    use loadwise_core::selection::LoadSettings;
    use loadwise_protocol::v2;

    fn name(service: &str) -> ServiceName {
        ServiceName::new(service).unwrap()
    }

    fn snapshot(id: u64, mem: u8, state: BackendState, registered_at: Instant) -> BackendSnapshot {
        let load = Load::from_percent(f64::from(mem));
        let legacy = LegacyName { bytes: *IpField::from_text("10.0.0.2").unwrap().as_bytes(), port: 7000 };
        let report = Report { legacy, load };
        let backend = Backend {
            report,
            registered_at,
            last_heartbeat: registered_at,
            heartbeats: 1,
            invalid_reports: 0,
            v2: None,
        };
        let load = BackendLoad::new(load, registered_at, &LoadSettings::default());
        let (held, reported) = (state, BackendState::Ready);
        let hold = Hold { operator: held, ..Hold::default() };
        BackendSnapshot {
            id: BackendId(id),
            backend,
            load,
            state,
            held,
            reported,
            hold,
            ejected_until: None,
            ejections: 0,
            slots: None,
            service: name("default"),
        }
    }

    /// A v2 backend of `service` whose heartbeat reported `reported`, held `held`.
    fn v2_snapshot(id: u64, service: &str, held: BackendState, reported: v2::State) -> BackendSnapshot {
        let now = Instant::now();
        let mut snapshot = snapshot(id, 42, held, now);
        let reported = match reported {
            v2::State::Ready => BackendState::Ready,
            v2::State::Draining => BackendState::Draining,
            v2::State::Maintenance => BackendState::Maintenance,
        };
        snapshot.reported = reported;
        snapshot.state = held.max(reported);
        snapshot.hold.agent = reported;
        snapshot.service = name(service);
        let detail = V2Detail {
            service: name(service),
            backend_id: u64::MAX - 1,
            endpoint: Endpoint {
                host: Host::V6("2001:db8::2".parse().unwrap()),
                port: NonZeroU16::new(8080).unwrap(),
            },
            metrics: Metrics {
                memory: Some(41.5),
                cpu: Some(12.25),
                connections: Some(17.0),
                custom: vec![("queue".to_owned(), 3.5)],
            },
            weight: NonZeroU16::new(200).unwrap(),
            state: reported,
            score: Some(41.5),
        };
        snapshot.backend.v2 = Some(Box::new(detail));
        snapshot
    }

    fn summary(service: &str, default: bool, scoring: Scoring) -> dispatcher::ServiceSummary {
        dispatcher::ServiceSummary { name: name(service), backends: 0, ready: 0, scoring, default }
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
        assert_eq!(json["protocol"], "legacy");
        assert_eq!(json["state"], "draining");
        assert_eq!(json["operator_state"], "draining");
        assert_eq!(json["reported"]["mem_percent"], 42);
        assert_eq!(json["reported"]["valid"], true);
        assert_eq!(json["effective_load_percent"], 42.0);
        assert_eq!(json["heartbeat_age_seconds"], 1.5);
        assert_eq!(json["connection_age_seconds"], 1.5);
        assert_eq!(json["picks_total"], 0);
        assert_eq!(json["v2"], serde_json::Value::Null, "a legacy backend has no v2 detail");
    }

    #[test]
    fn a_v2_backend_view_shows_what_its_heartbeat_said() {
        let snapshot = v2_snapshot(9, "search", BackendState::Ready, v2::State::Draining);
        let json = serde_json::to_value(BackendView::new(&snapshot, Instant::now())).unwrap();
        assert_eq!(json["id"], 9);
        assert_eq!(json["protocol"], "v2");
        assert_eq!(json["address"], "[2001:db8::2]:8080", "where clients go, not the legacy ip field");
        assert_eq!(json["state"], "draining", "the backend's own report keeps it out");
        assert_eq!(json["operator_state"], "ready");
        let v2 = &json["v2"];
        assert_eq!(v2["backend_id"], (u64::MAX - 1).to_string(), "every digit of a 64-bit id");
        assert_eq!(v2["endpoint"], "[2001:db8::2]:8080");
        assert_eq!(v2["memory_percent"], 41.5);
        assert_eq!(v2["cpu_percent"], 12.25);
        assert_eq!(v2["connections"], 17);
        assert_eq!(v2["weight"], 200);
        assert_eq!(v2["reported_state"], "draining");
        assert_eq!(v2["metrics"], serde_json::json!({"queue": 3.5}));
        assert_eq!(v2["score"], 41.5);
    }

    #[test]
    fn unreported_v2_figures_are_null() {
        let mut snapshot = v2_snapshot(9, "search", BackendState::Maintenance, v2::State::Ready);
        let detail = snapshot.backend.v2.as_mut().unwrap();
        detail.metrics = Metrics::default();
        detail.score = None;
        let json = serde_json::to_value(BackendView::new(&snapshot, Instant::now())).unwrap();
        assert_eq!(json["state"], "maintenance", "the operator's hold keeps it out");
        assert_eq!(json["operator_state"], "maintenance");
        let v2 = &json["v2"];
        assert_eq!(v2["reported_state"], "ready");
        for field in ["memory_percent", "cpu_percent", "connections", "score"] {
            assert_eq!(v2[field], serde_json::Value::Null, "{field}");
        }
        assert_eq!(v2["metrics"], serde_json::json!({}));
    }

    #[test]
    fn services_are_listed_with_their_own_counts() {
        let now = Instant::now();
        let services = [
            summary("default", true, Scoring::default()),
            summary("search", false, "max(memory, cpu)".parse().unwrap()),
        ];
        let backends = [
            snapshot(1, 1, BackendState::Ready, now),
            v2_snapshot(2, "search", BackendState::Ready, v2::State::Ready),
            v2_snapshot(3, "search", BackendState::Draining, v2::State::Ready),
            v2_snapshot(4, "search", BackendState::Ready, v2::State::Maintenance),
        ];
        let list = serde_json::to_value(ServiceList::new(&services, &backends, Policy::P2c)).unwrap();
        let expected = serde_json::json!({"services": [
            {"name": "default", "default": true, "policy": "p2c", "scoring": "memory", "backends": 1,
             "ready": 1, "states": {"ready": 1, "draining": 0, "maintenance": 0}},
            {"name": "search", "default": false, "policy": "p2c", "scoring": "max(memory, cpu)",
             "backends": 3, "ready": 1, "states": {"ready": 1, "draining": 1, "maintenance": 1}},
        ]});
        assert_eq!(list, expected);
    }

    #[test]
    fn a_service_without_backends_in_the_snapshot_counts_zero() {
        let services = [summary("default", true, Scoring::default())];
        let backends = [v2_snapshot(2, "gone", BackendState::Ready, v2::State::Ready)];
        let counted = by_service(&services, &backends);
        assert_eq!(counted.len(), 1, "a service the list does not name is left out");
        assert_eq!(counted[0].1, StateCounts::default());
    }

    #[test]
    fn states_are_counted() {
        let now = Instant::now();
        let all = [
            snapshot(1, 1, BackendState::Ready, now),
            snapshot(2, 1, BackendState::Ready, now),
            snapshot(3, 1, BackendState::Maintenance, now),
        ];
        let services = [summary("default", true, Scoring::default())];
        let counted = by_service(&services, &all);
        assert_eq!(counted[0].1, StateCounts { ready: 2, draining: 0, maintenance: 1 });
        assert_eq!(counted[0].1.total(), 3);
    }

    #[test]
    fn a_pick_names_the_endpoint_and_the_backends_own_id() {
        let picked = ServicePick {
            id: BackendId(4),
            backend_id: 99,
            endpoint: v2::Endpoint {
                host: v2::Host::V6("::1".parse().unwrap()),
                port: NonZeroU16::new(7000).unwrap(),
            },
            legacy: false,
        };
        let json = serde_json::to_value(PickView::new("search", &picked)).unwrap();
        let expected = serde_json::json!({
            "service": "search", "id": 4, "address": "[::1]:7000", "backend_id": "99", "endpoint": "[::1]:7000"
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn an_action_answers_the_hold_and_the_state_in_force() {
        let snapshot = v2_snapshot(5, "search", BackendState::Ready, v2::State::Maintenance);
        let view = StateView::new(5, BackendState::Ready, Some(&snapshot));
        let json = serde_json::to_value(view).unwrap();
        assert_eq!(json, serde_json::json!({"id": 5, "state": "maintenance", "operator_state": "ready"}));
        let gone = serde_json::to_value(StateView::new(5, BackendState::Draining, None)).unwrap();
        assert_eq!(gone, serde_json::json!({"id": 5, "state": "draining", "operator_state": "draining"}));
    }

    /// The property names of an OpenAPI schema, and those it requires.
    fn schema_keys(name: &str) -> (Vec<String>, Vec<String>) {
        let document: serde_json::Value = serde_json::from_str(crate::admin::openapi::DOCUMENT).unwrap();
        let schema = &document["components"]["schemas"][name];
        let mut properties: Vec<String> = schema["properties"].as_object().unwrap().keys().cloned().collect();
        let mut required: Vec<String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key.as_str().unwrap().to_owned())
            .collect();
        properties.sort();
        required.sort();
        (properties, required)
    }

    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_openapi_schemas_list_exactly_the_fields_sent() {
        let snapshot = v2_snapshot(9, "search", BackendState::Ready, v2::State::Ready);
        let backend = serde_json::to_value(BackendView::new(&snapshot, Instant::now())).unwrap();
        let services = [summary("search", false, Scoring::default())];
        let list = serde_json::to_value(ServiceList::new(&services, &[], Policy::P2c)).unwrap();
        let picked = ServicePick {
            id: BackendId(1),
            backend_id: 1,
            endpoint: crate::pick_answer::wire_endpoint(snapshot.backend.v2.unwrap().endpoint),
            legacy: false,
        };
        let shown = [
            ("Backend", backend.clone()),
            ("V2Detail", backend["v2"].clone()),
            ("Service", list["services"][0].clone()),
            ("Pick", serde_json::to_value(PickView::new("search", &picked)).unwrap()),
            ("StateChange", serde_json::to_value(StateView::new(1, BackendState::Ready, None)).unwrap()),
        ];
        for (schema, value) in shown {
            let (properties, required) = schema_keys(schema);
            assert_eq!(keys(&value), properties, "{schema}: the fields sent are the fields described");
            assert_eq!(required, properties, "{schema}: every field is always sent");
        }
    }

    #[test]
    fn an_address_that_is_not_text_is_escaped() {
        let ip = IpField::from_bytes([0xff; 16]);
        assert_eq!(address(&ip, 1), format!("{}:1", r"\xff".repeat(16)));
    }
}
